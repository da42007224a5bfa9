"""Safetensors checkpoints: single/sharded round trips, strict-load errors, atomic writes."""

from __future__ import annotations

import inspect
import json

import pytest
import torch
from torch import nn

import model.checkpoint as ck
from model.checkpoint import (
    INDEX_FILE,
    SINGLE_FILE,
    CheckpointMismatchError,
    atomic_directory,
    load_into,
    load_state_dict,
    save_state_dict,
)


def _net(width: int = 32, depth: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(*[nn.Linear(width, width) for _ in range(depth)])


def test_single_file_round_trip_keeps_dtypes(tmp_path):
    sd = {"a": torch.randn(3, 4), "b": torch.arange(5), "c": torch.randn(2, dtype=torch.bfloat16)}
    save_state_dict(sd, tmp_path / "ck")
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == [SINGLE_FILE]
    back = load_state_dict(tmp_path / "ck")
    assert back.keys() == sd.keys()
    for k, v in sd.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v)


def test_sharded_round_trip(tmp_path):
    net = _net()
    save_state_dict(net.state_dict(), tmp_path / "ck", max_shard_bytes=5000)  # each 32x32 weight is 4 KiB
    index = json.loads((tmp_path / "ck" / INDEX_FILE).read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) >= 3 and set(index["weight_map"]) == set(net.state_dict())
    assert index["metadata"]["total_size"] == sum(t.numel() * 4 for t in net.state_dict().values())
    other = _net()
    with torch.no_grad():
        for p in other.parameters():
            p.zero_()
    assert load_into(other, tmp_path / "ck").ok
    for (k, a), b in zip(net.state_dict().items(), other.state_dict().values()):
        assert torch.equal(a, b), k


def test_tied_weights_save(tmp_path):
    lin = nn.Linear(4, 4)
    sd = {"enc.weight": lin.weight, "dec.weight": lin.weight}  # same storage, as with tied embeddings
    save_state_dict(sd, tmp_path / "ck")
    back = load_state_dict(tmp_path / "ck")
    assert torch.equal(back["enc.weight"], back["dec.weight"])


def test_mismatch_error_lists_keys_with_counts(tmp_path):
    save_state_dict(_net(depth=2).state_dict(), tmp_path / "ck")
    bigger = nn.Sequential(nn.Linear(32, 32), nn.Linear(32, 16), *[nn.Linear(32, 32) for _ in range(5)])
    with pytest.raises(CheckpointMismatchError) as e:
        load_into(bigger, tmp_path / "ck")
    msg = str(e.value)
    assert "10 missing keys" in msg and "2.weight" in msg and "(+5 more)" in msg
    assert "2 shape-mismatched keys" in msg and "1.weight (checkpoint [32, 32] vs module [16, 32])" in msg
    assert isinstance(e.value, ValueError)
    smaller = nn.Sequential(nn.Linear(32, 32))
    with pytest.raises(CheckpointMismatchError, match="2 unexpected keys: 1.bias, 1.weight"):
        load_into(smaller, tmp_path / "ck")
    report = load_into(smaller, tmp_path / "ck", strict=False)  # loads what matches, reports the rest
    assert report.unexpected == ["1.bias", "1.weight"] and not report.missing
    assert torch.equal(smaller[0].weight, _net(depth=2)[0].weight)


def test_missing_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_state_dict(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_state_dict(tmp_path / "empty")
    save_state_dict(_net().state_dict(), tmp_path / "ck", max_shard_bytes=5000)
    shard = min((tmp_path / "ck").glob("model-*.safetensors"))
    shard.unlink()
    with pytest.raises(FileNotFoundError, match=shard.name):
        load_state_dict(tmp_path / "ck")


def test_atomic_directory_keeps_old_on_failure_and_replaces_on_success(tmp_path):
    save_state_dict({"x": torch.ones(2)}, tmp_path / "ck")
    with pytest.raises(RuntimeError, match="boom"), atomic_directory(tmp_path / "ck") as tmp:
        (tmp / "partial").write_text("half")
        raise RuntimeError("boom")
    assert torch.equal(load_state_dict(tmp_path / "ck")["x"], torch.ones(2))
    save_state_dict({"x": torch.zeros(3)}, tmp_path / "ck")
    assert torch.equal(load_state_dict(tmp_path / "ck")["x"], torch.zeros(3))
    assert [p.name for p in tmp_path.iterdir()] == ["ck"]  # no temp or old directories left behind


def test_meta_module_gets_weights_assigned(tmp_path):
    save_state_dict(_net().state_dict(), tmp_path / "ck")
    with torch.device("meta"):
        m = _net()
    load_into(m, tmp_path / "ck")
    assert m[0].weight.device.type == "cpu" and torch.equal(m[0].weight, _net()[0].weight)


def test_never_unpickles():
    assert "torch.load" not in inspect.getsource(ck)
