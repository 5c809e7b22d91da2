"""A FastAPI WebSocket endpoint driven by a real browser (headless Chromium).

Browsers negotiate permessage-deflate and subprotocols their own way; this is
the check that ferrogate's handshake and framing satisfy one, not only the
`websockets` library. Skipped when Chromium is not installed (.ci/run installs it).
"""

import shutil
import subprocess

import pytest

from conftest import wait_until

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")


def test_browser_websocket_round_trip(server_factory, tmp_path):
    marker = tmp_path / "closed-with"
    srv = server_factory("fastapi_app:app", env={"FG_BROWSER_MARKER": str(marker)})
    profile = tmp_path / "profile"
    dom = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--virtual-time-budget=30000", "--dump-dom",
         f"http://127.0.0.1:{srv.port}/browser"],
        capture_output=True, text=True, timeout=60,
    ).stdout
    assert "open chat permessage-deflate" in dom, dom
    assert "got echo: hello from the browser" in dom, dom
    assert "got big 50000" in dom, dom
    # The browser's own onclose may fire after --dump-dom has printed; the close
    # code reaching the app is what matters.
    # The app saw the browser's close code.
    wait_until(lambda: marker.exists() and marker.read_text() == "4000", timeout=10,
               message=lambda: f"the app did not record close code 4000: {marker.read_text() if marker.exists() else 'nothing'}")
