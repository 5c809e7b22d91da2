"""Lifespan handling shared by the raw ASGI benchmark apps.

Servers that run the lifespan protocol by default (uvicorn, granian,
ferrogate) start cleanly only if the app answers it.
"""


async def serve_lifespan(receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
