"""The front's request body limit (--limit-request-body, per path on the command line and
in ferrogate.toml), the pages of its own errors (HTML, JSON or text by Accept, or
--error-page) and --security-headers, with real clients: httpx (HTTP/1.1 and h2c),
curl and raw sockets. The app (apps/limits_app.py) records every call and every
receive() to a file, so "the app never saw it" and "the app got http.disconnect" are
read from what it wrote, not guessed."""

import json
import socket
import subprocess

import httpx
import pytest

from conftest import APPS_DIR, FERROGATE, free_port, parse_response, read_response, wait_until
from http2_support import H2Client

APP = "limits_app:app"


@pytest.fixture
def record(tmp_path):
    return tmp_path / "record.jsonl"


def records(record, path=None):
    if not record.exists():
        return []
    rows = [json.loads(line) for line in record.read_text().splitlines()]
    return [r for r in rows if path is None or r["path"] == path]


def start(server_factory, record, *args, **kw):
    return server_factory(APP, *args, env={"LIMITS_RECORD": str(record)}, **kw)


def raw(srv, data: bytes) -> tuple[int, dict, bytes]:
    with socket.create_connection(srv.address, timeout=10) as s:
        s.sendall(data)
        status, headers, body = parse_response(read_response(s))
    return status, headers, body


def assert_served_after(srv, record, refused_path):
    """A request after the refused one reaches the app: the record works, and the
    refused request is not in it."""
    r = srv.client().post("/ok", content=b"fine")
    assert r.status_code == 200 and r.json() == {"size": 4}
    assert records(record, "/ok"), "the app records its calls"
    assert records(record, refused_path) == [], "the refused request reached the app"


def slow_chunks(record, first: bytes, second: bytes):
    """A body sent in two parts; the second only once the app has received the first."""
    yield first
    wait_until(lambda: any(r["event"] == "message" for r in records(record)), message="the app never got the first part")
    yield second


def assert_cut_off_mid_stream(record, path, first_size):
    """The app got the bytes below the limit, then http.disconnect, and never the end."""
    wait_until(lambda: any(r.get("type") == "http.disconnect" for r in records(record, path)), message=f"no http.disconnect: {records(record)}")
    messages = [r for r in records(record, path) if r["event"] == "message"]
    assert messages[-1]["type"] == "http.disconnect", messages
    bodies = messages[:-1]
    assert all(m["type"] == "http.request" and m["more"] for m in bodies), messages
    assert sum(m["size"] for m in bodies) == first_size, messages
    assert not any(r["event"] == "done" for r in records(record, path))


# ---------------------------------------------------------------------------------
# The body limit over HTTP/1.1
# ---------------------------------------------------------------------------------

def test_a_content_length_over_the_limit_is_refused_before_a_byte_of_body(server_factory, record):
    srv = start(server_factory, record, "--limit-request-body", "1k")
    # Only the head is sent: the 413 comes without the server waiting for a byte of body.
    status, headers, body = raw(srv, b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10485760\r\n\r\n")
    assert status == 413
    assert headers["connection"] == "close"
    assert b"at most 1 KiB" in body, body
    # httpx, with the body.
    r = srv.client().post("/upload", content=b"x" * 2000)
    assert r.status_code == 413 and r.headers["connection"] == "close"
    # Exactly the limit passes.
    r = srv.client().post("/upload-ok", content=b"x" * 1024)
    assert r.status_code == 200 and r.json() == {"size": 1024}
    assert_served_after(srv, record, "/upload")


def test_curl_upload_over_the_limit_gets_413_without_sending_it(server_factory, record, tmp_path):
    """curl sends `Expect: 100-continue` for a 2 MiB file and waits: the 413 comes instead."""
    srv = start(server_factory, record, "--limit-request-body", "1M")
    big = tmp_path / "big.bin"
    big.write_bytes(b"z" * (2 << 20))
    p = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_upload}", "--data-binary", f"@{big}", f"{srv.url}/upload"],
                       capture_output=True, text=True, timeout=30)
    code, uploaded = p.stdout.split()
    assert code == "413", p
    assert int(uploaded) < (1 << 20), f"curl sent {uploaded} bytes of a body refused by its length"
    assert_served_after(srv, record, "/upload")


def test_a_chunked_upload_is_cut_off_where_it_passes_the_limit(server_factory, record):
    srv = start(server_factory, record, "--limit-request-body", "1k")
    # httpx sends a generator chunked (no Content-Length).
    r = srv.client().post("/upload", content=slow_chunks(record, b"a" * 600, b"b" * 600))
    assert r.status_code == 413 and r.headers["connection"] == "close"
    assert_cut_off_mid_stream(record, "/upload", 600)
    # A chunked body within the limit is served whole.
    r = srv.client().post("/small", content=iter([b"a" * 500, b"b" * 500]))
    assert r.status_code == 200 and r.json() == {"size": 1000}


