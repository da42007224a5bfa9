"""Shared plumbing for every step: tracking, paths/images, atomic writes, DVC and lineage helpers."""
