"""Deploy a registered model to a local Triton server (``python -m components.deploy``)."""
