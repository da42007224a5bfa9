"""Annotation fan-out: plan balance/determinism, batch --ids, merge round trip through iter_shard_samples."""

import json
import random
from itertools import chain

import numpy as np
import pytest

from components.annotate.__main__ import main
from components.annotate.batch import BatchConfig, run_batch
from components.annotate.fanout import balance_groups, make_plan, merge_shards, parse_ids, read_plan
from components.annotate.shards import iter_shard_samples
from components.ingest.synthetic import generate_dataset


def _fake_raw(tmp_path, rows):
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def test_balance_equal_and_varied_costs():
    groups = balance_groups({f"c{i}": 1.0 for i in range(7)}, 3)
    assert sorted(len(g) for g in groups) == [2, 2, 3]
    assert sorted(chain.from_iterable(groups)) == sorted(f"c{i}" for i in range(7))
    costs = {f"c{i}": float(c) for i, c in enumerate([9, 1, 4, 4, 7, 2, 3, 8, 5, 6])}
    groups = balance_groups(costs, 3)
    loads = [sum(costs[c] for c in g) for g in groups]
    # Greedy LPT: the spread is at most the largest single clip (here it is perfect: 49 = 17+16+16).
    assert max(loads) - min(loads) <= max(costs.values()) and max(loads) == 17
    assert len(balance_groups({"a": 1.0, "b": 2.0}, 5)) == 2  # never an empty group
    with pytest.raises(ValueError, match="groups must be >= 1"):
        balance_groups(costs, 0)
    with pytest.raises(ValueError, match="finite and > 0"):
        balance_groups({"a": 0.0}, 1)


def test_plan_is_deterministic_skips_non_ok_and_cli_writes_atomically(tmp_path):
    rows = [{"id": f"clip{i:02d}", "path": f"clip{i:02d}.mp4", "frames": 10 + i, "height": 64, "width": 96,
             "status": "ok"} for i in range(9)]
    rows.append({"id": "gone", "path": None, "status": "dropped", "reason": "static"})
    shuffled = rows[:]
    random.Random(0).shuffle(shuffled)
    a = make_plan(_fake_raw(tmp_path / "a", rows), 4)
    b = make_plan(_fake_raw(tmp_path / "b", shuffled), 4)
    assert a["groups"] == b["groups"] and a["cost_unit"] == "pixels" and a["num_clips"] == 9
    assert sorted(chain.from_iterable(a["groups"])) == [f"clip{i:02d}" for i in range(9)]  # "gone" is not planned
    assert max(a["loads"]) - min(a["loads"]) <= (10 + 8) * 64 * 96

    out = tmp_path / "plans" / "plan.json"
    assert main(["plan", "--raw", str(tmp_path / "a"), "--groups", "4", "--out", str(out)]) == 0
    assert read_plan(out)["groups"] == a["groups"] and not list(out.parent.glob(".*"))
    with pytest.raises(ValueError, match="no clips with status 'ok'"):
        make_plan(_fake_raw(tmp_path / "c", rows[-1:]), 2)
    with pytest.raises(FileNotFoundError, match="no manifest.jsonl"):
        make_plan(tmp_path / "nowhere", 2)


def test_parse_ids(tmp_path):
    assert parse_ids("a, b,c") == ["a", "b", "c"]
    (tmp_path / "ids.json").write_text('["x,1", "y"]')
    assert parse_ids(f"@{tmp_path / 'ids.json'}") == ["x,1", "y"]  # JSON keeps commas inside ids
    (tmp_path / "ids.txt").write_text("p\nq\n")
    assert parse_ids(f"@{tmp_path / 'ids.txt'}") == ["p", "q"]
    with pytest.raises(ValueError, match="repeats clip ids \\['a'\\]"):
        parse_ids("a,b,a")
    with pytest.raises(ValueError, match="selects no clips"):
        parse_ids(" , ")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        parse_ids("@/nonexistent/ids.txt")


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory):
    raw = tmp_path_factory.mktemp("raw")
    generate_dataset(raw, 3, seed=2, height=64, width=96, num_frames=13, fps=8, progress=False)
    return raw


