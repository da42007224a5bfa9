"""`make pretrain` (components.train.pretrain): a base bundle from the project's own steps, fp16, recorded,
and loadable strictly by `train --init` (the path make run takes with train.init)."""

from __future__ import annotations

import json

import torch


def test_pretrain_writes_a_half_precision_bundle_that_train_init_loads(tmp_path, monkeypatch):
    from components.train.__main__ import main as train_main
    from components.train.pretrain import main
    from model.pipeline import WorldModelPipeline

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "base"
    assert main(["--preset", "tiny", "--out", str(out), "--work", str(tmp_path / "w"), "--clips", "2",
                 "--frames", "9", "--height", "64", "--width", "64", "--steps", "1"]) == 0
    rec = json.loads((out / "pretrain.json").read_text())
    assert rec["seed"] == 1000 and rec["steps"] == 1 and rec["dtype"] == "float16"
    assert [c["cmd"].split()[2] for c in rec["commands"]] == ["components.ingest", "components.annotate",
                                                               "components.vae", "components.train"]
    # pretraining runs at the preset's from-scratch LR, not params.yaml's fine-tuning train.lr
    train_cmd = rec["commands"][-1]["cmd"].split()
    assert train_cmd[train_cmd.index("--lr") + 1] == "0.0" and "--no-activation-checkpointing" in train_cmd
    from safetensors.torch import load_file

    tensors = [t for f in out.rglob("*.safetensors") for t in load_file(str(f)).values() if t.is_floating_point()]
    assert tensors and all(t.dtype == torch.float16 for t in tensors)
    pipe = WorldModelPipeline.from_pretrained(out)  # strict load, cast back to float32
    assert next(pipe.network.parameters()).dtype == torch.float32
    assert train_main(["--shards", str(tmp_path / "w" / "shards"), "--preset", "tiny", "--steps", "1",
                       "--batch-size", "1", "--init", str(out), "--out", str(tmp_path / "tuned")]) == 0

    # --init continues that base: its VAE passes through bit for bit, the steps add up, the record nests
    more = tmp_path / "base2"
    assert main(["--preset", "tiny", "--out", str(more), "--work", str(tmp_path / "w2"), "--clips", "2",
                 "--frames", "9", "--height", "64", "--width", "64", "--steps", "2", "--init", str(out),
                 "--lr-decay-steps", "2"]) == 0
    rec2 = json.loads((more / "pretrain.json").read_text())
    assert rec2["steps"] == 3 and rec2["steps_this_run"] == 2 and rec2["continued_from"]["steps"] == 1
    assert "PRETRAIN_INIT=" in rec2["regenerate"] and rec["regenerate"] in rec2["regenerate"]
    cmds = [c["cmd"] for c in rec2["commands"]]
    assert f"--init-bundle {out}" in cmds[2] and f"--init {out}" in cmds[3] and "--lr-decay-steps 2" in cmds[3]
    assert rec2["lr_decay_steps"] == 2 and "PRETRAIN_DECAY=2" in rec2["regenerate"]
    # the recorded line repeats the run: its data (clips, seed) too, not just the steps
    assert rec2["regenerate"].startswith("make pretrain PRESET=tiny PRETRAIN_CLIPS=2 PRETRAIN_SEED=1000 PRETRAIN_STEPS=2")
    assert json.loads((more / "metadata.json").read_text())["info"]["total_steps"] == 3
    vae_a, vae_b = (load_file(str(d / "vae" / "model.safetensors")) for d in (out, more))
    assert vae_a.keys() == vae_b.keys() and all(torch.equal(vae_a[k], vae_b[k]) for k in vae_a)
    net_a, net_b = (load_file(str(d / "network" / "model.safetensors")) for d in (out, more))
    assert any(not torch.equal(net_a[k], net_b[k]) for k in net_a)  # and the network trained on


def test_pretrain_rejects_bad_options(tmp_path, capsys):
    from components.train.pretrain import main

    assert main(["--out", str(tmp_path / "b"), "--frames", "10"]) == 2
    assert "--frames = 1 + 4k" in capsys.readouterr().err
    assert main(["--out", str(tmp_path / "b"), "--init", str(tmp_path / "nothing")]) == 2
    assert "is not a model bundle" in capsys.readouterr().err


def test_shipped_base_matches_its_preset_and_budget():
    """assets/base/small (params.yaml train.init) must load strictly into today's small preset, in float16,
    within the 30 MB budget, with a record of how it was made: a preset change that the base no longer
    fits (shapes, fps, VAE) fails here rather than in `make run`."""
    from pathlib import Path

    from components.train.pretrain import SIZE_BUDGET_MB
    from model.config import WorldModelConfig, get_preset
    from model.pipeline import WorldModelPipeline

    base = Path(__file__).resolve().parents[2] / "assets" / "base" / "small"
    cfg = WorldModelConfig.from_dict(json.loads((base / "config.json").read_text()))
    assert cfg == get_preset("small")
    rec = json.loads((base / "pretrain.json").read_text())
    sizes = {str(f.relative_to(base)): f.stat().st_size / 2**20 for f in base.rglob("*.safetensors")}
    assert sum(sizes.values()) <= SIZE_BUDGET_MB and rec["steps"] >= 1 and rec["commands"]
    pipe = WorldModelPipeline.from_pretrained(base)  # strict
    assert sum(p.numel() for p in pipe.network.parameters()) > 1_000_000
