"""Workloads 2 and 3: the tutorial's FastAPI app plus a validated POST.

`GET /` is exactly the seed tutorial's endpoint. `POST /items` parses and
validates a JSON body with pydantic, which is what a typical API handler
spends its time on.
"""

from fastapi import FastAPI
from pydantic import BaseModel

app = FastAPI()


class Item(BaseModel):
    name: str
    price: float
    quantity: int
    tags: list[str] = []


@app.get("/")
async def root():
    return {"message": "It's working!"}


@app.post("/items")
async def create_item(item: Item):
    return {"name": item.name, "total": item.price * item.quantity, "tags": len(item.tags)}
