"""Where things live: the image tag constant and the local data layout.

One constant ties every KFP component image to the package version (google-cloud-pipeline-components
habit): bumping ``pyproject.toml``'s version moves every image at once, so a compiled pipeline can never
mix images from two releases.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

PACKAGE_NAME = "sana-wm-stack"
# Registry prefix for the per-image builds in infra/; override at build *and* compile time.
IMAGE_REGISTRY = os.environ.get("SANA_WM_IMAGE_REGISTRY", "ghcr.io/sana-wm-stack")


def package_version() -> str:
    """Installed version of this package (``0.0.0+unknown`` when run from a bare checkout)."""
    try:
        return metadata.version(PACKAGE_NAME)
    except metadata.PackageNotFoundError:
        return "0.0.0+unknown"


PACKAGE_VERSION = package_version()
IMAGE_NAMES = ("pipelines", "annotate", "train", "serve")


def image_for(kind: str, version: str = PACKAGE_VERSION, registry: str = IMAGE_REGISTRY) -> str:
    """Image reference for one of ``IMAGE_NAMES`` (``<registry>/sana-wm-<kind>:<version>``)."""
    if kind not in IMAGE_NAMES:
        raise ValueError(f"unknown image kind {kind!r}; choose one of {IMAGE_NAMES}")
    return f"{registry}/sana-wm-{kind}:{version}"


def repo_root() -> Path:
    """The checkout root (folder holding ``pyproject.toml``), from this file's location."""
    return Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class DataLayout:
    """The local layout every runtime shares (DVC stage outs, KFP local publish, docs).

    All paths hang off ``root`` (the project root, where ``dvc.yaml`` lives).
    """

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def raw(self) -> Path:
        return self.data / "raw"

    @property
    def shards(self) -> Path:
        return self.data / "shards"

    @property
    def heldout_raw(self) -> Path:
        """Raw clips of the held-out split (never read by training)."""
        return self.data / "heldout_raw"

    @property
    def heldout(self) -> Path:
        """Annotated shards of the held-out split: the only data ``evaluate`` reads."""
        return self.data / "heldout"

    @property
    def vae(self) -> Path:
        """The fitted VAE folder (``components.vae``) that train encodes latents with."""
        return self.data / "models" / "vae"

    @property
    def vae_cache(self) -> Path:
        """Earlier VAE fits keyed by data + options, so a rerun of the pipeline does not refit."""
        return self.data / "cache" / "vae"

    @property
    def teacher(self) -> Path:
        return self.data / "models" / "teacher"

    @property
    def student(self) -> Path:
        return self.data / "models" / "student"

    @property
    def quantized(self) -> Path:
        return self.data / "models" / "quantized"

    @property
    def eval(self) -> Path:
        return self.data / "eval"

    @property
    def registry(self) -> Path:
        return self.data / "registry"

    @property
    def triton(self) -> Path:
        return self.data / "triton"

    @property
    def outputs(self) -> Path:
        return self.data / "outputs"

    @property
    def mlflow_db(self) -> Path:
        return self.data / "mlflow" / "mlflow.db"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.data / "mlflow" / "artifacts"

    @property
    def kfp_root(self) -> Path:
        return self.data / "kfp"

    @property
    def dvc_remote(self) -> Path:
        # Outside data/: `make clean-data` wipes data/, and a remote must survive that (it is the backup).
        return self.root / "dvc-remote"

    @property
    def mlflow_uri(self) -> str:
        return f"sqlite:///{self.mlflow_db}"
