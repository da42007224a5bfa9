"""NVFP4 quantization step (``python -m components.quantize``): PTQ with ModelOpt through ``model.quant``,
an error report per mode (``ptq``), optional engine export (``export``). Imports nothing heavy, so the
pipeline compiler can import ``component.py`` with only kfp installed."""
