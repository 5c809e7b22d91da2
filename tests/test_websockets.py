"""WebSockets, per the ASGI websocket spec 2.4, driven with the `websockets` client."""

import base64
import contextlib
import json
import os
import socket
import struct
import time

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from conftest import wait_until

pytestmark = pytest.mark.websocket


@pytest.fixture(scope="module")
def srv(module_server_factory):
    return module_server_factory("ws_app:app")


def handshake_only(url):
    """Opens and closes a connection; raises InvalidStatus if the server refuses the handshake."""
    with connect(url, open_timeout=10):
        pass


def ws_url(srv, path):
    return f"ws://127.0.0.1:{srv.port}{path}"


def test_text_and_binary_echo(srv):
    with connect(ws_url(srv, "/echo"), open_timeout=10) as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "hello"
        ws.send(b"\x00\x01binary\xff")
        assert ws.recv(timeout=10) == b"\x00\x01binary\xff"
        ws.send("h\u00e9llo \u2603")
        assert ws.recv(timeout=10) == "h\u00e9llo \u2603"


def test_many_messages_keep_their_order(srv):
    with connect(ws_url(srv, "/echo"), open_timeout=10) as ws:
        for i in range(300):
            ws.send(f"m{i}")
        assert [ws.recv(timeout=10) for _ in range(300)] == [f"m{i}" for i in range(300)]


def test_large_messages_both_ways(srv):
    payload = os.urandom(3 * 1024 * 1024)
    with connect(ws_url(srv, "/echo"), open_timeout=10, max_size=None) as ws:
        ws.send(payload)
        assert ws.recv(timeout=30) == payload
    with connect(ws_url(srv, "/send-big?size=2000000"), open_timeout=10, max_size=None) as ws:
        assert ws.recv(timeout=30) == b"z" * 2_000_000


def test_websocket_scope(srv):
    with connect(ws_url(srv, "/scope?a=1"), open_timeout=10, subprotocols=["p1", "p2"],
                 additional_headers={"X-Custom": "yes"}) as ws:
        scope = json.loads(ws.recv(timeout=10))
    assert scope["type"] == "websocket"
    assert scope["asgi"]["version"] == "3.0"
    assert scope["asgi"]["spec_version"] in ("2.3", "2.4")
    assert scope["http_version"] == "1.1"
    assert scope["scheme"] == "ws"
    assert scope["path"] == "/scope"
    assert scope["raw_path"] == "/scope"
    assert scope["query_string"] == "a=1"
    assert scope["root_path"] == ""
    assert scope["subprotocols"] == ["p1", "p2"]
    assert ["x-custom", "yes"] in scope["headers"]
    assert scope["client"][0] == "127.0.0.1"
    assert scope["server"] == ["127.0.0.1", srv.port]
    assert "websocket.http.response" in scope.get("extensions", {})


def test_websocket_scheme_behind_tls_proxy(srv):
    with connect(ws_url(srv, "/scope"), open_timeout=10,
                 additional_headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.4"}) as ws:
        scope = json.loads(ws.recv(timeout=10))
    assert scope["scheme"] == "wss"
    assert scope["client"][0] == "203.0.113.4"


def test_subprotocol_and_accept_headers(srv):
    with connect(ws_url(srv, "/subprotocol"), open_timeout=10, subprotocols=["chat.v2", "chat.v1"]) as ws:
        assert ws.subprotocol == "chat.v1"
        assert ws.response.headers["x-ws-accept"] == "yes"
        assert ws.recv(timeout=10) == "chosen=chat.v1"


def test_no_subprotocol_when_none_offered(srv):
    with connect(ws_url(srv, "/subprotocol"), open_timeout=10) as ws:
        assert ws.subprotocol is None
        assert ws.recv(timeout=10) == "chosen=None"


def test_server_close_code_and_reason(srv):
    with connect(ws_url(srv, "/close?code=4001&reason=bye%20now"), open_timeout=10) as ws:
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=10)
    assert info.value.rcvd is not None
    assert info.value.rcvd.code == 4001
    assert info.value.rcvd.reason == "bye now"


def test_client_close_code_and_reason_reach_the_app(srv, tmp_path):
    out = tmp_path / "closed"
    with connect(ws_url(srv, f"/echo?path={out}"), open_timeout=10) as ws:
        ws.send("x")
        ws.recv(timeout=10)
        ws.close(code=4002, reason="client bye")
    wait_until(lambda: out.exists() and out.read_text(), 10, message="the app never received websocket.disconnect")
    assert out.read_text() == "4002|client bye"


def test_abrupt_client_disconnect_reaches_the_app(srv, tmp_path):
    out = tmp_path / "closed"
    with connect(ws_url(srv, f"/echo?path={out}"), open_timeout=10) as ws:
        ws.send("x")
        ws.recv(timeout=10)
        ws.socket.shutdown(socket.SHUT_RDWR)
        ws.socket.close()
    wait_until(lambda: out.exists() and out.read_text(), 10, message="the app never received websocket.disconnect after the TCP connection dropped")
    code = out.read_text().split("|")[0]
    assert code in ("1006", "1005", "1000"), out.read_text()