def test_per_path_limits_from_the_command_line(server_factory, record):
    srv = start(server_factory, record, "--limit-request-body", "1k", "--limit-request-body-path", "/upload=4k", "--limit-request-body-path", "/free=0")
    c = srv.client()
    assert c.post("/upload/a", content=b"x" * 3000).json() == {"size": 3000}
    assert c.post("/upload/a", content=iter([b"x" * 2000, b"y" * 2000])).json() == {"size": 4000}
    assert c.post("/upload/a", content=b"x" * 5000).status_code == 413
    assert c.post("/uploads", content=b"x" * 3000).status_code == 413, "/uploads is not under /upload"
    assert c.post("/other", content=b"x" * 3000).status_code == 413
    assert c.post("/free", content=b"x" * 300_000).json() == {"size": 300_000}


def test_per_path_limits_from_ferrogate_toml(server_factory, record, tmp_path):
    port = free_port()
    (tmp_path / "ferrogate.toml").write_text(f'''
app = "{APP}"
app-dir = "{APPS_DIR}"
port = {port}
workers = 1
limit-request-body = "1k"

[limit-request-body-path]
"/upload" = "4k"
''')
    srv = server_factory(None, argv=[FERROGATE], cwd=tmp_path, port=port, workers=1, env={"LIMITS_RECORD": str(record)})
    c = srv.client()
    assert c.post("/upload", content=b"x" * 3000).json() == {"size": 3000}
    assert c.post("/upload", content=b"x" * 5000).status_code == 413
    assert c.post("/elsewhere", content=b"x" * 2000).status_code == 413


# ---------------------------------------------------------------------------------
# The body limit over HTTP/2 (h2c, prior knowledge)
# ---------------------------------------------------------------------------------

def test_http2_content_length_over_the_limit_is_refused_before_the_app(server_factory, record):
    """Only HEADERS are sent (a raw client: curl 7.88 itself fails on the RST_STREAM that ends
    an upload refused early, a client bug fixed in later curl): the 413 comes without a byte
    of body, then RST_STREAM(NO_ERROR) stops the upload, and the connection goes on."""
    srv = start(server_factory, record, "--limit-request-body", "1k")
    with H2Client(srv.address) as c:
        c.handshake()
        sid = c.request("/upload", method="POST", headers=[("content-length", "10485760"), ("accept", "application/json")], end=False)
        c.wait(lambda: c.streams[sid].reset is not None, what="RST_STREAM after the 413")
        refused = c.streams[sid]
        assert refused.status == 413 and refused.ended, refused
        assert json.loads(bytes(refused.data))["status"] == 413
        assert refused.reset == 0, "NO_ERROR: stop sending, the response stands (RFC 9113 8.1)"
        other = c.get("/ok-h2", method="POST", body=b"x" * 1000)
        assert other.status == 200 and json.loads(bytes(other.data)) == {"size": 1000}
    with httpx.Client(http1=False, http2=True, base_url=srv.url, timeout=10) as h:
        r = h.post("/upload", content=b"x" * 2000)
        assert (r.status_code, r.http_version) == (413, "HTTP/2")
    assert_served_after(srv, record, "/upload")


def test_http2_body_without_length_is_cut_off_where_it_passes_the_limit(server_factory, record):
    srv = start(server_factory, record, "--limit-request-body", "1k")
    with httpx.Client(http1=False, http2=True, base_url=srv.url, timeout=10) as c:
        # A generator: DATA frames with no content-length.
        r = c.post("/upload", content=slow_chunks(record, b"a" * 600, b"b" * 600))
        assert (r.status_code, r.http_version) == (413, "HTTP/2")
        assert_cut_off_mid_stream(record, "/upload", 600)
        r = c.post("/small", content=iter([b"a" * 500, b"b" * 500]))
        assert r.status_code == 200 and r.json() == {"size": 1000}


# ---------------------------------------------------------------------------------
# The front's own error pages
# ---------------------------------------------------------------------------------

@pytest.fixture
def site(tmp_path):
    d = tmp_path / "site"
    d.mkdir()
    (d / "a.txt").write_text("static text\n")
    return d


