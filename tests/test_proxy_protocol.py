"""--proxy-protocol: HAProxy's PROXY header, v1 (text) and v2 (binary), built here by
hand from the spec (https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt) and
sent over raw sockets before HTTP/1.1, HTTP/2 and TLS; and one real HAProxy in front
with send-proxy-v2. The address in the header is the client the app and the access
log see."""

import ipaddress
import json
import shutil
import socket
import ssl
import struct
import subprocess
import time

import pytest

from conftest import free_port, parse_response, read_response, wait_until
from tls_support import HOST, client_context, make_pki

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
GET_SCOPE = b"GET /scope HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


def v1(src: str, dst: str, sport: int, dport: int) -> bytes:
    family = "TCP6" if ":" in src else "TCP4"
    return f"PROXY {family} {src} {dst} {sport} {dport}\r\n".encode()


def v2(src: str | None = None, dst: str | None = None, sport: int = 0, dport: int = 0,
       local: bool = False, tlvs: bytes = b"") -> bytes:
    """A version 2 header: PROXY over TCP (IPv4 or IPv6) or LOCAL; TLVs appended as given."""
    command = 0x20 if local else 0x21
    if src is None:
        family, block = 0x00, b""
    else:
        a, b = ipaddress.ip_address(src), ipaddress.ip_address(dst)
        family = 0x11 if a.version == 4 else 0x21
        block = a.packed + b.packed + struct.pack("!HH", sport, dport)
    payload = block + tlvs
    return V2_SIGNATURE + bytes([command, family]) + struct.pack("!H", len(payload)) + payload


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + struct.pack("!H", len(value)) + value


