"""NVFP4 quantized networks: the module-tree transforms (ModelOpt PTQ, Hadamard rotation) and the reader of
quantized bundles, below every step so serving, evaluation and the quantize step load one format the same way.

  * ``model.quant.nvfp4``    ModelOpt config per mode, CPU fake-quant backend, quantize / save / restore
  * ``model.quant.hadamard`` random Hadamard rotation of qkv inputs (a tree transform, no model edits)
  * ``model.quant.bundle``   ``QuantSpec``, ``save_quantized_bundle``, ``load_quantized``, ``load_bundle``
"""