def test_errors_are_html_for_browsers_json_for_api_clients_text_otherwise(server_factory, record, site):
    srv = start(server_factory, record, "--limit-request-body", "1k", "--static", f"/static={site}")
    c = srv.client()
    browser = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
    r = c.get("/static/missing.txt", headers={"accept": browser})
    assert r.status_code == 404 and r.headers["content-type"] == "text/html; charset=utf-8"
    assert "<h1>404 Not Found</h1>" in r.text and r.text.startswith("<!DOCTYPE html>")
    assert "accept" in r.headers["vary"].lower()

    r = c.get("/static/missing.txt", headers={"accept": "application/json"})
    assert r.status_code == 404 and r.headers["content-type"] == "application/json"
    assert r.json() == {"status": 404, "title": "Not Found", "detail": "Not Found"}

    r = c.get("/static/missing.txt")  # httpx sends Accept: */*
    assert r.status_code == 404 and r.headers["content-type"] == "text/plain; charset=utf-8"
    assert r.text == "Not Found\n"

    r = c.post("/upload", content=b"x" * 2000, headers={"accept": "application/json, text/plain, */*"})
    problem = r.json()
    assert r.status_code == 413 and problem["status"] == 413 and problem["title"] == "Content Too Large"
    assert "1 KiB" in problem["detail"]
    r = c.post("/upload", content=b"x" * 2000, headers={"accept": "text/html;q=0.9, application/json;q=0.5"})
    assert r.status_code == 413 and "<h1>413 Content Too Large</h1>" in r.text

    # A head refused by the parser (lowercase method): rendered by the Accept in its raw bytes.
    status, headers, body = raw(srv, b"get / HTTP/1.1\r\nHost: x\r\nAccept: text/html\r\n\r\n")
    assert status == 400 and headers["content-type"].startswith("text/html")
    assert b"<h1>400 Bad Request</h1>" in body and b"case-sensitive" in body
    # Over HTTP/2 too.
    with httpx.Client(http1=False, http2=True, base_url=srv.url, timeout=10) as h2:
        r = h2.get("/static/missing.txt", headers={"accept": "application/json"})
        assert (r.status_code, r.http_version, r.json()["status"]) == (404, "HTTP/2", 404)
    assert records(record) == []


def test_an_error_page_file_replaces_the_static_404(server_factory, record, site, tmp_path):
    page = tmp_path / "404.html"
    page.write_text("<!DOCTYPE html><title>Lost</title><p>This page went fishing.</p>\n")
    srv = start(server_factory, record, "--static", f"/static={site}", "--error-page", f"404={page}", "--limit-request-body", "1k")
    c = srv.client()
    for accept in ("text/html", "application/json", "*/*"):
        r = c.get("/static/nope.txt", headers={"accept": accept})
        assert r.status_code == 404 and r.text == page.read_text(), accept
        assert r.headers["content-type"] == "text/html; charset=utf-8"
    # Other statuses keep the built-in pages; the app's own responses are never replaced.
    r = c.post("/upload", content=b"x" * 2000, headers={"accept": "application/json"})
    assert r.status_code == 413 and r.json()["status"] == 413
    assert c.get("/static/a.txt").text == "static text\n"


# ---------------------------------------------------------------------------------
# --security-headers
# ---------------------------------------------------------------------------------

SECURITY = {"x-content-type-options": "nosniff", "referrer-policy": "strict-origin-when-cross-origin", "x-frame-options": "SAMEORIGIN"}


def test_security_headers_are_added_without_overriding_the_apps(server_factory, record, site):
    srv = start(server_factory, record, "--security-headers", "--static", f"/static={site}", "--limit-request-body", "1k")
    c = srv.client()
    responses = {
        "app": c.post("/ok", content=b"x"),
        "static": c.get("/static/a.txt"),
        "static 404": c.get("/static/none"),
        "413": c.post("/big", content=b"x" * 2000),
    }
    for what, r in responses.items():
        for name, value in SECURITY.items():
            assert r.headers.get(name) == value, f"{what}: {name} = {r.headers.get(name)!r}"
    own = c.get("/xfo")
    assert own.headers["x-frame-options"] == "DENY" and own.headers.get_list("x-frame-options") == ["DENY"]
    assert own.headers["referrer-policy"] == "no-referrer"
    assert own.headers["x-content-type-options"] == "nosniff", "the one the app did not set is added"
    with httpx.Client(http1=False, http2=True, base_url=srv.url, timeout=10) as h2:
        r = h2.get("/static/a.txt")
        assert r.http_version == "HTTP/2" and all(r.headers.get(n) == v for n, v in SECURITY.items())


def test_no_security_headers_unless_asked(server_factory, record):
    srv = start(server_factory, record)
    r = srv.client().post("/ok", content=b"x")
    assert r.status_code == 200
    assert not any(name in r.headers for name in SECURITY), dict(r.headers)