def test_close_before_accept_is_http_403(srv):
    with pytest.raises(InvalidStatus) as info:
        handshake_only(ws_url(srv, "/deny"))
    assert info.value.response.status_code == 403


def test_websocket_http_response_denial(srv):
    with pytest.raises(InvalidStatus) as info:
        handshake_only(ws_url(srv, "/deny-http"))
    resp = info.value.response
    assert resp.status_code == 401
    assert resp.headers["x-denied"] == "yes"
    assert resp.body == b"nope"


def test_exception_before_accept_fails_the_handshake(srv):
    mark = srv.log_mark()
    with pytest.raises(InvalidStatus) as info:
        handshake_only(ws_url(srv, "/error-before-accept"))
    assert info.value.response.status_code in (403, 500)
    srv.wait_for_log(r"FG-WS-ERROR-BEFORE-ACCEPT", since=mark)


def test_exception_after_accept_closes_with_1011(srv):
    mark = srv.log_mark()
    with connect(ws_url(srv, "/error-after-accept"), open_timeout=10) as ws:
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=10)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1011
    srv.wait_for_log(r"FG-WS-ERROR-AFTER-ACCEPT", since=mark)


def test_plain_http_still_served_by_websocket_app(srv):
    assert srv.get("/anything").text == "http ok"


def test_permessage_deflate_is_negotiated(srv):
    with connect(ws_url(srv, "/echo"), open_timeout=10, compression="deflate") as ws:
        ext = ws.response.headers.get("sec-websocket-extensions", "")
        assert "permessage-deflate" in ext
        text = "compress me " * 5000
        ws.send(text)
        assert ws.recv(timeout=10) == text


def test_permessage_deflate_can_be_disabled(server_factory):
    srv = server_factory("ws_app:app", "--ws-per-message-deflate", "false")
    with connect(ws_url(srv, "/echo"), open_timeout=10, compression="deflate") as ws:
        assert "sec-websocket-extensions" not in ws.response.headers
        ws.send("plain")
        assert ws.recv(timeout=10) == "plain"


def test_ws_max_size_closes_with_1009(server_factory):
    srv = server_factory("ws_app:app", "--ws-max-size", "1024")
    with connect(ws_url(srv, "/echo"), open_timeout=10, compression=None) as ws:
        ws.send("a" * 1000)
        assert ws.recv(timeout=10) == "a" * 1000
        ws.send("b" * 5000)
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=10)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1009


def test_fastapi_websocket(server_factory):
    srv = server_factory("fastapi_app:app")
    with connect(ws_url(srv, "/ws"), open_timeout=10) as ws:
        ws.send("hi")
        assert ws.recv(timeout=10) == "echo: hi"


# --------------------------------------------------------------------------
# Pings, checked with a hand-written client that can stay silent
# --------------------------------------------------------------------------

class RawWebSocket:
    """The least client that completes a handshake and reads frames, never answering pings."""

    def __init__(self, port, path="/echo"):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self.sock.recv(4096)
            assert chunk, f"connection closed during the handshake: {buf!r}"
            buf += chunk
        head, _, self.buf = buf.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def frame(self):
        b0, b1 = self._read(2)
        length = b1 & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", self._read(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", self._read(8))
        mask = self._read(4) if b1 & 0x80 else None
        payload = self._read(length)
        if mask:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        return b0 & 0x0F, payload

    def close(self):
        self.sock.close()


def test_server_sends_pings(server_factory):
    srv = server_factory("ws_app:app", "--ws-ping-interval", "0.5", "--ws-ping-timeout", "20")
    ws = RawWebSocket(srv.port)
    try:
        ws.sock.settimeout(10)
        opcode, _ = ws.frame()
        assert opcode == 0x9, f"expected a ping, got opcode {opcode:#x}"
    finally:
        ws.close()


def test_unanswered_pings_close_the_connection(server_factory):
    srv = server_factory("ws_app:app", "--ws-ping-interval", "0.5", "--ws-ping-timeout", "1")
    ws = RawWebSocket(srv.port)
    started = time.monotonic()
    try:
        ws.sock.settimeout(15)
        opcodes = []
        while True:
            try:
                opcode, payload = ws.frame()
            except (EOFError, ConnectionResetError):
                break
            opcodes.append(opcode)
            if opcode == 0x8:
                break
        assert 0x9 in opcodes
        assert time.monotonic() - started < 15
    finally:
        ws.close()


def test_no_pings_when_interval_is_zero(server_factory):
    srv = server_factory("ws_app:app", "--ws-ping-interval", "0")
    ws = RawWebSocket(srv.port)
    try:
        # Send a text frame (masked, as a client must) and expect only its echo back.
        payload = b"hello"
        mask = os.urandom(4)
        ws.sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
        ws.sock.settimeout(10)
        assert ws.frame() == (0x1, b"hello")
    finally:
        ws.close()


