"""Application errors and bad client input."""

import socket
import threading

import httpx
import pytest

from conftest import APPS_DIR, json_of, parse_response, read_response, wait_until


@pytest.fixture(scope="module")
def requests_file(tmp_path_factory):
    return tmp_path_factory.mktemp("errors") / "requests.log"


@pytest.fixture(scope="module")
def srv(module_server_factory, requests_file):
    return module_server_factory("basic:app", env={"FG_REQUEST_LOG": str(requests_file)})


def worker(srv) -> int:
    return json_of(srv.get("/pid"))["pid"]


# --------------------------------------------------------------------------
# Exceptions and protocol violations in the app
# --------------------------------------------------------------------------

def test_exception_before_response_is_a_500_with_traceback_logged(srv):
    pid = worker(srv)
    mark = srv.log_mark()
    r = srv.get("/error-before")
    assert r.status_code == 500
    assert "boom" not in r.text, "the traceback must not leak to the client"
    srv.wait_for_log(r"ValueError: boom before start", since=mark)
    text = srv.log_since(mark)
    assert "Traceback (most recent call last)" in text
    assert "basic.py" in text
    assert worker(srv) == pid, "the worker must keep serving after an app exception"


def test_exception_after_response_started_closes_the_connection(srv):
    pid = worker(srv)
    mark = srv.log_mark()
    with pytest.raises(httpx.RemoteProtocolError):
        srv.get("/error-after")
    srv.wait_for_log(r"ValueError: boom after start", since=mark)
    # Over a raw socket: the chunked body is cut off without its terminating chunk.
    data = srv.raw(b"GET /error-after HTTP/1.1\r\nHost: x\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 200 OK")
    assert b"partial " in data
    assert not data.endswith(b"0\r\n\r\n"), "a failed stream must not look complete"
    assert worker(srv) == pid


@pytest.mark.parametrize("route, needle", [
    ("/violation/body-first", "http.response.body"),
    ("/violation/bad-type", "http.response.nonsense"),
    ("/violation/str-header", "bytes"),
    ("/violation/return-early", "without starting a response"),
    # A relative path is resolved against the working directory (as Starlette's FileResponse expects);
    # one that names no file is the app's error.
    ("/pathsend?path=relative/file.txt", "cannot send " + str(APPS_DIR / "relative/file.txt")),
])
def test_protocol_violation_before_start_is_a_logged_500(srv, route, needle):
    pid = worker(srv)
    mark = srv.log_mark()
    r = srv.get(route)
    assert r.status_code == 500
    srv.wait_for_log(r"\[ERROR\]", since=mark)
    assert needle in srv.log_since(mark)
    assert worker(srv) == pid


def test_returning_mid_stream_cuts_the_connection(srv):
    mark = srv.log_mark()
    with pytest.raises(httpx.RemoteProtocolError):
        srv.get("/violation/no-end")
    srv.wait_for_log(r"without completing the response", since=mark)
    assert srv.get("/hello").status_code == 200


def test_sending_after_completion_is_logged(srv):
    mark = srv.log_mark()
    r = srv.get("/violation/after-complete")
    assert r.status_code == 200 and r.text == "complete"
    srv.wait_for_log(r"\[ERROR\].*(\n.*)*already complete", since=mark)
    assert srv.get("/hello").status_code == 200


def test_crlf_in_a_response_header_is_refused(srv):
    data = srv.raw(b"GET /violation/crlf-header HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 500"), data[:200]
    assert b"x-injected" not in data.lower()


@pytest.fixture(scope="module")
def short_grace_srv(module_server_factory):
    # Its own server, with a short graceful timeout: if a connection task dies badly the
    # stop at teardown would otherwise wait the default 30 s.
    return module_server_factory("basic:app", "--timeout-graceful-shutdown", "2")


