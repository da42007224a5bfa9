"""Ask a running Triton server for a video, and write it as an H.264 mp4 (+ a contact sheet PNG).

    python -m serving.client --image first.png --trajectory traj.npz -o out.mp4 \
        [--url 127.0.0.1:8000] [--seed 0] [--frames N] [--mode few_step] [--contact-sheet sheet.png]

The trajectory is a SANA-WM-Bench ``.npz`` (``c2w`` (N,4,4), ``intrinsics`` (N,3,3), ``fps``); see
``model.trajectory``. The mp4 plays at the trajectory's fps, so time in the video matches the camera.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np

DEFAULT_MODEL = "sana_wm"


def request_video(
    url: str,
    image: np.ndarray,
    c2w: np.ndarray,
    K: np.ndarray,
    seed: int = 0,
    num_frames: int | None = None,
    model_name: str = DEFAULT_MODEL,
    mode: str | None = None,
    timeout_s: float = 600.0,
) -> np.ndarray:
    """One inference over HTTP; return the video uint8 (n, H, W, 3).

    Args:
        url: ``host:port`` of the server's HTTP endpoint.
        image: uint8 (H, W, 3) first frame.
        c2w: (N, 4, 4) camera-to-world poses; sent as FP32.
        K: (N, 3, 3) pixel intrinsics; sent as FP32.
        seed: noise seed (INT64).
        num_frames: raw frames to generate (default N).
        mode: ``streaming``/``bidirectional``/``few_step`` (default: the server's).
    Raises:
        tritonclient.utils.InferenceServerException carrying the server's message for a bad request.
    """
    import tritonclient.http as httpclient

    image = np.ascontiguousarray(image)
    c2w = np.ascontiguousarray(c2w, dtype=np.float32)
    K = np.ascontiguousarray(K, dtype=np.float32)
    n = int(c2w.shape[0]) if num_frames is None else int(num_frames)
    tensors = [
        ("IMAGE", image, "UINT8"),
        ("C2W", c2w, "FP32"),
        ("INTRINSICS", K, "FP32"),
        ("SEED", np.array([seed], dtype=np.int64), "INT64"),
        ("NUM_FRAMES", np.array([n], dtype=np.int32), "INT32"),
    ]
    if mode is not None:
        tensors.append(("MODE", np.array([mode.encode()], dtype=np.object_), "BYTES"))
    inputs = []
    for name, arr, dtype in tensors:
        inp = httpclient.InferInput(name, list(arr.shape), dtype)
        inp.set_data_from_numpy(arr, binary_data=True)
        inputs.append(inp)
    outputs = [httpclient.InferRequestedOutput("VIDEO", binary_data=True)]
    # Generation takes seconds to minutes: the default 60 s network timeout is too short.
    with httpclient.InferenceServerClient(url, connection_timeout=timeout_s, network_timeout=timeout_s) as client:
        result = client.infer(model_name, inputs, outputs=outputs)
    return result.as_numpy("VIDEO")


def write_mp4(video: np.ndarray, path: str | Path, fps: float) -> Path:
    """Encode uint8 (N, H, W, 3) RGB as H.264 (yuv420p) mp4 with PyAV; temp file then rename."""
    import av

    if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"video must be uint8 (N, H, W, 3), got {video.dtype} {video.shape}")
    _, h, w, _ = video.shape
    if h % 2 or w % 2:
        raise ValueError(f"H.264 yuv420p needs even height and width, got {h}x{w}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".mp4")
    os.close(fd)
    try:
        with av.open(tmp, mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            for frame in video:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())  # flush the encoder
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def contact_sheet(video: np.ndarray, path: str | Path, columns: int | None = None, pad: int = 2) -> Path:
    """Save a grid of all frames uint8 (N, H, W, 3) as a PNG (rows of ``columns`` frames)."""
    from PIL import Image

    n, h, w, _ = video.shape
    cols = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    sheet = Image.new("RGB", (cols * (w + pad) + pad, rows * (h + pad) + pad), (255, 255, 255))
    for i, frame in enumerate(video):
        r, c = divmod(i, cols)
        sheet.paste(Image.fromarray(frame), (pad + c * (w + pad), pad + r * (h + pad)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".png")
    os.close(fd)
    try:
        sheet.save(tmp, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as uint8 RGB (H, W, 3)."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m serving.client", description=__doc__.splitlines()[0])
    ap.add_argument("--image", required=True, type=Path, help="first frame (PNG/JPEG), the model's size")
    ap.add_argument("--trajectory", required=True, type=Path, help=".npz with c2w, intrinsics, fps")
    ap.add_argument("-o", "--out", required=True, type=Path, help="output .mp4")
    ap.add_argument("--url", default="127.0.0.1:8000", help="server HTTP host:port")
    ap.add_argument("--model", default=DEFAULT_MODEL, help="model name in the repository")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--frames", type=int, default=None, help="raw frames to generate (default: all poses)")
    ap.add_argument("--mode", choices=("streaming", "bidirectional", "few_step"), default=None)
    ap.add_argument("--contact-sheet", type=Path, default=None, help="also write a PNG grid of the frames")
    args = ap.parse_args(argv)

    from tritonclient.utils import InferenceServerException

    from model.trajectory import load_trajectory

    try:
        traj = load_trajectory(args.trajectory)
        image = load_image(args.image)
        video = request_video(args.url, image, traj.c2w, traj.intrinsics, seed=args.seed,
                              num_frames=args.frames, model_name=args.model, mode=args.mode)
    except (ValueError, OSError, InferenceServerException) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    write_mp4(video, args.out, traj.fps)
    print(f"wrote {args.out} ({video.shape[0]} frames {video.shape[2]}x{video.shape[1]} @ {traj.fps:g} fps)")
    if args.contact_sheet:
        contact_sheet(video, args.contact_sheet)
        print(f"wrote {args.contact_sheet}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