def masked(opcode, payload, fin=True, rsv=0, mask=True):
    b0 = (0x80 if fin else 0) | rsv | opcode
    n = len(payload)
    if n < 126:
        head = bytes([b0, (0x80 if mask else 0) | n])
    else:
        head = bytes([b0, (0x80 if mask else 0) | 126]) + struct.pack("!H", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def test_fragmented_message_is_reassembled_and_pings_between_fragments_answered(srv):
    ws = RawWebSocket(srv.port)
    try:
        ws.sock.sendall(masked(0x1, b"hel", fin=False) + masked(0x9, b"pp") + masked(0x0, b"lo"))
        assert ws.frame() == (0xA, b"pp")
        assert ws.frame() == (0x1, b"hello")
    finally:
        ws.close()


PROTOCOL_ERRORS = {
    "unmasked-frame": (masked(0x1, b"hello", mask=False), 1002),
    "invalid-utf8-text": (masked(0x1, b"\xff\xfe"), 1007),
    "reserved-bit": (masked(0x1, b"x", rsv=0x40), 1002),
    "unknown-opcode": (masked(0x3, b"x"), 1002),
    "invalid-close-code": (masked(0x8, struct.pack("!H", 999)), 1002),
    "oversized-ping": (masked(0x9, b"x" * 200), 1002),
    "continuation-without-start": (masked(0x0, b"x"), 1002),
}


@pytest.mark.parametrize("name", list(PROTOCOL_ERRORS))
def test_protocol_errors_close_with_the_right_code(srv, name):
    data, code = PROTOCOL_ERRORS[name]
    ws = RawWebSocket(srv.port)
    try:
        ws.sock.sendall(data)
        opcode, payload = ws.frame()
        assert opcode == 0x8, f"{name}: expected a close frame, got opcode {opcode:#x}"
        assert struct.unpack("!H", payload[:2])[0] == code
    finally:
        ws.close()


def test_client_ping_gets_a_pong(srv):
    with connect(ws_url(srv, "/echo"), open_timeout=10) as ws:
        assert ws.ping(b"are you there").wait(10)


def handshake(srv, extra: bytes) -> bytes:
    with socket.create_connection(srv.address, timeout=10) as s:
        s.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" + extra + b"\r\n")
        from conftest import read_response
        return read_response(s, read_until_close=False)


def test_unsupported_websocket_version_is_426_with_the_supported_version(srv):
    mark = srv.log_mark()
    reply = handshake(srv, b"Sec-WebSocket-Version: 12\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n")
    assert reply.startswith(b"HTTP/1.1 426"), reply[:200]
    assert b"sec-websocket-version: 13" in reply.lower()
    # The access log records the status that was sent.
    srv.wait_for_log(r'"GET /echo HTTP/1\.1" 4\d\d ', since=mark)
    assert '"GET /echo HTTP/1.1" 426 ' in srv.log_since(mark), srv.log_since(mark)


def test_missing_websocket_key_is_400(srv):
    reply = handshake(srv, b"Sec-WebSocket-Version: 13\r\n")
    assert reply.startswith(b"HTTP/1.1 400"), reply[:200]


def test_many_concurrent_connections(srv):
    with contextlib.ExitStack() as stack:
        conns = [stack.enter_context(connect(ws_url(srv, "/echo"), open_timeout=10)) for _ in range(50)]
        for i, ws in enumerate(conns):
            ws.send(f"c{i}")
        for i, ws in enumerate(conns):
            assert ws.recv(timeout=10) == f"c{i}"


@pytest.mark.parametrize("sig, code", [("SIGTERM", 1001), ("SIGHUP", 1012)])
def test_stop_and_reload_close_websockets_with_the_right_code(server_factory, tmp_path, sig, code):
    """Open WebSockets get a close frame, not a dropped TCP connection, and the app sees the
    disconnect: 1001 (going away) when the server stops, 1012 (service restart: reconnect now)
    when SIGHUP replaces the worker."""
    import signal
    out = tmp_path / "closed"
    srv = server_factory("ws_app:app")
    with connect(ws_url(srv, f"/echo?path={out}"), open_timeout=10) as ws:
        ws.send("x")
        assert ws.recv(timeout=10) == "x"
        srv.signal(getattr(signal, sig))
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=20)
    assert info.value.rcvd is not None, "the server dropped the connection without a close frame"
    assert info.value.rcvd.code == code
    wait_until(out.exists, 10, message="the app never received websocket.disconnect")
    if sig == "SIGTERM":
        assert srv.wait_exit() == 0
    else:
        # The server goes on with the new worker.
        with connect(ws_url(srv, "/echo"), open_timeout=10) as ws:
            ws.send("again")
            assert ws.recv(timeout=10) == "again"
