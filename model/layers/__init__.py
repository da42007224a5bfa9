"""nn.Modules of the hybrid DiT (each calls pure ops from ``model.ops``)."""
