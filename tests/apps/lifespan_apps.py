"""ASGI apps that exercise the lifespan protocol in different ways."""

import asyncio
import os


async def _http_reply(scope, send, body: bytes):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})


async def failing_startup(scope, receive, send):
    """Reports lifespan.startup.failed with a message."""
    if scope["type"] == "lifespan":
        msg = await receive()
        assert msg["type"] == "lifespan.startup"
        await send({"type": "lifespan.startup.failed", "message": "database unreachable: FG-STARTUP-FAILED"})
        return
    await _http_reply(scope, send, b"should never serve")


async def raising_startup(scope, receive, send):
    """Raises inside lifespan startup after receiving lifespan.startup."""
    if scope["type"] == "lifespan":
        await receive()
        raise RuntimeError("FG-STARTUP-RAISED")
    await _http_reply(scope, send, b"served")


async def no_lifespan(scope, receive, send):
    """An app that does not speak lifespan: raises straight away for that scope."""
    if scope["type"] != "http":
        raise ValueError(f"FG-UNSUPPORTED-SCOPE {scope['type']}")
    await _http_reply(scope, send, b"no lifespan here")


LIFESPAN_EVENTS = []


async def recording(scope, receive, send):
    """Records the lifespan messages it receives; serves them at any path."""
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            LIFESPAN_EVENTS.append(msg["type"])
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    await _http_reply(scope, send, ",".join(LIFESPAN_EVENTS).encode())


async def gated_startup(scope, receive, send):
    """Startup waits until the file $FG_STARTUP_GATE exists, then marks the state ready."""
    if scope["type"] == "lifespan":
        await receive()
        gate = os.environ["FG_STARTUP_GATE"]
        while not os.path.exists(gate):
            await asyncio.sleep(0.02)
        scope["state"]["ready"] = "yes"
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})
        return
    await _http_reply(scope, send, scope["state"].get("ready", "no").encode())


async def failing_shutdown(scope, receive, send):
    """Starts fine; reports lifespan.shutdown.failed."""
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.failed", "message": "FG-SHUTDOWN-FAILED"})
        return
    await _http_reply(scope, send, b"ok")


async def crash_after_start(scope, receive, send):
    """Completes startup, then kills its own worker a moment later: a crash loop."""
    if scope["type"] == "lifespan":
        await receive()
        asyncio.get_running_loop().call_later(0.3, os._exit, 1)
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})
        return
    await _http_reply(scope, send, b"about to crash")


async def background_task_left_running(scope, receive, send):
    """Starts, on the first request, a task of its own that never ends (as sse-starlette's
    shutdown watcher does). At the stop it must be cancelled, as asyncio.run() would, not
    destroyed pending; it records that it saw the cancellation in $FG_BACKGROUND_MARKER."""
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def forever():
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            with open(os.environ["FG_BACKGROUND_MARKER"], "w") as f:
                f.write("cancelled")
            raise

    global _BACKGROUND
    _BACKGROUND = asyncio.get_running_loop().create_task(forever())
    await _http_reply(scope, send, b"started a background task")
