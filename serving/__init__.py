"""Serving a world-model bundle through a real Triton Inference Server.

* ``serving.request``     ``VideoRequest`` and the input tensors' wire form (names, datatypes), pure NumPy.
* ``serving.predictor``   ``Predictor``: request validation + generation, pure Python (no Triton).
* ``serving.triton_repo`` ``build_repository``: ``<repo>/<name>/{config.pbtxt, 1/model.py}``.
* ``serving.server``      ``TritonServer``: the ``tritonserver`` binary from nvidia-pytriton, on 127.0.0.1.
* ``serving.client``      ``request_video`` and the ``python -m serving.client`` CLI (mp4 + contact sheet).
* ``serving/adapters``    the Python-backend ``model.py`` copied into the repository.

Modules are imported on demand: ``import serving`` pulls in neither tritonclient nor torch.
"""
