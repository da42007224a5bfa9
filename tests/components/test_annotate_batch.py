"""Batch annotation: filters + poses + shards, resumability through the content-hash cache, bad clips."""

import json

import numpy as np
import pytest

from components.annotate.__main__ import main
from components.annotate.batch import BatchConfig, run_batch
from components.annotate.shards import iter_shard_samples
from components.ingest.synthetic import generate_dataset


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory):
    raw = tmp_path_factory.mktemp("raw")
    generate_dataset(raw, 3, seed=1, height=64, width=96, num_frames=13, fps=8, progress=False)
    # A truncated video: the first 300 bytes of a real one.
    good = (raw / "syn1-00000.mp4").read_bytes()
    (raw / "broken.mp4").write_bytes(good[:300])
    with open(raw / "manifest.jsonl", "a") as fh:
        fh.write(json.dumps({"id": "broken", "path": "broken.mp4", "kind": "walk_forward"}) + "\n")
    return raw


def test_batch_corrupt_clip_fails_alone_and_rerun_is_cached(raw_dir, tmp_path):
    out = tmp_path / "shards"
    cfg = BatchConfig(workers=1, shard_size=2, progress=False)
    first = run_batch(raw_dir, out, cfg)
    status = {r["id"]: r["status"] for r in first["records"]}
    assert status["broken"] == "failed"
    assert sum(s in ("kept", "dropped") for s in status.values()) == 3 and first["kept"] >= 2
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    broken = next(m for m in manifest if m["id"] == "broken")
    assert broken["status"] == "failed" and "decode" in broken["reason"]
    assert first["computed"] == 4 and first["cached"] == 0
    cache_files = {p.name: p.stat().st_mtime_ns for p in (out / ".cache").iterdir()}
    second = run_batch(raw_dir, out, cfg)
    # Nothing recomputed: every record came from the cache and no cache file was rewritten.
    assert second["computed"] == 0 and second["cached"] == 4
    assert all(r["cached"] for r in second["records"])
    assert {p.name: p.stat().st_mtime_ns for p in (out / ".cache").iterdir()} == cache_files
    kept = [s for s in iter_shard_samples(out)]
    assert len(kept) == first["kept"] and len(second["shards"]) == (first["kept"] + 1) // 2
    for s in kept:
        n = len(s["frames"])
        assert s["frames"].dtype == np.uint8 and s["c2w"].shape == (n, 4, 4) and s["intrinsics"].shape == (n, 3, 3)
        assert s["meta"]["caption"] == "" and s["meta"]["metric"] is True and "scores" in s["meta"]


def test_cli_single_clip_with_ground_truth_npz(raw_dir, tmp_path):
    out = tmp_path / "poses.npz"
    gt = raw_dir / "syn1-00000.npz"
    assert main([str(raw_dir / "syn1-00000.mp4"), "--out", str(out), "--depth", str(gt), "--intrinsics", str(gt)]) == 0
    with np.load(out) as z, np.load(gt) as g:
        assert z["c2w"].shape == g["c2w"].shape and 0 <= float(z["confidence"]) <= 1 and bool(z["metric"])
        # Short (13-frame, 64x96) clip: a loose metric sanity bound on the final position.
        assert np.linalg.norm(z["c2w"][-1, :3, 3] - g["c2w"][-1, :3, 3]) < 0.1
    assert not list(tmp_path.glob(".*.tmp"))
    with pytest.raises(SystemExit, match="no metric scale source"):
        main([str(raw_dir / "syn1-00000.mp4"), "--out", str(out)])
