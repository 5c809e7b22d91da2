"""sse-starlette app for the differential tests (tests/test_compat_sse.py), in the
pattern of sse-starlette's README: an async generator that checks
`await request.is_disconnected()` before each event."""

import asyncio

from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.routing import Route

from effects import record


async def events(request):
    n = int(request.query_params.get("n", "5"))
    delay = float(request.query_params.get("delay", "0.02"))
    tag = request.query_params.get("tag", "")

    async def generate():
        sent = 0
        try:
            for i in range(n):
                if await request.is_disconnected():
                    record("sse client gone", tag=tag, sent=sent)
                    break
                yield {"event": "tick", "id": str(i), "data": f"Event {i}"}
                sent += 1
                await asyncio.sleep(delay)
        finally:
            record("sse generator done", tag=tag, sent=sent)

    return EventSourceResponse(generate())


app = Starlette(routes=[Route("/events", events)])
