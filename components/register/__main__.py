"""Register a bundle as an MLflow model version; alias it ``candidate`` once its evaluation is attached.

    python -m components.register --model DIR --metrics FILE --name NAME [--out registration.json]
        [--example DIR] [--alias candidate] [--tracking-uri URI] [--parent-run-id ID]

The version is a pyfunc "model from code" (``pyfunc_model.py``) whose artifacts are the bundle folder and,
when given, an example request (``image.png`` + ``trajectory.npz``, written by evaluate) that deploy uses
for its smoke test. The logged model carries a tensor signature (image / c2w / intrinsics / seed -> video)
and that example as its input example; the evaluation metrics are metrics of the LoggedModel (and of this
run); version tags carry the bundle's DVC md5 and link the train run and the dataset it trained on (found
as the sibling ``train`` run under the same pipeline run), so model <-> train run <-> data revision. Without ``--tracking-uri`` /
``$MLFLOW_TRACKING_URI`` the embedded SQLite store under ``data/mlflow`` is used.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from components.common.lineage import dvc_md5
from components.common.paths import PACKAGE_VERSION
from components.common.tracking import add_tracking_args, logger_from_args
from model.atomic import write_json
from model.cli import HelpFormatter

PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")


def read_metrics(path: Path) -> dict[str, float]:
    """Flat ``{name: number}`` metrics from evaluate's ``metrics.json``; rejects non-finite values."""
    if not path.is_file():
        raise FileNotFoundError(f"metrics file {path} does not exist (run evaluate first)")
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{path}: expected a non-empty JSON object of metrics")
    bad = {k: v for k, v in data.items() if not isinstance(v, (int, float)) or not math.isfinite(v)}
    if bad:
        raise ValueError(f"{path}: metrics must be finite numbers, got {bad}")
    return {k: float(v) for k, v in data.items()}


def signature(height: int, width: int):
    """The pyfunc's tensor signature: a request (dict of arrays) -> uint8 video (N,H,W,3)."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    inputs = Schema([
        TensorSpec(np.dtype("uint8"), (height, width, 3), "image"),
        TensorSpec(np.dtype("float32"), (-1, 4, 4), "c2w"),
        TensorSpec(np.dtype("float32"), (-1, 3, 3), "intrinsics"),
        TensorSpec(np.dtype("int64"), (1,), "seed"),
    ])
    return ModelSignature(inputs=inputs, outputs=Schema([TensorSpec(np.dtype("uint8"), (-1, height, width, 3),
                                                                    "video")]))


def input_example(example: Path | None) -> dict | None:
    """The example request folder (image.png + trajectory.npz) as the signature's dict of arrays."""
    if example is None or not (example / "image.png").is_file() or not (example / "trajectory.npz").is_file():
        return None
    import numpy as np
    from PIL import Image

    traj = np.load(example / "trajectory.npz")
    return {"image": np.asarray(Image.open(example / "image.png").convert("RGB"), dtype=np.uint8),
            "c2w": traj["c2w"].astype(np.float32), "intrinsics": traj["intrinsics"].astype(np.float32),
            "seed": np.zeros(1, dtype=np.int64)}


def train_lineage(client, run_id: str) -> dict[str, str]:
    """``{train_run_id, dataset_digest}`` of the ``train`` run that shares this run's parent (if any)."""
    from components.common.tracking import PARENT_TAG

    run = client.get_run(run_id)
    parent = run.data.tags.get(PARENT_TAG)
    if not parent:
        return {}
    found = client.search_runs([run.info.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent}' "
                               f"and attributes.run_name = 'train'", order_by=["attributes.start_time DESC"],
                               max_results=1)
    if not found:
        return {}
    out = {"train_run_id": found[0].info.run_id}
    inputs = found[0].inputs.dataset_inputs if found[0].inputs else []
    if inputs:
        out["dataset_digest"] = inputs[0].dataset.digest
    return out


