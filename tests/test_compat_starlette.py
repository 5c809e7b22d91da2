"""Differential tests, plain Starlette (tests/apps/compat/starlette_compat.py): the same
requests to ferrogate and to uvicorn, compared."""

import hashlib
import json
import os
import socket
import uuid

import httpx
import pytest

from compat_support import RawResponse, assert_same_response, effects, wait_effect


@pytest.fixture(scope="module")
def pair(pair_factory):
    return pair_factory("starlette_compat:app")


def new_tag() -> str:
    return uuid.uuid4().hex[:12]


def both(pair, method, path, **kw):
    return pair.map(lambda srv: httpx.request(method, srv.url + path, timeout=10, **kw))


def test_streaming_response(pair):
    fg, uv = both(pair, "GET", "/stream?n=50")
    assert uv.status_code == 200 and uv.content == b"".join(b"%d\n" % i for i in range(50))
    assert_same_response(fg, uv, what="StreamingResponse")
    assert fg.headers.get("transfer-encoding") == uv.headers.get("transfer-encoding")


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_file_response(pair, method):
    fg, uv = both(pair, method, "/file")
    assert uv.status_code == 200 and uv.headers["etag"]
    assert_same_response(fg, uv, what=f"{method} FileResponse")


def test_static_files_conditional_request_is_304(pair):
    """StaticFiles (FileResponse underneath): a request with the file's ETag in
    If-None-Match gets a 304 with the validators and no body."""
    fg, uv = both(pair, "GET", "/static/style.css")
    assert uv.status_code == 200 and uv.content == b"body { color: #333; }\n"
    assert_same_response(fg, uv, what="GET /static/style.css")
    etag = uv.headers["etag"]
    assert fg.headers["etag"] == etag  # same file, same stat: the same validator on both
    fg, uv = both(pair, "GET", "/static/style.css", headers={"if-none-match": etag})
    assert uv.status_code == 304 and uv.content == b""
    assert fg.status_code == 304, f"ferrogate: {fg.status_code} {fg.text[:200]}\n--- log ---\n{pair.fg.log_tail(20)}"
    assert_same_response(fg, uv, what="conditional GET")
    fg, uv = both(pair, "GET", "/static/style.css", headers={"if-modified-since": uv.headers.get("last-modified", "")})
    assert_same_response(fg, uv, what="If-Modified-Since")


def test_static_files_range_and_missing(pair):
    fg, uv = both(pair, "GET", "/static/style.css", headers={"range": "bytes=0-3"})
    assert uv.status_code == 206 and uv.content == b"body"
    assert_same_response(fg, uv, what="range request")
    fg, uv = both(pair, "GET", "/static/nope.css")
    assert_same_response(fg, uv, what="missing static file")


def test_is_disconnected_polled_repeatedly(pair):
    fg, uv = both(pair, "GET", "/disconnect-poll?n=5")
    assert uv.status_code == 200 and uv.json() == {"count": 5, "disconnected": [False] * 5}
    assert fg.status_code == 200, f"ferrogate: {fg.status_code} {fg.text[:200]}\n--- log ---\n{pair.fg.log_tail(20)}"
    assert_same_response(fg, uv, what="is_disconnected() x5")


def test_background_task(pair):
    tags = {}

    def run(srv):
        tags[srv.name] = tag = new_tag()
        return httpx.post(f"{srv.url}/background", params={"tag": tag}, timeout=10)

    fg, uv = pair.map(run)
    assert fg.status_code == uv.status_code == 200
    assert_same_response(fg, uv, headers=("content-type",), body=False, what="BackgroundTask")
    for srv in pair:
        wait_effect(srv, "background done", tag=tags[srv.name])


@pytest.mark.parametrize("size", [0, 10, 300_000])
def test_request_stream_of_an_upload(pair, size):
    data = os.urandom(size)
    digest = hashlib.sha256(data).hexdigest()
    fg, uv = both(pair, "POST", "/upload", content=data)
    assert uv.status_code == 200 and uv.json() == {"size": size, "sha256": digest}
    assert_same_response(fg, uv, what=f"upload of {size} bytes")
    for srv in pair:
        assert effects(srv, "upload", sha256=digest, size=size), srv.name


def test_chunked_upload(pair):
    parts = [b"a" * 1000, b"b" * 70_000, b"c"]

    def gen():
        yield from parts

    fg, uv = pair.map(lambda srv: httpx.put(f"{srv.url}/upload", content=gen(), timeout=10))
    body = b"".join(parts)
    assert uv.json() == {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    assert_same_response(fg, uv, what="chunked upload")


def test_expect_100_continue_upload(pair):
    """A client that waits for `100 Continue` before sending its body (curl does for large
    uploads): the interim response comes once the app reads the body."""
    def run(srv):
        with socket.create_connection(srv.address, timeout=10) as s:
            s.sendall(b"POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n"
                      b"Connection: close\r\n\r\n")
            interim = b""
            while b"\r\n\r\n" not in interim:
                chunk = s.recv(65536)
                assert chunk, f"{srv.name} closed instead of answering 100 Continue: {interim!r}"
                interim += chunk
            s.sendall(b"hello")
            final = b""
            while chunk := s.recv(65536):
                final += chunk
        head, _, rest = interim.partition(b"\r\n\r\n")
        return head.split(b"\r\n")[0], RawResponse(rest + final)

    (fg_interim, fg), (uv_interim, uv) = pair.map_parallel(run)
    assert uv_interim == fg_interim == b"HTTP/1.1 100 Continue"
    assert uv.status_code == 200 and json.loads(uv.content)["size"] == 5
    assert_same_response(fg, uv, what="upload after 100 Continue")
