"""Differential tests, FastAPI (tests/apps/compat/fastapi_compat.py): each test sends the same
request to ferrogate and to uvicorn serving the same app, and compares status, the headers
that matter, the body and what the app recorded. Where ferrogate is deliberately different,
the test says so."""

import json
import re
import signal
import socket
import threading
import time
import uuid

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from compat_support import assert_same_response, effects, raw_exchange, wait_effect


@pytest.fixture(scope="module")
def pair(pair_factory):
    # ferrogate logs at debug level here so that the client-abort test can see its debug line.
    return pair_factory("fastapi_compat:app", "--log-level", "debug")


def new_tag() -> str:
    return uuid.uuid4().hex[:12]


def both(pair, method, path, **kw):
    return pair.map(lambda srv: httpx.request(method, srv.url + path, timeout=10, **kw))


@pytest.mark.parametrize("method, path, kw", [
    ("GET", "/items/5?q=x", {}),
    ("GET", "/items/abc", {}),                                      # 422 validation error
    ("GET", "/nowhere", {}),                                        # 404
    ("POST", "/items/5", {}),                                       # 405 with allow
    ("POST", "/json", {"json": {"name": "pen", "qty": 3, "tags": ["a"]}}),
    ("POST", "/json", {"json": {"name": "pen"}}),                   # 422 missing field
    ("POST", "/json", {"content": b"{not json", "headers": {"content-type": "application/json"}}),
])
def test_json_routes(pair, method, path, kw):
    fg, uv = both(pair, method, path, **kw)
    assert_same_response(fg, uv, what=f"{method} {path}")


def test_json_body_reaches_the_app(pair):
    name = new_tag()
    fg, uv = both(pair, "POST", "/json", json={"name": name, "qty": 4})
    assert uv.status_code == 200 and uv.json() == {"name": name, "total": 8, "tags": []}
    assert_same_response(fg, uv, what="POST /json")
    for srv in pair:
        assert [(e["name"], e["qty"]) for e in effects(srv, "json", name=name)] == [(name, 4)], srv.name


@pytest.mark.parametrize("path", ["/file/absolute", "/file/relative"])
def test_file_response(pair, path):
    """FileResponse with an absolute path, and with a path relative to the server's working
    directory (tests/apps/compat), as FastAPI's docs write it: FileResponse("static_page.html")."""
    fg, uv = both(pair, "GET", path)
    assert uv.status_code == 200 and b"Served by FileResponse." in uv.content
    assert fg.status_code == 200, f"ferrogate: {fg.status_code} {fg.text[:200]}\n--- log ---\n{pair.fg.log_tail(20)}"
    assert_same_response(fg, uv, what=f"GET {path}")


def test_file_response_head_and_range(pair):
    fg, uv = both(pair, "HEAD", "/file/absolute")
    assert_same_response(fg, uv, what="HEAD is a 405 on a GET route (FastAPI adds no HEAD)")
    fg, uv = both(pair, "GET", "/file/absolute", headers={"range": "bytes=0-14"})
    assert uv.status_code == 206 and uv.content == b"<!doctype html>"
    assert_same_response(fg, uv, what="GET /file/absolute with a range")


def test_streaming_response(pair):
    fg, uv = both(pair, "GET", "/stream?n=20")
    assert uv.content == b"".join(f"line {i}\n".encode() for i in range(20))
    assert_same_response(fg, uv, what="StreamingResponse")
    assert fg.headers.get("transfer-encoding") == uv.headers.get("transfer-encoding") == "chunked"


def test_is_disconnected_polled_repeatedly(pair):
    """request.is_disconnected() five times in a row: each call is a receive() that Starlette
    cancels at once when no message is ready; the next call must still work."""
    fg, uv = both(pair, "GET", "/disconnect-poll?n=5")
    assert uv.status_code == 200 and uv.json() == {"count": 5, "disconnected": [False] * 5}
    assert fg.status_code == 200, (f"ferrogate: {fg.status_code} {fg.text[:200]}\n--- log ---\n"
                                   f"{pair.fg.log_tail(20)}")
    assert_same_response(fg, uv, what="is_disconnected() x5")


def test_background_task_runs_after_the_response(pair):
    tags = {}

    def run(srv):
        tags[srv.name] = tag = new_tag()
        return httpx.post(f"{srv.url}/background", params={"tag": tag}, timeout=10)

    fg, uv = pair.map(run)
    assert_same_response(fg, uv, headers=("content-type",), body=False, what="BackgroundTasks")
    assert fg.json() == {"queued": tags["ferrogate"]} and uv.json() == {"queued": tags["uvicorn"]}
    for srv in pair:
        wait_effect(srv, "background done", tag=tags[srv.name])


def test_not_modified_with_content_length(pair):
    """A 304 carries the Content-Length of the representation it stands for and no body:
    legal (RFC 9110 8.6), and what Starlette's conditional file responses send."""
    fg, uv = both(pair, "GET", "/not-modified")
    assert (uv.status_code, uv.headers.get("content-length"), uv.headers.get("etag"), uv.content) == (
        304, "11", '"v1"', b"")
    assert fg.status_code == 304, f"ferrogate: {fg.status_code} {fg.text[:200]}\n--- log ---\n{pair.fg.log_tail(20)}"
    assert_same_response(fg, uv, what="304 with content-length")


