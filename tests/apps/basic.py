"""A raw ASGI app with one route per behaviour the tests need.

Routes (GET unless said):
  /scope, anything unknown   the scope as JSON (bytes as latin-1 strings); with ?overwrite=1,
                             every key of the scope is then set to "overwritten"
  /pid                       the worker's pid
  /env?name=X                os.environ.get(X)
  /hello                     a small fixed body
  /headers[?server=S][&shape=tuples|lists|tuple|generator]  custom response headers (repeated,
                             mixed case; a `server` header if asked), as the shape of list asked
  /status?code=N             an empty response with that status
  /stream?n=N&size=S&delay=D N chunks of S bytes, each after D seconds
  /slow?secs=S               answers after asyncio.sleep(S)
  /body (any method)         reads the whole body; JSON: size, chunks, sha256, max_chunk
  /body-count                like /body but keeps only counts (for huge uploads)
  /wait-file?path=P[&started=S]  writes its pid to S, waits (asyncio) until file P exists, then reads the body
  /stubborn?started=S        writes its pid to S, then sleeps forever, swallowing every cancellation
  /stream-gated?path=P       sends one chunk, waits until file P exists, sends the last one
  /stream-until-disconnect?path=P[&n=N]  streams (N chunks of 64 KiB at most) until send() raises;
                             writes the exception, or "never failed", to P
  /disconnect?path=P         reads the body, then awaits receive(); writes the message type it got to P
  /after-response?path=P     sends the response, then awaits receive(); writes the type to P
  /error-before              raises before http.response.start
  /error-after               starts a streaming response, sends a chunk, raises
  /violation/body-first      sends http.response.body before http.response.start
  /violation/bad-type        sends a message of an unknown type
  /violation/str-header      a header given as str instead of bytes
  /violation/return-early    returns without sending anything
  /violation/no-end          starts a response and returns without the final body
  /violation/after-complete  sends one more body after the response completed
  /violation/content-length-{short,long,stream}  a content-length header that the body contradicts
  /violation/crlf-header     a response header value with CR LF in it
  /empty-chunks              a stream with empty body messages between "a", "b" and "c"
  /pathsend?path=P           http.response.pathsend of the absolute path P
  /state[?set=K]             scope["state"] as JSON (after setting key K in this request's copy)
  /block?secs=S              time.sleep(S): blocks the event loop (for --timeout)
  /big?size=N                one body of N bytes
  /count                     how many requests this worker has served
"""

import asyncio
import hashlib
import json
import os
import time
from urllib.parse import parse_qs

SERVED = 0


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


async def send_json(send, obj, status=200, headers=()):
    body = json.dumps(obj).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), *headers],
    })
    await send({"type": "http.response.body", "body": body})


async def send_text(send, text, status=200, headers=()):
    body = text.encode() if isinstance(text, str) else text
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain"), *headers]})
    await send({"type": "http.response.body", "body": body})


async def read_body(receive, keep=True):
    size = chunks = max_chunk = 0
    digest = hashlib.sha256()
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            return None
        body = msg.get("body", b"")
        if body:
            chunks += 1
            size += len(body)
            max_chunk = max(max_chunk, len(body))
            if keep:
                digest.update(body)
        if not msg.get("more_body", False):
            break
    return {"size": size, "chunks": chunks, "max_chunk": max_chunk, "sha256": digest.hexdigest() if keep else None}


