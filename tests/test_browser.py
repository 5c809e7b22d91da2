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


def run_browser(url, tmp_path, marker, *flags):
    """Opens `url` in headless Chromium and returns the steps the app recorded."""
    browser = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", *flags, url],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    steps = lambda: marker.read_text().splitlines() if marker.exists() else []  # noqa: E731
    try:
        wait_until(lambda: any(s.startswith("closed") for s in steps()), timeout=40,
                   message=lambda: f"the browser did not finish; steps so far: {steps()}")
    finally:
        browser.kill()
        browser.wait()
    return steps()


def test_browser_websocket_round_trip(server_factory, tmp_path):
    marker = tmp_path / "steps"
    srv = server_factory("fastapi_app:app", env={"FG_BROWSER_MARKER": str(marker)})
    steps = run_browser(f"http://127.0.0.1:{srv.port}/browser", tmp_path, marker)
    # Subprotocol and compression as the browser itself saw them, a 50 kB message
    # each way (compressed by both sides), and the browser's close code at the app.
    assert steps == ["websocket over HTTP/1.1", "opened chat permessage-deflate page http/1.1", "big 50000", "closed 4000"]


def test_browser_over_https_uses_http2_for_the_page_and_the_websocket(server_factory, tmp_path):
    """Over HTTPS Chromium negotiates h2 by ALPN for the page, and, since ferrogate
    announces SETTINGS_ENABLE_CONNECT_PROTOCOL, opens the WebSocket as a stream of the
    same connection (RFC 8441 extended CONNECT): the app's scope says HTTP/2 for it."""
    from tls_support import make_pki

    pki = make_pki(tmp_path)
    marker = tmp_path / "steps"
    srv = server_factory("fastapi_app:app", "--ssl-certfile", str(pki.server.crt), "--ssl-keyfile", str(pki.server.key),
                         env={"FG_BROWSER_MARKER": str(marker)})
    steps = run_browser(f"https://localhost:{srv.port}/browser", tmp_path, marker, "--ignore-certificate-errors")
    assert steps == ["websocket over HTTP/2", "opened chat permessage-deflate page h2", "big 50000", "closed 4000"]
    assert '"CONNECT /browser-ws HTTP/2.0" 200' in srv.log(), "the access log line of the WebSocket stream"
