"""Run one step's ``main(argv)`` inside a KFP component process, with tracking wired through env vars.

KFP lightweight component bodies must be self-contained, so each imports this one function; the step's
logic stays in ``components.<step>.__main__`` (the same entry the CLI, DVC and torchrun use).
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Sequence

from components.common.tracking import ENV_EXPERIMENT, ENV_PARENT_RUN, ENV_TRACKING_URI
from model.atomic import write_json

ENV_TIMINGS_DIR = "SANA_WM_TIMINGS_DIR"


def _record(step: str, seconds: float, status: str) -> None:
    """Leave ``<step>.<pid>.json`` in ``$SANA_WM_TIMINGS_DIR`` for the local driver's summary table.

    One file per task: a step that fans out (annotate: plan, N groups, merge) leaves several, and the
    driver reports the time any of them ran (``pipelines.local.busy_seconds``), not the span from the first
    start to the last end, which would count the steps that ran between two of them.
    """
    out = os.environ.get(ENV_TIMINGS_DIR)
    if out:
        end = time.time()
        write_json(os.path.join(out, f"{step}.{os.getpid()}.{time.monotonic_ns()}.json"),
                   {"step": step, "seconds": seconds, "status": status, "start": end - seconds, "end": end})


def run_step(
    step: str,
    argv: Sequence[str],
    tracking_uri: str = "",
    parent_run_id: str = "",
    experiment: str = "",
) -> int:
    """Call ``components.<step>.__main__.main(argv)``; raise ``RuntimeError`` on a non-zero return.

    The tracking settings go into this process's environment (the component process is dedicated to
    the step), which is where ``components.common.tracking.get_logger`` reads them.
    """
    for var, value in ((ENV_TRACKING_URI, tracking_uri), (ENV_PARENT_RUN, parent_run_id),
                       (ENV_EXPERIMENT, experiment)):
        if value:
            os.environ[var] = value
    argv = [str(a) for a in argv]
    t0 = time.perf_counter()
    try:
        rc = importlib.import_module(f"components.{step}.__main__").main(argv)
    except BaseException:
        _record(step, time.perf_counter() - t0, "FAILED")
        raise
    _record(step, time.perf_counter() - t0, "SUCCESS" if rc in (0, None) else "FAILED")
    if rc not in (0, None):
        raise RuntimeError(f"step {step!r} failed with exit code {rc}: python -m components.{step} {' '.join(argv)}")
    return 0
