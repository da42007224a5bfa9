"""Distillation: ODE pairs, self-forcing rollout, and (slow) the 4-step student beating the teacher's 4 steps."""

from __future__ import annotations

import json

import pytest
import torch

from components.distill.dmd import self_forcing_rollout
from components.distill.ode_init import collect_ode_pairs
from components.distill.student import DistillConfig, DMDConfig, conditions_from_dataset, split
from components.train.data import ClipLatentDataset, synthetic_samples, write_synthetic_shards
from model.config import get_preset
from model.pipeline import WorldModelPipeline


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    cfg = get_preset("tiny")
    pipe = WorldModelPipeline.from_config(cfg, seed=0)
    samples = synthetic_samples(3, cfg.vae.num_raw_frames(7), 64, 64, seed=6)
    ds = ClipLatentDataset(samples, cfg, 7, pipe.vae, pipe.text_encoder, tmp_path_factory.mktemp("c"))
    return cfg, pipe, conditions_from_dataset(ds, cfg)


def test_ode_pairs_interpolant_and_trajectory(tiny):
    cfg, pipe, conds = tiny
    sig = (1.0, 0.75, 0.5, 0.25)
    net = pipe.network.eval()
    a = collect_ode_pairs(net, conds, sig, 4, cfg.sampler.flow_shift, 1.0, seed=0, inputs="interpolant")
    b = collect_ode_pairs(net, conds, sig, 4, cfg.sampler.flow_shift, 1.0, seed=0, inputs="trajectory")
    assert a.x0.shape == (3, cfg.vae.latent_channels, 7, *cfg.latent_hw)
    torch.testing.assert_close(a.x0, b.x0)  # same teacher samples, only the inputs differ
    assert [s.shape[2] for s in a.states[0]] == [4] * 4 and [s.shape[2] for s in a.states[1]] == [3] * 4
    # both start from the same noise at sigma 1, and the image condition stays clean
    torch.testing.assert_close(a.states[1][0], b.states[1][0])
    torch.testing.assert_close(a.states[0][2][:, :, :1], conds.cond_latent)
    # interpolant: on the straight line between that noise and the teacher's sample
    torch.testing.assert_close(a.states[1][2], 0.5 * a.states[1][0] + 0.5 * a.x0[:, :, 4:])
    # trajectory: the teacher's own state; at sigma 0.75 (a grid point of its shifted 4-step schedule) it is
    # off the straight line, which is why the two input kinds differ
    assert not torch.allclose(b.states[1][1], a.states[1][1])
    c = collect_ode_pairs(net, conds, sig, 4, cfg.sampler.flow_shift, 1.0, seed=0, noises_per_condition=2)
    assert c.x0.shape[0] == 6 and len(c.conds) == 6
    with pytest.raises(ValueError, match="interpolant"):
        collect_ode_pairs(net, conds, sig, 4, 3.0, 1.0, seed=0, inputs="bogus")


def test_ode_pairs_carry_the_teacher_camera_guidance(tiny):
    # The student learns the guided teacher: its pairs' targets are the camera-guided rollout itself
    import copy

    from model.sampling import sample_chunk_causal

    cfg, pipe, conds = tiny
    net = copy.deepcopy(pipe.network).eval()
    with torch.no_grad():  # zero-initialised camera branches would hide the camera
        g = torch.Generator().manual_seed(0)
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    sig, shift = (1.0, 0.75, 0.5, 0.25), cfg.sampler.flow_shift
    guided = collect_ode_pairs(net, conds, sig, 4, shift, 1.0, seed=0, camera_guidance=3.0)
    plain = collect_ode_pairs(net, conds, sig, 4, shift, 1.0, seed=0)
    ref = sample_chunk_causal(net, conds.cond_latent, conds.num_frames, conds.cond, chunk_lens=conds.chunk_lens,
                              num_steps=4, guidance_scale=1.0, shift=shift, generator=torch.Generator().manual_seed(0),
                              camera_guidance=3.0)
    torch.testing.assert_close(guided.x0, ref)
    assert guided.states[1][0].shape == plain.states[1][0].shape  # the still branch's copies are dropped
    assert (guided.x0 - plain.x0).abs().max() > 1e-3


def test_self_forcing_rollout_grads_reach_student_only(tiny):
    cfg, pipe, conds = tiny
    import copy

    student = copy.deepcopy(pipe.network).train()
    x0 = self_forcing_rollout(student, conds, (1.0, 0.5), torch.Generator().manual_seed(0))
    assert x0.shape == (3, cfg.vae.latent_channels, 7, *cfg.latent_hw)
    torch.testing.assert_close(x0[:, :, :1], conds.cond_latent)
    x0.pow(2).mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(p.grad is None for p in pipe.network.parameters())


def test_configs_and_split_validate(tiny):
    with pytest.raises(ValueError, match="min_t"):
        DMDConfig(min_t=0.9, max_t=0.5)
    with pytest.raises(ValueError, match="heldout_fraction"):
        DistillConfig(heldout_fraction=1.0)
    _, _, conds = tiny
    tr, he = split(conds, 0.25, seed=0)
    assert len(tr) + len(he) == 3 and len(he) >= 1
    with pytest.raises(ValueError, match="at least 2"):
        split(conds.select([0]), 0.5, 0)


@pytest.mark.slow
def test_distilled_student_beats_teacher_four_steps(tmp_path):
    """Train a tiny teacher through the CLI, distil it through the CLI, compare 4-step errors to 12-step."""
    from components.distill.__main__ import main as distill_main
    from components.train.__main__ import main as train_main

    shards = write_synthetic_shards(tmp_path / "shards", 8, 25, 64, 64, seed=3)
    assert train_main(["--shards", str(shards), "--preset", "tiny", "--steps", "30", "--batch-size", "4",
                       "--latent-frames", "7", "--lr", "3e-3", "--no-activation-checkpointing",
                       "--out", str(tmp_path / "teacher")]) == 0
    assert distill_main(["--teacher", str(tmp_path / "teacher"), "--shards", str(shards), "--out",
                         str(tmp_path / "student"), "--ode-steps", "60", "--dmd-steps", "1",
                         "--teacher-steps", "12"]) == 0
    pipe = WorldModelPipeline.from_pretrained(tmp_path / "student")
    info = pipe.metadata["info"]
    assert pipe.metadata["kind"] == "student" and info["sampler_mode"] == "few_step"
    e = info["errors"]
    student, teacher = e["student_4step_vs_teacher_50"], e["teacher_4step_vs_teacher_50"]
    print(json.dumps(info["errors"]))
    assert student < 0.7 * teacher, (student, teacher)
    # and training helped beyond the schedule: the teacher itself run on the distilled sigmas is worse
    assert student < info["errors_before"]["student_4step_vs_teacher_50"]
