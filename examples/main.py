"""The app from the classic deployment tutorial, served by ferrogate.

    pip install . fastapi
    ferrogate main:app --app-dir examples
    curl localhost:8000          # {"message":"It's working!"}
"""

from fastapi import FastAPI, WebSocket
from pydantic import BaseModel

app = FastAPI()


@app.get("/")
async def root():
    return {"message": "It's working!"}


class Item(BaseModel):
    name: str
    price: float


@app.post("/items")
async def create_item(item: Item):
    return {"name": item.name, "price_with_tax": round(item.price * 1.2, 2)}


@app.websocket("/ws")
async def echo(websocket: WebSocket):
    await websocket.accept()
    async for text in websocket.iter_text():
        await websocket.send_text(f"echo: {text}")
