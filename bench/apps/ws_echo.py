"""Workload 6: a raw ASGI WebSocket echo.

Plain HTTP requests get a tiny 200 so the harness can check the server is up
the same way it does for every other app.
"""

from bench_lifespan import serve_lifespan

OK = b"ok"


async def app(scope, receive, send):
    kind = scope["type"]
    if kind == "lifespan":
        await serve_lifespan(receive, send)
        return
    if kind == "http":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": OK})
        return
    if kind != "websocket":
        return
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        # Echo text as text and bytes as bytes.
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})