def exchange(address, data: bytes, pieces: int = 1) -> bytes:
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(address)
        if pieces == 1:
            s.sendall(data)
        else:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            step = max(1, len(data) // pieces)
            for i in range(0, len(data), step):
                s.sendall(data[i:i + step])
                time.sleep(0.02)
        return read_response(s)


def scope_of(raw: bytes) -> dict:
    code, _, body = parse_response(raw)
    assert code == 200, raw[:300]
    return json.loads(body)


@pytest.fixture(scope="module")
def srv(module_server_factory):
    return module_server_factory("basic:app", "--proxy-protocol")


def test_v1_tcp4_sets_client_and_server(srv):
    scope = scope_of(exchange(srv.address, v1("203.0.113.7", "10.0.0.2", 51234, 8443) + GET_SCOPE))
    assert scope["client"] == ["203.0.113.7", 51234]
    assert scope["server"] == ["10.0.0.2", 8443]


def test_v1_tcp6(srv):
    scope = scope_of(exchange(srv.address, v1("2001:db8::7", "2001:db8::1", 40000, 443) + GET_SCOPE))
    assert scope["client"] == ["2001:db8::7", 40000]


def test_v1_unknown_keeps_the_connection_address(srv):
    scope = scope_of(exchange(srv.address, b"PROXY UNKNOWN\r\n" + GET_SCOPE))
    assert scope["client"][0] == "127.0.0.1"


def test_v2_tcp4_with_tlvs(srv):
    header = v2("198.51.100.20", "10.0.0.2", 60000, 80, tlvs=tlv(0x02, b"example.com") + tlv(0x04, b"\0" * 5))
    scope = scope_of(exchange(srv.address, header + GET_SCOPE))
    assert scope["client"] == ["198.51.100.20", 60000]
    assert scope["server"] == ["10.0.0.2", 80]


def test_v2_tcp6(srv):
    scope = scope_of(exchange(srv.address, v2("2001:db8::9", "2001:db8::1", 1234, 443) + GET_SCOPE))
    assert scope["client"] == ["2001:db8::9", 1234]


def test_v2_local_is_the_balancers_own_health_check(srv):
    scope = scope_of(exchange(srv.address, v2(local=True) + GET_SCOPE))
    assert scope["client"][0] == "127.0.0.1"


def test_header_and_request_in_small_pieces(srv):
    for header in [v1("203.0.113.8", "10.0.0.2", 1, 2), v2("203.0.113.8", "10.0.0.2", 1, 2, tlvs=tlv(0x04, b"x" * 40))]:
        scope = scope_of(exchange(srv.address, header + GET_SCOPE, pieces=12))
        assert scope["client"] == ["203.0.113.8", 1]


def test_keep_alive_requests_after_one_header_keep_the_client(srv):
    request = b"GET /scope HTTP/1.1\r\nHost: localhost\r\n\r\n"
    with socket.create_connection(srv.address, timeout=10) as s:
        s.sendall(v1("203.0.113.9", "10.0.0.2", 5555, 80) + request)
        first = read_response(s, read_until_close=False)
        s.sendall(request)
        second = read_response(s, read_until_close=False)
    assert scope_of(first)["client"] == scope_of(second)["client"] == ["203.0.113.9", 5555]


def test_access_log_shows_the_client_from_the_header(srv):
    mark = srv.log_mark()
    exchange(srv.address, v1("192.0.2.77", "10.0.0.2", 4242, 80) + b"GET /hello?via=lb HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    srv.wait_for_log(r'^192\.0\.2\.77 - - \[.*\] "GET /hello\?via=lb HTTP/1\.1" 200 ', since=mark)


@pytest.mark.parametrize("data", [
    GET_SCOPE,  # no header at all
    b"PROXY TCP4 203.0.113.7 10.0.0.2 51234\r\n" + GET_SCOPE,  # a field short
    b"PROXY TCP4 2001:db8::1 10.0.0.2 1 2\r\n" + GET_SCOPE,  # family mismatch
    b"PROXY UNKNOWN " + b"x" * 120 + b"\r\n" + GET_SCOPE,  # over 107 bytes
    V2_SIGNATURE + b"\x21\x11\xff\xff" + b"\0" * 64,  # v2 announcing 64 KiB
    V2_SIGNATURE + b"\x31\x11\x00\x0c" + b"\0" * 12 + GET_SCOPE,  # v2 with version 3
    b"\x16\x03\x01\x00\x05hello",  # a TLS record
], ids=["missing", "short", "family", "oversized-v1", "oversized-v2", "bad-version", "garbage"])
def test_malformed_or_missing_header_closes_without_a_word(srv, data):
    assert exchange(srv.address, data) == b""


def test_truncated_header_then_close(srv):
    assert exchange(srv.address, b"PROXY TCP4 203.0.113.7 10.0") == b""


def test_proxy_headers_of_the_real_client_are_not_trusted(srv):
    # After the PROXY header the peer is the client itself, not a trusted proxy: its
    # own X-Forwarded-For is ignored.
    request = b"GET /scope HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 6.6.6.6\r\nConnection: close\r\n\r\n"
    scope = scope_of(exchange(srv.address, v1("203.0.113.7", "10.0.0.2", 1, 2) + request))
    assert scope["client"][0] == "203.0.113.7"


def test_untrusted_peer_is_refused_even_with_a_valid_header(server_factory):
    srv = server_factory("basic:app", "--proxy-protocol", "--forwarded-allow-ips", "10.0.0.1")
    assert exchange(srv.address, v1("203.0.113.7", "10.0.0.2", 1, 2) + GET_SCOPE) == b""
    srv.wait_for_log(r"\[WARNING\] 127\.0\.0\.1:\d+: refused a connection: with --proxy-protocol only peers in --forwarded-allow-ips")


def test_unix_socket_listener(server_factory, tmp_path):
    path = str(tmp_path / "lb.sock")
    server_factory("basic:app", "--proxy-protocol", "--forwarded-allow-ips", "10.0.0.1", bind=["--uds", path], wait_address=path)
    scope = scope_of(exchange(path, v2("203.0.113.50", "10.0.0.2", 7000, 443) + GET_SCOPE))
    assert scope["client"] == ["203.0.113.50", 7000]


def test_http2_with_prior_knowledge_after_the_header(srv):
    import h2.config
    import h2.connection
    import h2.events

    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    body = b""
    with socket.create_connection(srv.address, timeout=10) as s:
        s.sendall(v2("203.0.113.61", "10.0.0.2", 6100, 80))
        conn.initiate_connection()
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [(":method", "GET"), (":path", "/scope"), (":scheme", "http"), (":authority", "localhost")], end_stream=True)
        s.sendall(conn.data_to_send())
        done = False
        while not done:
            data = s.recv(65536)
            assert data, "closed before the response ended"
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.DataReceived):
                    body += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, sid)
                done |= isinstance(event, h2.events.StreamEnded)
            s.sendall(conn.data_to_send())
    scope = json.loads(body)
    assert scope["http_version"] == "2"
    assert scope["client"] == ["203.0.113.61", 6100]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def test_tls_after_the_header(server_factory, pki):
    srv = server_factory("basic:app", "--proxy-protocol", "--ssl-certfile", str(pki.server.crt), "--ssl-keyfile", str(pki.server.key))
    with socket.create_connection((HOST, srv.port), timeout=10) as raw:
        raw.sendall(v1("203.0.113.70", "10.0.0.2", 7070, 443))
        with client_context(pki).wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(GET_SCOPE)
            scope = scope_of(read_response(s))
    assert scope["scheme"] == "https"
    assert scope["client"] == ["203.0.113.70", 7070]
    # Without the header, the TLS handshake never starts.
    with socket.create_connection((HOST, srv.port), timeout=10) as raw:
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            client_context(pki).wrap_socket(raw, server_hostname="localhost")


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_real_haproxy_with_send_proxy_v2(server_factory, tmp_path):
    """HAProxy in front, as in production: the client connects from 127.0.0.2 (another
    loopback address), HAProxy (on 127.0.0.1) connects to ferrogate; the app and the
    access log see 127.0.0.2 and the client's own port."""
    srv = server_factory("basic:app", "--proxy-protocol")
    front = free_port()
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(f"""
global
    log stderr format raw local0 err
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend fe
    bind 127.0.0.1:{front}
    default_backend be
backend be
    server app 127.0.0.1:{srv.port} send-proxy-v2
""")
    proc = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        def accepting():
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", front)) == 0
        wait_until(accepting, 10, message="haproxy did not start")
        mark = srv.log_mark()
        with socket.socket() as s:
            s.settimeout(10)
            s.bind(("127.0.0.2", 0))
            port = s.getsockname()[1]
            s.connect(("127.0.0.1", front))
            s.sendall(b"GET /scope?via=haproxy HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            scope = scope_of(read_response(s))
        assert scope["client"] == ["127.0.0.2", port]
        assert scope["server"] == ["127.0.0.1", front]
        srv.wait_for_log(r'^127\.0\.0\.2 - - \[.*\] "GET /scope\?via=haproxy HTTP/1\.1" 200 ', since=mark)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
