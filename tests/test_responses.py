"""Responses: headers, streaming, HEAD, status codes, pathsend, keep-alive."""

import email.utils
import hashlib
import os
import socket

import httpx
import pytest

from conftest import parse_response, read_response, wait_until


@pytest.fixture(scope="module")
def srv(module_server_factory):
    return module_server_factory("basic:app")


def test_full_body_has_content_length_date_and_server(srv):
    r = srv.get("/hello")
    assert r.status_code == 200
    assert r.text == "Hello, world!\n"
    assert r.headers["content-length"] == str(len(r.content))
    assert "transfer-encoding" not in r.headers
    assert r.headers["server"] == "ferrogate"
    assert r.headers["content-type"] == "text/plain"
    date = email.utils.parsedate_to_datetime(r.headers["date"])
    assert date.tzinfo is not None
    assert r.headers["date"].endswith(" GMT")


@pytest.mark.parametrize("shape", ["tuples", "lists", "tuple", "generator"])
def test_repeated_and_mixed_case_headers_are_kept(srv, shape):
    r = srv.get(f"/headers?shape={shape}")
    assert r.status_code == 201
    assert r.headers.get_list("x-multi") == ["one", "two"]
    assert r.headers.get_list("set-cookie") == ["a=1", "b=2"]
    assert r.headers["x-mixed-case"] == "Value"
    assert r.cookies["a"] == "1" and r.cookies["b"] == "2"


def test_app_server_header_replaces_the_default(srv):
    r = srv.get("/headers?server=my-app")
    assert r.headers.get_list("server") == ["my-app"]


def test_streaming_response_is_chunked(srv):
    r = srv.get("/stream?n=7&size=1000")
    assert r.status_code == 200
    assert r.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in r.headers
    assert r.content == b"".join(bytes([48 + i]) * 1000 for i in range(7))


def test_streaming_chunks_are_sent_as_they_are_produced(srv, tmp_path):
    gate = tmp_path / "gate"
    with srv.client() as c:
        # Identity: the raw chunks are compared (compressed streams are test_compress.py's).
        with c.stream("GET", "/stream-gated", params={"path": str(gate)}, headers={"accept-encoding": "identity"}) as r:
            it = r.iter_raw()
            first = next(it)
            # The second chunk is only produced once the gate exists: the first must arrive before.
            assert first == b"first;"
            gate.touch()
            rest = b"".join(it)
    assert rest == b"second"


def test_large_streaming_response(srv):
    r = srv.get("/stream?n=200&size=65536", timeout=60)
    assert len(r.content) == 200 * 65536
    assert r.content[:65536] == b"0" * 65536
    assert r.content[-65536:] == b"9" * 65536


def test_large_full_response(srv):
    r = srv.get("/big?size=20000000", timeout=60, headers={"accept-encoding": "identity"})
    assert r.headers["content-length"] == "20000000"
    assert len(r.content) == 20_000_000


