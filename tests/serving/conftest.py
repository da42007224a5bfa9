"""Shared fixtures: one tiny model bundle per session, a first frame and a valid trajectory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model.config import get_preset
from model.pipeline import WorldModelPipeline
from model.trajectory import default_intrinsics, trajectory_from_actions
from serving.predictor import DEFAULT_LOADER

TINY = get_preset("tiny")
H, W = TINY.video_height, TINY.video_width
N_FRAMES = TINY.vae.num_raw_frames(2)  # 5 raw frames = 2 latent frames: the smallest real video
MAX_FRAMES = TINY.vae.num_raw_frames(3)  # 9: lets tests ask for "too many" cheaply


@pytest.fixture(scope="session")
def bundle(tmp_path_factory) -> tuple[Path, str]:
    """(bundle_dir, loader spec) of a real tiny random-weight bundle (WorldModelPipeline.save_pretrained)."""
    path = tmp_path_factory.mktemp("bundle") / "tiny"
    WorldModelPipeline.from_config(TINY, seed=0).save_pretrained(path)
    return path, DEFAULT_LOADER


@pytest.fixture(scope="session")
def first_frame() -> np.ndarray:
    """uint8 (H, W, 3): a smooth colour gradient."""
    yy, xx = np.mgrid[0:H, 0:W]
    return np.stack([xx * 255 // W, yy * 255 // H, np.full_like(xx, 128)], axis=-1).astype(np.uint8)


@pytest.fixture(scope="session")
def trajectory():
    """MAX_FRAMES + 4 poses walking forward while yawing (more poses than any request uses)."""
    return trajectory_from_actions("w 1s; q 1s", fps=TINY.fps, K=default_intrinsics(H, W),
                                   num_frames=MAX_FRAMES + 4)


def assert_starts_refused(grpc_url: str, image: np.ndarray, match: str, times: int = 3) -> None:
    """``times`` STARTs on a full session model are each refused at once with an error matching ``match``
    (more than the spare Triton slots: each refusal must release the slot it took)."""
    import time

    from tritonclient.utils import InferenceServerException

    from serving.client import SessionClient

    for _ in range(times):
        extra = SessionClient(grpc_url)
        t0 = time.monotonic()
        with pytest.raises(InferenceServerException, match=match):
            extra.start(image, action="w")
        assert time.monotonic() - t0 < 5  # answered at once, not queued behind the live sessions
        extra.close()
