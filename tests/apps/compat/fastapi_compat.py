"""FastAPI app for the differential tests (tests/test_compat_fastapi.py), written the way
FastAPI's documentation writes things. Served from tests/apps/compat (the server's cwd).

Every route that has a side effect records it with effects.record() into $COMPAT_EFFECTS.
"""

import asyncio
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import BackgroundTasks, FastAPI, Request, Response, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import BaseModel

from effects import record

HERE = Path(__file__).resolve().parent
PAGE = HERE / "static_page.html"


@asynccontextmanager
async def lifespan(app: FastAPI):
    record("lifespan startup")
    yield
    record("lifespan shutdown")


app = FastAPI(lifespan=lifespan)


@app.get("/items/{item_id}")
async def read_item(item_id: int, q: str | None = None):
    return {"item_id": item_id, "q": q}


@app.api_route("/hello", methods=["GET", "HEAD"])
async def hello():
    return {"message": "hello"}


@app.delete("/items/{item_id}", status_code=204)
async def delete_item(item_id: int):
    record("deleted", item_id=item_id)


class Item(BaseModel):
    name: str
    qty: int
    tags: list[str] = []


@app.post("/json")
async def post_json(item: Item):
    record("json", name=item.name, qty=item.qty)
    return {"name": item.name, "total": item.qty * 2, "tags": item.tags}


@app.get("/file/absolute")
async def file_absolute():
    return FileResponse(PAGE)


@app.get("/file/relative")
async def file_relative():
    # Relative to the server's working directory (tests/apps/compat), as in FastAPI's docs.
    return FileResponse("static_page.html")


@app.get("/stream")
async def stream(n: int = 5):
    async def lines():
        for i in range(n):
            yield f"line {i}\n"
            await asyncio.sleep(0.001)

    return StreamingResponse(lines(), media_type="text/plain")


@app.get("/stream/endless")
async def stream_endless(tag: str):
    async def chunks():
        record("endless started", tag=tag)
        sent = 0
        try:
            while True:
                yield b"%08d" % sent * 128  # 1 KiB
                sent += 1
                await asyncio.sleep(0.005)
        finally:
            record("endless stopped", tag=tag)

    return StreamingResponse(chunks(), media_type="application/octet-stream")


@app.get("/disconnect-poll")
async def disconnect_poll(request: Request, n: int = 5):
    seen = []
    for _ in range(n):
        seen.append(await request.is_disconnected())
    return {"count": len(seen), "disconnected": seen}


def write_background(tag: str):
    record("background done", tag=tag)


@app.post("/background")
async def background(tag: str, background_tasks: BackgroundTasks):
    background_tasks.add_task(write_background, tag)
    return {"queued": tag}


@app.get("/not-modified")
async def not_modified():
    # What Starlette's StaticFiles/conditional FileResponse sends: the headers of the
    # representation (a Content-Length for it too), and no body.
    return Response(status_code=304, headers={"content-length": "11", "etag": '"v1"'})


@app.get("/sleep")
async def sleep(tag: str, secs: float = 60.0, cleanup: float = 0.05):
    record("sleep started", tag=tag)
    try:
        await asyncio.sleep(secs)
    except asyncio.CancelledError:
        record("cancelled", tag=tag)
        raise
    finally:
        # An awaited cleanup (closing a DB connection, say) of `cleanup` seconds.
        await asyncio.sleep(cleanup)
        record("cleanup done", tag=tag)
    return {"slept": secs}


@app.get("/headers")
async def headers(request: Request):
    return [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.scope["headers"]]


@app.websocket("/ws")
async def ws(websocket: WebSocket, tag: str = ""):
    await websocket.accept()
    record("ws open", tag=tag)
    try:
        while True:
            text = await websocket.receive_text()
            await websocket.send_text(f"echo: {text}")
    except WebSocketDisconnect as e:
        record("ws closed", tag=tag, code=e.code)
