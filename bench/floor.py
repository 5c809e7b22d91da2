"""The app's own cost, with no server: drive it in-process and time it.

Run as a script in the harness's virtualenv (so the app sees the same
packages and environment as under a server):

    python floor.py --app raw_json:app --kind http --method GET --path /

prints one JSON line {"cpu_us_per_call": ..., "calls": ...}. For --kind ws
a "call" is one echoed message. Whatever a server spends above this floor
per request is the server's overhead.
"""

import argparse
import asyncio
import importlib
import json
import os
import sys
import time
import zlib

# The apps live beside this file, as they do on the servers' PYTHONPATH.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "apps"))

WARMUP_CALLS = 2000


def http_scope(method, path, body, pathsend):
    # The shape uvicorn and friends send: the app should do the same work
    # (header lookups, routing) as under a real server.
    headers = [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"floor/1"), (b"accept", b"*/*")]
    if body:
        headers += [(b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())]
    return {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1", "method": method, "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": headers, "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
        "state": {}, "extensions": {"http.response.pathsend": {}} if pathsend else {},
    }


async def drive_http(app, template, body, calls, statuses=None, gzip_level=None):
    request = {"type": "http.request", "body": body, "more_body": False}
    disconnect = {"type": "http.disconnect"}

    async def send(message):
        if statuses is not None and message["type"] == "http.response.start":
            statuses.append(message["status"])
        if gzip_level is not None and message["type"] == "http.response.body":
            # What compressing the response costs by itself (zlib, gzip wrapper).
            c = zlib.compressobj(gzip_level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
            c.compress(message.get("body", b""))
            c.flush()

    for _ in range(calls):
        pending = [request]

        async def receive():
            return pending.pop() if pending else disconnect

        # A fresh scope per call, as a server builds one per request: apps
        # (Starlette) write into it.
        await app(dict(template, state={}), receive, send)


async def drive_ws(app, template, messages):
    """One connection that echoes `messages` text messages."""
    incoming = [{"type": "websocket.disconnect", "code": 1000}]
    incoming += [{"type": "websocket.receive", "text": "x" * 32}] * messages
    incoming.append({"type": "websocket.connect"})

    async def receive():
        return incoming.pop()

    async def send(message):
        pass

    await app(dict(template), receive, send)


def ws_scope():
    return {"type": "websocket", "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1", "scheme": "ws", "path": "/", "raw_path": b"/",
            "query_string": b"", "root_path": "", "headers": [(b"host", b"127.0.0.1:8000")],
            "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
            "subprotocols": [], "state": {}, "extensions": {}}


def load_app(target):
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


async def measure(args):
    app = load_app(args.app)
    if args.kind == "ws":
        template = ws_scope()
        await drive_ws(app, template, WARMUP_CALLS)
        run = lambda n: drive_ws(app, template, n)
    else:
        body = args.body.encode()
        template = http_scope(args.method, args.path, body, args.pathsend)
        statuses = []
        await drive_http(app, template, body, 1, statuses)
        if statuses != [200]:
            # A floor for an error page would be meaningless.
            raise SystemExit(f"{args.app} answered {statuses} to {args.method} {args.path}")
        level = args.gzip_level
        await drive_http(app, template, body, WARMUP_CALLS // 10 if level is not None else WARMUP_CALLS,
                         gzip_level=level)
        run = lambda n: drive_http(app, template, body, n, gzip_level=level)

    # Grow the batch until one takes ~args.seconds, then report that batch.
    calls = 1000 if args.gzip_level is None else 20
    while True:
        cpu0 = time.process_time()
        await run(calls)
        cpu = time.process_time() - cpu0
        if cpu >= args.seconds or calls >= 50_000_000:
            return {"cpu_us_per_call": cpu / calls * 1e6, "calls": calls}
        calls = int(calls * min(10, max(2, args.seconds / max(cpu, 1e-3) * 1.2)))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--app", required=True)
    p.add_argument("--kind", choices=["http", "ws"], default="http")
    p.add_argument("--method", default="GET")
    p.add_argument("--path", default="/")
    p.add_argument("--body", default="")
    p.add_argument("--pathsend", action="store_true", help="offer the http.response.pathsend extension")
    p.add_argument("--gzip-level", type=int, default=None,
                   help="also gzip every response body at this zlib level (the compression's own cost)")
    p.add_argument("--seconds", type=float, default=1.0)
    args = p.parse_args()
    try:
        from uvloop import run  # the loop the servers run the app on
    except ImportError:
        run = asyncio.run
    result = run(measure(args))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
