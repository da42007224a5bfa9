"""Stage 2: diffusers' SanaWMLTX2Refiner wrapped, run with the release's window and schedule."""

from __future__ import annotations

import pytest
import torch

from model.refiner import LongVideoRefiner, RefinerConfig, tiny_refiner

pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def refiner():
    return tiny_refiner(latent_channels=8)


def test_release_settings():
    c = RefinerConfig()
    assert (c.sink_size, c.block_size, c.kv_max_frames) == (1, 3, 11)
    assert c.sigmas == (0.909375, 0.725, 0.421875, 0.0)
    with pytest.raises(ValueError, match="kv_max_frames"):
        RefinerConfig(kv_max_frames=3)
    with pytest.raises(ValueError, match="decrease strictly"):
        RefinerConfig(sigmas=(0.5, 0.7, 0.0))


def test_refine_keeps_the_sink_and_changes_the_rest(refiner):
    z = torch.randn(1, 8, 8, 4, 4, generator=torch.Generator().manual_seed(0))
    out = refiner.refine(z, "walk forward", fps=8.0, seed=1)
    assert out.shape == z.shape and torch.isfinite(out).all()
    torch.testing.assert_close(out[:, :, :1], z[:, :, :1])  # the clean anchor frame is never refined
    assert (out[:, :, 1:] - z[:, :, 1:]).abs().mean() > 1e-3
    again = refiner.refine(z, "walk forward", fps=8.0, seed=1)
    torch.testing.assert_close(out, again)  # seeded: the same video twice


def test_refinement_is_chunk_causal(refiner):
    """Blocks are refined in order over a causal window: a later block cannot change an earlier one."""
    g = torch.Generator().manual_seed(2)
    z = torch.randn(1, 8, 10, 4, 4, generator=g)
    z2 = z.clone()
    z2[:, :, 7:] += 5.0  # the last block only
    a = refiner.refine(z, "", fps=8.0, seed=3)
    b = refiner.refine(z2, "", fps=8.0, seed=3)
    torch.testing.assert_close(a[:, :, :7], b[:, :, :7])
    assert (a[:, :, 7:] - b[:, :, 7:]).abs().max() > 1e-3


def test_round_trip_from_a_local_directory(tmp_path, refiner):
    refiner.save_pretrained(tmp_path / "refiner")
    back = LongVideoRefiner.from_pretrained(tmp_path / "refiner")
    z = torch.randn(1, 8, 5, 4, 4, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(back.refine(z, "a room", 8.0, seed=0), refiner.refine(z, "a room", 8.0, seed=0))
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        LongVideoRefiner.from_pretrained(tmp_path / "nothing")
