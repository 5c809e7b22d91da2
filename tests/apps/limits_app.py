"""The app behind tests/test_front_limits.py: it records, in the file named by
$LIMITS_RECORD, one JSON line per event, so that a test can tell whether a request
reached the app at all and what each receive() returned.

  {"path": P, "event": "called"}                      when the app is called
  {"path": P, "event": "message", "type": T, "size": N, "more": B}   each receive()
  {"path": P, "event": "done", "size": N}             the body ended (a 200 follows)

Routes (any method): /xfo answers with its own X-Frame-Options: DENY and
Referrer-Policy: no-referrer; anything else reads the body and answers
{"size": N}; after an http.disconnect it answers nothing.
"""

import json
import os


def record(**entry):
    path = os.environ.get("LIMITS_RECORD")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(entry) + "\n")


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    record(path=path, event="called")
    if path == "/xfo":
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/plain"), (b"x-frame-options", b"DENY"), (b"referrer-policy", b"no-referrer")]})
        await send({"type": "http.response.body", "body": b"framed\n"})
        return
    size = 0
    while True:
        msg = await receive()
        body = msg.get("body", b"")
        size += len(body)
        record(path=path, event="message", type=msg["type"], size=len(body), more=msg.get("more_body", False))
        if msg["type"] == "http.disconnect":
            return
        if not msg.get("more_body", False):
            break
    record(path=path, event="done", size=size)
    body = json.dumps({"size": size}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
