"""Raw ASGI app (no framework) for the differential tests (tests/test_compat_raw.py).

Every request is recorded ("request", method, path) before anything else, so a test can
tell whether a request reached the app at all. Records carry the request's `tag` query parameter.

Routes:
  /receive-timeout      first receive() gets part of the body; asyncio.wait_for(receive(), 0.05)
                        times out (recorded "receive timed out") while the client holds the rest
                        back; then receive() again until the end; echoes the body
  /receive-cancel       same, but the pending receive() is task.cancel()ed (recorded "receive cancelled")
  /receive-concurrent   two tasks await receive() at once (recorded "concurrent waiting" once both
                        are in it); answers with the body of the first that completes; then
                        records the message each task got ("concurrent message")
  /not-modified         304 with content-length: 11 and an etag, no body
  /head[?body=1]        content-length: 11 for a HEAD (or GET); with body=1 the body is sent too
  /no-content           204
  /cookies              two set-cookie headers
  /headers              scope["headers"] as a JSON list of [name, value]
  /await-paths          receive() and send() stepped by hand (`__await__().send(None)` until
                        StopIteration, awaiting each future it yields as a task would) and
                        awaited under a tracer (sys.settrace, which makes CPython step an
                        awaitable through `__next__`): records "receiving" just before the
                        receive() and then whether it had to wait ("received by hand"); streams
                        back, as JSON, the message got by hand and what the traced send()
                        returned, then records what a send() stepped by hand returned ("send by hand")
  anything else         "ok"
"""

import asyncio
import functools
import json
import sys
from urllib.parse import parse_qs

import effects


async def start(send, status, headers=(), content_type=b"text/plain"):
    hs = [(b"content-type", content_type)] if content_type else []
    await send({"type": "http.response.start", "status": status, "headers": hs + list(headers)})


async def answer(send, body: bytes, status=200, headers=(), content_type=b"text/plain"):
    await start(send, status, [(b"content-length", str(len(body)).encode()), *headers], content_type)
    await send({"type": "http.response.body", "body": body})


async def read_rest(receive, body: bytearray, msg):
    while msg.get("more_body", False):
        msg = await receive()
        if msg["type"] != "http.request":
            raise RuntimeError(f"unexpected {msg['type']} while reading the body")
        body += msg.get("body", b"")
    return bytes(body)


async def receive_timeout(scope, receive, send, record):
    first = await receive()
    body = bytearray(first.get("body", b""))
    record("receive first", body=bytes(body).decode())
    try:
        msg = await asyncio.wait_for(receive(), 0.05)
        record("receive did not time out", type=msg["type"])
    except asyncio.TimeoutError:
        record("receive timed out")
        # The next receive() must work and deliver the rest of the body.
        msg = await receive()
    body += msg.get("body", b"")
    data = await read_rest(receive, body, msg)
    record("receive rest", body=data.decode())
    await answer(send, data)


async def receive_cancel(scope, receive, send, record):
    first = await receive()
    body = bytearray(first.get("body", b""))
    record("receive first", body=bytes(body).decode())
    async def receive_in_task():
        return await receive()

    task = asyncio.ensure_future(receive_in_task())
    await asyncio.sleep(0.05)
    task.cancel()
    try:
        msg = await task
        record("receive was not cancelled", type=msg["type"])
    except asyncio.CancelledError:
        record("receive cancelled")
        # The next receive() must work and deliver the rest of the body.
        msg = await receive()
    body += msg.get("body", b"")
    data = await read_rest(receive, body, msg)
    record("receive rest", body=data.decode())
    await answer(send, data)


async def receive_concurrent(scope, receive, send, record):
    async def receive_in_task():
        return await receive()

    tasks = [asyncio.ensure_future(receive_in_task()), asyncio.ensure_future(receive_in_task())]
    await asyncio.sleep(0.01)  # both tasks are inside receive() now (or got a message already)
    for t in tasks:
        if t.done() and t.exception() is not None:
            record("concurrent receive failed", error=repr(t.exception()))
            for other in tasks:
                other.cancel()
            raise t.exception()
    record("concurrent waiting", pending=sum(not t.done() for t in tasks))
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for t in done:
        if t.exception() is not None:
            record("concurrent receive failed", error=repr(t.exception()))
            raise t.exception()
    await answer(send, b"".join(t.result().get("body", b"") for t in tasks if t in done))
    for i, t in enumerate(tasks):
        try:
            msg = await asyncio.wait_for(t, 5)
            record("concurrent message", task=i, type=msg["type"], body=msg.get("body", b"").decode(),
                   more_body=msg.get("more_body", False))
        except Exception as e:  # noqa: BLE001
            record("concurrent message failed", task=i, error=repr(e))


async def by_hand(awaitable, waited=None):
    """Steps an awaitable the way a task does, with the result taken from StopIteration.
    `waited`, a list, gets True appended for each future it had to wait on."""
    it = awaitable.__await__()
    while True:
        try:
            waiting_on = it.send(None)
        except StopIteration as stop:
            return stop.value
        if waited is not None:
            waited.append(True)
        # What Task.__step does with a future it is handed: it is the task's to wait on now.
        waiting_on._asyncio_future_blocking = False
        await waiting_on


async def await_paths(scope, receive, send, record):
    record("receiving")
    waited = []
    message = await by_hand(receive(), waited)
    record("received by hand", waited=bool(waited))
    sys.settrace(lambda frame, event, arg: None)
    try:
        sent = await send({"type": "http.response.start", "status": 200,
                           "headers": [(b"content-type", b"application/json")]})
    finally:
        sys.settrace(None)
    report = {"message": {k: (v.decode() if isinstance(v, bytes) else v) for k, v in message.items()},
              "traced send returned": repr(sent)}
    sent = await by_hand(send({"type": "http.response.body", "body": json.dumps(report).encode(),
                               "more_body": True}))
    record("send by hand", returned=repr(sent))
    await send({"type": "http.response.body", "body": b""})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    path, method = scope["path"], scope["method"]
    query = parse_qs(scope["query_string"].decode("latin-1"))
    tag = query.get("tag", [""])[0]
    record = functools.partial(effects.record, tag=tag)
    record("request", method=method, path=path, raw_path=scope.get("raw_path", b"").decode("latin-1"))
    if path == "/receive-timeout":
        return await receive_timeout(scope, receive, send, record)
    if path == "/receive-cancel":
        return await receive_cancel(scope, receive, send, record)
    if path == "/receive-concurrent":
        return await receive_concurrent(scope, receive, send, record)
    if path == "/await-paths":
        return await await_paths(scope, receive, send, record)
    if path == "/not-modified":
        await start(send, 304, [(b"content-length", b"11"), (b"etag", b'"v1"')], content_type=None)
        await send({"type": "http.response.body", "body": b""})
        return
    if path == "/head":
        await start(send, 200, [(b"content-length", b"11")])
        body = b"hello world" if "body" in query or method != "HEAD" else b""
        await send({"type": "http.response.body", "body": body})
        return
    if path == "/no-content":
        await start(send, 204, content_type=None)
        await send({"type": "http.response.body", "body": b""})
        return
    if path == "/cookies":
        return await answer(send, b"cookies", headers=[
            (b"set-cookie", b"a=1; Path=/"), (b"set-cookie", b"b=2; Path=/; HttpOnly")])
    if path == "/headers":
        body = json.dumps([[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]]).encode()
        return await answer(send, body, content_type=b"application/json")
    await answer(send, b"ok")
