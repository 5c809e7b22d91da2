"""Workloads 1 and 5: a plain ASGI app with no framework.

GET (any path) answers a small, constant JSON body. This measures what the
server itself costs per request: the app does almost nothing.
"""

from bench_lifespan import serve_lifespan

BODY = b'{"message":"It\'s working!"}'

START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(BODY)).encode()),
    ],
}
RESPONSE_BODY = {"type": "http.response.body", "body": BODY}


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await serve_lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    await send(START)
    await send(RESPONSE_BODY)
