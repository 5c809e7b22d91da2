"""Server names (--server-name, --unknown-host, --www-redirect): a request for a name the
server does not serve never reaches static files or the app; www. and the bare name
redirect to each other on request. Real clients: curl with -H Host and --resolve, raw
sockets, HTTP/2 with prior knowledge, HTTPS."""

import subprocess

import pytest

from conftest import json_of, parse_response
from tls_support import HOST, make_pki


def curl(*args: str) -> subprocess.CompletedProcess:
    """curl printing the status code last; stdout/stderr decoded."""
    p = subprocess.run(["curl", "-sS", "--max-time", "15", "-o", "/dev/null", "-w", "%{http_code}", *args],
                       capture_output=True, timeout=20, stdin=subprocess.DEVNULL)
    p.stdout, p.stderr = p.stdout.decode(), p.stderr.decode()
    return p


def status(srv, host: str, path: str = "/hello", *args: str) -> str:
    return curl("-H", f"Host: {host}", *args, srv.url + path).stdout


def app_saw(record) -> list[str]:
    return record.read_text().splitlines() if record.exists() else []


@pytest.fixture()
def record(tmp_path):
    return tmp_path / "requests.log"


@pytest.fixture()
def named(server_factory, record, tmp_path):
    static = tmp_path / "static"
    static.mkdir()
    (static / "a.txt").write_text("static file\n")
    return server_factory("basic:app", "--server-name", "example.com", "--server-name", "*.example.org",
                          "--static", f"/static={static}", env={"FG_REQUEST_LOG": str(record)})


def test_configured_names_are_served_whatever_their_case_port_or_trailing_dot(named):
    for host in ["example.com", f"EXAMPLE.Com:{named.port}", "example.com.", "api.example.org", "a.b.example.org:1"]:
        assert status(named, host) == "200", host


def test_other_names_get_421_and_never_reach_the_app_or_static_files(named, record):
    for host in ["evil.test", "example.org", "www.example.com", f"127.0.0.1:{named.port}", "example.com.evil.test"]:
        assert status(named, host) == "421", host
        assert status(named, host, "/static/a.txt") == "421", host
    assert app_saw(record) == []
    # The scanner's view: the bare IP address in the URL, as curl sends it.
    p = curl(named.url + "/hello", "-D", "-")
    assert p.stdout.endswith("421")
    assert status(named, "example.com", "/static/a.txt") == "200"
    assert status(named, "example.com", "/hello") == "200"
    assert app_saw(record) == ["GET /hello"]


def test_a_request_without_host_is_refused(named, record):
    raw = named.raw(b"GET /hello HTTP/1.0\r\n\r\n")
    code, headers, body = parse_response(raw)
    assert code == 421
    assert headers.get("connection") == "close"
    assert app_saw(record) == []


def test_access_log_shows_the_421(named):
    mark = named.log_mark()
    status(named, "evil.test", "/probe")
    named.wait_for_log(r'"GET /probe HTTP/1\.1" 421 ', since=mark)


def test_http2_authority_is_checked(named, record):
    resolve = f"example.com:{named.port}:127.0.0.1"
    ok = curl("--http2-prior-knowledge", "--resolve", resolve, f"http://example.com:{named.port}/hello")
    assert ok.stdout == "200", ok.stderr
    resolve = f"evil.test:{named.port}:127.0.0.1"
    refused = curl("--http2-prior-knowledge", "--resolve", resolve, f"http://evil.test:{named.port}/hello")
    assert refused.stdout == "421", refused.stderr
    assert app_saw(record) == ["GET /hello"]


def test_no_names_serves_every_host(server_factory):
    srv = server_factory("basic:app")
    assert status(srv, "anything.test") == "200"
    assert curl(srv.url + "/hello").stdout == "200"
    assert parse_response(srv.raw(b"GET /hello HTTP/1.0\r\n\r\n"))[0] == 200


def test_unknown_host_close_answers_nothing(server_factory, record):
    srv = server_factory("basic:app", "--server-name", "example.com", "--unknown-host", "close",
                         env={"FG_REQUEST_LOG": str(record)})
    mark = srv.log_mark()
    raw = srv.raw(b"GET /probe HTTP/1.1\r\nHost: evil.test\r\n\r\n")
    assert raw == b"", raw
    p = curl("-H", "Host: evil.test", srv.url + "/hello")
    assert p.returncode == 52, (p.returncode, p.stderr)  # curl: empty reply from server
    # HTTP/2: the stream is reset (CANCEL), the connection lives on for other names.
    p = curl("--http2-prior-knowledge", "-H", "Host: evil.test", srv.url + "/hello")
    assert p.returncode != 0 and p.stdout == "000", (p.returncode, p.stdout, p.stderr)
    assert status(srv, "example.com") == "200"
    assert app_saw(record) == ["GET /hello"]
    # Logged as nginx logs its 444.
    srv.wait_for_log(r'"GET /probe HTTP/1\.1" 444 ', since=mark)


