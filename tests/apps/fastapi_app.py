"""A FastAPI app, the most common thing ferrogate serves."""

import os
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel


@asynccontextmanager
async def lifespan(app: FastAPI):
    yield {"db": "connected", "pid": os.getpid()}
    marker = os.environ.get("FG_SHUTDOWN_MARKER")
    if marker:
        with open(marker, "a") as f:
            f.write(f"fastapi {os.getpid()}\n")


app = FastAPI(lifespan=lifespan)


class Item(BaseModel):
    name: str
    price: float
    tags: list[str] = []


@app.get("/items/{item_id}")
async def read_item(item_id: int, q: str | None = None):
    return {"item_id": item_id, "q": q}


@app.post("/items")
async def create_item(item: Item):
    return {"name": item.name, "price_with_tax": round(item.price * 1.2, 2), "tags": item.tags}


@app.get("/state")
async def state(request: Request):
    return {"db": request.state.db, "pid": request.state.pid}


@app.get("/request-info")
async def request_info(request: Request):
    return {
        "url": str(request.url),
        "root_path": request.scope.get("root_path"),
        "path": request.url.path,
        "client": list(request.client) if request.client else None,
        "scheme": request.url.scheme,
    }


@app.get("/stream")
async def stream():
    async def gen():
        for i in range(10):
            yield f"line {i}\n"
    return StreamingResponse(gen(), media_type="text/plain")


@app.get("/file")
async def file(path: str):
    return FileResponse(path)


@app.get("/missing")
async def missing():
    raise HTTPException(status_code=404, detail="no such thing")


@app.get("/crash")
async def crash():
    raise ZeroDivisionError("FG-FASTAPI-CRASH")


@app.get("/text")
async def text():
    return PlainTextResponse("plain text")


@app.websocket("/ws")
async def ws(websocket: WebSocket):
    await websocket.accept()
    try:
        while True:
            data = await websocket.receive_text()
            await websocket.send_text(f"echo: {data}")
    except WebSocketDisconnect:
        pass


BROWSER_PAGE = """<!doctype html>
<html><head><title>ferrogate browser test</title></head><body><script>
const scheme = location.protocol === "https:" ? "wss" : "ws";
const ws = new WebSocket(`${scheme}://${location.host}/browser-ws`, ["chat"]);
const page = performance.getEntriesByType("navigation")[0].nextHopProtocol;
ws.onopen = () => ws.send("opened " + ws.protocol + " " + ws.extensions + " page " + page);
ws.onmessage = (e) => {
  if (e.data.startsWith("echo:")) ws.send("x".repeat(50000));
  else if (e.data === "big 50000") ws.close(4000, "done");
};
</script></body></html>"""


@app.get("/browser")
async def browser_page():
    from fastapi.responses import HTMLResponse
    return HTMLResponse(BROWSER_PAGE)


@app.websocket("/browser-ws")
async def browser_ws(websocket: WebSocket):
    """Records what the browser did, one line per step, in $FG_BROWSER_MARKER."""
    marker = os.environ["FG_BROWSER_MARKER"]

    def record(line):
        with open(marker, "a") as f:
            f.write(line + "\n")

    await websocket.accept(subprotocol="chat")
    record(f"websocket over HTTP/{websocket.scope['http_version']}")
    opened = await websocket.receive_text()
    record(opened)
    await websocket.send_text(f"echo: {opened}")
    big = await websocket.receive_text()
    record(f"big {len(big)}")
    await websocket.send_text(f"big {len(big)}")
    try:
        await websocket.receive_text()
    except WebSocketDisconnect as e:
        record(f"closed {e.code}")