@pytest.mark.parametrize("route", ["content-length-short", "content-length-long", "content-length-stream"])
def test_content_length_contradicted_by_the_body_never_desyncs_the_connection(short_grace_srv, route):
    """The app's content-length disagrees with what it sends. The server may answer 500,
    or cut the connection, but it must not hang, and must never put more bytes on the
    wire than it announced (the surplus would be read as the next response)."""
    srv = short_grace_srv
    mark = srv.log_mark()
    pipelined = (f"GET /violation/{route} HTTP/1.1\r\nHost: x\r\n\r\n"
                 f"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").encode()
    with socket.create_connection(srv.address, timeout=5) as s:
        s.sendall(pipelined)
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
        except (TimeoutError, socket.timeout):
            pytest.fail(f"the connection hung after a response whose content-length the body contradicts: {data!r}")
    if data:
        status, headers, _ = parse_response(data)
        head, _, rest = data.partition(b"\r\n\r\n")
        if status == 200 and "content-length" in headers:
            n = int(headers["content-length"])
            after = rest[n:]
            assert after == b"" or after.startswith(b"HTTP/1.1 "), \
                f"response framing broken: content-length {n} announced, but the wire then carries {rest[:120]!r}"
    panics = [line for line in srv.log_since(mark).splitlines() if "panicked" in line or "claims" in line]
    assert not panics, f"the server panicked: {panics[:3]}"
    assert srv.get("/hello").status_code == 200


def test_empty_body_messages_do_not_end_a_stream(srv):
    r = srv.get("/empty-chunks")
    assert r.content == b"abc"


def test_fastapi_unhandled_exception_is_500(server_factory):
    srv = server_factory("fastapi_app:app")
    mark = srv.log_mark()
    r = srv.get("/crash")
    assert r.status_code == 500
    srv.wait_for_log(r"ZeroDivisionError: FG-FASTAPI-CRASH", since=mark)
    assert srv.get("/text").text == "plain text"


# --------------------------------------------------------------------------
# Bad input: a clear HTTP error, the connection closed, the app never called
# --------------------------------------------------------------------------

H = b"Host: x\r\n"

