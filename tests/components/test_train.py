"""Training step: diffusion-forcing sigmas, latent cache, activation checkpointing, kill-and-resume."""

from __future__ import annotations

import pytest
import torch

from components.train.config import DiffusionConfig, StageConfig, TrainConfig, default_train_config
from components.train.data import ClipLatentDataset, EpochSampler, synthetic_samples
from components.train.losses import flow_matching_loss, sample_chunk_sigmas
from components.train.trainer import Trainer, apply_activation_checkpointing
from model.config import get_preset
from model.network import SanaWM
from model.pipeline import WorldModelPipeline


@pytest.fixture(scope="module")
def tiny():
    cfg = get_preset("tiny")
    pipe = WorldModelPipeline.from_config(cfg, seed=0)
    return cfg, pipe


@pytest.fixture(scope="module")
def dataset(tiny, tmp_path_factory):
    cfg, pipe = tiny
    samples = synthetic_samples(3, cfg.vae.num_raw_frames(4), cfg.video_height, cfg.video_width, seed=1)
    cache = tmp_path_factory.mktemp("latents")
    ds = ClipLatentDataset(samples, cfg, 4, pipe.vae, pipe.text_encoder, cache)
    return ds, samples, cache


def test_latent_cache_hits_on_second_build(tiny, dataset):
    cfg, pipe = tiny
    ds, samples, cache = dataset
    assert ds.cache_hits == 0 and len(ds) == 3
    again = ClipLatentDataset(samples, cfg, 4, pipe.vae, pipe.text_encoder, cache)
    assert again.cache_hits == 3
    assert torch.equal(again.items[0].latents, ds.items[0].latents)
    assert ds.items[0].latents.shape == (cfg.vae.latent_channels, 4, *cfg.latent_hw)


def test_short_clips_are_skipped_with_reason(tiny):
    cfg, pipe = tiny
    short = synthetic_samples(1, 5, 64, 64)
    with pytest.raises(ValueError, match="no usable clips"):
        ClipLatentDataset(short, cfg, 4, pipe.vae, pipe.text_encoder, None)


def test_sigmas_constant_per_chunk_and_strategies():
    g = torch.Generator().manual_seed(0)
    lens = [4, 3, 3]
    for strat in ("same_t", "incremental", "last_chunk_anchor", "clean_teacher_forcing"):
        d = DiffusionConfig(strategy_weights={strat: 1.0}, image_condition_prob=0.0)
        sig, chosen = sample_chunk_sigmas(64, lens, d, g)
        assert sig.shape == (64, 10) and set(chosen) == {strat}
        chunks = torch.split(sig, lens, dim=1)
        for c in chunks:  # constant inside a chunk
            assert torch.equal(c, c[:, :1].expand_as(c))
        first = torch.stack([c[:, 0] for c in chunks], 1)  # (B, K) per-chunk levels
        if strat == "same_t":
            assert torch.equal(first, first[:, :1].expand_as(first))
        if strat == "incremental":
            assert (first[:, 1:] >= first[:, :-1]).all()
        if strat == "clean_teacher_forcing":
            assert (first[:, :-1] == 0).all() and (first[:, -1] > 0).all()
        if strat == "last_chunk_anchor":
            assert (first[:, :-1] <= 0.1).all()
    d = DiffusionConfig(image_condition_prob=0.9)
    sig, _ = sample_chunk_sigmas(2000, lens, d, g)
    frac = (sig[:, 0] == 0).float().mean().item()
    assert 0.85 < frac < 0.95


def test_loss_ignores_clean_frames():
    x0, noise = torch.randn(2, 4, 3, 2, 2), torch.randn(2, 4, 3, 2, 2)
    sigma = torch.tensor([[0.0, 0.5, 0.5], [0.0, 0.3, 0.3]])
    v = noise - x0
    v_bad = v.clone()
    v_bad[:, :, 0] += 100.0  # garbage on the clean conditioning frame must not count
    assert flow_matching_loss(v_bad, x0, noise, sigma).item() == pytest.approx(0.0, abs=1e-10)
    assert flow_matching_loss(v + 1.0, x0, noise, sigma).item() == pytest.approx(1.0)


def test_config_validation_names_field():
    with pytest.raises(ValueError, match="StageConfig.latent_frames"):
        StageConfig(latent_frames=0)
    with pytest.raises(ValueError, match="unknown strategies"):
        DiffusionConfig(strategy_weights={"bogus": 1.0})
    tc = TrainConfig(stages=(StageConfig(steps=2), StageConfig(latent_frames=7, steps=3)))
    assert tc.total_steps == 5 and tc.stage_at(2)[0] == 1
    assert TrainConfig.from_dict(tc.to_dict()) == tc


