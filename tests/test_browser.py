"""A FastAPI WebSocket endpoint driven by a real browser (headless Chromium).

Browsers negotiate permessage-deflate and subprotocols their own way; this is
the check that ferrogate's handshake and framing satisfy one, not only the
`websockets` library. The page reports each step through the WebSocket itself
and the app writes it down, so the test needs no browser automation. Skipped
when Chromium is not installed (.ci/run installs it).
"""

import shutil
import subprocess

import pytest

from conftest import wait_until

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")


def test_browser_websocket_round_trip(server_factory, tmp_path):
    marker = tmp_path / "steps"
    srv = server_factory("fastapi_app:app", env={"FG_BROWSER_MARKER": str(marker)})
    browser = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", f"http://127.0.0.1:{srv.port}/browser"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    steps = lambda: marker.read_text().splitlines() if marker.exists() else []  # noqa: E731
    try:
        wait_until(lambda: any(s.startswith("closed") for s in steps()), timeout=40,
                   message=lambda: f"the browser did not finish; steps so far: {steps()}")
    finally:
        browser.kill()
        browser.wait()
    # Subprotocol and compression as the browser itself saw them, a 50 kB message
    # each way (compressed by both sides), and the browser's close code at the app.
    assert steps() == ["opened chat permessage-deflate", "big 50000", "closed 4000"]
