"""The app of the HTTP/2 tests (tests/test_http2.py): basic.py's routes, plus

  /trailers?n=N              "trailers": True, N chunks, then http.response.trailers in two
                             messages (more_trailers): x-checksum (sha256 of the body), x-chunks
  /watch?path=P&started=S[&stream=1]  reads the body, (stream=1: sends the head and one chunk),
                             writes its pid to S, awaits receive() and writes the message type to P
  /page                      an HTML page that POSTs its navigation's nextHopProtocol to /report
  /report (POST)             appends "<body> <http_version>" to the file FG_H2_REPORT
  anything else              basic.app
"""

import hashlib
import os
from urllib.parse import parse_qs

from basic import app as basic_app
from basic import read_body, send_text

PAGE = b"""<!doctype html>
<html><head><title>h2</title></head><body><p>HTTP/2 page</p>
<script>
addEventListener("load", () => {
  const nav = performance.getEntriesByType("navigation")[0];
  fetch("/report", {method: "POST", body: String(nav && nav.nextHopProtocol)});
});
</script></body></html>
"""


async def app(scope, receive, send):
    if scope["type"] != "http":
        return await basic_app(scope, receive, send)
    path = scope["path"]
    q = {k: v[-1] for k, v in parse_qs(scope["query_string"].decode()).items()}

    if path == "/trailers":
        n = int(q.get("n", "3"))
        digest = hashlib.sha256()
        await send({"type": "http.response.start", "status": 200, "trailers": True,
                    "headers": [(b"content-type", b"text/plain"), (b"trailer", b"x-checksum, x-chunks")]})
        for i in range(n):
            chunk = f"chunk {i}\n".encode()
            digest.update(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": i < n - 1})
        await send({"type": "http.response.trailers", "headers": [(b"x-checksum", digest.hexdigest().encode())],
                    "more_trailers": True})
        await send({"type": "http.response.trailers", "headers": [(b"x-chunks", str(n).encode())],
                    "more_trailers": False})
        return
    if path == "/watch":
        info = await read_body(receive, keep=False)
        if info is None:
            with open(q["path"], "w") as f:
                f.write("http.disconnect (during body)")
            return
        if q.get("stream"):
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"first chunk\n", "more_body": True})
        with open(q["started"], "w") as f:
            f.write(str(os.getpid()))
        msg = await receive()
        with open(q["path"], "w") as f:
            f.write(msg["type"])
        return
    if path == "/page":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/html; charset=utf-8")]})
        await send({"type": "http.response.body", "body": PAGE})
        return
    if path == "/report":
        info = []
        while True:
            msg = await receive()
            info.append(msg.get("body", b""))
            if not msg.get("more_body"):
                break
        with open(os.environ["FG_H2_REPORT"], "a") as f:
            f.write(f"{b''.join(info).decode()} {scope['http_version']}\n")
        return await send_text(send, "thanks")
    return await basic_app(scope, receive, send)
