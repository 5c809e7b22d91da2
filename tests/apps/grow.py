"""An app whose memory grows on demand, for --max-worker-memory.

Routes (GET):
  /grow?mb=N   allocates N MiB, touches every page and keeps it for the
               worker's lifetime; answers the pid and how much it holds
  /pid         the worker's pid (the cheap route clients loop on)
"""

import json
import os
from urllib.parse import parse_qs

KEPT: list[bytes] = []


async def send_json(send, obj):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": json.dumps(obj).encode()})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["path"] == "/grow":
        q = parse_qs(scope["query_string"].decode())
        mb = int(q.get("mb", ["10"])[-1])
        # Non-zero bytes: every page is written, so all of it is resident.
        KEPT.append(b"\x01" * (mb * 1024 * 1024))
        return await send_json(send, {"pid": os.getpid(), "kept_mb": sum(len(b) for b in KEPT) >> 20})
    return await send_json(send, {"pid": os.getpid()})
