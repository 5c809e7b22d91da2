"""The gzip-json workload: a ~100 KiB JSON document from the app.

A page of a product listing, as a JSON API returns it: a few hundred records
with ids, names, prices, tags, dates and a nested supplier, compact
separators (as FastAPI/orjson send them). Built once at import from a fixed
seed, so every server and every run sends the same bytes; per request the app
only sends them, so the CPU per request is about what happens to 100 KiB on
the way out (compression, for the gzip-json row).

The app sends it uncompressed, whatever the request's Accept-Encoding: the
front (ferrogate, nginx) compresses it, or GZipMiddleware for the servers
without compression (apps/gzip_wrapped.py).
"""

import json
import random

from bench_lifespan import serve_lifespan

TARGET_SIZE = 100 * 1024

_ADJECTIVES = ["blue", "steel", "compact", "heavy-duty", "organic", "wireless", "vintage",
               "ergonomic", "waterproof", "recycled", "premium", "portable", "smart", "classic"]
_NOUNS = ["widget", "lamp", "backpack", "kettle", "headphones", "notebook", "chair", "bottle",
          "keyboard", "jacket", "teapot", "drill", "monitor stand", "umbrella", "speaker"]
_CATEGORIES = ["hardware", "kitchen", "office", "outdoor", "electronics", "clothing", "garden"]
_TAGS = ["sale", "new", "bestseller", "eco", "limited", "bundle", "clearance", "gift"]
_SUPPLIERS = [("Nordwerk GmbH", "DE"), ("Atelier Lumière", "FR"), ("Pacific Goods Co.", "US"),
              ("Hanami Trading", "JP"), ("Costa Verde S.A.", "ES"), ("Maple & Finch Ltd", "GB"),
              ("Vistula Sp. z o.o.", "PL"), ("Lago Forniture S.r.l.", "IT")]
_WORDS = ("a durable everyday design that holds up to heavy use with a finish that resists "
          "scratches and stains while staying light enough to carry anywhere you need it").split()


def _sentence(rng):
    start = rng.randrange(len(_WORDS) - 8)
    return " ".join(_WORDS[start:start + rng.randrange(6, 14)]).capitalize() + "."


def _record(rng, i):
    name = f"{rng.choice(_ADJECTIVES).capitalize()} {rng.choice(_NOUNS)}"
    supplier, country = rng.choice(_SUPPLIERS)
    return {
        "id": 100000 + i * 7 + rng.randrange(7),
        "sku": f"{name[:3].upper()}-{rng.randrange(100000):05d}",
        "name": name,
        "description": _sentence(rng),
        "category": rng.choice(_CATEGORIES),
        "price": round(rng.uniform(2, 400), 2),
        "currency": "EUR",
        "in_stock": rng.random() < 0.8,
        "quantity": rng.randrange(0, 500),
        "rating": round(rng.uniform(1, 5), 1),
        "reviews": rng.randrange(0, 3000),
        "tags": rng.sample(_TAGS, rng.randrange(0, 4)),
        "created_at": (f"20{rng.randrange(19, 26)}-{rng.randrange(1, 13):02d}-"
                       f"{rng.randrange(1, 29):02d}T{rng.randrange(24):02d}:"
                       f"{rng.randrange(60):02d}:{rng.randrange(60):02d}Z"),
        "supplier": {"name": supplier, "country": country, "id": rng.randrange(1, 900)},
    }


def document(target=TARGET_SIZE, seed=12):
    """The JSON bytes: as many records as fit in about `target` bytes."""
    rng = random.Random(seed)
    items, size = [], 0
    while size < target - 400:
        items.append(_record(rng, len(items)))
        size += len(json.dumps(items[-1], separators=(",", ":"))) + 1
    page = {"page": 1, "per_page": len(items), "count": len(items), "items": items}
    return json.dumps(page, separators=(",", ":"), ensure_ascii=False).encode()


BODY = document()
HEADERS = ((b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode()))


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await serve_lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    # Fresh messages every time (unlike raw_json's constants): GZipMiddleware
    # rewrites the messages it is given in place (body, content-encoding), so
    # shared ones would hand the next request the previous compressed body,
    # already marked gzip, and it would pass through uncompressed.
    await send({"type": "http.response.start", "status": 200, "headers": list(HEADERS)})
    await send({"type": "http.response.body", "body": BODY})