def test_batch_ids_and_merge_round_trip(raw_dir, tmp_path):
    cache = tmp_path / "cache"  # shared: the full-batch reference below reuses the groups' results
    plan_path = tmp_path / "plan.json"
    assert main(["plan", "--raw", str(raw_dir), "--groups", "2", "--out", str(plan_path)]) == 0
    groups = read_plan(plan_path)["groups"]
    assert sorted(len(g) for g in groups) == [1, 2]
    (tmp_path / "g1.json").write_text(json.dumps(groups[1]))
    id_args = [",".join(groups[0]), f"@{tmp_path / 'g1.json'}"]  # both --ids forms
    parts = []
    for i, ids in enumerate(id_args):
        part = tmp_path / f"part{i}"
        assert main(["batch", "--raw", str(raw_dir), "--out", str(part), "--ids", ids, "--workers", "1",
                     "--shard-size", "1", "--cache-dir", str(cache), "--quiet"]) == 0
        listed = [json.loads(line)["id"] for line in (part / "manifest.jsonl").read_text().splitlines()]
        assert sorted(listed) == sorted(groups[i])  # only its group was annotated
        parts.append(part)

    merged = tmp_path / "merged"
    assert main(["merge", "--parts", str(parts[1]), str(parts[0]), "--out", str(merged), "--shard-size", "2"]) == 0
    manifest = [json.loads(line) for line in (merged / "manifest.jsonl").read_text().splitlines()]
    assert sorted(m["id"] for m in manifest) == sorted(chain.from_iterable(groups))
    samples = list(iter_shard_samples(merged))
    kept = [m for m in manifest if m["status"] == "kept"]
    assert [s["id"] for s in samples] == [m["id"] for m in kept] and len(samples) >= 2
    # Renumbered and re-packed: shard-000000 holds the first two kept clips, the manifest says so.
    tars = sorted(p.name for p in merged.glob("shard-*.tar"))
    assert tars == [f"shard-{i:06d}.tar" for i in range((len(kept) + 1) // 2)]
    assert [m["shard"] for m in kept] == [i // 2 for i in range(len(kept))]
    assert not list(merged.glob(".*")) and not list(tmp_path.glob(".merged*"))

    # Round trip: the merged samples equal one batch over every clip (same bytes in, same poses out).
    full = tmp_path / "full"
    summary = run_batch(raw_dir, full, BatchConfig(workers=1, cache_dir=str(cache), progress=False))
    assert summary["computed"] == 0  # every clip was already annotated by a group
    ref = {s["id"]: s for s in iter_shard_samples(full)}
    assert set(ref) == {s["id"] for s in samples}
    for s in samples:
        r = ref[s["id"]]
        np.testing.assert_array_equal(s["frames"], r["frames"])
        np.testing.assert_array_equal(s["c2w"], r["c2w"])
        np.testing.assert_array_equal(s["intrinsics"], r["intrinsics"])
        assert s["meta"] == r["meta"] and s["confidence"] == r["confidence"]

    # Order of the parts does not matter.
    again = merge_shards(parts, tmp_path / "merged2", shard_size=2)
    assert (tmp_path / "merged2" / "manifest.jsonl").read_text() == (merged / "manifest.jsonl").read_text()
    assert again["kept"] == len(kept) and again["parts"] == 2


def test_batch_ids_and_merge_errors(raw_dir, tmp_path):
    with pytest.raises(ValueError, match=r"ids \['nope'\] are not in"):
        run_batch(raw_dir, tmp_path / "x", BatchConfig(workers=1, progress=False), ids=["nope"])
    with pytest.raises(ValueError, match="ids is empty"):
        run_batch(raw_dir, tmp_path / "x", BatchConfig(workers=1, progress=False), ids=[])
    part = tmp_path / "p"
    part.mkdir()
    (part / "manifest.jsonl").write_text(json.dumps({"id": "a", "status": "kept"}) + "\n")
    with pytest.raises(ValueError, match="shards hold clips \\[\\] but its manifest keeps \\['a'\\]"):
        merge_shards([part], tmp_path / "out")
    assert not (tmp_path / "out").exists()  # a failed merge leaves no output behind
    twin = tmp_path / "q"
    twin.mkdir()
    (twin / "manifest.jsonl").write_text(json.dumps({"id": "a", "status": "dropped"}) + "\n")
    with pytest.raises(ValueError, match="clip 'a' is in two parts"):
        merge_shards([part, twin], tmp_path / "out")
    with pytest.raises(ValueError, match="also one of its parts"):
        merge_shards([part], part)
    with pytest.raises(NotADirectoryError, match="is not a folder"):
        merge_shards([tmp_path / "missing"], tmp_path / "out")
