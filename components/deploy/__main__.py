"""Serve a registered model version with a real Triton server, smoke-test it, promote it to production.

    python -m components.deploy --model-uri models:/NAME@candidate --repo DIR --outputs DIR
        [--device auto] [--instance-count 1] [--max-sessions-per-instance 4]
        [--keep-serving] [--port 0] [--alias production] [--tracking-uri URI] [--parent-run-id ID]

Steps: resolve the URI to one version -> download it -> ``serving.triton_repo.build_repository`` (the
repository points at ``<outputs>/bundle``, the exact registered bundle) -> ``serving.server.TritonServer``
-> ``serving.client.request_video`` on the version's example request (``example/image.png`` +
``trajectory.npz``; a forward walk from a flat grey frame when the version has none) -> on success set the
alias, write ``video.mp4``, ``contact_sheet.png`` and ``smoke.json`` -> stop the server unless
``--keep-serving`` (then it runs until Ctrl-C).

Placement and capacity come from ``params.yaml`` (``deploy.*``) unless given: the device (a quantized
bundle is served where it was built; a CUDA-built one is refused on a host without CUDA before any server
starts), instances per model and live sessions per session-model instance.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np

from components.common.defaults import default
from components.common.tracking import add_tracking_args, logger_from_args
from model.atomic import atomic_dir
from model.cli import HelpFormatter

_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[\w-]+)|/(?P<version>\d+))$")


def resolve_version(client, model_uri: str) -> tuple[str, str]:
    """``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` -> (name, version); clear error otherwise."""
    m = _URI.match(model_uri)
    if not m:
        raise ValueError(f"model URI {model_uri!r} must look like models:/NAME@ALIAS or models:/NAME/VERSION")
    name = m["name"]
    if m["alias"]:
        try:
            return name, str(client.get_model_version_by_alias(name, m["alias"]).version)
        except Exception as e:
            raise ValueError(f"no version of {name!r} has alias {m['alias']!r} at {client.tracking_uri}: {e}") from e
    return name, m["version"]


def pyfunc_artifact(model_dir: Path, key: str) -> Path | None:
    """Local folder of pyfunc artifact ``key`` in a downloaded model (paths are recorded in MLmodel)."""
    from mlflow.models import Model

    arts = Model.load(str(model_dir)).flavors.get("python_function", {}).get("artifacts", {})
    if key not in arts:
        return None
    path = model_dir / arts[key]["path"]
    return path if path.exists() else None


def smoke_request(example: Path | None, config: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(image uint8 (H,W,3), c2w (N,4,4), K (N,3,3), fps) for the smoke test."""
    from model.trajectory import default_intrinsics, load_trajectory, trajectory_from_actions

    if example is not None and (example / "image.png").is_file() and (example / "trajectory.npz").is_file():
        from PIL import Image

        traj = load_trajectory(example / "trajectory.npz")
        image = np.asarray(Image.open(example / "image.png").convert("RGB"), dtype=np.uint8)
        return image, traj.c2w, traj.intrinsics, float(traj.fps)
    h, w, fps = config["video_height"], config["video_width"], float(config["fps"])
    ts = config["vae"]["temporal_stride"]
    n = 1 + ts * 2  # two latent frames after the first: short, but exercises the whole path
    traj = trajectory_from_actions("forward 1.0 1s", fps, default_intrinsics(h, w), num_frames=n)
    image = np.full((h, w, 3), 127, np.uint8)
    return image, traj.c2w, traj.intrinsics, fps


def deploy(model_uri: str, repo: Path, outputs: Path, logger, alias: str = "production",
           keep_serving: bool = False, port: int = 0, seed: int = 0, device: str | None = None,
           instance_count: int = 1, max_sessions: int = 4) -> dict:
    """Run the whole deploy (module docstring); returns the smoke summary written to ``smoke.json``.

    ``device``/``instance_count``/``max_sessions`` (per session instance) go to ``build_repository``."""
    import mlflow
    from mlflow import MlflowClient

    from model.video_io import write_video
    from serving.client import contact_sheet, request_video
    from serving.server import TritonServer
    from serving.triton_repo import build_repository

    if logger.run_id is None:
        raise ValueError("deploy needs an MLflow registry (set MLFLOW_TRACKING_URI or --tracking-uri)")
    client = MlflowClient(logger.tracking_uri)
    name, version = resolve_version(client, model_uri)
    outputs = outputs.resolve()
    with atomic_dir(outputs) as tmp:
        # The version's own artifact location: ``models:/`` URIs would consult the global registry URI.
        source = client.get_model_version_download_uri(name, version)
        model_dir = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(tmp / ".download")))
        bundle_src = pyfunc_artifact(model_dir, "bundle")
        if bundle_src is None or not (bundle_src / "config.json").is_file():
            raise FileNotFoundError(f"models:/{name}/{version} holds no model bundle (pyfunc artifact 'bundle')")
        shutil.move(str(bundle_src), tmp / "bundle")
        example = pyfunc_artifact(model_dir, "example")
        image, c2w, K, fps = smoke_request(example,
                                           json.loads((tmp / "bundle" / "config.json").read_text()))
        shutil.rmtree(tmp / ".download")
    # The repository names the bundle by absolute path, so build it after the bundle reached its place.
    build_repository(outputs / "bundle", repo, device=device, instance_count=instance_count,
                     max_sessions=max_sessions)
    server = TritonServer(repo, http_port=port, log_file=outputs / "triton.log").start()
    try:
        t0 = time.perf_counter()
        video = request_video(server.http_url, image, c2w, K, seed=seed)
        latency = time.perf_counter() - t0
        if video.ndim != 4 or video.shape[0] != c2w.shape[0] or video.shape[1:3] != image.shape[:2]:
            raise RuntimeError(f"smoke test: expected video ({c2w.shape[0]}, {image.shape[0]}, {image.shape[1]}, 3), "
                               f"got {video.shape}")
        write_video(video, outputs / "video.mp4", fps)
        contact_sheet(video, outputs / "contact_sheet.png")
        client.set_registered_model_alias(name, alias, version)
        smoke = {"name": name, "version": version, "alias": alias, "frames": int(video.shape[0]),
                 "height": int(video.shape[1]), "width": int(video.shape[2]), "latency_s": latency,
                 "url": server.http_url, "repo": str(repo.resolve()), "video": str(outputs / "video.mp4")}
        (outputs / "smoke.json").write_text(json.dumps(smoke, indent=2, sort_keys=True))
        logger.log_metrics({"smoke_latency_s": latency, "smoke_frames": video.shape[0]})
        logger.set_tags({"deployed_model": name, "deployed_version": version, "alias": alias})
        logger.log_artifact(outputs / "video.mp4", "outputs")
        logger.log_artifact(outputs / "contact_sheet.png", "outputs")
        if keep_serving:
            print(f"serving models:/{name}/{version} at http://{server.http_url} (Ctrl-C stops)", flush=True)
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        server.stop()
    return smoke


def main(argv: list[str] | None = None) -> int:
    """CLI entry (see the module docstring)."""
    ap = argparse.ArgumentParser(prog="python -m components.deploy", description=__doc__,
                                 formatter_class=HelpFormatter)
    ap.add_argument("--model-uri", required=True, help="models:/NAME@ALIAS or models:/NAME/VERSION")
    ap.add_argument("--repo", required=True, type=Path, help="Triton model repository to (re)build")
    ap.add_argument("--outputs", type=Path, default=Path("data/outputs"),
                    help="bundle/, video.mp4, contact_sheet.png, smoke.json")
    ap.add_argument("--alias", default="production", help="alias set after a successful smoke test")
    ap.add_argument("--keep-serving", action="store_true", help="leave Triton running after the smoke request")
    ap.add_argument("--port", type=int, default=0, help="HTTP port on 127.0.0.1 (0 = a free one)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the smoke request")
    ap.add_argument("--device", default=default("deploy.device"),
                    help="auto | cpu | cuda[:i] (a quantized bundle must be served where it was built)")
    ap.add_argument("--instance-count", type=int, default=default("deploy.instance_count"),
                    help="Triton instances per model (each loads the bundle)")
    ap.add_argument("--max-sessions-per-instance", type=int, default=default("deploy.max_sessions_per_instance"),
                    help="live sessions one session-model instance holds (the server: instances x this)")
    add_tracking_args(ap)
    args = ap.parse_args(argv)
    if not args.tracking_uri:
        import os

        from components.common.tracking import ENV_TRACKING_URI, default_tracking_uri

        args.tracking_uri = os.environ.get(ENV_TRACKING_URI) or default_tracking_uri()
    with logger_from_args(args, "deploy") as logger:
        smoke = deploy(args.model_uri, args.repo, args.outputs, logger, args.alias, args.keep_serving,
                       args.port, args.seed, device=args.device, instance_count=args.instance_count,
                       max_sessions=args.max_sessions_per_instance)
    print(json.dumps(smoke, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    from model.cli import run

    sys.exit(run(main))
