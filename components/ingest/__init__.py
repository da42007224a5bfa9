"""Ingest step: synthetic ground-truth clips and real-video ingestion into raw clip directories.

``python -m components.ingest --help``; library entry points:
:func:`~components.ingest.synthetic.generate_dataset` and :func:`~components.ingest.sources.ingest_videos`.
"""

from components.ingest.filters import FilterConfig, apply_filters, score_clip
from components.ingest.sources import IngestConfig, ingest_videos, read_manifest
from components.ingest.synthetic import ClipSpec, RenderedClip, generate_dataset, render_clip, write_clip
from components.ingest.video_io import (
    VideoDecodeError,
    VideoInfo,
    iter_frames,
    probe_video,
    read_video,
    write_video,
)

__all__ = [
    "ClipSpec",
    "FilterConfig",
    "IngestConfig",
    "RenderedClip",
    "VideoDecodeError",
    "VideoInfo",
    "apply_filters",
    "generate_dataset",
    "ingest_videos",
    "iter_frames",
    "probe_video",
    "read_manifest",
    "read_video",
    "render_clip",
    "score_clip",
    "write_clip",
    "write_video",
]
