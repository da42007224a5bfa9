"""Dataset lineage: the DVC md5 of a data folder as the MLflow dataset digest.

The digest is computed with dvc-data's own hashing (the same ``<md5>.dir`` value ``dvc add`` /
``dvc.lock`` record), so an MLflow run's input can be matched to a DVC revision by string equality.
"""

from __future__ import annotations

import os
from pathlib import Path

from components.common.tracking import Logger


def dvc_md5(path: str | os.PathLike) -> str:
    """DVC md5 of a file (``<md5>``) or folder (``<md5>.dir``), exactly as ``dvc add`` writes it."""
    from dvc.fs import LocalFileSystem
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db import HashFileDB
    from dvc_objects.fs.memory import MemoryFileSystem

    path = Path(path).resolve()
    if not path.exists():
        raise FileNotFoundError(f"cannot hash {path} for lineage: it does not exist")
    # dry_run: hash only; the in-memory object DB keeps the cache untouched.
    odb = HashFileDB(MemoryFileSystem(global_store=False), "/odb")
    _, _, obj = build(odb, str(path), LocalFileSystem(), "md5", dry_run=True)
    return obj.hash_info.value


def log_dataset(
    logger: Logger, path: str | os.PathLike, name: str | None = None, context: str = "training"
) -> str:
    """Record folder ``path`` as an input of ``logger``'s run; returns the digest.

    ``source`` is the absolute path; ``name`` defaults to the folder name (``shards``, ``raw``...).
    """
    path = Path(path).resolve()
    digest = dvc_md5(path)
    logger.log_input(name or path.name, digest, str(path), context=context)
    return digest
