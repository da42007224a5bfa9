"""End-to-end training CLI on real shards: plain path (resume by rerunning) and 2-process DeepSpeed ZeRO-2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from components.train.__main__ import main
from components.train.data import write_synthetic_shards
from model.config import get_preset
from model.pipeline import WorldModelPipeline

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_synthetic_shards(tmp_path_factory.mktemp("shards"), 3, 13, 64, 64, seed=2)


@pytest.mark.slow
def test_cli_plain_writes_teacher_bundle(shards, tmp_path):
    out = tmp_path / "teacher"
    assert main(["--shards", str(shards), "--preset", "tiny", "--steps", "2", "--batch-size", "1",
                 "--out", str(out)]) == 0
    pipe = WorldModelPipeline.from_pretrained(out)
    assert pipe.metadata["kind"] == "teacher"
    assert pipe.metadata["info"]["steps"] == 2 and pipe.metadata["info"]["clips"] == {"4": 3}
    assert (tmp_path / "teacher.ckpt" / "step-00000002" / "model.safetensors").exists()


def test_init_fine_tunes_a_bundle_and_prints_progress(shards, tmp_path, capsys):
    """--init: the bundle's network and VAE are the starting point (strict load), training continues
    from them; with a non-terminal stderr the loop prints '[progress]' lines (the local console shows them)."""
    import torch

    base = tmp_path / "base"
    src = WorldModelPipeline.from_config(get_preset("tiny"), seed=7)
    src.save_pretrained(base, kind="teacher")
    out = tmp_path / "tuned"
    assert main(["--shards", str(shards), "--preset", "tiny", "--steps", "2", "--batch-size", "1", "--init", str(base),
                 "--progress-every", "1", "--out", str(out)]) == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("[progress] train step")]
    assert [x.split()[3] for x in lines] == ["1/2", "2/2"] and "tok/s" in lines[0]
    tuned = WorldModelPipeline.from_pretrained(out)
    a, b = src.network.state_dict(), tuned.network.state_dict()
    close = sum(torch.allclose(a[k], b[k], atol=1e-2) for k in a)
    assert close > 0.9 * len(a)  # 2 small steps away from the base, not a fresh random network
    fresh = WorldModelPipeline.from_config(get_preset("tiny"), seed=0).network.state_dict()
    assert sum(torch.allclose(fresh[k], b[k], atol=1e-2) for k in a) < close
    va, vb = src.vae.state_dict(), tuned.vae.state_dict()
    assert all(torch.equal(va[k], vb[k]) for k in va)  # no --vae: the bundle's VAE is kept


def test_init_that_is_not_a_bundle_is_a_clear_error(shards, tmp_path, capsys):
    assert main(["--shards", str(shards), "--preset", "tiny", "--steps", "1", "--init", str(tmp_path),
                 "--out", str(tmp_path / "o")]) == 2
    assert "is not a model bundle" in capsys.readouterr().err


def test_cli_rejects_missing_shards(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        main(["--shards", str(tmp_path / "nope"), "--preset", "tiny", "--steps", "1", "--out", str(tmp_path / "o")])


@pytest.mark.slow
def test_deepspeed_zero2_two_processes_cpu(shards, tmp_path):
    out = tmp_path / "ds"
    env = dict(os.environ, TORCH_EXTENSIONS_DIR=os.environ.get("TORCH_EXTENSIONS_DIR",
                                                               str(Path.home() / ".cache" / "torch_extensions")))
    env.pop("RANK", None)
    r = subprocess.run([sys.executable, "-m", "components.train", "--shards", str(shards), "--preset", "tiny",
                        "--steps", "2", "--batch-size", "1", "--out", str(out), "--deepspeed", "--zero-stage", "2",
                        "--nproc", "2"], check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 2 and summary["final_loss"] > 0
    ck = tmp_path / "ds.ckpt" / "step-00000002"
    # ZeRO-2 partitions the optimizer state: one shard per rank
    assert sorted(p.name for p in ck.glob("*optim_states.pt")) == [
        "zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"]
    assert WorldModelPipeline.from_pretrained(out).metadata["kind"] == "teacher"


def test_activation_checkpointing_follows_the_device(monkeypatch):
    import torch

    from components.train.__main__ import build_parser, config_from_args

    def cfg(*argv):
        return config_from_args(build_parser().parse_args(["--shards", "s", "--out", "o", *argv]))

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cfg().activation_checkpointing is False  # CPU: recomputing costs time and saves nothing needed
    assert cfg("--activation-checkpointing", "on").activation_checkpointing is True
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert cfg().activation_checkpointing is True  # GPU: memory is the limit
    assert cfg("--no-activation-checkpointing").activation_checkpointing is False
