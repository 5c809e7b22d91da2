"""App-side effects for the compatibility apps: one JSON object per line in $COMPAT_EFFECTS.

Each server of a pair gets its own file (the tests set COMPAT_EFFECTS per server), so a
test can read what the app did behind a request on ferrogate and on uvicorn and compare.
"""

import json
import os
import time


def record(event: str, **data) -> None:
    path = os.environ.get("COMPAT_EFFECTS")
    if not path:
        return
    line = json.dumps({"event": event, "pid": os.getpid(), "t": time.time(), **data})
    # One write() of one short line with O_APPEND: lines of concurrent writers do not interleave.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)