BAD_REQUESTS = {
    "garbage-request-line": (b"GARBAGE\r\n\r\n", 400),
    "request-line-extra-token": (b"GET /never HTTP/1.1 extra\r\n" + H + b"\r\n", 400),
    "unknown-http-version": (b"GET /never HTTP/3.7\r\n" + H + b"\r\n", 400),
    "header-without-colon": (b"GET /never HTTP/1.1\r\n" + H + b"BadHeader\r\n\r\n", 400),
    "space-in-header-name": (b"GET /never HTTP/1.1\r\n" + H + b"X Y: z\r\n\r\n", 400),
    "space-before-colon": (b"GET /never HTTP/1.1\r\n" + H + b"X-Y : z\r\n\r\n", 400),
    "nul-in-header-value": (b"GET /never HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n", 400),
    "obs-fold": (b"GET /never HTTP/1.1\r\n" + H + b"X-A: a\r\n  continued\r\n\r\n", 400),
    "bare-lf-line-ends": (b"GET /never HTTP/1.1\nHost: x\n\n", 400),
    "header-hidden-behind-bare-lf": (
        b"POST /never HTTP/1.1\r\n" + H + b"X: a\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    "conflicting-content-lengths": (
        b"POST /never HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhelloo", 400),
    "content-length-list": (b"POST /never HTTP/1.1\r\n" + H + b"Content-Length: 5, 6\r\n\r\nhelloo", 400),
    "content-length-not-a-number": (b"POST /never HTTP/1.1\r\n" + H + b"Content-Length: abc\r\n\r\n", 400),
    "content-length-negative": (b"POST /never HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n", 400),
    "content-length-plus-sign": (b"POST /never HTTP/1.1\r\n" + H + b"Content-Length: +5\r\n\r\nhello", 400),
    "unknown-transfer-encoding": (b"POST /never HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n\r\n", 400),
    "too-many-headers": (b"GET /never HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(150)) + b"\r\n", 431),
    "head-too-large": (b"GET /never HTTP/1.1\r\n" + H + b"X-Big: " + b"a" * 80_000 + b"\r\n\r\n", 431),
    "uri-too-long": (b"GET /never" + b"a" * 100_000 + b" HTTP/1.1\r\n" + H + b"\r\n", (414, 431)),
}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_bad_request_is_rejected_and_connection_closed(srv, requests_file, name):
    data, expected = BAD_REQUESTS[name]
    marker = f"/never-{name}"
    data = data.replace(b"/never", marker.encode(), 1)
    with socket.create_connection(srv.address, timeout=5) as s:
        s.sendall(data)
        try:
            reply = read_response(s, read_until_close=False)
        except (TimeoutError, socket.timeout):
            pytest.fail(f"{name}: the server did not answer within 5 s")
        assert reply, f"{name}: the connection was closed without an HTTP error"
        status = int(reply.split(b" ", 2)[1])
        assert status in (expected if isinstance(expected, tuple) else (expected,)), \
            f"{name}: expected {expected}, got {reply[:300]!r}"
        try:
            rest = s.recv(65536)
        except ConnectionResetError:
            rest = b""
        except (TimeoutError, socket.timeout):
            pytest.fail(f"{name}: the connection was left open after the {status} response")
        assert rest == b"", f"{name}: more data after the error response: {rest[:200]!r}"
    seen = requests_file.read_text() if requests_file.exists() else ""
    assert marker not in seen, f"{name}: the app was called for a request that should have been rejected"
    # The worker is unharmed.
    assert srv.get("/hello").status_code == 200


@pytest.mark.parametrize("order", ["cl-first", "te-first"])
def test_content_length_with_transfer_encoding_is_refused(srv, requests_file, order):
    # The request-smuggling shape of RFC 9112 section 6.1: a proxy in front may
    # measure the body by Content-Length, we would by chunks. Refuse it with a
    # 400 and close, so that nothing hidden behind the body is ever served.
    cl, te = b"Content-Length: 40\r\n", b"Transfer-Encoding: chunked\r\n"
    framing = cl + te if order == "cl-first" else te + cl
    smuggled = f"/smuggled-{order}".encode()
    data = (b"POST /body HTTP/1.1\r\n" + H + framing + b"\r\n0\r\n\r\n"
            b"GET " + smuggled + b" HTTP/1.1\r\n" + H + b"\r\n")
    with socket.create_connection(srv.address, timeout=5) as s:
        s.sendall(data)
        reply = read_response(s)  # reads until the server closes
    assert reply.startswith(b"HTTP/1.1 400"), reply[:300]
    assert reply.count(b"HTTP/1.1 ") == 1, reply[:500]
    seen = requests_file.read_text() if requests_file.exists() else ""
    assert smuggled.decode() not in seen, "a request smuggled behind the body was served"
    assert srv.get("/hello").status_code == 200


def test_invalid_chunk_size_is_400_and_closes(srv):
    data = (b"POST /body HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
            b"zz\r\nhello\r\n0\r\n\r\n")
    with socket.create_connection(srv.address, timeout=5) as s:
        s.sendall(data)
        reply = read_response(s)
    assert reply.startswith(b"HTTP/1.1 400"), reply[:200]
    assert srv.get("/hello").status_code == 200


def test_head_limit_is_configurable(server_factory):
    srv = server_factory("basic:app", "--max-header-size", "16384", "--max-headers", "20")
    ok = b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-A: " + b"a" * 8000 + b"\r\n\r\n"
    assert srv.raw(ok).startswith(b"HTTP/1.1 200")
    big = b"GET /hello HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 20000 + b"\r\n\r\n"
    assert srv.raw(big).startswith(b"HTTP/1.1 431")
    many = b"GET /hello HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(25)) + b"\r\n"
    assert srv.raw(many).startswith(b"HTTP/1.1 431")


def test_limit_concurrency_answers_503_beyond_the_limit(server_factory, tmp_path):
    srv = server_factory("basic:app", "--limit-concurrency", "2")
    gate, started = tmp_path / "gate", tmp_path / "started"
    results = []

    def hold(i):
        r = httpx.post(f"{srv.url}/wait-file", params={"path": str(gate), "started": f"{started}{i}"}, timeout=30)
        results.append(r.status_code)

    threads = [threading.Thread(target=hold, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    wait_until(lambda: all((tmp_path / f"started{i}").exists() for i in range(2)), 10,
               message="the two held requests never reached the app")
    r = srv.get("/hello")
    assert r.status_code == 503
    assert r.headers.get("connection") == "close"
    gate.touch()
    for t in threads:
        t.join(30)
    assert results == [200, 200]
    # Once the slots are free, requests are served again.
    assert srv.get("/hello").status_code == 200


def test_garbage_after_a_good_request_on_keep_alive(srv):
    data = srv.raw(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\nNOT HTTP AT ALL\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 200 OK")
    assert b"HTTP/1.1 400" in data


def test_slowloris_head_is_cut_off(server_factory):
    """A client that never finishes its request head is disconnected (header read timeout)."""
    srv = server_factory("basic:app", "--timeout-keep-alive", "1")
    with socket.create_connection(srv.address, timeout=10) as s:
        s.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        s.settimeout(8)
        try:
            data = s.recv(65536)
        except ConnectionResetError:
            data = b""
        # Either a 408 or a plain close, but not waiting forever.
        assert data == b"" or data.startswith(b"HTTP/1.1 408"), data
