"""A quiet console for ``kfp.local``: each task's streamed output goes to its own log file, the terminal
gets one table row per task (plus the steps' own progress lines).

``kfp.local`` prints every task's executor input/output JSON and the full subprocess output to stdout.
``quiet_kfp(log_dir)`` (a context manager around the pipeline call) instead:
  * writes the subprocess output and kfp's log records of task ``name`` to ``<log_dir>/<name>.log``
    (a re-run task, e.g. ``annotate-group`` in a ParallelFor, gets ``name-2.log``, ...);
  * prints ``task  status  wall s  log`` as each task ends, and forwards lines that start with
    ``PROGRESS_PREFIX`` (the periodic progress lines ``components.train`` / ``components.vae`` print when
    their output is not a terminal), so a long step is visibly alive.
Everything is restored on exit. Only this process's printing changes; the tasks run exactly as before.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

PROGRESS_PREFIX = "[progress]"
_START = re.compile(r"Executing task '?([^'\s]+)'?")
_END = re.compile(r"Task '?([^'\s]+)'? finished with status (\S+)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class _TaskLogs:
    """Routes kfp's records and subprocess lines to per-task files; prints the table.

    Per thread: kfp.local runs a ParallelFor's tasks concurrently (one thread each), and a task's log
    records and subprocess lines arrive on the thread that runs it."""

    def __init__(self, log_dir: Path, out: TextIO) -> None:
        self.dir, self.out = log_dir, out
        self.dir.mkdir(parents=True, exist_ok=True)
        self.local = threading.local()
        self.lock = threading.Lock()
        self.seen: dict[str, int] = {}
        self.rows: list[tuple[str, str, float, str]] = []
        self.files: list[TextIO] = []
        self.out.write(f"{'task':<22} {'status':<8} {'wall s':>8}  log\n{'-' * 78}\n")
        self.out.flush()

    @property
    def current(self) -> str | None:
        return getattr(self.local, "name", None)

    def _open(self, task: str) -> None:
        with self.lock:
            n = self.seen.get(task, 0) + 1
            self.seen[task] = n
            name = task if n == 1 else f"{task}-{n}"
            f = open(self.dir / f"{name}.log", "w", encoding="utf-8")
            self.files.append(f)
        old = getattr(self.local, "file", None)
        if old is not None:
            old.close()
        self.local.name, self.local.file, self.local.started = name, f, time.perf_counter()

    def close_file(self) -> None:
        with self.lock:
            for f in self.files:
                if not f.closed:
                    f.close()

    def write(self, text: str) -> None:
        text = _ANSI.sub("", text)
        f = getattr(self.local, "file", None)
        if f is not None and not f.closed:
            f.write(text if text.endswith("\n") else text + "\n")
            f.flush()

    def record(self, msg: str) -> None:
        """A kfp log record: detect task start/end, keep the text in the task's log."""
        msg = _ANSI.sub("", msg)
        m = _START.search(msg)
        if m:
            self._open(m.group(1))
        self.write(msg)
        m = _END.search(msg)
        if m and self.current is not None:
            status = m.group(2).rstrip(".")
            secs = time.perf_counter() - self.local.started
            log = str(self.dir / f"{self.current}.log")
            with self.lock:
                self.rows.append((self.current, status, secs, log))
                self.out.write(f"{self.current:<22} {status:<8} {secs:8.1f}  {log}\n")
                self.out.flush()

    def line(self, line: str) -> None:
        """One line of a task's subprocess output."""
        self.write(line)
        clean = _ANSI.sub("", line).strip()
        if clean.startswith(PROGRESS_PREFIX):
            with self.lock:
                self.out.write(f"  {self.current or '?'}: {clean[len(PROGRESS_PREFIX):].strip()}\n")
                self.out.flush()


class _Filter(logging.Filter):
    def __init__(self, logs: _TaskLogs) -> None:
        super().__init__()
        self.logs = logs

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            self.logs.record(record.getMessage())
        except Exception:  # never let logging break the run
            return True
        return False  # swallowed: it is in the task's log file


@contextmanager
def quiet_kfp(log_dir: Path, out: TextIO | None = None) -> Iterator[_TaskLogs]:
    """Route ``kfp.local``'s output to ``log_dir/<task>.log`` and print a step table (module docstring)."""
    import subprocess
    import warnings

    from kfp.local import logging_utils
    from kfp.local import subprocess_task_handler as sth

    logs = _TaskLogs(Path(log_dir), out or sys.stdout)
    original = sth.run_local_subprocess
    original_hline = logging_utils.print_horizontal_line

    def run_local_subprocess(full_command, env_vars=None) -> int:
        import os

        env = {**os.environ, **env_vars} if env_vars else None
        with subprocess.Popen(full_command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              bufsize=1, env=env) as proc:
            assert proc.stdout is not None
            for line in iter(proc.stdout.readline, ""):
                logs.line(line.rstrip("\n"))
            return proc.wait()

    flt = _Filter(logs)
    root = logging.getLogger()
    sth.run_local_subprocess = run_local_subprocess
    logging_utils.print_horizontal_line = lambda: None  # separators between the (now hidden) dumps
    root.addFilter(flt)
    try:
        with warnings.catch_warnings():
            # kfp.local warns per task that display names and non-Python base images are ignored locally
            warnings.filterwarnings("ignore", module=r"kfp\.local.*")
            yield logs
    finally:
        root.removeFilter(flt)
        sth.run_local_subprocess = original
        logging_utils.print_horizontal_line = original_hline
        logs.close_file()
