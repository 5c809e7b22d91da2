"""Support for the differential suite (tests/test_compat_*.py): the same app served by
ferrogate and by uvicorn, side by side, and helpers to compare what they answer."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import APPS_DIR, Server, ServerFactory, dechunk, free_port, raw_http, wait_until


# --------------------------------------------------------------------------
# Differential tests (test_compat_*.py): the same app on ferrogate and on uvicorn
# --------------------------------------------------------------------------

COMPAT_APPS_DIR = APPS_DIR / "compat"


class UvicornServer(Server):
    """`python -m uvicorn APP` as the reference server, with the same interface as `Server`.

    It runs in its own session with its log (stderr and stdout) in a file, is ready when its
    port accepts (uvicorn binds after lifespan startup), and is stopped with SIGTERM, then
    SIGKILL to the group. `args` are extra uvicorn flags.
    """

    name = "uvicorn"

    def __init__(self, app: str, *args: str, env: dict | None = None, cwd: Path | str = COMPAT_APPS_DIR,
                 app_dir: Path | str | None = None, log_dir: Path | None = None, host: str = "127.0.0.1",
                 port: int | None = None, log_level: str = "info"):
        port = port if port is not None else free_port(host)
        argv = [sys.executable, "-m", "uvicorn", app, "--host", host, "--port", str(port),
                "--app-dir", str(app_dir or cwd), "--log-level", log_level, *args]
        super().__init__(None, argv=argv, workers=None, env=env, cwd=cwd, log_dir=log_dir, host=host, port=port)


class Pair:
    """One app served twice: `fg` (ferrogate, 1 worker) and `uv` (uvicorn).

    Both run with the same cwd and the same environment, except COMPAT_EFFECTS: each server
    has its own file where the app records its side effects (tests/apps/compat/effects.py),
    available as `server.effects_path`. Iterating gives (fg, uv).
    """

    def __init__(self, fg: Server, uv: UvicornServer):
        self.fg, self.uv = fg, uv

    def __iter__(self):
        return iter((self.fg, self.uv))

    def map(self, fn):
        """(fn(fg), fn(uv))."""
        return fn(self.fg), fn(self.uv)

    def map_parallel(self, fn):
        """(fn(fg), fn(uv)), both at once (each in a thread); re-raises the first exception."""
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(2) as pool:
            f1, f2 = pool.submit(fn, self.fg), pool.submit(fn, self.uv)
            return f1.result(), f2.result()


class PairFactory:
    """`factory(app, *ferrogate_args, uvicorn_args=(), env=..., cwd=...)` starts a `Pair`.

    The ferrogate server is a `Server` from a `ServerFactory` (so it is stopped like every
    other); the uvicorn server is added to the same factory. Both start at once.
    """

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.servers = ServerFactory(log_dir)
        self.count = 0

    def __call__(self, app: str, *ferrogate_args: str, uvicorn_args=(), env: dict | None = None,
                 cwd: Path | str = COMPAT_APPS_DIR, workers: int = 1, wait: bool = True) -> Pair:
        self.count += 1
        n = self.count
        common = dict(env or {})
        fg_effects = self.log_dir / f"effects-ferrogate-{n}.jsonl"
        uv_effects = self.log_dir / f"effects-uvicorn-{n}.jsonl"
        # uvicorn compresses nothing: the pair compares the ASGI behaviour, so ferrogate's
        # compression (tests/test_compress.py) is off here.
        fg = self.servers(app, "--app-dir", str(cwd), "--no-compress", *ferrogate_args, wait=False, workers=workers, cwd=cwd,
                          env={**common, "COMPAT_EFFECTS": str(fg_effects)})
        uv = UvicornServer(app, *uvicorn_args, cwd=cwd, log_dir=self.log_dir,
                           env={**common, "COMPAT_EFFECTS": str(uv_effects)})
        self.servers.servers.append(uv)
        fg.effects_path, uv.effects_path = fg_effects, uv_effects
        if wait:
            for srv in (fg, uv):
                srv.wait_ready()
        return Pair(fg, uv)

    def stop_all(self):
        self.servers.stop_all()


@pytest.fixture(scope="module")
def pair_factory(tmp_path_factory):
    """Pairs shared by a module (start each app once per test file)."""
    f = PairFactory(tmp_path_factory.mktemp("compat"))
    yield f
    f.stop_all()


@pytest.fixture
def fresh_pair_factory(tmp_path_factory):
    """Pairs for one test (for tests that stop the servers)."""
    f = PairFactory(tmp_path_factory.mktemp("compat"))
    yield f
    f.stop_all()


def effects(srv, event: str | None = None, **match) -> list[dict]:
    """The side effects the app recorded on `srv` (a pair member), optionally only `event`
    with fields equal to `match`."""
    path = srv.effects_path
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        if event is not None and rec.get("event") != event:
            continue
        if any(rec.get(k) != v for k, v in match.items()):
            continue
        out.append(rec)
    return out


def wait_effect(srv, event: str, timeout: float = 10.0, count: int = 1, **match) -> list[dict]:
    """Waits until the app on `srv` recorded `event` (with `match`) `count` times."""
    return wait_until(lambda: (lambda found: found if len(found) >= count else None)(effects(srv, event, **match)),
                      timeout, message=lambda: f"{srv.name}: the app never recorded {event!r} {match or ''} "
                      f"x{count} within {timeout}s; it recorded {effects(srv)}\n--- log ---\n{srv.log_tail(40)}")


class RawResponse:
    """One response read from a raw socket: status, headers in order (names lowercased), body."""

    def __init__(self, data: bytes):
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        self.raw = data
        self.status_line = lines[0].decode("latin-1")
        self.status_code = int(lines[0].split()[1])
        self.header_list = []
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            self.header_list.append((name.decode("latin-1").strip().lower(), value.decode("latin-1").strip()))
        if self.get("transfer-encoding") == "chunked":
            body = dechunk(body)
        self.content = body

    def get(self, name: str, default=None):
        values = self.get_list(name)
        return values[-1] if values else default

    def get_list(self, name: str) -> list[str]:
        return [v for k, v in self.header_list if k == name.lower()]

    def __repr__(self):
        return f"<RawResponse {self.status_line!r} {self.header_list} {self.content[:80]!r}>"


# Response headers that matter to a client (not date, server, or per-server details).
COMPARED_HEADERS = (
    "content-type", "content-length", "etag", "last-modified", "set-cookie", "location", "cache-control",
    "content-disposition", "content-encoding", "content-range", "accept-ranges", "vary", "allow",
    "x-frame-options", "x-content-type-options", "referrer-policy", "cross-origin-opener-policy",
)


def _header_values(resp, name: str) -> list[str]:
    if isinstance(resp, RawResponse):
        return resp.get_list(name)
    return resp.headers.get_list(name)


def response_view(resp, headers=COMPARED_HEADERS, body: bool = True) -> dict:
    """What is compared between the two servers: status, the listed headers (all values, in
    order), and the body (bytes)."""
    view = {"status": resp.status_code,
            "headers": {h: values for h in headers if (values := _header_values(resp, h))}}
    if body:
        view["body"] = resp.content
    return view


def assert_same_response(fg_resp, uv_resp, headers=COMPARED_HEADERS, body: bool = True, what: str = ""):
    fg_view, uv_view = response_view(fg_resp, headers, body), response_view(uv_resp, headers, body)
    assert fg_view == uv_view, (f"{what}: ferrogate and uvicorn differ\n  ferrogate: {fg_view}\n"
                                f"  uvicorn:   {uv_view}")


def raw_exchange(srv, data: bytes, timeout: float = 10.0) -> RawResponse:
    """Sends raw bytes (a request that should end with `Connection: close`) and parses the answer."""
    answer = raw_http(srv.address, data, timeout=timeout)
    assert answer, f"{srv.name} closed the connection without answering {data[:60]!r}"
    return RawResponse(answer)
