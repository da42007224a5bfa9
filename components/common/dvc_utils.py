"""Make a folder a DVC project and version pipeline outputs in it, through DVC's Python API.

``ensure_dvc_repo`` is idempotent: it initialises once (``--subdir`` when the folder sits inside a larger
git checkout, ``--no-scm`` when there is no git at all), turns analytics off and configures a default
local remote (``dvc-remote/`` at the project root, outside ``data/`` so ``make clean-data`` keeps it) unless a remote is already configured. Any other remote is plain
DVC configuration: ``dvc remote add -d <name> s3://...``.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

DEFAULT_REMOTE_NAME = "local"
ENV_REMOTE_URL = "SANA_WM_DVC_REMOTE"


def _git_toplevel(root: Path) -> Path | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"], cwd=root, capture_output=True, text=True, check=True
        )
    except (subprocess.CalledProcessError, FileNotFoundError):
        return None
    return Path(out.stdout.strip()).resolve()


def ensure_dvc_repo(root: str | os.PathLike, remote_url: str | None = None) -> Path:
    """Initialise DVC in ``root`` if needed and make sure a default remote exists; returns ``root``.

    ``remote_url`` (or ``$SANA_WM_DVC_REMOTE``) overrides the default ``<root>/dvc-remote``; it is
    only applied when no default remote is configured yet (an existing choice is respected).
    """
    from dvc.repo import Repo

    root = Path(root).resolve()
    if not root.is_dir():
        raise NotADirectoryError(f"DVC project root {root} is not a folder")
    if not (root / ".dvc").is_dir():
        top = _git_toplevel(root)
        if top is None:
            repo = Repo.init(str(root), no_scm=True)
        else:
            repo = Repo.init(str(root), subdir=top != root)
        repo.close()
    repo = Repo(str(root))
    try:
        with repo.config.edit() as conf:
            conf["core"]["analytics"] = False
            if not conf["core"].get("remote"):
                # A relative path (DVC reads it relative to the cwd and stores it relative to .dvc/), so the
                # committed config works in any clone of the repository.
                url = (remote_url or os.environ.get(ENV_REMOTE_URL)
                       or os.path.relpath(root.resolve() / "dvc-remote"))
                conf["remote"][DEFAULT_REMOTE_NAME] = {"url": url}
                conf["core"]["remote"] = DEFAULT_REMOTE_NAME
    finally:
        repo.close()
    return root


def commit_stages(root: str | os.PathLike, stages: list[str] | None = None) -> None:
    """Record the current outputs of ``dvc.yaml`` stages in ``dvc.lock`` and the cache (``dvc commit``).

    Used after a KFP local run that produced the same outputs with the same params, so ``dvc status``
    is clean and ``dvc repro`` has nothing to redo.
    """
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        if stages:
            for stage in stages:
                repo.commit(stage, force=True)
        else:
            repo.commit(None, force=True)


def push(root: str | os.PathLike) -> None:
    """``dvc push`` to the default remote."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        repo.push()


def status(root: str | os.PathLike) -> dict:
    """``dvc status`` as a dict; empty means every stage and output is up to date."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return repo.status()
