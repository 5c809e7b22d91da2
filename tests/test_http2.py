"""HTTP/2 from the outside: real clients against the real command.

curl (--http2-prior-knowledge for h2c, --http2 over TLS), httpx with its h2
support, h2load and nghttp from nghttp2, headless Chromium, and, for what those
do not show (SETTINGS, trailers, RST_STREAM, GOAWAY, a reset at a chosen moment),
Python's h2 state machine on a raw socket (http2_support.H2Client). The app is
apps/h2_app.py (basic.py's routes plus trailers, disconnect watching and a page
for the browser). Hostile frames are tests/test_http2_attacks.py's business.

uvicorn has no HTTP/2, so there is no differential comparison here: the reference
for each behaviour is what the same server does over HTTP/1.1.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess

import httpx
import pytest

from conftest import pid_alive, raw_http, rss_kib, wait_until
from http2_support import CANCEL, INTERNAL_ERROR, NO_ERROR, SETTINGS_MAX_CONCURRENT_STREAMS, H2Client
from tls_support import HOST, client_context, make_pki

APP = "h2_app:app"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BIG = 3 * 1024 * 1024 + 17  # a static file of several DATA frames and windows


# --------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("h2site")
    (root / "index.html").write_text("<h1>h2 home</h1>\n")
    (root / "data.bin").write_bytes(os.urandom(BIG))
    return root


@pytest.fixture(scope="module")
def srv(module_server_factory, site):
    """Cleartext, --http auto (the default), one worker, a static mount; no body limit
    (a 200 MiB upload is past the default 100M)."""
    return module_server_factory(APP, "--static", f"/static={site}", "--limit-request-body", "0")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("h2pki"))


def tls_args(pki, *extra):
    return ["--ssl-certfile", str(pki.server.crt), "--ssl-keyfile", str(pki.server.key), *extra]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    return tmp_path_factory.mktemp("h2report") / "report"


@pytest.fixture(scope="module")
def tls_srv(module_server_factory, pki, report):
    """HTTPS (--http auto: ALPN h2, http/1.1), with HSTS, one worker."""
    return module_server_factory(APP, *tls_args(pki, "--hsts"), env={"FG_H2_REPORT": str(report)})


def https(server, path=""):
    return f"https://{HOST}:{server.port}{path}"


def curl(*args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    """Runs curl; stdout and stderr decoded, CR LF kept."""
    p = subprocess.run(["curl", "-sS", "--max-time", "15", *args], capture_output=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    p.stdout, p.stderr = p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")
    return p


def curl_h2c(url: str, *args: str) -> tuple[str, str, subprocess.CompletedProcess]:
    """curl --http2-prior-knowledge; returns (body, protocol version curl used, the process)."""
    p = curl("--http2-prior-knowledge", "-w", "\n%{http_version}", *args, url)
    body, _, version = p.stdout.rpartition("\n")
    return body, version, p


def h2c(server, **kw) -> httpx.Client:
    """httpx speaking HTTP/2 with prior knowledge (no HTTP/1.1 at all)."""
    kw.setdefault("timeout", 30.0)
    return httpx.Client(http1=False, http2=True, base_url=server.url, **kw)


def worker_pid(server) -> int:
    (pid,) = server.worker_pids()
    return pid


def gate_files(tmp_path, name):
    return tmp_path / f"{name}.gate", tmp_path / f"{name}.started"


def header_list(scope, name):
    return [v for n, v in scope["headers"] if n == name]


# --------------------------------------------------------------------------
# Which protocol, where (--http auto, h1, h2)
# --------------------------------------------------------------------------

def test_curl_h2c_prior_knowledge_is_served_as_http2(srv):
    """curl with prior knowledge gets HTTP/2 on the cleartext port, with the server's own
    headers, and the access log says HTTP/2.0."""
    mark = srv.log_mark()
    body, version, p = curl_h2c(srv.url + "/hello", "-D", "-")
    assert p.returncode == 0, p.stderr
    assert version == "2"
    head, _, payload = body.partition("\r\n\r\n")
    assert head.startswith("HTTP/2 200")
    assert payload == "Hello, world!\n"
    headers = dict(line.split(": ", 1) for line in head.split("\r\n")[1:])
    assert headers["server"] == "ferrogate"
    assert headers["content-length"] == "14"
    assert re.fullmatch(r"\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT", headers["date"])
    srv.wait_for_log(r'"GET /hello HTTP/2\.0" 200 14 "-" "curl/', since=mark)


def test_auto_serves_http1_and_h2c_on_the_same_port(srv):
    """--http auto: an HTTP/1.1 client and an h2c client on the same port each get their own
    protocol; a client asking to upgrade to h2c (curl --http2, cleartext) is answered in HTTP/1.1."""
    _, version, p = curl_h2c(srv.url + "/hello")
    assert p.returncode == 0 and version == "2", p.stderr
    p = curl("--http1.1", "-w", "%{http_version}", "-o", "/dev/null", srv.url + "/hello")
    assert p.returncode == 0 and p.stdout == "1.1", p.stderr
    with httpx.Client(base_url=srv.url, timeout=10) as c:
        r = c.get("/scope")
    assert r.http_version == "HTTP/1.1" and r.json()["http_version"] == "1.1"
    with h2c(srv) as c:
        r = c.get("/scope")
    assert r.http_version == "HTTP/2" and r.json()["http_version"] == "2"
    p = curl("--http2", "-w", "\n%{http_version}", srv.url + "/hello", srv.url + "/hello")
    assert p.returncode == 0, p.stderr
    assert p.stdout == "Hello, world!\n\n1.1Hello, world!\n\n1.1"


def test_scope_over_h2c(srv):
    """The app's scope for an HTTP/2 request: http_version "2", scheme http, :authority as the
    Host header, and the trailers extension (which HTTP/1.1 scopes do not have)."""
    with h2c(srv) as c:
        scope = c.get("/scope?q=1", headers={"x-test": "yes"}).json()
    assert scope["http_version"] == "2"
    assert scope["scheme"] == "http"
    assert scope["method"] == "GET" and scope["path"] == "/scope" and scope["query_string"] == "q=1"
    assert header_list(scope, "host") == [f"127.0.0.1:{srv.port}"]
    assert header_list(scope, "x-test") == ["yes"]
    # Pseudo-headers are the protocol's, not headers the app sees.
    assert not [n for n, _ in scope["headers"] if n.startswith(":")]
    assert "http.response.trailers" in scope["extensions"]
    assert "http.response.pathsend" in scope["extensions"]
    h1_scope = srv.get("/scope").json()
    assert "http.response.trailers" not in h1_scope["extensions"]


def test_authority_becomes_host_and_cookie_fields_are_joined(srv):
    """A request with :authority and no Host gets Host from it; a client's several `cookie`
    fields (RFC 9113 8.2.3) reach the app as one header joined with "; "."""
    with H2Client(srv.address) as c:
        r = c.get("/scope", authority="example.test:8443",
                  headers=[("cookie", "a=1"), ("x-between", "1"), ("cookie", "b=2"), ("cookie", "c=3")])
    assert r.status == 200
    scope = json.loads(r.data)
    assert header_list(scope, "host") == ["example.test:8443"]
    assert header_list(scope, "cookie") == ["a=1; b=2; c=3"]


def test_tls_alpn_negotiates_h2_with_curl_and_httpx(tls_srv, pki):
    """Over TLS, curl --http2 and httpx(http2=True) negotiate h2 by ALPN; the app sees https and
    the TLS extension; responses carry HSTS; an HTTP/1.1-only client on the same port gets HTTP/1.1."""
    p = curl("--http2", "--cacert", str(pki.ca_file), "-D", "-", "-w", "\n%{http_version}", https(tls_srv, "/scope"))
    assert p.returncode == 0, p.stderr
    out, _, version = p.stdout.rpartition("\n")
    assert version == "2"
    head, _, body = out.partition("\r\n\r\n")
    assert head.startswith("HTTP/2 200")
    assert "strict-transport-security: max-age=63072000" in head.split("\r\n")
    scope = json.loads(body)
    assert scope["scheme"] == "https" and scope["http_version"] == "2"
    assert scope["extensions"]["tls"]["tls_version"] is not None

    with httpx.Client(http2=True, verify=client_context(pki), timeout=10) as c:
        r = c.get(https(tls_srv, "/scope"))
    assert r.http_version == "HTTP/2"
    assert r.json()["scheme"] == "https" and r.json()["http_version"] == "2"
    assert r.headers["strict-transport-security"] == "max-age=63072000"

    p = curl("--http1.1", "--cacert", str(pki.ca_file), "-w", "%{http_version}", "-o", "/dev/null",
             https(tls_srv, "/hello"))
    assert p.returncode == 0 and p.stdout == "1.1", p.stderr


PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def test_http_h1_serves_no_http2(server_factory, pki):
    """--http h1: the prior-knowledge preface is not served as HTTP/2 (HTTP/1.1 answers it 505,
    saying HTTP/2 is off), and over TLS ALPN selects http/1.1 even for a client that prefers h2."""
    plain = server_factory(APP, "--http", "h1")
    answer = raw_http(plain.address, PREFACE)
    assert answer.startswith(b"HTTP/1.1 505 "), answer[:100]
    assert b"HTTP/2 is off on this server (--http h1)" in answer
    _, version, p = curl_h2c(plain.url + "/hello")
    assert p.returncode != 0 and version != "2"
    assert plain.get("/hello").status_code == 200

    secure = server_factory(APP, "--http", "h1", *tls_args(pki))
    ctx = client_context(pki)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection((HOST, secure.port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=HOST) as s:
            assert s.selected_alpn_protocol() == "http/1.1"
    p = curl("--http2", "--cacert", str(pki.ca_file), "-w", "%{http_version}", "-o", "/dev/null", https(secure, "/hello"))
    assert p.returncode == 0 and p.stdout == "1.1", p.stderr


@pytest.mark.parametrize("value", ["h11", "httptools"])
def test_uvicorn_http_values_mean_h1_with_a_warning(server_factory, value):
    """uvicorn's --http h11|httptools start an HTTP/1.1-only server and the log says so."""
    srv = server_factory(APP, "--http", value)
    assert f"--http {value} means --http h1" in srv.log()
    answer = raw_http(srv.address, PREFACE)
    assert answer.startswith(b"HTTP/1.1 505 "), answer[:100]
    assert srv.get("/hello").status_code == 200