def test_head_sends_no_body_and_keeps_the_connection_usable(srv):
    data = srv.raw(b"HEAD /hello HTTP/1.1\r\nHost: x\r\n\r\n"
                   b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    first, _, rest = data.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200 OK"), data
    assert b"content-length: 14" in first.lower()
    # Straight after the HEAD response's head comes the next response, no body in between.
    assert rest.startswith(b"HTTP/1.1 200 OK"), data
    assert rest.endswith(b"Hello, world!\n")


def test_head_of_streaming_response(srv):
    r = httpx.head(srv.url + "/stream?n=3&size=10")
    assert r.status_code == 200
    assert r.content == b""


@pytest.mark.parametrize("code", [204, 304])
def test_bodiless_statuses(srv, code):
    data = srv.raw(f"GET /status?code={code} HTTP/1.1\r\nHost: x\r\n\r\n"
                   f"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    assert data.startswith(f"HTTP/1.1 {code} ".encode()), data
    head, _, rest = data.partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head.lower()
    assert rest.startswith(b"HTTP/1.1 200 OK"), data


@pytest.mark.parametrize("code", [201, 404, 418, 500, 503])
def test_status_codes(srv, code):
    assert srv.get(f"/status?code={code}").status_code == code


def test_unknown_status_code(srv):
    data = srv.raw(b"GET /status?code=599 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 599"), data


def test_pathsend_sends_the_file(srv, tmp_path):
    path = tmp_path / "data.bin"
    content = os.urandom(3 * 1024 * 1024 + 17)
    path.write_bytes(content)
    r = srv.get("/pathsend", params={"path": str(path)})
    assert r.status_code == 200
    assert r.headers["content-length"] == str(len(content))
    assert hashlib.sha256(r.content).hexdigest() == hashlib.sha256(content).hexdigest()


def test_pathsend_of_missing_file_is_500_and_worker_survives(srv, tmp_path):
    r = srv.get("/pathsend", params={"path": str(tmp_path / "nope")})
    assert r.status_code == 500
    assert srv.get("/hello").status_code == 200


def test_fastapi_file_response_uses_pathsend(server_factory, tmp_path):
    srv = server_factory("fastapi_app:app")
    path = tmp_path / "page.txt"
    path.write_text("file content via FileResponse\n" * 1000)
    r = srv.get("/file", params={"path": str(path)})
    assert r.status_code == 200
    assert r.text == path.read_text()
    r = srv.get("/stream")
    assert r.text == "".join(f"line {i}\n" for i in range(10))


def test_keep_alive_and_pipelining(srv):
    reqs = b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n" * 5 + b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    data = srv.raw(reqs)
    assert data.count(b"HTTP/1.1 200 OK") == 6
    assert data.count(b"Hello, world!\n") == 6


def test_connection_close_is_honoured(srv):
    with socket.create_connection(srv.address, timeout=5) as s:
        s.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = read_response(s)  # returns only once the server closed
    status, headers, body = parse_response(data)
    assert status == 200 and body == b"Hello, world!\n"
    assert headers.get("connection") == "close"


def test_http_10_without_keep_alive_closes(srv):
    with socket.create_connection(srv.address, timeout=5) as s:
        s.sendall(b"GET /stream?n=3&size=5 HTTP/1.0\r\nHost: x\r\n\r\n")
        data = read_response(s)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200") or head.startswith(b"HTTP/1.1 200"), head
    # HTTP/1.0 has no chunked encoding: the body is delimited by the close.
    assert b"chunked" not in head.lower()
    assert body == b"00000" + b"11111" + b"22222"


def test_idle_keep_alive_connection_is_closed_after_timeout(server_factory):
    srv = server_factory("basic:app", "--timeout-keep-alive", "1")
    with socket.create_connection(srv.address, timeout=10) as s:
        s.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
        s.settimeout(8)
        # The server closes the idle connection on its own (well before our 8 s).
        assert s.recv(65536) == b""


def test_server_and_date_headers_can_be_disabled_and_extra_headers_added(server_factory):
    srv = server_factory("basic:app", "--no-server-header", "--no-date-header",
                         "--header", "x-frame-options:DENY", "--header", "X-Extra: two words")
    r = srv.get("/hello")
    assert "server" not in r.headers
    assert "date" not in r.headers
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["x-extra"] == "two words"
    # Default headers apply to responses ferrogate writes itself too.
    r = srv.get("/error-before")
    assert r.status_code == 500
    assert r.headers["x-frame-options"] == "DENY"


def test_many_concurrent_requests_on_one_worker(srv):
    """200 requests that each await 0.5 s, all at once: the worker's event loop
    interleaves them (served one after another they would take 100 s)."""
    import concurrent.futures
    with httpx.Client(base_url=srv.url, timeout=30, limits=httpx.Limits(max_connections=200)) as c:
        with concurrent.futures.ThreadPoolExecutor(50) as pool:
            results = list(pool.map(lambda _: c.get("/slow?secs=0.5").status_code, range(200)))
    assert results == [200] * 200


@pytest.mark.slow(reason="streams 256 MiB to a client that stalls")
def test_slow_reader_pauses_the_app_instead_of_buffering(srv):
    """The client stops reading a 256 MiB stream: the app's send() must wait, so the
    worker's memory stays flat; once the client reads again, every byte arrives."""
    import time
    from conftest import rss_kib
    (pid,) = srv.worker_pids()
    baseline = rss_kib(pid)
    n, size = 4096, 65536
    s = socket.create_connection(srv.address, timeout=30)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.sendall(f"GET /stream?n={n}&size={size} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        s.recv(1024)
        # Stall; watch the worker's memory while the app runs against the full socket.
        deadline = time.monotonic() + 2
        peak = baseline
        while time.monotonic() < deadline:
            peak = max(peak, rss_kib(pid))
            time.sleep(0.05)
        grown = (peak - baseline) / 1024
        assert grown < 48, f"worker RSS grew by {grown:.0f} MiB while the client was not reading"
        total = 0
        while chunk := s.recv(1 << 20):
            total += len(chunk)
    finally:
        s.close()
    # The chunked framing adds a few bytes per chunk; the payload alone is n * size.
    assert total >= n * size


def test_http_10_keep_alive(srv):
    with socket.create_connection(srv.address, timeout=5) as s:
        for _ in range(2):
            s.sendall(b"GET /hello HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
            data = read_response(s, read_until_close=False)
            status, headers, body = parse_response(data)
            assert status == 200 and body == b"Hello, world!\n"
            assert headers.get("connection", "").lower() == "keep-alive"


def test_head_of_a_stream_lets_the_app_finish_normally(srv, tmp_path):
    # The body of a HEAD response is taken from the app and dropped, as uvicorn
    # does: the app is not told that the client left.
    out = tmp_path / "head"
    with httpx.Client() as client:  # the connection stays open, as a browser's would
        r = client.head(f"{srv.url}/stream-until-disconnect", params={"path": str(out), "n": "10"})  # 640 KiB: more than send() buffers
        assert r.status_code == 200 and r.content == b""
        wait_until(lambda: out.exists() and out.read_text(), 10, message="the streaming app never finished")
    assert out.read_text() == "never failed"
    assert srv.get("/hello").status_code == 200
