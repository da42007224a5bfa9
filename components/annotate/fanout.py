"""Fan-out of batch annotation: plan K balanced clip groups, annotate each group alone, merge the shards.

The KFP ``data`` DAG runs ``plan`` once, ``batch --ids <group>`` once per group inside a ``dsl.ParallelFor``
(one pod per group on a cluster) and ``merge`` over the collected group outputs, so the shards the train
step reads look exactly like one ``batch`` over every clip would have written them.

- Plan (``plan.json``): ``groups`` (list of K' lists of clip ids, K' = min(K, clips)), ``loads`` (summed
  cost per group), ``cost_unit`` and the inputs. Groups are balanced by estimated cost with the greedy
  longest-processing-time rule (biggest clip first onto the least-loaded group; ties go to the group
  with fewer clips, then the lower index), so equal clips split into sizes that differ by at most one.
  The clips are ordered by (-cost, id) first: the plan depends only on the set of clips, not on the order
  of the manifest rows.
- Merge: every part is a shard folder of :mod:`components.annotate.shards` (``shard-*.tar`` +
  ``manifest.jsonl``). Parts are ordered by their smallest clip id (so the order the orchestrator hands
  them over in does not matter), streamed sample by sample into ``write_shards`` (constant memory,
  shards renumbered from 0 and re-packed to ``shard_size``), and their manifests concatenated with each
  kept clip's ``shard`` rewritten. The whole output folder is swapped in atomically.
"""

from __future__ import annotations

import io
import json
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import webdataset as wds

from components.annotate.shards import ShardSample, write_manifest, write_shards
from model.atomic import atomic_dir, write_json

__all__ = ["balance_groups", "make_plan", "merge_shards", "parse_ids", "read_plan", "write_plan"]

_PLAN_VERSION = 1


def parse_ids(spec: str) -> list[str]:
    """Clip ids from ``"a,b,c"`` or ``"@file"`` (a JSON list, or ids separated by newlines/commas).

    Returns the ids in the given order; raises ValueError on an empty selection or a repeated id.
    """
    text = spec
    if spec.startswith("@"):
        path = Path(spec[1:])
        if not path.is_file():
            raise FileNotFoundError(f"--ids file {str(path)!r} does not exist")
        text = path.read_text()
        if text.lstrip().startswith("["):
            ids = json.loads(text)
            if not all(isinstance(i, str) for i in ids):
                raise ValueError(f"--ids file {str(path)!r}: the JSON list must hold strings")
            return _check_ids([i.strip() for i in ids], spec)
    return _check_ids([i.strip() for i in text.replace("\n", ",").split(",") if i.strip()], spec)


def _check_ids(ids: list[str], spec: str) -> list[str]:
    if not ids or not all(ids):
        raise ValueError(f"--ids {spec!r} selects no clips")
    dups = sorted(i for i, n in Counter(ids).items() if n > 1)
    if dups:
        raise ValueError(f"--ids {spec!r} repeats clip ids {dups}")
    return ids


def balance_groups(costs: dict[str, float], groups: int) -> list[list[str]]:
    """Split clip ids into ``min(groups, len(costs))`` groups of near-equal summed cost (greedy LPT).

    ``costs``: clip id -> positive cost. Returns the groups, each sorted by id; deterministic in the
    *set* of (id, cost) pairs.
    """
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")
    if not costs:
        raise ValueError("no clips to split into groups")
    bad = {k: v for k, v in costs.items() if not (np.isfinite(v) and v > 0)}
    if bad:
        raise ValueError(f"clip costs must be finite and > 0, got {bad}")
    k = min(groups, len(costs))
    members: list[list[str]] = [[] for _ in range(k)]
    loads = [0.0] * k
    for cid in sorted(costs, key=lambda c: (-costs[c], c)):
        g = min(range(k), key=lambda i: (loads[i], len(members[i]), i))
        members[g].append(cid)
        loads[g] += costs[cid]
    return [sorted(m) for m in members]


def _clip_costs(raw: Path, rows: list[dict]) -> tuple[dict[str, float], str]:
    """Cost per clip: frames*height*width from the manifest when every row has them (annotation time is
    dominated by decoding and feature extraction, both linear in pixels), else the video's size in bytes."""
    if all(all(isinstance(r.get(f), (int, float)) and r[f] > 0 for f in ("frames", "height", "width"))
           for r in rows):
        return {r["id"]: float(r["frames"] * r["height"] * r["width"]) for r in rows}, "pixels"
    costs = {}
    for r in rows:
        video = raw / r.get("path", f"{r['id']}.mp4")
        # A missing video still gets a (minimal) share of a group: batch records it as failed there.
        costs[r["id"]] = float(max(video.stat().st_size, 1)) if video.exists() else 1.0
    return costs, "bytes"