def test_http_h2_serves_only_http2(server_factory, pki):
    """--http h2: h2c works and an HTTP/1.1 request is not served (a 505 saying the server speaks
    only HTTP/2, and the app never sees it); over TLS a client offering only http/1.1 is not
    served HTTP/1.1, one offering h2 gets HTTP/2."""
    plain = server_factory(APP, "--http", "h2")
    _, version, p = curl_h2c(plain.url + "/hello")
    assert p.returncode == 0 and version == "2", p.stderr
    answer = raw_http(plain.address, b"GET /count HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 505 "), answer[:100]
    assert b"only HTTP/2" in answer and b"served" not in answer

    secure = server_factory(APP, "--http", "h2", *tls_args(pki))
    p = curl("--http2", "--cacert", str(pki.ca_file), "-w", "%{http_version}", "-o", "/dev/null", https(secure, "/hello"))
    assert p.returncode == 0 and p.stdout == "2", p.stderr
    p = curl("--http1.1", "--cacert", str(pki.ca_file), "-i", https(secure, "/hello"))
    assert p.returncode != 0 and "HTTP/1.1" not in p.stdout, (p.returncode, p.stdout, p.stderr)


def test_max_concurrent_streams_is_announced(srv, server_factory):
    """SETTINGS_MAX_CONCURRENT_STREAMS is 100 by default and --h2-max-concurrent-streams N otherwise,
    and nghttp sees the same."""
    with H2Client(srv.address) as c:
        assert c.handshake()[SETTINGS_MAX_CONCURRENT_STREAMS] == 100
    seven = server_factory(APP, "--h2-max-concurrent-streams", "7")
    with H2Client(seven.address) as c:
        assert c.handshake()[SETTINGS_MAX_CONCURRENT_STREAMS] == 7
        assert c.get("/hello").status == 200
    p = subprocess.run(["nghttp", "-v", "-n", seven.url + "/hello"], capture_output=True, text=True, timeout=20)
    assert p.returncode == 0, p.stderr
    assert "[SETTINGS_MAX_CONCURRENT_STREAMS(0x03):7]" in p.stdout


