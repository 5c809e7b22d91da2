"""The static-file workloads for servers that serve static files through the app.

Serves files from $BENCH_STATIC_DIR under /static/<name>. When the server
offers the ASGI "http.response.pathsend" extension (ferrogate does), the app
hands the server the path and lets it send the file itself; otherwise it reads
the file and sends the bytes, as a simple app on uvicorn would (a large file
in 1 MiB pieces).
Servers with their own static mount (granian) or a front proxy (nginx) never
reach this app for /static/, except granian on gzip-static: its mount cannot
compress, so it runs this app wrapped in GZipMiddleware (apps/gzip_wrapped.py).
"""

from bench_lifespan import serve_lifespan

import os

STATIC_DIR = os.path.realpath(os.environ.get("BENCH_STATIC_DIR", "."))

NOT_FOUND = b"not found"
# By extension, as nginx's mime.types and ferrogate's --static name them: the
# gzip-static workload's stylesheet must say text/css to be compressed.
CONTENT_TYPES = {".css": b"text/css; charset=utf-8"}
OCTET_STREAM = b"application/octet-stream"
CHUNK = 1024 * 1024  # files up to this size are sent in one body message (static-1m)


def _resolve(path):
    # Only plain names directly inside STATIC_DIR: the benchmark needs no
    # sub-directories, and refusing them keeps the app obviously safe.
    if not path.startswith("/static/"):
        return None
    name = path[len("/static/"):]
    if not name or "/" in name or name.startswith("."):
        return None
    full = os.path.join(STATIC_DIR, name)
    return full if os.path.isfile(full) else None


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await serve_lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    full = _resolve(scope["path"])
    if full is None:
        await send({"type": "http.response.start", "status": 404,
                    "headers": [(b"content-length", str(len(NOT_FOUND)).encode())]})
        await send({"type": "http.response.body", "body": NOT_FOUND})
        return
    size = os.path.getsize(full)
    pathsend = "http.response.pathsend" in (scope.get("extensions") or {})
    await send({
        "type": "http.response.start",
        "status": 200,
        "headers": [
            (b"content-type", CONTENT_TYPES.get(os.path.splitext(full)[1], OCTET_STREAM)),
            (b"content-length", str(size).encode()),
            # Tells the harness which way the file went, so it compares the
            # server with the right in-process floor.
            (b"x-bench-sent", b"pathsend" if pathsend else b"bytes"),
        ],
    })
    if pathsend:
        await send({"type": "http.response.pathsend", "path": full})
        return
    with open(full, "rb") as f:
        if size <= CHUNK:
            await send({"type": "http.response.body", "body": f.read()})
            return
        # A large file (download-100m) goes in pieces, as Starlette's FileResponse
        # sends one (64 KiB there): reading 100 MiB whole would measure the app's memory.
        while data := f.read(CHUNK):
            await send({"type": "http.response.body", "body": data, "more_body": True})
    await send({"type": "http.response.body", "body": b""})
