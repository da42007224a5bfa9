"""The local runner's quiet console: per-task log files, a step table, forwarded progress lines."""

from __future__ import annotations

import io
import logging
import sys

from pipelines.console import quiet_kfp


def test_task_output_goes_to_its_log_and_the_table_gets_one_row(tmp_path):
    from kfp.local import logging_utils
    from kfp.local import subprocess_task_handler as sth

    original = sth.run_local_subprocess
    out = io.StringIO()
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)
    try:
        with quiet_kfp(tmp_path / "logs", out=out):
            name = logging_utils.format_task_name("train")  # coloured, as kfp.local logs it
            logging.info(f"Executing task {name}")
            rc = sth.run_local_subprocess([sys.executable, "-c",
                                           "print('{\"executorInput\": 1}'); print('[progress] train step 5/10 loss 0.5')"])
            logging.info(f"Task {name} finished with status {logging_utils.format_status(logging_utils.status.Status.SUCCESS)}")
            logging.info(f"Executing task {name}")  # a second task of the same name gets its own file
            logging.info(f"Task {name} finished with status FAILURE")
    finally:
        root.setLevel(level)
    assert rc == 0
    assert sth.run_local_subprocess is original  # restored
    text = out.getvalue()
    assert "executorInput" not in text  # the JSON dumps stay in the log file
    assert "train: train step 5/10 loss 0.5" in text
    rows = [line for line in text.splitlines() if line.startswith("train")]
    assert rows[0].split()[:2] == ["train", "SUCCESS"] and rows[-1].split()[:2] == ["train-2", "FAILURE"]
    log = (tmp_path / "logs" / "train.log").read_text()
    assert "executorInput" in log and "[progress]" in log and "\x1b[" not in log
    assert (tmp_path / "logs" / "train-2.log").is_file()


def test_concurrent_tasks_keep_their_own_logs(tmp_path):
    """kfp.local runs a ParallelFor's tasks in threads at once: each keeps its own name and file."""
    import threading

    out = io.StringIO()
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)
    barrier = threading.Barrier(2)

    def task(i: int) -> None:
        logging.info(f"Executing task 'group-{i}'")
        barrier.wait()  # both tasks are running now
        logging.info(f"output of {i}")
        barrier.wait()
        logging.info(f"Task 'group-{i}' finished with status SUCCESS")

    try:
        with quiet_kfp(tmp_path / "logs", out=out):
            threads = [threading.Thread(target=task, args=(i,)) for i in (1, 2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    finally:
        root.setLevel(level)
    rows = sorted(line.split()[0] for line in out.getvalue().splitlines() if line.startswith("group"))
    assert rows == ["group-1", "group-2"]
    for i in (1, 2):
        log = (tmp_path / "logs" / f"group-{i}.log").read_text()
        assert f"output of {i}" in log and f"output of {3 - i}" not in log
