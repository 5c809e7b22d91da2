"""A tiny app whose VERSION the reload tests rewrite (they copy this file)."""

import os

VERSION = "v1"


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            await send({"type": msg["type"] + ".complete"})
            if msg["type"] == "lifespan.shutdown":
                return
    body = f'{{"version": "{VERSION}", "pid": {os.getpid()}}}'.encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