def test_lr_schedule_warms_up_holds_and_cools_down():
    """Warmup over the first steps, the stage peak in between, a linear cooldown over the run's last
    ``decay_steps`` that ends above 0 (every step trains), and the config round-trips with it."""
    from components.train.config import OptimConfig
    from components.train.trainer import lr_lambda

    tc = TrainConfig(stages=(StageConfig(steps=10, lr=1e-3),), optim=OptimConfig(warmup_steps=2, decay_steps=4))
    lr = [lr_lambda(tc)(s) for s in range(10)]
    assert lr[0] == pytest.approx(5e-4) and lr[1:7] == pytest.approx([1e-3] * 6)
    assert lr[6:] == pytest.approx([1e-3, 7.5e-4, 5e-4, 2.5e-4])
    assert TrainConfig.from_dict(tc.to_dict()) == tc
    const = TrainConfig(stages=(StageConfig(steps=10, lr=1e-3),))
    assert [lr_lambda(const)(s) for s in range(10)] == pytest.approx([1e-3] * 10)
    with pytest.raises(ValueError, match="OptimConfig.decay_steps"):
        OptimConfig(decay_steps=-1)


def test_sampler_state_round_trip():
    a = EpochSampler(5, seed=3)
    [a.next_batch(2) for _ in range(3)]
    b = EpochSampler(5, seed=3)
    b.load_state_dict(a.state_dict())
    assert [a.next_batch(2) for _ in range(4)] == [b.next_batch(2) for _ in range(4)]


def test_activation_checkpointing_same_gradients(tiny, dataset):
    cfg, _ = tiny
    ds, _, _ = dataset
    batch = ds.collate([0, 1])
    sigma = torch.full((2, 4), 0.5)
    grads = []
    for ac in (False, True):
        torch.manual_seed(0)
        net = SanaWM(cfg.network, cfg.chunks)
        if ac:
            assert apply_activation_checkpointing(net) == cfg.network.num_blocks
        v = net(batch.x0, sigma, batch.text, batch.text_mask, batch.camera, mode="chunk_causal")
        v.pow(2).mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0], grads[1])


def _run(cfg, ds, ckpt, stop_after=None):
    tc = default_train_config("tiny", 6, batch_size=2, checkpoint_every=3, lr=2e-3)
    torch.manual_seed(0)
    net = SanaWM(cfg.network, cfg.chunks)
    tr = Trainer(tc, net, {4: ds}, cfg, ckpt)
    return [r.loss for r in tr.run(stop_after=stop_after)], tr


def test_kill_and_resume_gives_identical_losses(tiny, dataset, tmp_path):
    cfg, _ = tiny
    ds, _, _ = dataset
    straight, _ = _run(cfg, ds, tmp_path / "a")
    first, _ = _run(cfg, ds, tmp_path / "b", stop_after=3)  # "killed" after step 3's checkpoint
    assert (tmp_path / "b" / "step-00000003" / "trainer_state.pt").exists()
    second, tr = _run(cfg, ds, tmp_path / "b")  # fresh process state: resumes at step 3
    assert len(first) == 3 and len(second) == 3 and tr.state.step == 6
    assert first + second == straight
    assert straight[-1] < straight[0]  # and it is learning



def test_ema_weights_are_shipped(tiny, dataset, tmp_path):
    from components.train.config import OptimConfig

    cfg, _ = tiny
    ds, _, _ = dataset
    tc = default_train_config("tiny", 2, batch_size=1, lr=1e-2, optim=OptimConfig(ema_decay=0.5),
                              activation_checkpointing=False)
    torch.manual_seed(0)
    tr = Trainer(tc, SanaWM(cfg.network, cfg.chunks), {4: ds}, cfg, tmp_path / "ck")
    tr.run()
    shipped, live = tr.final_state_dict(), tr.net.state_dict()
    assert shipped.keys() == live.keys()
    assert any(not torch.equal(shipped[k], live[k]) for k in live)  # EMA lags the live weights
    assert (tmp_path / "ck" / "step-00000002" / "ema.safetensors").exists()


def test_torchrun_command_shape():
    from components.train.launch import torchrun_command

    cmd = torchrun_command(["--steps", "2"], nproc=2, port=29555)
    assert cmd[1:3] == ["-m", "torch.distributed.run"]
    assert cmd[cmd.index("--nproc_per_node") + 1] == "2" and cmd[-4:] == ["-m", "components.train", "--steps", "2"]
    with pytest.raises(ValueError):
        torchrun_command([], nproc=0, port=1)
