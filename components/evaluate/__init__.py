"""Evaluate a model bundle: camera following, visual quality, speed (``python -m components.evaluate``)."""
