"""Steps size their clips from the data: the most latent frames every clip supplies, capped."""

import numpy as np
import pytest

from components.train.data import fit_latent_frames


def _samples(*lengths):
    return [{"c2w": np.tile(np.eye(4), (n, 1, 1))} for n in lengths]


def test_shortest_clip_decides_and_cap_applies():
    assert fit_latent_frames(_samples(33, 17), temporal_stride=4, cap=9) == 5  # 17 = 1 + 4*4
    assert fit_latent_frames(_samples(33, 33), temporal_stride=4, cap=9) == 9
    assert fit_latent_frames(_samples(100), temporal_stride=4, cap=7) == 7
    assert fit_latent_frames(_samples(20), temporal_stride=4, cap=9) == 5  # rounds down to 1 + 4k


def test_too_short_or_empty_is_a_clear_error():
    with pytest.raises(ValueError, match="shortest clip has 4 frames"):
        fit_latent_frames(_samples(4, 33), temporal_stride=4, cap=9)
    with pytest.raises(ValueError, match="no clips"):
        fit_latent_frames([], temporal_stride=4, cap=9)