def test_head_on_a_normal_route(pair):
    fg_get, uv_get = both(pair, "GET", "/hello")
    fg, uv = both(pair, "HEAD", "/hello")
    assert uv.status_code == 200 and uv.content == b""
    assert uv.headers["content-length"] == uv_get.headers["content-length"] == str(len(uv_get.content))
    assert_same_response(fg, uv, what="HEAD /hello")
    assert_same_response(fg_get, uv_get, what="GET /hello")


def test_no_content(pair):
    item = int(time.monotonic_ns() % 1_000_000)
    fg, uv = both(pair, "DELETE", f"/items/{item}")
    assert uv.status_code == 204 and uv.content == b"" and "content-length" not in uv.headers
    assert_same_response(fg, uv, what="204")
    for srv in pair:
        assert effects(srv, "deleted", item_id=item), srv.name


def test_scope_headers_order_seen_by_fastapi(pair):
    """request.scope["headers"] (what request.headers.getlist() reads) in received order."""
    request = (b"GET /headers HTTP/1.1\r\nHost: test\r\nX-A: 1\r\nX-B: 2\r\nX-A: 3\r\n"
               b"Connection: close\r\n\r\n")
    fg, uv = pair.map(lambda srv: raw_exchange(srv, request))
    assert uv.status_code == 200
    assert [h for h in json.loads(uv.content) if h[0].startswith("x-")] == [["x-a", "1"], ["x-b", "2"], ["x-a", "3"]]
    assert_same_response(fg, uv, what="scope headers")


def test_websocket_echo_and_close_code(pair):
    for srv in pair:
        tag = new_tag()
        with connect(f"ws://127.0.0.1:{srv.port}/ws?tag={tag}", open_timeout=10) as ws:
            ws.send("hi")
            assert ws.recv(timeout=10) == "echo: hi"
            ws.close(4001, "bye")
        closed = wait_effect(srv, "ws closed", tag=tag)
        assert closed[0]["code"] == 4001, f"{srv.name}: {closed}"


# --------------------------------------------------------------------------
# A client that aborts a download
# --------------------------------------------------------------------------

