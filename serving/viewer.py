"""Browser viewer: a small gateway between a web page and the ``sana_wm_session`` Triton model.

    python -m serving.viewer --triton 127.0.0.1:8001 [--host 127.0.0.1] [--port 7860]

then open http://127.0.0.1:7860: pick or upload a first frame, press Start, drive with W/A/S/D (move),
Q/E (yaw), R/F (pitch) — keys held together combine — watch each chunk arrive, see the camera path
from above, End, and download the clip as mp4.

The page speaks JSON over one WebSocket (``/ws``); the gateway speaks gRPC to Triton through
``serving.client.SessionClient`` (one Triton session per socket, ended when the socket closes). Only the
gateway talks to Triton, so Triton's port can stay private. Loopback by default: pass ``--host`` to
expose it deliberately.

Messages, page -> gateway: ``{"type": "start", "image": <data URL or null = sample>, "seed": int}``,
``{"type": "action", "action": "w+q"}``, ``{"type": "end"}``, ``{"type": "clip"}``.
Gateway -> page: ``{"type": "ready", ...}``, ``{"type": "chunk", "index", "frames": [data URLs],
"path": [[x, z], ...]}``, ``{"type": "ended"}``, ``{"type": "clip", "url"}``, ``{"type": "error", "message"}``.
"""

# No `from __future__ import annotations`: FastAPI reads the WebSocket annotation of a nested route at
# runtime, and a string one naming a local import would make it a query parameter (403 on connect).
import argparse
import asyncio
import base64
import io
import json
import secrets
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

MAX_CLIP_SECONDS = 60.0  # frames kept per socket for the download; a session may run longer


@dataclass(frozen=True)
class ViewerConfig:
    triton_url: str
    model: str
    height: int
    width: int
    fps: float


def fetch_config(triton_url: str, model: str) -> ViewerConfig:
    """Size and fps of the session model, from Triton's model config."""
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(triton_url) as client:
        cfg = client.get_model_config(model).config
    image = next((t for t in cfg.input if t.name == "IMAGE"), None)
    if image is None or "fps" not in cfg.parameters:
        raise ValueError(f"model {model!r} at {triton_url} is not a sana_wm session model (no IMAGE input / fps)")
    return ViewerConfig(triton_url, model, int(image.dims[0]), int(image.dims[1]),
                        float(cfg.parameters["fps"].string_value))


