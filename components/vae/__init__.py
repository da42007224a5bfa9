"""The ``vae`` step: fit the presets' random-weight video VAE on the training clips before the world model
trains on its latents (``python -m components.vae``; logic in ``fit``, pictures in ``report``)."""
