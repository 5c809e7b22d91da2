"""The app of tests/test_compress.py: responses of every shape that compression meets."""

import asyncio
import gzip
import os

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from sse_starlette.sse import EventSourceResponse

app = FastAPI()


def items(n: int) -> list[dict]:
    return [{"id": i, "name": f"item {i % 97}", "price": i * 1.5, "tags": ["a", "b"]} for i in range(n)]


@app.api_route("/json", methods=["GET", "HEAD"])
async def json(n: int = 2000):
    return JSONResponse(items(n), headers={"etag": '"json-v1"'})


@app.get("/small")
async def small():
    return {"ok": True}


@app.get("/stream")
async def stream(n: int = 50):
    async def gen():
        for i in range(n):
            yield f"line {i}: {'x' * 100}\n"
            await asyncio.sleep(0)

    return StreamingResponse(gen(), media_type="text/plain")


@app.get("/encoded")
async def encoded():
    # The app compressed it itself: ferrogate must not touch it.
    body = gzip.compress(("already " * 1000).encode())
    return Response(body, media_type="text/plain", headers={"content-encoding": "gzip"})


@app.get("/png")
async def png():
    return Response(os.urandom(100) + b"\0" * 5000, media_type="image/png")


@app.get("/odd-type")
async def odd_type():
    # A Content-Type of UTF-8 text, not ASCII: matching it against "application/*+json"
    # compares its first 12 bytes, which end inside the "ü".
    # (Starlette encodes header values as latin-1: set the UTF-8 bytes on the raw list.)
    response = Response(b"odd " * 1000)
    response.raw_headers.append((b"content-type", "applicatiéü+json".encode()))
    return response


@app.get("/no-transform")
async def no_transform():
    return PlainTextResponse("keep me " * 1000, headers={"cache-control": "no-transform"})


@app.get("/vary")
async def vary():
    return PlainTextResponse("varies " * 1000, headers={"vary": "Origin"})


@app.get("/file")
async def file(path: str):
    return FileResponse(path)


# SSE, one event at a time: event i+1 is produced only once the client said (/next)
# that it has decoded event i. A compressor that held an event back would deadlock
# the exchange, and the client's read timeout fails the test.
released: asyncio.Queue | None = None


@app.get("/next")
async def next_event():
    released.put_nowait(None)
    return {"ok": True}


@app.get("/sse")
async def sse(request: Request, n: int = 5):
    global released
    released = asyncio.Queue()

    async def events():
        for i in range(n):
            if i:
                await released.get()
            yield {"event": "tick", "id": str(i), "data": f"Event {i} " + "y" * 50}

    return EventSourceResponse(events(), ping=600)
