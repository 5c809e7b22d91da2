"""Raw ASGI WebSocket app (ASGI websocket spec 2.4) for tests/test_websockets.py.

Paths:
  /echo[?path=P]            accept; echo every text/bytes message; on websocket.disconnect
                            write "code|reason" to P
  /subprotocol              accept with "chat.v1" if offered, plus a header x-ws-accept: yes
  /scope                    accept; send the scope as JSON text; close 1000
  /close?code=C&reason=R    accept; close with that code and reason
  /deny                     websocket.close before accept (HTTP 403)
  /deny-http                websocket.http.response: 401, a header and body "nope"
  /error-before-accept      raises before accepting
  /error-after-accept       accepts, then raises (close 1011)
  /send-big?size=N          accept; send one binary message of N bytes; wait for disconnect
  any other HTTP request    200 "http ok"
"""

import json
from urllib.parse import parse_qs


def _jsonable(value):
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            await send({"type": msg["type"] + ".complete"})
            if msg["type"] == "lifespan.shutdown":
                return
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"http ok"})
        return
    assert scope["type"] == "websocket"
    path = scope["path"]
    q = {k: v[-1] for k, v in parse_qs(scope["query_string"].decode()).items()}
    connect = await receive()
    assert connect["type"] == "websocket.connect", connect

    if path == "/echo":
        await send({"type": "websocket.accept"})
        while True:
            msg = await receive()
            if msg["type"] == "websocket.disconnect":
                if "path" in q:
                    with open(q["path"], "w") as f:
                        f.write(f"{msg.get('code')}|{msg.get('reason', '')}")
                return
            if msg.get("text") is not None:
                await send({"type": "websocket.send", "text": msg["text"]})
            else:
                await send({"type": "websocket.send", "bytes": msg["bytes"]})
    elif path == "/subprotocol":
        chosen = "chat.v1" if "chat.v1" in scope.get("subprotocols", []) else None
        await send({"type": "websocket.accept", "subprotocol": chosen, "headers": [(b"x-ws-accept", b"yes")]})
        await send({"type": "websocket.send", "text": f"chosen={chosen}"})
        await receive()
    elif path == "/scope":
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": json.dumps(_jsonable(dict(scope)))})
        await send({"type": "websocket.close", "code": 1000})
    elif path == "/close":
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": int(q.get("code", "1000")), "reason": q.get("reason", "")})
    elif path == "/deny":
        await send({"type": "websocket.close"})
    elif path == "/deny-http":
        await send({"type": "websocket.http.response.start", "status": 401,
                    "headers": [(b"content-type", b"text/plain"), (b"x-denied", b"yes")]})
        await send({"type": "websocket.http.response.body", "body": b"nope"})
    elif path == "/error-before-accept":
        raise RuntimeError("FG-WS-ERROR-BEFORE-ACCEPT")
    elif path == "/error-after-accept":
        await send({"type": "websocket.accept"})
        raise RuntimeError("FG-WS-ERROR-AFTER-ACCEPT")
    elif path == "/send-big":
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "bytes": b"z" * int(q.get("size", "1000000"))})
        while (await receive())["type"] != "websocket.disconnect":
            pass
    else:
        await send({"type": "websocket.close", "code": 1008})
