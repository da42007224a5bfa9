"""The browser viewer end to end, in a REAL headless Chromium (Debian's ``chromium`` driven by Playwright):
tritonserver (tiny session model) <- gRPC - ``serving.viewer`` gateway <- WebSocket - the page.

The page loads, Start gives chunk 0, holding W produces new frames and moves the drawn camera path, the
clip downloads as mp4, End closes the Triton session. A screenshot is kept as a test artifact under
``build/test-artifacts/`` (or ``$SANA_WM_TEST_ARTIFACTS``)."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from serving.server import TritonServer, free_port
from serving.triton_repo import build_repository

pytestmark = pytest.mark.slow  # Triton + model load + a browser: about a minute on 2 cores

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("SANA_WM_TEST_ARTIFACTS", PROJECT_ROOT / "build" / "test-artifacts"))


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    raise RuntimeError("no chromium on PATH: `apt-get install chromium` (the Makefile's setup target does it); "
                       "Playwright's own browser download is not used")


@pytest.fixture(scope="module")
def viewer_url(bundle, tmp_path_factory):
    import uvicorn

    from serving.viewer import create_app, fetch_config

    root = tmp_path_factory.mktemp("viewer")
    repo = build_repository(bundle[0], root / "repo", loader=bundle[1], models=("session",), max_sessions=2,
                            session_mode="few_step")
    with TritonServer(repo, log_file=root / "server.log", ready_timeout_s=240) as triton:
        app = create_app(fetch_config(triton.grpc_url, "sana_wm_session"), root / "clips")
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.1)
        assert server.started, "viewer gateway did not start"
        try:
            yield f"http://127.0.0.1:{port}", app
        finally:
            server.should_exit = True
            thread.join(timeout=30)


def test_page_drives_a_session_in_headless_chromium(viewer_url):
    from playwright.sync_api import expect, sync_playwright

    url, app = viewer_url
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=_chromium(), headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(url)
            expect(page.locator("#status")).to_have_text("ready", timeout=30_000)
            page.click("#start")
            expect(page.locator("#chunks")).to_have_text("1", timeout=60_000)
            first_frames = int(page.locator("#frames").inner_text())
            assert first_frames == 13  # frame 0 + 12 generated
            path_before = page.evaluate("JSON.stringify(path)")
            page.keyboard.down("w")  # hold W: the page keeps asking for chunks
            page.wait_for_function("Number(document.getElementById('chunks').textContent) >= 3", timeout=90_000)
            page.keyboard.up("w")
            assert int(page.locator("#frames").inner_text()) >= first_frames + 24
            path = page.evaluate("path")
            assert page.evaluate("JSON.stringify(path)") != path_before and path[-1][1] > 0.5  # walked forward (+Z)
            page.wait_for_function("!busy", timeout=60_000)
            page.click("#clip")
            expect(page.locator("#download")).to_be_visible(timeout=30_000)
            clip = page.request.get(url + page.locator("#download").get_attribute("href"))
            assert clip.ok and clip.headers["content-type"] == "video/mp4" and len(clip.body()) > 1000
            page.screenshot(path=str(ARTIFACTS / "viewer.png"), full_page=True)
            assert page.locator("#error").inner_text() == ""
            page.click("#end")
            expect(page.locator("#status")).to_have_text("ended", timeout=30_000)
            assert app.state.live == 0  # the gateway closed its Triton session
        finally:
            browser.close()
    assert (ARTIFACTS / "viewer.png").stat().st_size > 1000