def test_http2_close_resets_only_that_stream(server_factory):
    h2 = pytest.importorskip("h2.connection")
    import h2.config
    import h2.events
    import socket

    srv = server_factory("basic:app", "--server-name", "example.com", "--unknown-host", "close")
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    with socket.create_connection(srv.address, timeout=10) as s:
        conn.initiate_connection()
        bad = conn.get_next_available_stream_id()
        conn.send_headers(bad, [(":method", "GET"), (":path", "/hello"), (":scheme", "http"), (":authority", "evil.test")], end_stream=True)
        good = conn.get_next_available_stream_id()
        conn.send_headers(good, [(":method", "GET"), (":path", "/hello"), (":scheme", "http"), (":authority", "example.com")], end_stream=True)
        s.sendall(conn.data_to_send())
        reset, answered = None, None
        while reset is None or answered is None:
            data = s.recv(65536)
            assert data, "connection closed"
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.StreamReset) and event.stream_id == bad:
                    reset = event.error_code
                if isinstance(event, h2.events.ResponseReceived) and event.stream_id == good:
                    answered = dict(event.headers)[b":status"]
            s.sendall(conn.data_to_send())
    assert reset == 8  # CANCEL
    assert answered == b"200"


def test_www_to_bare_redirects_with_path_and_query(server_factory, record):
    srv = server_factory("basic:app", "--server-name", "example.com", "--www-redirect", "to-bare",
                         env={"FG_REQUEST_LOG": str(record)})
    p = subprocess.run(["curl", "-sS", "-D", "-", "-o", "/dev/null", "-H", f"Host: www.example.com:{srv.port}",
                        srv.url + "/a/b?x=1&y=2"], capture_output=True, text=True, timeout=20)
    assert p.stdout.startswith("HTTP/1.1 301"), p.stdout
    assert f"location: http://example.com:{srv.port}/a/b?x=1&y=2\n" in p.stdout.lower()
    # curl following it lands on the bare name (resolved to us).
    follow = curl("-L", "--resolve", f"www.example.com:{srv.port}:127.0.0.1", "--resolve", f"example.com:{srv.port}:127.0.0.1",
                  f"http://www.example.com:{srv.port}/hello")
    assert follow.stdout == "200", follow.stderr
    assert status(srv, "example.com") == "200"
    # Never towards a name that is not served: www.evil.test is simply refused.
    assert status(srv, "www.evil.test") == "421"
    assert app_saw(record) == ["GET /hello", "GET /hello"]


def test_redirect_scheme_comes_from_the_trusted_proxy(server_factory):
    srv = server_factory("basic:app", "--server-name", "example.com", "--www-redirect", "to-bare")
    r = srv.get("/x", headers={"host": "www.example.com", "x-forwarded-proto": "https"}, follow_redirects=False)
    assert r.status_code == 301
    assert r.headers["location"] == "https://example.com/x"


def test_bare_to_www_only_towards_a_served_www_name(server_factory):
    srv = server_factory("basic:app", "--server-name", "example.com", "--server-name", "www.example.com",
                         "--server-name", "api.example.com", "--www-redirect", "to-www")
    r = srv.get("/p?q", headers={"host": "example.com"}, follow_redirects=False)
    assert r.status_code == 301 and r.headers["location"] == "http://www.example.com/p?q"
    assert status(srv, "www.example.com") == "200"
    # www.api.example.com is not ours: api is served as it is.
    assert status(srv, "api.example.com") == "200"


def test_x_forwarded_host_from_a_trusted_proxy_is_the_host_checked_and_seen(server_factory):
    srv = server_factory("basic:app", "--server-name", "example.com")
    scope = json_of(srv.get("/scope", headers={"host": "127.0.0.1", "x-forwarded-host": "example.com"}))
    assert dict(scope["headers"])["host"] == "example.com"
    r = srv.get("/scope", headers={"host": "example.com", "x-forwarded-host": "evil.test"})
    assert r.status_code == 421


def test_untrusted_peer_cannot_pass_with_x_forwarded_host(server_factory):
    srv = server_factory("basic:app", "--server-name", "example.com", "--forwarded-allow-ips", "10.0.0.1")
    r = srv.get("/scope", headers={"host": "evil.test", "x-forwarded-host": "example.com"})
    assert r.status_code == 421


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def test_https_host_not_served_is_misdirected_even_with_a_valid_certificate(server_factory, pki):
    """The client verified the certificate for localhost (SNI), then asks for another
    name: 421, RFC 9110's answer for a request on a connection not meant for it."""
    srv = server_factory("basic:app", "--ssl-certfile", str(pki.server.crt), "--ssl-keyfile", str(pki.server.key),
                         "--server-name", "localhost")
    url = f"https://localhost:{srv.port}/hello"
    resolve = f"localhost:{srv.port}:{HOST}"
    ok = curl("--cacert", str(pki.ca_file), "--resolve", resolve, url)
    assert ok.stdout == "200", ok.stderr
    for http in ["--http1.1", "--http2"]:
        p = curl(http, "--cacert", str(pki.ca_file), "--resolve", resolve, "-H", "Host: other.test", url)
        assert p.stdout == "421", (http, p.stderr)
