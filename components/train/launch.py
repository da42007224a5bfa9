"""Launch the DeepSpeed path under ``torchrun`` (one process per GPU, or 2 gloo processes on CPU).

``python -m components.train --deepspeed ...`` run outside a launcher re-executes itself through
``torch.distributed.run`` with ``--nproc_per_node``; inside the launched processes ``RANK`` is set and
the same ``main`` trains. On the cluster the Trainer v2 runtime (mpirun) is the launcher instead.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path


def under_launcher() -> bool:
    """True inside torchrun/mpirun workers (their rank variables are set)."""
    return "RANK" in os.environ or "OMPI_COMM_WORLD_RANK" in os.environ


def free_port() -> int:
    """An unused TCP port on 127.0.0.1 for the rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_command(argv: list[str], nproc: int, port: int) -> list[str]:
    """The torchrun command line that runs ``python -m components.train <argv>`` on ``nproc`` local ranks."""
    if nproc < 1:
        raise ValueError(f"nproc must be >= 1, got {nproc}")
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(nproc),
            "--master_addr", "127.0.0.1", "--master_port", str(port), "-m", "components.train", *argv]


def launch(argv: list[str], nproc: int, extensions_dir: str | None = None) -> int:
    """Run the training under torchrun; returns its exit code.

    ``TORCH_EXTENSIONS_DIR`` is pinned so DeepSpeed's JIT-compiled comm op (~30 s the first time) is
    built once and reused by later runs.
    """
    env = dict(os.environ)
    env.setdefault("TORCH_EXTENSIONS_DIR", extensions_dir or str(Path.home() / ".cache" / "torch_extensions"))
    env.setdefault("OMP_NUM_THREADS", "1")  # 2 ranks on 2 cores: no oversubscription
    repo = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return subprocess.run(torchrun_command(argv, nproc, free_port()), env=env, cwd=repo, check=False).returncode
