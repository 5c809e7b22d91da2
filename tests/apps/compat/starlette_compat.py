"""Plain Starlette app for the differential tests (tests/test_compat_starlette.py)."""

import asyncio
import hashlib
from pathlib import Path

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from effects import record

HERE = Path(__file__).resolve().parent


async def stream(request: Request):
    n = int(request.query_params.get("n", "5"))

    async def numbers():
        for i in range(n):
            yield f"{i}\n"
            await asyncio.sleep(0.001)

    return StreamingResponse(numbers(), media_type="text/plain")


async def file(request: Request):
    return FileResponse(HERE / "static_page.html")


async def disconnect_poll(request: Request):
    n = int(request.query_params.get("n", "5"))
    seen = [await request.is_disconnected() for _ in range(n)]
    return JSONResponse({"count": len(seen), "disconnected": seen})


async def background(request: Request):
    tag = request.query_params["tag"]
    task = BackgroundTask(record, "background done", tag=tag)
    return JSONResponse({"queued": tag}, background=task)


async def upload(request: Request):
    size = chunks = 0
    digest = hashlib.sha256()
    async for chunk in request.stream():
        if chunk:
            chunks += 1
        size += len(chunk)
        digest.update(chunk)
    record("upload", size=size, sha256=digest.hexdigest())
    return JSONResponse({"size": size, "sha256": digest.hexdigest()})


app = Starlette(routes=[
    Route("/stream", stream),
    Route("/file", file),
    Route("/disconnect-poll", disconnect_poll),
    Route("/background", background, methods=["POST"]),
    Route("/upload", upload, methods=["POST", "PUT"]),
    Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
])
