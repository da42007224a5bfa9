#!/usr/bin/env bash
# Smoke-test the built serve image: its own Python writes a tiny random-weight bundle and a Triton
# repository, `python -m serving.server` starts tritonserver inside the image (buildah run, chroot
# isolation: the host's network, so loopback is shared), and the host's `python -m serving.client`
# sends one request and writes the mp4. Prints the wall seconds of each phase. Not run in CI (the image
# build takes minutes); run after `make images`.
# Usage: infra/smoke_serve_image.sh [IMAGE]   (default: the serve image of this package version)
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)
IMAGE=${1:-${SANA_WM_IMAGE_REGISTRY:-ghcr.io/sana-wm-stack}/sana-wm-serve:$VERSION}
PY=${PYTHON:-.venv/bin/python}
PORT=${SMOKE_PORT:-18000}
WORK=$(mktemp -d /tmp/sana-wm-smoke.XXXXXX)
chmod 777 "$WORK"   # the image runs as uid 10001
CTR=$(buildah from "$IMAGE")
cleanup() { [ -n "${RUN_PID:-}" ] && kill "$RUN_PID" 2>/dev/null; wait 2>/dev/null; buildah rm "$CTR" >/dev/null; }
trap cleanup EXIT
t0=$(date +%s.%N)
buildah run --isolation chroot --volume "$WORK:/smoke" "$CTR" -- python - <<'PYEOF'
import numpy as np
from PIL import Image
from model.config import get_preset
from model.pipeline import WorldModelPipeline
from model.trajectory import default_intrinsics, save_trajectory, trajectory_from_actions
from serving.triton_repo import build_repository

cfg = get_preset("tiny")
WorldModelPipeline.from_config(cfg).save_pretrained("/smoke/bundle", kind="teacher")
h, w = cfg.video_height, cfg.video_width
n = 1 + cfg.vae.temporal_stride * 2
save_trajectory(trajectory_from_actions("forward 1.0 1s", 8.0, default_intrinsics(h, w), num_frames=n),
                "/smoke/trajectory.npz")
Image.fromarray(np.full((h, w, 3), 127, np.uint8)).save("/smoke/image.png")
build_repository("/smoke/bundle", "/smoke/repo", project_root="")  # "" = the image's installed packages
print("bundle + repository written")
PYEOF
t1=$(date +%s.%N)
buildah run --isolation chroot --volume "$WORK:/smoke" "$CTR" -- \
  python -m serving.server --repo /smoke/repo --port "$PORT" --log-file /smoke/triton.log > "$WORK/server.out" 2>&1 &
RUN_PID=$!
for _ in $(seq 1 240); do
  grep -q "tritonserver ready" "$WORK/server.out" 2>/dev/null && break
  kill -0 "$RUN_PID" 2>/dev/null || { cat "$WORK/server.out"; exit 1; }
  sleep 0.5
done
grep -q "tritonserver ready" "$WORK/server.out" || { echo "not ready"; tail -40 "$WORK/triton.log"; exit 1; }
t2=$(date +%s.%N)
"$PY" -m serving.client --url "127.0.0.1:$PORT" --image "$WORK/image.png" --trajectory "$WORK/trajectory.npz" \
  -o "$WORK/video.mp4"
t3=$(date +%s.%N)
python3 -c "import sys; a, b, c, d = map(float, sys.argv[1:5]); print(f'smoke ok: {sys.argv[5]}\\n  bundle+repo in '
  f'image {b - a:.1f} s | server ready {c - b:.1f} s | one request {d - c:.1f} s\\n  {sys.argv[6]}')" \
  "$t0" "$t1" "$t2" "$t3" "$IMAGE" "$WORK/video.mp4"
