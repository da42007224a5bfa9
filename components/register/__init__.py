"""Register a model bundle in the MLflow Model Registry (``python -m components.register``)."""
