"""Ingest step: synthetic ground-truth clips and real-video ingestion into raw clip directories.

``python -m components.ingest --help``; library entry points:
:func:`~components.ingest.synthetic.generate_dataset` and :func:`~components.ingest.sources.ingest_videos`.

Importing the package is cheap (no OpenCV or PyAV): the KFP pipeline compiler imports
``components.ingest.component`` with only kfp installed. The names below load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "FilterConfig": "filters", "apply_filters": "filters", "score_clip": "filters",
    "IngestConfig": "sources", "ingest_videos": "sources", "read_manifest": "sources",
    "ClipSpec": "synthetic", "RenderedClip": "synthetic", "generate_dataset": "synthetic",
    "render_clip": "synthetic", "write_clip": "synthetic",
}
__all__ = [  # noqa: RUF022 - grouped by module, as _EXPORTS
    "FilterConfig", "apply_filters", "score_clip", "IngestConfig", "ingest_videos", "read_manifest", "ClipSpec",
    "RenderedClip", "generate_dataset", "render_clip", "write_clip",
]  # video I/O lives in model.video_io


def __getattr__(name: str) -> Any:
    # PEP 562 lazy export: `from components.ingest import read_video` still works.
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"components.ingest.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'components.ingest' has no attribute {name!r}")
