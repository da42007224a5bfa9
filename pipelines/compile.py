"""Compile the cluster form of every DAG to versioned KFP IR YAML.

File names carry the package version and the git sha (``sana-wm-full-v0.1.0+gabc1234.yaml``) and so does
each pipeline's display name and description, so an uploaded pipeline always says what built it.
Compiling needs only kfp (plus the TrainJob builder); it never contacts a cluster.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from components.common.paths import PACKAGE_VERSION, repo_root
from model.atomic import atomic_path
from pipelines.dags import PIPELINE_NAMES, ClusterSettings, PipelineMeta, build_pipeline


def git_sha(root: Path | None = None) -> str:
    """Short sha of HEAD (``$SANA_WM_GIT_SHA`` wins; ``unknown`` outside a git checkout)."""
    env = os.environ.get("SANA_WM_GIT_SHA")
    if env:
        return env
    try:
        out = subprocess.run(["git", "rev-parse", "--short=8", "HEAD"], cwd=root or repo_root(),
                             capture_output=True, text=True, check=True)
        return out.stdout.strip() or "unknown"
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown"


def compile_pipeline(name: str, out_dir: str | os.PathLike, cluster: ClusterSettings,
                     meta: PipelineMeta) -> Path:
    """Compile pipeline ``name`` (cluster form) into ``out_dir``; returns the YAML path (atomic write)."""
    from kfp import compiler

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"sana-wm-{name.replace('_', '-')}-{meta.stamp}.yaml"
    with atomic_path(path) as tmp:
        compiler.Compiler().compile(build_pipeline(name, cluster, meta), package_path=str(tmp))
    return path


def compile_all(out_dir: str | os.PathLike = "build/pipelines", cluster: ClusterSettings | None = None,
                meta: PipelineMeta | None = None, names: tuple[str, ...] = PIPELINE_NAMES) -> list[Path]:
    """Compile every pipeline in ``names``; ``cluster`` defaults to ``pipelines.cluster.default_settings()``."""
    from pipelines.cluster import default_settings

    cluster = cluster or default_settings()
    meta = meta or PipelineMeta(version=PACKAGE_VERSION, git_sha=git_sha())
    return [compile_pipeline(n, out_dir, cluster, meta) for n in names]
