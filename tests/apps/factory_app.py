"""An app built by a factory function (for --factory)."""

import os


def create_app():
    greeting = os.environ.get("FG_GREETING", "made by the factory")

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                await send({"type": msg["type"] + ".complete"})
                if msg["type"] == "lifespan.shutdown":
                    return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": greeting.encode()})

    return app


def broken_factory():
    raise RuntimeError("FG-FACTORY-FAILED")


not_an_app = 42
