"""Write-then-rename helpers, the stack's one way to write outputs: a reader (DVC, a KFP launcher, another
step, Triton) never sees half a file or half a folder. Below every layer (stdlib only), so the model,
serving, the steps and the pipeline compiler all use it.

  * ``write_text`` / ``write_bytes`` / ``write_json``  small outputs, fsynced
  * ``atomic_path(path)``   a temp file name for libraries that write by name (numpy, torch, PIL, PyAV)
  * ``atomic_dir(path)``    a temp folder that replaces ``path`` on success
  * ``copy_tree`` / ``move_tree``  folder swaps
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Atomically write ``data`` to ``path`` (temp file in the same folder, fsync, rename, mode 0644)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; outputs are meant to be read by others
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically write ``text`` (UTF-8) to ``path``; see ``write_bytes``."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write ``obj`` as indented, key-sorted JSON (stable diffs for DVC metrics)."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp file name beside ``path`` (same suffix, so format-sniffing writers behave); on success
    it is renamed onto ``path`` (mode 0644), on error removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, overwrite: bool = True, stage_in: str | os.PathLike | None = None,
               ) -> Iterator[Path]:
    """Yield a temp folder; on success it replaces ``path``, on error it is removed.

    Staged beside ``path`` (so the rename never crosses filesystems), or in ``stage_in`` (same filesystem)
    when a watcher must not see it next to ``path`` (Triton scans its repository's folders).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not overwrite:
        raise FileExistsError(f"output folder {path} already exists (overwrite=False)")
    stage = Path(stage_in) if stage_in is not None else path.parent
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=stage))
    try:
        yield tmp
        if path.exists():
            old = stage / f".{path.name}.old-{os.getpid()}-{tmp.name}"
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def copy_tree(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Atomically replace folder (or file) ``dst`` with a copy of ``src``."""
    src, dst = Path(src), Path(dst)
    if not src.exists():
        raise FileNotFoundError(f"cannot copy {src}: it does not exist")
    if src.is_file():
        dst.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", dir=dst.parent)
        os.close(fd)
        shutil.copy2(src, tmp)
        os.replace(tmp, dst)
        return dst
    with atomic_dir(dst) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
    return dst


def move_tree(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Move file/folder ``src`` onto ``dst``, replacing it; readers see the old or the new, never a mix.

    Both must be on one filesystem (a rename); the old ``dst`` is removed after the swap.
    """
    src, dst = Path(src), Path(dst)
    if not src.exists():
        raise FileNotFoundError(f"cannot move {src}: it does not exist")
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not dst.exists():
        os.replace(src, dst)
        return dst
    old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
    os.replace(dst, old)
    os.replace(src, dst)
    if old.is_dir():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink(missing_ok=True)
    return dst