def test_client_aborting_a_streaming_download_is_not_an_app_error(pair):
    """The client reads the first chunk of an endless StreamingResponse and hangs up.
    uvicorn (ASGI 2.3) tells Starlette through http.disconnect; ferrogate (ASGI 2.4) makes
    send() raise OSError, which Starlette turns into ClientDisconnect: both are a client
    leaving, not a bug in the app: no "Exception in ASGI application", no traceback."""
    tags, marks = {}, {}

    def run(srv):
        tags[srv.name] = tag = new_tag()
        marks[srv.name] = srv.log_mark()
        with socket.create_connection(srv.address, timeout=10) as s:
            s.sendall(f"GET /stream/endless?tag={tag} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
            data = b""
            while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < 1024:
                chunk = s.recv(65536)
                assert chunk, f"{srv.name} closed the stream early: {data[:300]!r}"
                data += chunk
            assert data.startswith(b"HTTP/1.1 200"), data[:200]
        wait_effect(srv, "endless stopped", tag=tag)

    pair.map_parallel(run)
    fg = pair.fg
    # ferrogate writes the access log line when the exchange is over.
    fg.wait_for_log(rf'"GET /stream/endless\?tag={tags["ferrogate"]} HTTP/1.1"', since=marks["ferrogate"])
    time.sleep(0.1)  # anything logged right after it
    for srv in pair:
        log = srv.log_since(marks[srv.name])
        assert "Exception in ASGI application" not in log, f"{srv.name}:\n{log}"
        assert "Traceback" not in log, f"{srv.name}:\n{log}"
    fg_log = fg.log_since(marks["ferrogate"])
    assert not re.search(r"\[(ERROR|CRITICAL)\]", fg_log), fg_log
    said = [line for line in fg_log.splitlines()
            if re.search(r"\[(INFO|DEBUG)\]", line) and re.search(r"(?i)disconnect|client|abort|reset|gone|closed", line)]
    assert len(said) >= 1, f"ferrogate should say (one info/debug line) that the client left:\n{fg_log}"


# --------------------------------------------------------------------------
# Graceful shutdown (fresh servers: these tests stop them)
# --------------------------------------------------------------------------

def test_graceful_shutdown_timeout_cancels_the_in_flight_handler(fresh_pair_factory):
    """--timeout-graceful-shutdown 2 on both, two handlers sleeping for a minute when SIGTERM
    comes: one whose finally block cleans up at once, one whose cleanup awaits 50 ms. When the
    2 s run out each must get CancelledError, run its cleanup to the end, and lifespan shutdown
    runs afterwards. Deliberate difference: the cancelled requests get a 503 from ferrogate
    (the server is going away, the app did nothing wrong) where uvicorn sends a 500."""
    pair = fresh_pair_factory("fastapi_compat:app", "--timeout-graceful-shutdown", "2",
                              uvicorn_args=("--timeout-graceful-shutdown", "2"))

    def run(srv):
        out = {"requests": {}}

        def request(tag, cleanup):
            try:
                out["requests"][tag] = httpx.get(f"{srv.url}/sleep", params={"tag": tag, "cleanup": cleanup},
                                                 timeout=30)
            except httpx.HTTPError as e:
                out["requests"][tag] = e

        out["quick"], out["slow"] = quick, slow = new_tag(), new_tag()
        threads = [threading.Thread(target=request, args=(quick, 0), daemon=True),
                   threading.Thread(target=request, args=(slow, 0.05), daemon=True)]
        for t in threads:
            t.start()
        wait_effect(srv, "sleep started", tag=quick)
        wait_effect(srv, "sleep started", tag=slow)
        started = time.monotonic()
        srv.signal(signal.SIGTERM)
        out["rc"] = srv.wait_exit(timeout=20)
        out["elapsed"] = time.monotonic() - started
        for t in threads:
            t.join(10)
        out["events"] = [(e["event"], e.get("tag")) for e in effects(srv) if e["event"] != "lifespan startup"]
        return out

    fg, uv = pair.map_parallel(run)

    def status(result, tag):
        r = result["requests"].get(tag)
        return r.status_code if isinstance(r, httpx.Response) else repr(r)

    # uvicorn, the reference: it re-raises the SIGTERM it caught once it has shut down (exit
    # status -15); both handlers get CancelledError at the timeout and the quick cleanup
    # completes and gets its 500. It then runs lifespan shutdown without waiting for the slow
    # cleanup, and asyncio.run() cancels that one a second time as the loop closes: its
    # "cleanup done" is never recorded and the client gets no response (recorded, not asserted).
    assert uv["rc"] in (0, -signal.SIGTERM) and 1.5 < uv["elapsed"] < 10, uv
    for tag in (uv["quick"], uv["slow"]):
        assert ("cancelled", tag) in uv["events"], f"uvicorn: {uv['events']}"
    assert ("cleanup done", uv["quick"]) in uv["events"], f"uvicorn: {uv['events']}"
    assert ("lifespan shutdown", None) in uv["events"], f"uvicorn: {uv['events']}"
    assert status(uv, uv["quick"]) == 500, uv
    print(f"uvicorn: slow cleanup done: {('cleanup done', uv['slow']) in uv['events']}, "
          f"slow request: {status(uv, uv['slow'])}; events {uv['events']}")

    fg_log = pair.fg.log()
    assert "Task was destroyed but it is pending" not in fg_log, (
        f"ferrogate dropped the in-flight handler's task at the graceful timeout instead of cancelling it:\n{fg_log}")
    assert fg["rc"] == 0 and 1.5 < fg["elapsed"] < 10, f"{fg}\n--- log ---\n{fg_log}"
    for tag in (fg["quick"], fg["slow"]):
        mine = [e for e, t in fg["events"] if t == tag]
        assert mine == ["sleep started", "cancelled", "cleanup done"], (
            f"ferrogate: the handler must get CancelledError at the graceful timeout and finish its "
            f"awaited cleanup: {fg['events']}\n--- log ---\n{fg_log}")
    assert fg["events"][-1] == ("lifespan shutdown", None), (
        f"ferrogate: lifespan shutdown must run after the cancelled handlers finished: {fg['events']}")
    # Deliberate difference: 503 (ferrogate) where uvicorn sends 500.
    for tag in (fg["quick"], fg["slow"]):
        assert status(fg, tag) == 503, f"ferrogate answered a request cancelled by the stop with {status(fg, tag)}"


def test_websocket_open_during_sigterm(fresh_pair_factory):
    """An open WebSocket when the server stops. uvicorn closes it with 1012 (service
    restart); ferrogate deliberately sends 1001 (going away): a stop is not a restart."""
    pair = fresh_pair_factory("fastapi_compat:app")

    def run(srv):
        tag = new_tag()
        with connect(f"ws://127.0.0.1:{srv.port}/ws?tag={tag}", open_timeout=10) as ws:
            ws.send("x")
            assert ws.recv(timeout=10) == "echo: x"
            srv.signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=20)
        rc = srv.wait_exit(timeout=20)
        rcvd = info.value.rcvd
        return {"tag": tag, "rc": rc, "code": rcvd.code if rcvd else None}

    fg, uv = pair.map_parallel(run)
    assert uv["rc"] in (0, -signal.SIGTERM) and uv["code"] == 1012, uv
    assert fg["rc"] == 0, fg
    assert fg["code"] == 1001, f"ferrogate closed the WebSocket with {fg['code']} on SIGTERM (1001 going away expected)"
    for srv, res in ((pair.uv, uv), (pair.fg, fg)):
        closed = effects(srv, "ws closed", tag=res["tag"])
        assert closed, f"{srv.name}: the app never saw the disconnect: {effects(srv)}"
        assert effects(srv, "lifespan shutdown"), srv.name
    print(f"app saw close codes: uvicorn {effects(pair.uv, 'ws closed')[0]['code']}, "
          f"ferrogate {effects(pair.fg, 'ws closed')[0]['code']}")