def sample_image(height: int, width: int) -> np.ndarray:
    """A synthetic first frame: sky gradient over a checkered floor, uint8 (H, W, 3)."""
    yy, xx = np.mgrid[0:height, 0:width]
    sky = np.stack([80 + 100 * yy / height, 140 + 80 * yy / height, np.full_like(xx, 230.0)], -1)
    floor = np.where(((xx // max(1, width // 8)) + (yy // max(1, height // 6))) % 2, 170.0, 90.0)[..., None]
    img = np.where((yy < height // 2)[..., None], sky, np.repeat(floor, 3, -1) * [1.0, 0.9, 0.7])
    return img.clip(0, 255).astype(np.uint8)


def decode_image(data_url: str, height: int, width: int) -> np.ndarray:
    """A data URL (PNG/JPEG) -> uint8 (H, W, 3) at the model size (centre crop, then resize)."""
    from PIL import Image

    try:
        raw = base64.b64decode(data_url.split(",", 1)[1] if "," in data_url else data_url, validate=False)
        im = Image.open(io.BytesIO(raw)).convert("RGB")
    except Exception as err:  # noqa: BLE001 - anything PIL cannot read is the client's fault
        raise ValueError(f"image could not be read as PNG/JPEG: {err}") from None
    scale = max(width / im.width, height / im.height)
    im = im.resize((max(width, round(im.width * scale)), max(height, round(im.height * scale))))
    left, top = (im.width - width) // 2, (im.height - height) // 2
    return np.asarray(im.crop((left, top, left + width, top + height)), dtype=np.uint8)


def _jpeg(frame: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def create_app(config: ViewerConfig, clip_dir: str | Path | None = None):
    """The FastAPI app: ``/`` (the page), ``/ws`` (a session), ``/clips/<id>.mp4``, ``/healthz``."""
    from fastapi import FastAPI, HTTPException, WebSocket, WebSocketDisconnect
    from fastapi.responses import FileResponse, HTMLResponse

    from model.video_io import write_video
    from serving.client import SessionClient

    clips = Path(clip_dir or tempfile.mkdtemp(prefix="sana-wm-clips-"))
    clips.mkdir(parents=True, exist_ok=True)
    app = FastAPI(title="SANA-WM viewer")
    app.state.live = 0  # open Triton sessions (tests read it)
    max_frames = int(MAX_CLIP_SECONDS * config.fps) + 1

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return PAGE.replace("__CONFIG__", json.dumps({"height": config.height, "width": config.width,
                                                     "fps": config.fps}))

    @app.get("/healthz")
    def healthz() -> dict:
        return {"ok": True, "live_sessions": app.state.live}

    @app.get("/clips/{name}")
    def clip(name: str):
        path = clips / name
        if not name.endswith(".mp4") or "/" in name or not path.is_file():
            raise HTTPException(404, f"no clip {name!r}")
        return FileResponse(path, media_type="video/mp4", filename=name)

    @app.websocket("/ws")
    async def ws(socket: WebSocket) -> None:
        await socket.accept()
        await socket.send_json({"type": "ready", "height": config.height, "width": config.width, "fps": config.fps})
        loop = asyncio.get_running_loop()
        session: SessionClient | None = None
        frames: list[np.ndarray] = []

        async def close_session() -> None:
            nonlocal session
            if session is not None:
                s, session = session, None
                app.state.live -= 1
                await loop.run_in_executor(None, s.close)

        async def send_chunk(chunk) -> None:
            index, new, poses = chunk
            room = max_frames - len(frames)
            frames.extend(new[:max(room, 0)])
            encoded = await loop.run_in_executor(None, lambda: [_jpeg(f) for f in new])
            path = [[float(p[0, 3]), float(p[2, 3])] for p in poses]
            await socket.send_json({"type": "chunk", "index": index, "frames": encoded, "path": path})

        try:
            while True:
                try:
                    msg = json.loads(await socket.receive_text())
                    kind = msg.get("type")
                except (ValueError, AttributeError):
                    await socket.send_json({"type": "error", "message": "messages must be JSON objects"})
                    continue
                try:
                    if kind == "start":
                        await close_session()
                        frames.clear()
                        img = msg.get("image")
                        image = (decode_image(img, config.height, config.width) if img
                                 else sample_image(config.height, config.width))
                        session = SessionClient(config.triton_url, config.model)
                        app.state.live += 1
                        start = partial(session.start, image, action=str(msg.get("action") or "hold"),
                                        seed=int(msg.get("seed") or 0))
                        chunk = await loop.run_in_executor(None, start)
                        await send_chunk(chunk)
                    elif kind == "action":
                        if session is None:
                            raise ValueError("press Start first: there is no session")
                        action = str(msg.get("action") or "hold")
                        await send_chunk(await loop.run_in_executor(None, partial(session.step, action=action)))
                    elif kind == "end":
                        await close_session()
                        await socket.send_json({"type": "ended"})
                    elif kind == "clip":
                        if not frames:
                            raise ValueError("nothing to download yet: start a session first")
                        name = f"clip-{secrets.token_hex(6)}.mp4"
                        await loop.run_in_executor(None, write_video, np.stack(frames), clips / name, config.fps)
                        await socket.send_json({"type": "clip", "url": f"/clips/{name}"})
                    else:
                        raise ValueError(f"unknown message type {kind!r}; use start, action, end or clip")
                except WebSocketDisconnect:
                    raise
                except Exception as err:  # noqa: BLE001 - report to the page, keep the socket
                    from tritonclient.utils import InferenceServerException

                    if isinstance(err, InferenceServerException) and kind == "start":
                        await close_session()
                    text = err.message() if isinstance(err, InferenceServerException) else str(err)
                    await socket.send_json({"type": "error", "message": text})
        except WebSocketDisconnect:
            pass
        finally:
            await close_session()

    return app


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m serving.viewer", description=__doc__.splitlines()[0])
    ap.add_argument("--triton", default="127.0.0.1:8001", help="Triton gRPC host:port")
    ap.add_argument("--model", default="sana_wm_session", help="session model name")
    ap.add_argument("--host", default="127.0.0.1", help="address to serve the page on (loopback by default)")
    ap.add_argument("--port", type=int, default=7860)
    ap.add_argument("--clip-dir", type=Path, default=None, help="where downloadable clips are written")
    args = ap.parse_args(argv)

    import uvicorn

    try:
        config = fetch_config(args.triton, args.model)
    except Exception as err:  # noqa: BLE001 - unreachable server, unknown model: say which
        print(f"error: cannot read model {args.model!r} from Triton at {args.triton}: {err}")
        return 1
    print(f"viewer on http://{args.host}:{args.port}  (Triton {args.triton}, model {args.model}, "
          f"{config.height}x{config.width} @ {config.fps:g} fps)", flush=True)
    uvicorn.run(create_app(config, args.clip_dir), host=args.host, port=args.port, log_level="warning")
    return 0


PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>SANA-WM viewer</title>
<style>
 body { font: 14px system-ui, sans-serif; margin: 16px; background: #111; color: #ddd; }
 canvas { background: #000; image-rendering: pixelated; border: 1px solid #444; }
 #view { width: 512px; } #path { width: 200px; height: 200px; }
 button { margin-right: 6px; } .row { margin: 8px 0; } kbd { background: #333; padding: 1px 5px; border-radius: 3px; }
 #status { color: #8c8; } #error { color: #e77; }
</style></head><body>
<h3>SANA-WM interactive world</h3>
<div class="row">First frame: <input type="file" id="file" accept="image/*"> (or the built-in sample)
 seed <input type="number" id="seed" value="0" style="width:6em"></div>
<div class="row"><button id="start">Start</button><button id="end" disabled>End</button>
 <button id="clip" disabled>Download clip</button> <a id="download" href="#" hidden download>clip.mp4</a></div>
<div class="row">Drive: <kbd>W</kbd><kbd>A</kbd><kbd>S</kbd><kbd>D</kbd> move, <kbd>Q</kbd><kbd>E</kbd> yaw,
 <kbd>R</kbd><kbd>F</kbd> pitch (hold keys; they combine)</div>
<canvas id="view"></canvas> <canvas id="path" width="200" height="200"></canvas>
<div class="row">status: <span id="status">connecting</span> · chunks <span id="chunks">0</span>
 · frames <span id="frames">0</span> · keys <span id="keys">-</span></div>
<div class="row" id="error"></div>
<script>
const CFG = __CONFIG__;
const $ = (id) => document.getElementById(id);
const view = $("view"); view.width = CFG.width; view.height = CFG.height;
view.style.height = (512 * CFG.height / CFG.width) + "px";
const ctx = view.getContext("2d"), pctx = $("path").getContext("2d");
let ws, live = false, busy = false, image = null, frames = 0, chunks = 0, path = [[0, 0]];
const held = new Set(), queue = [];
const KEYS = "wasdqerf";
function status(s) { $("status").textContent = s; }
function drawPath() {
  pctx.fillStyle = "#000"; pctx.fillRect(0, 0, 200, 200);
  const xs = path.map(p => p[0]), zs = path.map(p => p[1]);
  const span = Math.max(1, ...xs.map(Math.abs), ...zs.map(Math.abs)) * 1.1;
  pctx.strokeStyle = "#4cf"; pctx.beginPath();
  path.forEach(([x, z], i) => { const u = 100 + 95 * x / span, v = 100 - 95 * z / span;
    i ? pctx.lineTo(u, v) : pctx.moveTo(u, v); });
  pctx.stroke();
  const [x, z] = path[path.length - 1]; pctx.fillStyle = "#fc4";
  pctx.fillRect(100 + 95 * x / span - 2, 100 - 95 * z / span - 2, 4, 4);
}
function play() {  // show queued frames at the model's fps
  if (queue.length) { const img = queue.shift(); ctx.drawImage(img, 0, 0); }
  setTimeout(play, 1000 / CFG.fps);
}
function action() { const k = [...held].filter(c => KEYS.includes(c)); return k.length ? k.join("+") : "hold"; }
function pump() {  // one request in flight; keep driving while keys are held
  if (live && !busy && held.size) { busy = true; status("generating"); ws.send(JSON.stringify({type: "action", action: action()})); }
}
function connect() {
  ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws");
  ws.onopen = () => status("ready");
  ws.onclose = () => { live = false; status("disconnected"); };
  ws.onmessage = (ev) => {
    const m = JSON.parse(ev.data);
    if (m.type === "chunk") {
      busy = false; chunks += 1; frames += m.frames.length; path.push(...m.path.slice(m.index === 0 ? 1 : 0));
      for (const src of m.frames) { const im = new Image(); im.src = src; queue.push(im); }
      $("chunks").textContent = chunks; $("frames").textContent = frames; drawPath();
      live = true; $("end").disabled = false; $("clip").disabled = false;
      status("live: chunk " + m.index); pump();
    } else if (m.type === "ended") {
      live = false; busy = false; status("ended"); $("end").disabled = true;
    } else if (m.type === "clip") {
      const a = $("download"); a.href = m.url; a.hidden = false; a.textContent = "clip.mp4 (ready)";
    } else if (m.type === "error") {
      busy = false; $("error").textContent = m.message; if (!live) status("error");
    }
  };
}
$("file").onchange = () => { const f = $("file").files[0]; if (!f) return;
  const r = new FileReader(); r.onload = () => { image = r.result; }; r.readAsDataURL(f); };
$("start").onclick = () => { frames = chunks = 0; path = [[0, 0]]; queue.length = 0; $("error").textContent = "";
  busy = true; status("starting");
  ws.send(JSON.stringify({type: "start", image: image, seed: Number($("seed").value) || 0})); };
$("end").onclick = () => ws.send(JSON.stringify({type: "end"}));
$("clip").onclick = () => ws.send(JSON.stringify({type: "clip"}));
document.addEventListener("keydown", (e) => { const k = e.key.toLowerCase();
  if (KEYS.includes(k) && k.length === 1) { held.add(k); $("keys").textContent = action(); pump(); } });
document.addEventListener("keyup", (e) => { held.delete(e.key.toLowerCase()); $("keys").textContent = action(); });
drawPath(); play(); connect();
</script></body></html>
"""


if __name__ == "__main__":
    from model.cli import run

    raise SystemExit(run(main))
