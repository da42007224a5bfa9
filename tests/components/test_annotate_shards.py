"""Shard writer/reader round trip."""

import tarfile

import numpy as np
import pytest

from components.annotate.shards import ShardSample, iter_shard_samples, write_manifest, write_shards
from model.video_io import read_video, write_video


def test_shard_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    samples = []
    for i in range(3):
        frames = rng.integers(0, 255, (5, 32, 48, 3), dtype=np.uint8)
        path = write_video(frames, tmp_path / f"c{i}.mp4", 8.0)
        c2w = np.tile(np.eye(4), (5, 1, 1))
        c2w[:, 0, 3] = np.arange(5) * 0.1 * (i + 1)
        samples.append(ShardSample(id=f"clip{i}", mp4=path.read_bytes(),
                                   poses={"c2w": c2w, "intrinsics": np.tile(np.eye(3), (5, 1, 1)), "fps": 8.0,
                                          "confidence": 0.5 + 0.1 * i},
                                   meta={"scores": {"flow_px": float(i)}, "caption": "", "kind": "strafe"}))
    out = tmp_path / "shards"
    (out).mkdir()
    (out / "shard-000007.tar").write_bytes(b"stale")  # a leftover from an earlier, longer run
    paths = write_shards(samples, out, shard_size=2)
    write_manifest([{"id": s.id, "status": "kept", "reason": ""} for s in samples], out)
    assert [p.name for p in paths] == ["shard-000000.tar", "shard-000001.tar"]
    assert sorted(p.name for p in out.glob("shard-*.tar")) == ["shard-000000.tar", "shard-000001.tar"]
    with tarfile.open(paths[0]) as tf:
        assert sorted(tf.getnames()) == sorted(f"clip{i}.{e}" for i in (0, 1) for e in ("mp4", "poses.npz", "json"))
    got = list(iter_shard_samples(out))
    assert [g["id"] for g in got] == ["clip0", "clip1", "clip2"]
    for g, s in zip(got, samples):
        ref, _ = read_video(tmp_path / f"c{s.id[-1]}.mp4")
        np.testing.assert_array_equal(g["frames"], ref)
        np.testing.assert_array_equal(g["c2w"], s.poses["c2w"])
        assert g["confidence"] == pytest.approx(s.poses["confidence"]) and g["fps"] == 8.0
        assert g["meta"] == s.meta
    assert len((out / "manifest.jsonl").read_text().splitlines()) == 3
    assert not list(out.glob(".*.tmp"))


def test_shard_sample_rejects_dotted_ids():
    with pytest.raises(ValueError, match="not a valid shard key"):
        ShardSample(id="a.b", mp4=b"", poses={"c2w": 0, "intrinsics": 0, "fps": 1, "confidence": 0})