# --------------------------------------------------------------------------
# Many streams: h2load
# --------------------------------------------------------------------------

def h2load(*args: str) -> str:
    p = subprocess.run(["h2load", *args], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout


def test_h2load_many_streams_per_connection_h2c(srv):
    """h2load: 2000 requests on 4 h2c connections, 50 streams in flight on each: all succeed with
    2xx, and the access log has every one of them as HTTP/2.0."""
    mark = srv.log_mark()
    out = h2load("-n", "2000", "-c", "4", "-m", "50", srv.url + "/hello")
    assert "Application protocol: h2c" in out
    assert "2000 total, 2000 started, 2000 done, 2000 succeeded, 0 failed, 0 errored, 0 timeout" in out
    assert "status codes: 2000 2xx, 0 3xx, 0 4xx, 0 5xx" in out
    srv.wait_for_log(r'"GET /hello HTTP/2\.0" 200 14 "-" "h2load', count=2000, since=mark)


def test_h2load_uploads_over_tls(tls_srv, tmp_path):
    """h2load over TLS (ALPN h2): 1000 POSTs with a 20 kB body each, 50 streams per connection,
    all answered 2xx by the app, which read each body."""
    body = tmp_path / "body"
    body.write_bytes(os.urandom(20_000))
    mark = tls_srv.log_mark()
    out = h2load("-n", "1000", "-c", "2", "-m", "50", "-d", str(body), https(tls_srv, "/body-count"))
    assert "Application protocol: h2\n" in out
    assert "1000 total, 1000 started, 1000 done, 1000 succeeded, 0 failed, 0 errored, 0 timeout" in out
    assert "status codes: 1000 2xx, 0 3xx, 0 4xx, 0 5xx" in out
    tls_srv.wait_for_log(r'"POST /body-count HTTP/2\.0" 200 ', count=1000, since=mark)


# --------------------------------------------------------------------------
# The same pipeline as HTTP/1.1
# --------------------------------------------------------------------------

def app_requests(srv):
    return srv.get("/count").json()["served"]


def test_static_files_ranges_and_304_over_h2(srv, site):
    """--static over HTTP/2: the whole file, a HEAD, a byte range (206), a conditional GET (304,
    no body), all answered by Rust (the app counts none of them)."""
    before = app_requests(srv)
    data = (site / "data.bin").read_bytes()
    with h2c(srv) as c:
        r = c.get("/static/data.bin")
        assert r.http_version == "HTTP/2" and r.status_code == 200
        assert int(r.headers["content-length"]) == BIG
        assert hashlib.sha256(r.content).digest() == hashlib.sha256(data).digest()
        etag = r.headers["etag"]
        r = c.head("/static/data.bin")
        assert r.status_code == 200 and r.content == b"" and int(r.headers["content-length"]) == BIG
        r = c.get("/static/data.bin", headers={"range": "bytes=1000-1999"})
        assert r.status_code == 206
        assert r.headers["content-range"] == f"bytes 1000-1999/{BIG}"
        assert r.content == data[1000:2000]
        r = c.get("/static/data.bin", headers={"if-none-match": etag})
        assert r.status_code == 304 and r.content == b""
        r = c.get("/static/")
        assert r.status_code == 200 and r.text == "<h1>h2 home</h1>\n"
    assert app_requests(srv) == before + 1


def test_pathsend_and_large_downloads_over_h2(srv, site, tmp_path):
    """http.response.pathsend, a 20 MB body and a 50-chunk stream reach an HTTP/2 client whole
    (flow control on the way out)."""
    path = site / "data.bin"
    out = tmp_path / "out"
    _, version, p = curl_h2c(f"{srv.url}/pathsend?path={path}", "-o", str(out))
    assert p.returncode == 0 and version == "2", p.stderr
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(path.read_bytes()).digest()
    _, version, p = curl_h2c(f"{srv.url}/big?size=20000000", "-o", str(out))
    assert p.returncode == 0 and version == "2", p.stderr
    assert out.read_bytes() == b"x" * 20_000_000
    with h2c(srv) as c:
        r = c.get("/stream", params={"n": "50", "size": "100000"})
    assert r.status_code == 200 and "content-length" not in r.headers
    assert r.content == b"".join(bytes([48 + i % 10]) * 100000 for i in range(50))


def test_proxy_headers_over_h2(srv):
    """X-Forwarded-For/-Proto from a trusted (loopback) peer set the scope's client and scheme
    over HTTP/2 as over HTTP/1.1."""
    with h2c(srv) as c:
        scope = c.get("/scope", headers={"x-forwarded-for": "203.0.113.7", "x-forwarded-proto": "https"}).json()
    assert scope["http_version"] == "2"
    assert scope["client"][0] == "203.0.113.7"
    assert scope["scheme"] == "https"


def test_limit_concurrency_counts_streams(server_factory, tmp_path):
    """--limit-concurrency 2: of four streams held in the app on one connection, two reach it and
    two get 503 at once; when the first two finish, the connection serves again."""
    srv = server_factory(APP, "--limit-concurrency", "2")
    gate = tmp_path / "gate"
    with H2Client(srv.address) as c:
        sids = [c.request(f"/wait-file?path={gate}&started={tmp_path / f'started{i}'}") for i in range(4)]
        c.wait(lambda: sum(c.streams[s].done for s in sids) == 2, 10, "two streams refused")
        refused = [s for s in sids if c.streams[s].done]
        assert [c.streams[s].status for s in refused] == [503, 503]
        assert b"concurrency limit" in c.streams[refused[0]].data
        # The 503s leave at once; the two admitted streams reach the app's code a moment later.
        wait_until(lambda: len(list(tmp_path.glob("started*"))) >= 2, 10, message="the two admitted streams never reached the app")
        assert len(list(tmp_path.glob("started*"))) == 2
        gate.touch()
        held = [c.response(s) for s in sids if s not in refused]
        assert [r.status for r in held] == [200, 200]
        assert c.get("/hello").status == 200


def test_error_before_the_response_is_a_500(srv):
    """An app that raises before http.response.start gives a 500 over HTTP/2, as over HTTP/1.1,
    and its traceback in the log."""
    mark = srv.log_mark()
    with h2c(srv) as c:
        r = c.get("/error-before")
        assert r.http_version == "HTTP/2"
        assert r.status_code == 500 and r.text == "Internal Server Error\n"
        assert c.get("/hello").status_code == 200
    srv.wait_for_log(r"ValueError: boom before start", since=mark)
    srv.wait_for_log(r'"GET /error-before HTTP/2\.0" 500', since=mark)


def test_error_mid_stream_resets_the_stream(srv):
    """An app that fails after its first chunk: the stream is reset (INTERNAL_ERROR), never ended
    as if complete; curl reports the error; other streams on the connection go on."""
    with H2Client(srv.address) as c:
        r = c.get("/error-after")
        assert r.status == 200 and bytes(r.data) == b"partial "
        assert r.reset == INTERNAL_ERROR and not r.ended
        assert c.get("/hello").status == 200
    body, version, p = curl_h2c(srv.url + "/error-after")
    assert p.returncode != 0 and "INTERNAL_ERROR" in p.stderr, (p.returncode, p.stderr)


# --------------------------------------------------------------------------
# Response trailers
# --------------------------------------------------------------------------

def test_response_trailers_reach_an_h2_client(srv):
    """An app sending "trailers": True, its body, then http.response.trailers (in two messages):
    the client gets the body, then one trailing HEADERS frame with both fields, ending the stream."""
    with H2Client(srv.address) as c:
        r = c.get("/trailers?n=5")
    body = b"".join(f"chunk {i}\n".encode() for i in range(5))
    assert r.status == 200 and bytes(r.data) == body and r.ended and r.reset is None
    assert r.trailers == [("x-checksum", hashlib.sha256(body).hexdigest()), ("x-chunks", "5")]
    assert r.header("x-checksum") is None, "a trailer must not be sent among the headers"


def test_nghttp_prints_the_trailers_after_the_data(srv):
    """nghttp, nghttp2's own client, receives the trailers as a HEADERS frame with END_STREAM
    after the DATA frames."""
    p = subprocess.run(["nghttp", "-v", srv.url + "/trailers?n=2"], capture_output=True, text=True, timeout=20)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    checksum = hashlib.sha256(b"chunk 0\nchunk 1\n").hexdigest()
    trailer_at = out.index(f"x-checksum: {checksum}")
    assert out.index("chunk 1") < trailer_at < out.index("x-chunks: 2")
    assert re.search(r"recv HEADERS frame <length=\d+, flags=0x05", out[trailer_at:]), out[trailer_at:]


def test_trailers_are_left_out_over_http1(srv):
    """The same route over HTTP/1.1 (whose scope has no trailers extension) ends with its full
    body and no trailer fields."""
    p = curl("--http1.1", "-i", srv.url + "/trailers?n=2")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("HTTP/1.1 200")
    head, _, body = p.stdout.partition("\r\n\r\n")
    assert body == "chunk 0\nchunk 1\n"
    names = [line.split(":")[0].lower() for line in head.split("\r\n")[1:]]
    assert "x-checksum" not in names and "x-chunks" not in names


# --------------------------------------------------------------------------
# Request bodies: streaming, flow control
# --------------------------------------------------------------------------

def test_large_upload_streams_with_bounded_memory(srv):
    """200 MiB uploaded on one stream, generated as it is sent, reaches the app intact (sha256)
    while the worker's RSS grows less than 64 MiB; halfway, another stream on the same connection
    is answered while the upload is still open."""
    total, size = 200 * 1024 * 1024, 1024 * 1024
    pid = worker_pid(srv)
    base = peak = rss_kib(pid)
    digest = hashlib.sha256()
    block = os.urandom(size)
    with H2Client(srv.address, timeout=30) as c:
        c.handshake()
        sid = c.request("/body", method="POST", end=False)
        for i in range(total // size):
            chunk = i.to_bytes(8, "big") + block[8:]
            digest.update(chunk)
            c.send_data(sid, chunk)
            if i % 4 == 0:
                peak = max(peak, rss_kib(pid))
            if i == total // size // 2:
                other = c.get("/hello")
                assert other.status == 200 and bytes(other.data) == b"Hello, world!\n"
                assert not c.streams[sid].done, "the upload's stream ended before its body"
        c.send_data(sid, b"", end=True)
        r = c.response(sid, timeout=30)
    assert r.status == 200, (r.status, bytes(r.data[:300]))
    info = json.loads(r.data)
    assert info["size"] == total
    assert info["sha256"] == digest.hexdigest()
    assert (peak - base) < 64 * 1024, f"worker RSS grew {(peak - base) // 1024} MiB during a streamed upload"


def test_an_unread_upload_holds_only_its_own_stream(srv, tmp_path):
    """An upload the app does not read yet is held by its stream's flow-control window (the
    client can send only that much), and meanwhile other streams on the connection and other
    connections are served; once the app reads, the whole body arrives."""
    gate, started = gate_files(tmp_path, "upload")
    with H2Client(srv.address) as c:
        c.handshake()
        sid = c.request(f"/wait-file?path={gate}&started={started}", method="POST", end=False)
        wait_until(started.exists, 10, message="the upload never reached the app")
        # Send what the windows allow until the server opens them no further.
        sent = 0
        while True:
            while (window := c.conn.local_flow_control_window(sid)) > 0:
                n = min(window, c.conn.max_outbound_frame_size)
                c.conn.send_data(sid, b"u" * n)
                c.flush()
                sent += n
            # The README: a stream holds at most 256 KiB ahead of the app, a connection 1 MiB.
            assert sent <= 1024 * 1024, f"{sent} bytes were let in ahead of an app that reads nothing"
            if not c.pump(0.5) and c.conn.local_flow_control_window(sid) == 0:
                break
        assert not c.streams[sid].done
        assert c.get("/hello").status == 200
        with h2c(srv) as other:
            assert other.get("/hello").status_code == 200
        gate.touch()
        rest = 5 * 1024 * 1024
        c.send_data(sid, b"v" * rest, end=True)
        r = c.response(sid, timeout=20)
    assert r.status == 200 and json.loads(r.data)["size"] == sent + rest


def test_httpx_streaming_upload_over_tls(tls_srv, pki):
    """httpx (http2=True, ALPN h2) uploads a 16 MiB generated body; the app gets it intact."""
    digest = hashlib.sha256()

    def chunks():
        for i in range(64):
            piece = bytes([i]) * (256 * 1024)
            digest.update(piece)
            yield piece

    with httpx.Client(http2=True, verify=client_context(pki), timeout=30) as c:
        r = c.post(https(tls_srv, "/body"), content=chunks())
    assert r.http_version == "HTTP/2" and r.status_code == 200
    assert r.json()["size"] == 16 * 1024 * 1024 and r.json()["sha256"] == digest.hexdigest()


# --------------------------------------------------------------------------
# A client going away: http.disconnect
# --------------------------------------------------------------------------

def test_stream_reset_while_the_app_waits_gives_http_disconnect(srv, tmp_path):
    """A client resets (RST_STREAM CANCEL) a stream whose app awaits receive(): the app gets
    http.disconnect, and the connection keeps serving its other streams."""
    out, started = tmp_path / "out", tmp_path / "started"
    with H2Client(srv.address) as c:
        sid = c.request(f"/watch?path={out}&started={started}")
        wait_until(started.exists, 10, message="the request never reached the app")
        c.reset(sid, CANCEL)
        wait_until(out.exists, 10, message="the app's receive() never returned after the reset")
        assert out.read_text() == "http.disconnect"
        assert c.get("/hello").status == 200


def test_stream_reset_while_the_app_streams_gives_http_disconnect(srv, tmp_path):
    """A stream reset after the first chunk of a streaming response: the app's pending receive()
    gets http.disconnect."""
    out, started = tmp_path / "out", tmp_path / "started"
    with H2Client(srv.address) as c:
        sid = c.request(f"/watch?path={out}&started={started}&stream=1")
        c.wait(lambda: c.streams[sid].data, 10, "the first chunk")
        assert bytes(c.streams[sid].data) == b"first chunk\n"
        wait_until(started.exists, 10)
        c.reset(sid, CANCEL)
        wait_until(out.exists, 10, message="the app's receive() never returned after the reset")
        assert out.read_text() == "http.disconnect"
        assert c.get("/hello").status == 200


def test_stream_reset_makes_the_apps_send_fail(srv, tmp_path):
    """A client resets a stream whose app streams without end: the app's send() raises an
    OSError (ClientDisconnected), as when an HTTP/1.1 client leaves."""
    out = tmp_path / "out"
    with H2Client(srv.address) as c:
        sid = c.request(f"/stream-until-disconnect?path={out}")
        c.wait(lambda: len(c.streams[sid].data) >= 100_000, 10, "some of the stream")
        c.reset(sid, CANCEL)
        wait_until(lambda: out.exists() and out.read_text(), 10, message="the app's send() never failed")
        kind, is_oserror = out.read_text().split("|")
        assert is_oserror == "True", f"send() raised {kind}"
        assert c.get("/hello").status == 200


def test_a_stream_whose_client_stops_reading_is_reset_after_timeout_io(server_factory, tmp_path):
    """A client that stops reading a streaming response (it sends no WINDOW_UPDATE, so the stream's
    window stays shut): after --timeout-io the stream is reset (CANCEL) and the app's send() fails
    instead of waiting forever; the connection goes on serving other streams."""
    srv = server_factory(APP, "--timeout-io", "1")
    out = tmp_path / "out"
    with H2Client(srv.address) as c:
        c.handshake()
        sid = c.request(f"/stream-until-disconnect?path={out}")
        # Nothing is read (nor acknowledged) until the app has given up.
        wait_until(lambda: out.exists() and out.read_text(), 10,
                   message="a client that never reads held the response (and the app) past --timeout-io")
        kind, is_oserror = out.read_text().split("|")
        assert is_oserror == "True", f"send() raised {kind}"
        r = c.response(sid)
        assert r.reset == CANCEL and not r.ended
        assert len(r.data) <= 65535, "more than the client's initial window was sent"
        assert c.get("/hello").status == 200


def test_connection_closed_gives_http_disconnect_to_every_stream(srv, tmp_path):
    """The client closes the TCP connection with two streams in the app (one waiting, one
    streaming): both apps' receive() get http.disconnect."""
    outs = [tmp_path / "out0", tmp_path / "out1"]
    starts = [tmp_path / "s0", tmp_path / "s1"]
    c = H2Client(srv.address)
    try:
        c.request(f"/watch?path={outs[0]}&started={starts[0]}")
        c.request(f"/watch?path={outs[1]}&started={starts[1]}&stream=1")
        wait_until(lambda: all(s.exists() for s in starts), 10, message="the requests never reached the app")
    finally:
        c.close()
    wait_until(lambda: all(o.exists() for o in outs), 10, message="an app never heard of the closed connection")
    assert [o.read_text() for o in outs] == ["http.disconnect", "http.disconnect"]


# --------------------------------------------------------------------------
# Lifecycle: stop, reload, idle connections
# --------------------------------------------------------------------------

def test_sigterm_lets_an_in_flight_stream_finish_then_goaway(server_factory, tmp_path):
    """SIGTERM with a request in the app: the connection is told GOAWAY (NO_ERROR), the stream
    still completes (200, whole body), then the server closes the connection and exits 0."""
    srv = server_factory(APP)
    gate, started = gate_files(tmp_path, "held")
    with H2Client(srv.address) as c:
        c.handshake()
        sid = c.request(f"/wait-file?path={gate}&started={started}", method="POST", body=b"z" * 1000)
        wait_until(started.exists, 10, message="the request never reached the app")
        mark = srv.log_mark()
        srv.signal(signal.SIGTERM)
        srv.wait_for_log(r"Received SIGTERM", since=mark)
        c.wait(lambda: c.goaways, 10, "a GOAWAY")
        assert all(g.error_code == NO_ERROR for g in c.goaways)
        assert not c.streams[sid].done
        assert srv.alive()
        gate.touch()
        r = c.response(sid)
        assert r.status == 200 and r.ended and r.reset is None
        assert json.loads(r.data)["size"] == 1000
        # The final GOAWAY admits the stream that was served.
        assert c.goaways[-1].last_stream_id >= sid
        c.wait_closed(10)
    assert srv.wait_exit() == 0
    assert "Graceful timeout" not in srv.log()


def test_sighup_in_flight_stream_finishes_and_new_workers_serve(server_factory, tmp_path):
    """SIGHUP with a request in the app: the old worker's connection gets GOAWAY, its stream
    completes, the connection closes, and new HTTP/2 connections are served by the new worker."""
    srv = server_factory(APP)
    (old,) = srv.worker_pids()
    gate, started = gate_files(tmp_path, "held")
    with H2Client(srv.address) as c:
        c.handshake()
        sid = c.request(f"/wait-file?path={gate}&started={started}")
        wait_until(started.exists, 10, message="the request never reached the app")
        mark = srv.log_mark()
        srv.signal(signal.SIGHUP)
        c.wait(lambda: c.goaways, 15, "a GOAWAY from the replaced worker")
        new = [p for p in srv.serving_pids(since=mark) if p != old]
        assert new, srv.log_tail()
        body, version, p = curl_h2c(srv.url + "/pid")
        assert p.returncode == 0 and version == "2", p.stderr
        assert json.loads(body)["pid"] == new[0], "a new connection reached the worker being replaced"
        gate.touch()
        r = c.response(sid)
        assert r.status == 200 and r.ended
        c.wait_closed(10)
    wait_until(lambda: not pid_alive(old), 10, message="the old worker outlived its last stream")
    with h2c(srv) as client:
        assert client.get("/pid").json()["pid"] == new[0]


def test_idle_connection_gets_goaway_after_keep_alive(server_factory):
    """--timeout-keep-alive 1: a connection with no stream open is sent GOAWAY (NO_ERROR) and
    closed; one with a stream in flight is not."""
    srv = server_factory(APP, "--timeout-keep-alive", "1")
    with H2Client(srv.address) as c:
        assert c.get("/hello").status == 200
        c.wait_closed(10)
        assert c.goaways and all(g.error_code == NO_ERROR for g in c.goaways)
        assert c.goaways[-1].last_stream_id == 1
    with H2Client(srv.address) as c:
        sid = c.request("/slow?secs=1.5")
        r = c.response(sid, timeout=10)
        assert r.status == 200 and r.reset is None, "a stream in flight was cut by the idle timeout"


def test_idle_connection_of_a_silent_client_is_closed_after_keep_alive(server_factory):
    """A client that does not read while idle (a synchronous client between requests, which
    cannot answer the server's PING) still has its idle connection closed after
    --timeout-keep-alive, as an idle HTTP/1.1 keep-alive connection is; not only after
    --timeout-io (60 s by default) more."""
    srv = server_factory(APP, "--timeout-keep-alive", "1")
    with H2Client(srv.address) as c:
        assert c.get("/hello").status == 200
        # Read the raw bytes without answering anything, until the server closes.
        c.sock.settimeout(0.5)
        received = b""

        def closed():
            nonlocal received
            try:
                data = c.sock.recv(65536)
            except (TimeoutError, socket.timeout):
                return False
            except OSError:
                return True
            received += data
            return data == b""

        wait_until(closed, 8, interval=0,
                   message=lambda: f"an idle connection (keep-alive 1 s) was still open after 8 s; the server "
                                   f"sent only {received.hex()} (GOAWAY and PING frames, waiting for the PING's ACK)")


def test_stop_does_not_wait_for_an_idle_http2_connection(server_factory):
    """SIGTERM while an httpx HTTP/2 client keeps an idle pooled connection (it does not read
    between requests): the server exits without running into the graceful timeout, as it does
    for an idle HTTP/1.1 keep-alive connection."""
    results = {}
    for proto in ("HTTP/1.1", "HTTP/2"):
        srv = server_factory(APP, "--timeout-graceful-shutdown", "4")
        with httpx.Client(http1=proto == "HTTP/1.1", http2=proto == "HTTP/2", base_url=srv.url, timeout=10) as c:
            r = c.get("/hello")
            assert r.http_version == proto
            srv.signal(signal.SIGTERM)
            rc = srv.wait_exit(timeout=15)
        results[proto] = (rc, "Graceful timeout" in srv.log(), "Closing 1 connection" in srv.log())
    assert results["HTTP/1.1"] == (0, False, False)
    assert results["HTTP/2"] == (0, False, False), (
        "an idle HTTP/2 connection held the stop until --timeout-graceful-shutdown (log: graceful timeout "
        "reached, connection closed by force)")


# --------------------------------------------------------------------------
# A browser
# --------------------------------------------------------------------------

@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_chromium_loads_a_page_over_h2(tls_srv, report, tmp_path):
    """Headless Chromium (told to accept the test CA's certificate) loads a page over HTTPS: its
    navigation's nextHopProtocol is "h2", and the app saw the page's own report as HTTP/2."""
    if report.exists():
        report.unlink()
    browser = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--ignore-certificate-errors", f"--user-data-dir={tmp_path / 'profile'}", https(tls_srv, "/page")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        wait_until(lambda: report.exists() and report.read_text(), timeout=40,
                   message="the page never reported its protocol")
    finally:
        # The whole group: Chromium's network process holds the connection.
        os.killpg(browser.pid, signal.SIGKILL)
        browser.wait()
    assert report.read_text().split() == ["h2", "2"]
    tls_srv.wait_for_log(r'"GET /page HTTP/2\.0" 200 .*HeadlessChrome')
