"""The gzip workloads' apps for servers that cannot compress (granian, uvicorn).

What a user of those servers does to send gzip: wrap the app in Starlette's
GZipMiddleware. compresslevel 5 (its default is 9) to match ferrogate's
--compress-level balanced and the classic stack's `gzip_comp_level 5`.
The bodies here (~100 KiB) stay under its thread_minimum_size (128 KiB), so it
compresses on the event loop, not in a worker thread.
"""

from starlette.middleware.gzip import GZipMiddleware

import big_json
import static_files

LEVEL = 5

PATHSEND = "http.response.pathsend"


def without_pathsend(app):
    """Hide the pathsend extension from the app: GZipMiddleware passes a pathsend
    response through uncompressed (granian offers pathsend), so the static-file
    app must read the file and send the bytes for it to compress them."""
    async def wrapped(scope, receive, send):
        if PATHSEND in (scope.get("extensions") or {}):
            extensions = {k: v for k, v in scope["extensions"].items() if k != PATHSEND}
            scope = dict(scope, extensions=extensions)
        await app(scope, receive, send)
    return wrapped


big_json_app = GZipMiddleware(big_json.app, compresslevel=LEVEL)
static_app = GZipMiddleware(without_pathsend(static_files.app), compresslevel=LEVEL)