def register(model_dir: Path, metrics: dict[str, float], name: str, logger, example: Path | None = None,
             alias: str = "candidate") -> dict:
    """Log the bundle as a pyfunc model in ``logger``'s run, register it, tag it, set ``alias``.

    Returns ``{name, version, run_id, model_uri, alias_uri, alias, bundle_md5}``.
    """
    import mlflow
    from mlflow import MlflowClient

    for part in ("config.json", "metadata.json"):
        if not (model_dir / part).is_file():
            raise FileNotFoundError(f"{model_dir} is not a model bundle: {part} is missing")
    if logger.run_id is None:
        raise ValueError("register needs an MLflow run (set MLFLOW_TRACKING_URI or --tracking-uri)")
    uri = logger.tracking_uri
    client = MlflowClient(uri)
    digest = dvc_md5(model_dir)
    artifacts = {"bundle": str(model_dir)}
    if example is not None:
        artifacts["example"] = str(example)
    cfg = json.loads((model_dir / "config.json").read_text())
    sig = signature(int(cfg["video_height"]), int(cfg["video_width"]))
    # log_model works on the fluent "active run"; scope it to this run and this store.
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(run_id=logger.run_id):
        info = mlflow.pyfunc.log_model(
            name="model", python_model=str(PYFUNC_CODE), artifacts=artifacts, signature=sig,
            input_example=input_example(example),
            pip_requirements=[f"sana-wm-stack=={PACKAGE_VERSION}"],  # skip slow requirement inference
            registered_model_name=name, await_registration_for=60,
        )
        # evaluation metrics belong to the model itself (the LoggedModel), not only to this run
        mlflow.log_metrics(metrics, model_id=info.model_id)
    version = str(info.registered_model_version)
    client.set_model_version_tag(name, version, "bundle_md5", digest)
    for k, v in train_lineage(client, logger.run_id).items():
        client.set_model_version_tag(name, version, k, v)
    client.set_model_version_tag(name, version, "package_version", PACKAGE_VERSION)
    client.set_registered_model_alias(name, alias, version)
    logger.log_metrics(metrics)
    logger.set_tags({"registered_model": name, "registered_version": version})
    client.set_model_version_tag(name, version, "logged_model_id", info.model_id)
    return {"name": name, "version": version, "run_id": logger.run_id, "logged_model_id": info.model_id,
            "model_uri": f"models:/{name}/{version}",
            "alias_uri": f"models:/{name}@{alias}", "alias": alias, "bundle_md5": digest}


def main(argv: list[str] | None = None) -> int:
    """CLI entry (see the module docstring)."""
    ap = argparse.ArgumentParser(prog="python -m components.register", description=__doc__,
                                 formatter_class=HelpFormatter)
    ap.add_argument("--model", required=True, type=Path, help="model bundle folder")
    ap.add_argument("--metrics", required=True, type=Path, help="evaluate's metrics.json")
    ap.add_argument("--name", required=True, help="registered model name")
    ap.add_argument("--example", type=Path, default=None,
                    help="example request folder (default: smoke_input/ beside --metrics if present)")
    ap.add_argument("--alias", default="candidate", help="registry alias set on the new version")
    ap.add_argument("--out", type=Path, default=None, help="write the registration JSON here")
    add_tracking_args(ap)
    args = ap.parse_args(argv)
    metrics = read_metrics(args.metrics)
    example = args.example
    if example is None and (args.metrics.parent / "smoke_input").is_dir():
        example = args.metrics.parent / "smoke_input"
    if not args.tracking_uri:
        import os

        from components.common.tracking import ENV_TRACKING_URI, default_tracking_uri

        args.tracking_uri = os.environ.get(ENV_TRACKING_URI) or default_tracking_uri()
    with logger_from_args(args, "register") as logger:
        reg = register(args.model.resolve(), metrics, args.name, logger, example, args.alias)
    if args.out:
        write_json(args.out, reg)
    print(json.dumps(reg, indent=2))
    return 0


if __name__ == "__main__":
    from model.cli import run

    sys.exit(run(main))
