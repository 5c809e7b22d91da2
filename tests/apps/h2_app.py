"""The ASGI app behind the hostile HTTP/2 client tests (tests/test_http2_attacks.py).

It counts every request that reaches it, keyed by the first two segments of the
path (`/work/rapid-reset/17` counts under `/work/rapid-reset`), so that a test
can tell how many of its crafted requests got through the server. The counter
is bumped before the app's first `await`, so a request counts as soon as the
app is called for it. One worker per server: the counts are that worker's.

Routes (GET unless said):
  /stats                  {"pid", "counts": {key: n}, "notes": {key: text}} (not counted)
  /hello                  a small fixed body
  /work/NAME...           a request that costs the app something: 0.2 s, then "done"
  /hold/NAME...           waits until /release/NAME... (at most 20 s), then "held"
  /release/NAME...        releases the holds of NAME (not counted)
  /body/NAME... (any method)  reads the whole body, answers its size
  /stream/NAME...?chunks=N    streams N chunks of 64 KiB; notes[key] says how it ended:
                          "completed", or "send raised <exception>", or "disconnect"
"""

import asyncio
import json
import os
from urllib.parse import parse_qs

COUNTS: dict[str, int] = {}
NOTES: dict[str, str] = {}
RELEASES: dict[str, asyncio.Event] = {}


def key_of(path: str) -> str:
    return "/".join(path.split("/")[:3])


def release_event(key: str) -> asyncio.Event:
    ev = RELEASES.get(key)
    if ev is None:
        ev = RELEASES[key] = asyncio.Event()
    return ev


async def respond(send, body, status=200, content_type=b"text/plain"):
    if isinstance(body, str):
        body = body.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def lifespan(receive, send):
    while True:
        msg = await receive()
        if msg["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif msg["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await lifespan(receive, send)
    if scope["type"] != "http":
        raise RuntimeError(f"unsupported scope type {scope['type']}")
    path = scope["path"]
    key = key_of(path)
    q = {k: v[-1] for k, v in parse_qs(scope["query_string"].decode()).items()}

    if path == "/stats":
        return await respond(send, json.dumps({"pid": os.getpid(), "counts": COUNTS, "notes": NOTES}),
                             content_type=b"application/json")
    if path.startswith("/release/"):
        release_event("/hold/" + key.split("/", 2)[2]).set()
        return await respond(send, "released")

    COUNTS[key] = COUNTS.get(key, 0) + 1  # before any await: the app was called for this request

    if path == "/hello":
        return await respond(send, "Hello, world!\n")
    if path.startswith("/work/"):
        await asyncio.sleep(0.2)
        return await respond(send, "done")
    if path.startswith("/hold/"):
        try:
            await asyncio.wait_for(release_event(key).wait(), 20)
        except asyncio.TimeoutError:
            return await respond(send, "never released", status=504)
        return await respond(send, "held")
    if path.startswith("/body/"):
        size = 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                NOTES[key] = "disconnect"
                return
            size += len(msg.get("body", b""))
            if not msg.get("more_body", False):
                break
        return await respond(send, json.dumps({"size": size}), content_type=b"application/json")
    if path.startswith("/stream/"):
        chunks = int(q.get("chunks", "16"))
        NOTES[key] = "streaming"
        try:
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/octet-stream")]})
            for _ in range(chunks):
                await send({"type": "http.response.body", "body": b"z" * 65536, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            NOTES[key] = "completed"
        except BaseException as e:  # noqa: BLE001 - recorded for the test, then re-raised
            NOTES[key] = f"send raised {type(e).__name__}: {e}"
            raise
        return
    return await respond(send, "not found", status=404)
