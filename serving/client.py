"""Clients of the Triton models: a whole video over HTTP, a video streamed chunk by chunk over gRPC, and
interactive sessions; mp4 + contact-sheet writers.

    python -m serving.client --image first.png --trajectory traj.npz -o out.mp4 \
        [--url 127.0.0.1:8000] [--seed 0] [--frames N] [--mode few_step] [--contact-sheet sheet.png]
    python -m serving.client session --image first.png --actions "w 2s; q 1s" -o out.mp4 \
        [--url 127.0.0.1:8001] [--seed 0] [--mode few_step]

The trajectory is a SANA-WM-Bench ``.npz`` (``c2w`` (N,4,4), ``intrinsics`` (N,3,3), ``fps``); see
``model.trajectory``. The mp4 plays at the trajectory's fps, so time in the video matches the camera.
``session`` turns the actions into poses (keys w/a/s/d, q/e yaw, r/f pitch), sends them one chunk per
request to ``sana_wm_session`` over gRPC (``--url`` is the gRPC port), shows a progress bar and writes
the frames as they come.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from model.atomic import atomic_path
from model.video_io import write_video
from serving.request import VideoRequest, wire_tensors

DEFAULT_MODEL = "sana_wm_video"  # the whole-video route; "sana_wm" is decoupled (gRPC streams only)
STREAM_MODEL = "sana_wm"
SESSION_MODEL = "sana_wm_session"


# request_video and stream_video take the request as ``serving.request.VideoRequest``'s fields, in order:
# image uint8 (H, W, 3), c2w (N, 4, 4), intrinsics (N, 3, 3), seed=0, num_frames=None, mode=None; the
# intrinsics may be passed by their older client name ``K``.
def _video_request(request: tuple, fields: dict) -> VideoRequest:
    if "K" in fields:
        if "intrinsics" in fields or len(request) > 2:
            raise TypeError("intrinsics given twice (as K and as intrinsics)")
        fields["intrinsics"] = fields.pop("K")
    return VideoRequest(*request, **fields)


def request_video(url: str, *request, model_name: str = DEFAULT_MODEL, timeout_s: float = 600.0,
                  **fields) -> np.ndarray:
    """One inference over HTTP; return the video uint8 (n, H, W, 3).

    Args:
        url: ``host:port`` of the server's HTTP endpoint.
        request, fields: the request (``VideoRequest``'s fields, positional or by name); C2W and
            INTRINSICS are sent as FP32; ``num_frames`` is optional and the server rejects one that is
            not N; ``mode`` ``streaming``/``bidirectional``/``few_step`` (default: the server's).
    Raises:
        tritonclient.utils.InferenceServerException carrying the server's message for a bad request.
    """
    import tritonclient.http as httpclient

    outputs = [httpclient.InferRequestedOutput("VIDEO", binary_data=True)]
    # Generation takes seconds to minutes: the default 60 s network timeout is too short.
    with httpclient.InferenceServerClient(url, connection_timeout=timeout_s, network_timeout=timeout_s) as client:
        inputs = _infer_inputs(httpclient, _video_request(request, fields).tensors(), binary_data=True)
        result = client.infer(model_name, inputs, outputs=outputs)
    return result.as_numpy("VIDEO")


def _infer_inputs(protocol, tensors: list[tuple[str, np.ndarray, str]], **set_data) -> list:
    """``InferInput``s of ``protocol`` (``tritonclient.http`` or ``tritonclient.grpc``) for ``tensors``;
    ``set_data`` goes to ``set_data_from_numpy`` (HTTP: ``binary_data=True``, raw bytes instead of JSON)."""
    inputs = []
    for name, arr, dtype in tensors:
        inp = protocol.InferInput(name, list(arr.shape), dtype)
        inp.set_data_from_numpy(arr, **set_data)
        inputs.append(inp)
    return inputs


def stream_video(url: str, *request, model_name: str = STREAM_MODEL, timeout_s: float = 600.0,
                 **fields) -> Iterator[np.ndarray]:
    """Ask the decoupled model over a gRPC stream; yield each chunk's frames uint8 (n_k, H, W, 3) as it
    arrives (the first after about one chunk's work). ``url`` is the gRPC ``host:port``; the request
    is given as to ``request_video``.

    Raises ``InferenceServerException`` with the server's message for a bad request.
    """
    import queue

    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    inputs = _infer_inputs(grpcclient, _video_request(request, fields).tensors())
    answers: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(url)
    try:
        client.start_stream(callback=lambda result, error: answers.put((result, error)),
                            stream_timeout=timeout_s)
        client.async_stream_infer(model_name, inputs, enable_empty_final_response=True)
        while True:
            try:
                result, error = answers.get(timeout=timeout_s)
            except queue.Empty:
                raise InferenceServerException(f"no answer from {model_name} in {timeout_s:.0f} s") from None
            if error is not None:
                raise error
            response = result.get_response()
            if response.parameters["triton_final_response"].bool_param and not response.outputs:
                return
            yield result.as_numpy("VIDEO")
            if response.parameters["triton_final_response"].bool_param:
                return
    finally:
        client.stop_stream(cancel_requests=True)
        client.close()


class SessionClient:
    """One interactive session on ``sana_wm_session`` over gRPC (``url`` = gRPC ``host:port``).

    ``start(image, ...)`` opens it and returns chunk 0; ``step(action=... | c2w=...)`` returns the next
    chunk; ``end()`` frees it (also on ``with`` exit). Chunks are ``(index, frames uint8 (n,H,W,3),
    poses float32 (n,4,4))``. The correlation id is random unless given. A refused START also sends an
    END, so the Triton sequence slot it took is released at once rather than after the idle limit.
    """

    def __init__(self, url: str, model_name: str = SESSION_MODEL, sequence_id: int | None = None,
                 timeout_s: float = 600.0) -> None:
        import secrets

        import tritonclient.grpc as grpcclient

        self.url, self.model_name, self.timeout_s = url, model_name, timeout_s
        self.sequence_id = int(sequence_id) if sequence_id is not None else 1 + secrets.randbelow(2**62)
        self.client = grpcclient.InferenceServerClient(url)
        self.live = False

    def _infer(self, tensors, start=False, end=False):
        import tritonclient.grpc as grpcclient

        return self.client.infer(self.model_name, _infer_inputs(grpcclient, tensors), sequence_id=self.sequence_id,
                                 sequence_start=start, sequence_end=end, client_timeout=self.timeout_s)

    @staticmethod
    def _steer(action: str | None, c2w: np.ndarray | None) -> list:
        """The tensors that steer one chunk: ACTION (keys) and/or C2W (n, 4, 4) poses, whichever is set."""
        return wire_tensors(ACTION=action, C2W=c2w)

    @staticmethod
    def _chunk(result) -> tuple[int, np.ndarray, np.ndarray]:
        return int(result.as_numpy("CHUNK_INDEX")[0]), result.as_numpy("FRAMES"), result.as_numpy("POSES")

    def start(self, image: np.ndarray, action: str | None = None, c2w: np.ndarray | None = None,
              intrinsics: np.ndarray | None = None, seed: int = 0, mode: str | None = None,
              prompt: str | None = None):
        from tritonclient.utils import InferenceServerException

        tensors = wire_tensors(IMAGE=image, SEED=seed, INTRINSICS=intrinsics, MODE=mode, PROMPT=prompt)
        try:
            result = self._infer(tensors + self._steer(action, c2w), start=True)
        except InferenceServerException as err:
            # Free the Triton slot a refused START took, unless the refusal says the id is live: then an
            # END would end that live session.
            if not self.live and "already live" not in str(err):
                self._release()
            raise
        self.live = True
        return self._chunk(result)

    def step(self, action: str | None = None, c2w: np.ndarray | None = None, end: bool = False):
        result = self._infer(self._steer(action, c2w), end=end)
        if end:
            self.live = False
        return self._chunk(result)

    def _release(self) -> None:
        from tritonclient.utils import InferenceServerException

        try:
            self._infer([], end=True)
        except InferenceServerException:
            pass  # the model has no such session: expected; Triton has released the slot all the same

    def end(self) -> None:
        """Free the session now (idempotent on this side)."""
        if self.live:
            self.live = False
            self._infer([], end=True)

    def close(self) -> None:
        try:
            self.end()
        finally:
            self.client.close()

    def __enter__(self) -> SessionClient:  # noqa: PYI034
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def session_chunk_sizes(first_chunk_poses: int, chunk_poses: int, total_poses: int) -> list[int]:
    """Poses per request for ``total_poses`` new frames: the first chunk, then whole chunks (the last
    one padded by the caller, since a session generates whole chunks)."""
    sizes = [first_chunk_poses]
    while sum(sizes) < total_poses:
        sizes.append(chunk_poses)
    return sizes


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
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")
    return path


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as uint8 RGB (H, W, 3)."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def _session_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m serving.client session",
                                 description="drive an interactive session from the terminal and write the mp4")
    ap.add_argument("--image", required=True, type=Path, help="first frame (PNG/JPEG), the model's size")
    ap.add_argument("--actions", required=True,
                    help="timeline, e.g. 'w 2s; q 1s' (w/a/s/d move, q/e yaw, r/f pitch, hold)")
    ap.add_argument("-o", "--out", type=Path, default=Path("session.mp4"), help="output .mp4")
    ap.add_argument("--url", default="127.0.0.1:8001", help="server gRPC host:port")
    ap.add_argument("--model", default=SESSION_MODEL, help="session model name in the repository")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mode", choices=("few_step", "streaming"), default=None)
    ap.add_argument("--prompt", default=None)
    ap.add_argument("--fps", type=float, default=None, help="the model's fps (default: ask the server)")
    args = ap.parse_args(argv)

    import tritonclient.grpc as grpcclient
    from tqdm.auto import tqdm
    from tritonclient.utils import InferenceServerException

    from model.trajectory import default_intrinsics, trajectory_from_actions

    try:
        image = load_image(args.image)
        with grpcclient.InferenceServerClient(args.url) as meta_client:
            cfg = meta_client.get_model_config(args.model).config
        params = {k: v.string_value for k, v in cfg.parameters.items()}
        fps, first_n, chunk_n = _session_geometry(params, args.fps)
        h, w = image.shape[:2]
        # r/f (pitch) are keys of the session DSL only; the timeline DSL spells them out.
        timeline = ";".join(_expand_pitch_keys(c) for c in args.actions.split(";"))
        traj = trajectory_from_actions(timeline, fps=fps, K=default_intrinsics(h, w))
        new_poses = traj.c2w[1:]
        sizes = session_chunk_sizes(first_n, chunk_n, len(new_poses))
        pad = sum(sizes) - len(new_poses)
        poses = np.concatenate([new_poses, np.repeat(new_poses[-1:], pad, axis=0)])  # hold the last pose
        frames, offset = [], 0
        with SessionClient(args.url, args.model) as session, \
                tqdm(total=len(sizes), desc="chunks", unit="chunk") as bar:
            for k, n in enumerate(sizes):
                c2w = poses[offset:offset + n]
                offset += n
                if k == 0:
                    _, chunk, _ = session.start(image, c2w=c2w, seed=args.seed, mode=args.mode, prompt=args.prompt)
                else:
                    _, chunk, _ = session.step(c2w=c2w)
                frames.append(chunk)
                bar.update(1)
    except (OSError, InferenceServerException) as err:
        raise ValueError(f"Triton request failed: {err}") from err
    video = np.concatenate(frames)
    write_video(video, args.out, fps)
    print(f"wrote {args.out} ({video.shape[0]} frames {video.shape[2]}x{video.shape[1]} @ {fps:g} fps)")
    return 0


def _expand_pitch_keys(command: str) -> str:
    tokens = command.split()
    if tokens and tokens[0].lower() in ("r", "f"):
        tokens[0] = "pitch_up" if tokens[0].lower() == "r" else "pitch_down"
    return " ".join(tokens)


def _session_geometry(params: dict[str, str], fps: float | None) -> tuple[float, int, int]:
    """(fps, poses of the first chunk, poses per later chunk) from the session model's parameters."""
    try:
        return (float(fps or params["fps"]), int(params["first_chunk_poses"]), int(params["chunk_poses"]))
    except KeyError as err:
        raise ValueError(f"session model config lacks parameter {err}; rebuild the repository") from None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "session":
        return _session_main(argv[1:])
    ap = argparse.ArgumentParser(prog="python -m serving.client", description=__doc__.splitlines()[0])
    ap.add_argument("--image", required=True, type=Path, help="first frame (PNG/JPEG), the model's size")
    ap.add_argument("--trajectory", required=True, type=Path, help=".npz with c2w, intrinsics, fps")
    ap.add_argument("-o", "--out", required=True, type=Path, help="output .mp4")
    ap.add_argument("--url", default="127.0.0.1:8000", help="server HTTP host:port")
    ap.add_argument("--model", default=DEFAULT_MODEL, help="model name in the repository")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--frames", type=int, default=None, help="raw frames (optional; must equal the pose count)")
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
    except (OSError, InferenceServerException) as err:
        raise ValueError(f"Triton request failed: {err}") from err
    write_video(video, args.out, traj.fps)
    print(f"wrote {args.out} ({video.shape[0]} frames {video.shape[2]}x{video.shape[1]} @ {traj.fps:g} fps)")
    if args.contact_sheet:
        contact_sheet(video, args.contact_sheet)
        print(f"wrote {args.contact_sheet}")
    return 0


if __name__ == "__main__":
    from model.cli import run

    raise SystemExit(run(main))
