"""The end-of-run table times each step by the time its tasks ran, not by the span from first to last task."""

from __future__ import annotations

import json

import pytest

from pipelines.local import _read_timings, busy_seconds


def test_busy_seconds_counts_gaps_out_and_overlaps_once():
    assert busy_seconds([(0.0, 10.0)]) == 10.0
    # the held-out annotate task runs long after the training one: the gap is other steps' time
    assert busy_seconds([(0.0, 10.0), (500.0, 511.0)]) == 21.0
    assert busy_seconds([(0.0, 10.0), (5.0, 12.0), (11.0, 11.5)]) == 12.0  # overlapping tasks count once
    assert busy_seconds([(5.0, 12.0), (0.0, 10.0)]) == 12.0  # order does not matter
    assert busy_seconds([]) == 0.0


def test_step_time_in_the_table_is_the_tasks_time(tmp_path):
    for name, (start, end) in {"annotate.plan": (0.0, 2.5), "annotate.group": (2.5, 9.5),
                               "annotate.heldout": (480.0, 491.5), "train.0": (20.0, 85.0)}.items():
        (tmp_path / f"{name}.json").write_text(json.dumps({"start": start, "end": end, "status": "SUCCESS"}))
    got = _read_timings(tmp_path)
    assert got["annotate"]["seconds"] == pytest.approx(21.0)
    assert got["annotate"]["tasks"] == 3
    assert got["train"]["seconds"] == pytest.approx(65.0)