async def lifespan(scope, receive, send):
    while True:
        msg = await receive()
        if msg["type"] == "lifespan.startup":
            scope["state"]["started_by"] = os.getpid()
            scope["state"]["greeting"] = "hello from lifespan"
            await send({"type": "lifespan.startup.complete"})
        elif msg["type"] == "lifespan.shutdown":
            marker = os.environ.get("FG_SHUTDOWN_MARKER")
            if marker:
                with open(marker, "a") as f:
                    f.write(f"{os.getpid()}\n")
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope, receive, send):
    global SERVED
    if scope["type"] == "lifespan":
        return await lifespan(scope, receive, send)
    if scope["type"] != "http":
        raise RuntimeError(f"unsupported scope type {scope['type']}")
    SERVED += 1
    path = scope["path"]
    record = os.environ.get("FG_REQUEST_LOG")
    if record:
        with open(record, "a") as f:
            f.write(f"{scope['method']} {path}\n")
    q = {k: v[-1] for k, v in parse_qs(scope["query_string"].decode()).items()}

    if path == "/pid":
        return await send_json(send, {"pid": os.getpid()})
    if path == "/count":
        return await send_json(send, {"pid": os.getpid(), "served": SERVED})
    if path == "/env":
        return await send_json(send, {"value": os.environ.get(q["name"])})
    if path == "/hello":
        return await send_text(send, "Hello, world!\n")
    if path == "/headers":
        headers = [
            (b"content-type", b"text/plain"),
            (b"x-multi", b"one"),
            (b"x-multi", b"two"),
            (b"X-Mixed-Case", b"Value"),
            (b"set-cookie", b"a=1"),
            (b"set-cookie", b"b=2"),
            *([(b"server", q["server"].encode())] if "server" in q else []),
        ]
        # The spec's "iterable of [name, value]": frameworks send lists of tuples, others
        # lists of lists, tuples or generators.
        shape = q.get("shape", "tuples")
        if shape == "lists":
            headers = [list(h) for h in headers]
        elif shape == "tuple":
            headers = tuple(headers)
        elif shape == "generator":
            headers = (h for h in headers)
        await send({"type": "http.response.start", "status": 201, "headers": headers})
        await send({"type": "http.response.body", "body": b"headers"})
        return
    if path == "/status":
        code = int(q.get("code", "204"))
        await send({"type": "http.response.start", "status": code, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    if path == "/stream":
        n, size, delay = int(q.get("n", "5")), int(q.get("size", "10")), float(q.get("delay", "0"))
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/octet-stream")]})
        for i in range(n):
            if delay:
                await asyncio.sleep(delay)
            await send({"type": "http.response.body", "body": bytes([48 + i % 10]) * size, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    if path == "/slow":
        secs = float(q.get("secs", "1"))
        started = time.monotonic()
        await asyncio.sleep(secs)
        return await send_json(send, {"slept": time.monotonic() - started, "pid": os.getpid()})
    if path in ("/body", "/body-count"):
        info = await read_body(receive, keep=(path == "/body"))
        if info is None:
            return
        info["pid"] = os.getpid()
        return await send_json(send, info)
    if path == "/wait-file":
        marker = q["path"]
        if "started" in q:
            with open(q["started"], "w") as f:
                f.write(str(os.getpid()))
        while not os.path.exists(marker):
            await asyncio.sleep(0.02)
        info = await read_body(receive, keep=False)
        if info is None:
            return
        return await send_json(send, info)
    if path == "/stubborn":
        with open(q["started"], "w") as f:
            f.write(str(os.getpid()))
        while True:
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                pass
    if path == "/disconnect":
        out = q["path"]
        info = await read_body(receive, keep=False)
        if info is None:
            with open(out, "w") as f:
                f.write("http.disconnect (during body)")
            return
        msg = await receive()
        with open(out, "w") as f:
            f.write(msg["type"])
        return
    if path == "/after-response":
        out = q["path"]
        await read_body(receive, keep=False)
        await send_text(send, "done")
        msg = await asyncio.wait_for(receive(), 10)
        with open(out, "w") as f:
            f.write(msg["type"])
        return
    if path == "/stream-gated":
        # One chunk, then wait for the test to create file P, then the rest.
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"first;", "more_body": True})
        while not os.path.exists(q["path"]):
            await asyncio.sleep(0.02)
        await send({"type": "http.response.body", "body": b"second", "more_body": False})
        return
    if path == "/stream-until-disconnect":
        # Streams until send() fails; writes what send() raised to file P.
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        try:
            for _ in range(int(q.get("n", "100000"))):
                await send({"type": "http.response.body", "body": b"y" * 65536, "more_body": True})
                await asyncio.sleep(0)
            result = "never failed"
        except BaseException as e:  # noqa: BLE001
            result = f"{type(e).__module__}.{type(e).__name__}|{isinstance(e, OSError)}"
            with open(q["path"], "w") as f:
                f.write(result)
            raise
        with open(q["path"], "w") as f:
            f.write(result)
        return
    if path == "/error-before":
        raise ValueError("boom before start")
    if path == "/error-after":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"partial ", "more_body": True})
        raise ValueError("boom after start")
    if path == "/violation/body-first":
        await send({"type": "http.response.body", "body": b"too early"})
        return
    if path == "/violation/bad-type":
        await send({"type": "http.response.nonsense"})
        return
    if path == "/violation/str-header":
        await send({"type": "http.response.start", "status": 200, "headers": [("content-type", "text/plain")]})
        await send({"type": "http.response.body", "body": b"x"})
        return
    if path == "/violation/return-early":
        return
    if path == "/violation/no-end":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        return
    if path == "/violation/after-complete":
        await send_text(send, "complete")
        await send({"type": "http.response.body", "body": b"extra"})
        return
    if path == "/violation/content-length-short":
        # Announces 10 bytes, sends 5.
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"10")]})
        await send({"type": "http.response.body", "body": b"12345"})
        return
    if path == "/violation/content-length-long":
        # Announces 3 bytes, sends 5.
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"3")]})
        await send({"type": "http.response.body", "body": b"12345"})
        return
    if path == "/violation/content-length-stream":
        # Announces 10 bytes, streams 5.
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"10")]})
        await send({"type": "http.response.body", "body": b"123", "more_body": True})
        await send({"type": "http.response.body", "body": b"45"})
        return
    if path == "/violation/crlf-header":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-a", b"v\r\nx-injected: 1")]})
        await send({"type": "http.response.body", "body": b"x"})
        return
    if path == "/empty-chunks":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for b in (b"a", b"", b"b", b""):
            await send({"type": "http.response.body", "body": b, "more_body": True})
        await send({"type": "http.response.body", "body": b"c"})
        return
    if path == "/pathsend":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/octet-stream")]})
        await send({"type": "http.response.pathsend", "path": q["path"]})
        return
    if path == "/state":
        state = scope.get("state", {})
        if "set" in q:
            state[q["set"]] = "set by a request"
        return await send_json(send, _jsonable(state))
    if path == "/block":
        time.sleep(float(q.get("secs", "100")))
        return await send_text(send, "unblocked")
    if path == "/big":
        return await send_text(send, b"x" * int(q.get("size", "1000000")))

    body = await read_body(receive, keep=True)
    scope_out = _jsonable({k: v for k, v in scope.items()})
    scope_out["_body_size"] = body["size"] if body else None
    if q.get("overwrite"):
        for key in scope:
            scope[key] = "overwritten"
    return await send_json(send, scope_out)


# Environment knobs: FG_REQUEST_LOG=FILE appends "METHOD PATH" for every request
# the app sees; FG_SHUTDOWN_MARKER=FILE appends the worker pid at lifespan shutdown.