def make_plan(raw_dir: str | os.PathLike, groups: int) -> dict:
    """Plan for the ``status == "ok"`` clips of ``raw_dir/manifest.jsonl``: dict(version, raw, requested_groups,
    groups (list[list[str]]), loads (list[float]), cost_unit, num_clips)."""
    from components.ingest.sources import read_manifest  # the ingest package owns the raw manifest format

    raw = Path(raw_dir)
    manifest = raw / "manifest.jsonl"
    if not manifest.exists():
        raise FileNotFoundError(f"raw directory {str(raw)!r} has no manifest.jsonl")
    rows = read_manifest(manifest, status="ok")
    missing = [i for i, r in enumerate(rows) if not r.get("id")]
    if missing:
        raise ValueError(f"{manifest}: ok rows {missing} have no 'id'")
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{manifest}: repeated clip ids {sorted(i for i, n in Counter(ids).items() if n > 1)}")
    if not rows:
        raise ValueError(f"{manifest} lists no clips with status 'ok': nothing to annotate")
    costs, unit = _clip_costs(raw, rows)
    members = balance_groups(costs, groups)
    return {"version": _PLAN_VERSION, "raw": str(raw), "requested_groups": groups, "groups": members,
            "loads": [sum(costs[c] for c in m) for m in members], "cost_unit": unit, "num_clips": len(rows)}


def write_plan(plan: dict, path: str | os.PathLike) -> Path:
    """Write a plan as JSON, atomically (temp file + rename)."""
    return write_json(path, plan)


def read_plan(path: str | os.PathLike) -> dict:
    """Read and check a plan written by :func:`write_plan`."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"plan file {str(p)!r} does not exist")
    plan = json.loads(p.read_text())
    if plan.get("version") != _PLAN_VERSION or not isinstance(plan.get("groups"), list):
        raise ValueError(f"{str(p)!r} is not an annotate plan (version {_PLAN_VERSION} with 'groups')")
    return plan


def _read_part_manifest(part: Path) -> list[dict]:
    path = part / "manifest.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"shard folder {str(part)!r} has no manifest.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _iter_part_samples(part: Path) -> Iterator[ShardSample]:
    """The samples of one shard folder as ShardSample, bytes untouched (no video decode)."""
    shards = sorted(part.glob("shard-*.tar"))
    if not shards:
        return
    for s in wds.WebDataset([str(p) for p in shards], shardshuffle=False, empty_check=False):
        key = s["__key__"]
        missing = {"mp4", "poses.npz", "json"} - set(s)
        if missing:
            raise ValueError(f"{part}: shard sample {key!r} lacks {sorted(missing)}")
        with np.load(io.BytesIO(s["poses.npz"])) as z:
            poses = {k: z[k] for k in ("c2w", "intrinsics", "fps", "confidence")}
        yield ShardSample(id=key, mp4=s["mp4"], poses=poses, meta=json.loads(s["json"]))


def merge_shards(parts: Sequence[str | os.PathLike], out_dir: str | os.PathLike, shard_size: int = 16) -> dict:
    """Merge shard folders ``parts`` into one shard folder ``out_dir`` (replaced atomically).

    Returns dict(parts, kept, dropped, failed, shards (list[str] final paths)). Raises ValueError on a
    clip id present in two parts, or a part whose tars disagree with its manifest's kept clips.
    """
    if not parts:
        raise ValueError("merge needs at least one part")
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    out = Path(out_dir)
    paths = [Path(p) for p in parts]
    for p in paths:
        if not p.is_dir():
            raise NotADirectoryError(f"merge part {str(p)!r} is not a folder")
        if p.resolve() == out.resolve():
            raise ValueError(f"merge output {str(out)!r} is also one of its parts")
    manifests = {p: _read_part_manifest(p) for p in paths}
    seen: dict[str, Path] = {}
    for p, rows in manifests.items():
        for r in rows:
            if r["id"] in seen:
                raise ValueError(f"clip {r['id']!r} is in two parts: {seen[r['id']]} and {p}")
            seen[r["id"]] = p
    # Order parts by content, not by arrival: orchestrators do not promise the order of collected outputs.
    order = sorted((p for p in paths if manifests[p]), key=lambda p: min(r["id"] for r in manifests[p]))

    merged_rows: list[dict] = []
    kept_ids: list[str] = []

    def samples() -> Iterator[ShardSample]:
        for p in order:
            want = [r["id"] for r in manifests[p] if r.get("status") == "kept"]
            got = []
            for s in _iter_part_samples(p):
                got.append(s.id)
                yield s
            if got != want:
                raise ValueError(f"part {str(p)!r}: its shards hold clips {got} but its manifest keeps {want}")
            position = {cid: len(kept_ids) + i for i, cid in enumerate(got)}  # index in the merged stream
            kept_ids.extend(got)
            for r in manifests[p]:
                row = dict(r)
                if row.get("status") == "kept":
                    row["shard"] = position[row["id"]] // shard_size
                merged_rows.append(row)

    with atomic_dir(out) as tmp:
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700; the published folder is meant to be read by other steps
        written = write_shards(samples(), tmp, shard_size)
        write_manifest(merged_rows, tmp)
    count = {s: sum(r.get("status") == s for r in merged_rows) for s in ("kept", "dropped", "failed")}
    return {"parts": len(paths), **count, "shards": [str(out / p.name) for p in written]}
