"""WebSockets over HTTP/2 (RFC 8441): an extended CONNECT with `:protocol websocket`
on a stream, sent by Python's h2 state machine (tests/http2_support.py). ferrogate
announces SETTINGS_ENABLE_CONNECT_PROTOCOL unless --ws none; the app sees an ordinary
ASGI websocket scope (http_version "2"), and its answers travel as DATA frames of the
stream. tests/test_browser.py shows Chromium using it over HTTPS."""

import json
import os
import struct

import pytest

from http2_support import H2Client

ENABLE_CONNECT_PROTOCOL = 0x8


def masked(opcode: int, payload: bytes) -> bytes:
    """One client WebSocket frame (FIN set, masked as RFC 6455 requires of clients)."""
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    assert len(payload) < 126
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + body


def server_frame(data: bytes):
    """(opcode, payload) of one unmasked server frame with a short payload."""
    assert data[1] & 0x80 == 0 and data[1] < 126, data
    return data[0] & 0x0F, data[2:2 + data[1]]


def open_websocket(client: H2Client, path: str):
    client.handshake()
    return client.request(path, method="CONNECT", end=False, headers=[(":protocol", "websocket"), ("sec-websocket-version", "13")])


def next_frame(client: H2Client, sid: int, seen: int):
    client.wait(lambda: len(client.streams[sid].data) > seen, 10, "a WebSocket frame")
    return server_frame(bytes(client.streams[sid].data[seen:]))


@pytest.fixture(scope="module")
def srv(module_server_factory):
    return module_server_factory("ws_app:app")


def test_extended_connect_echoes_and_closes_cleanly(srv, tmp_path):
    record = tmp_path / "closed"
    client = H2Client(srv.address)
    settings = client.handshake()
    assert settings.get(ENABLE_CONNECT_PROTOCOL) == 1, settings
    sid = open_websocket(client, f"/echo?path={record}")
    client.wait(lambda: client.streams[sid].status is not None, 10, "the response to the CONNECT")
    stream = client.streams[sid]
    assert stream.status == 200 and stream.header("sec-websocket-accept") is None, stream.headers
    client.send_data(sid, masked(0x1, b"over h2"))
    assert next_frame(client, sid, 0) == (0x1, b"over h2")
    seen = len(stream.data)
    client.send_data(sid, masked(0x8, struct.pack("!H", 1000) + b"bye"))
    opcode, payload = next_frame(client, sid, seen)
    assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == 1000
    client.wait(lambda: record.exists() and record.read_text(), 10, "the app's disconnect record")
    assert record.read_text() == "1000|bye"
    # The connection outlives the WebSocket: a plain request on a new stream is served.
    assert client.get("/plain").status == 200
    assert '"CONNECT /echo' in srv.log() and "HTTP/2.0\" 200" in srv.log()


def test_the_scope_is_a_websocket_scope_over_http2(srv):
    client = H2Client(srv.address)
    sid = open_websocket(client, "/scope")
    client.wait(lambda: client.streams[sid].done or len(client.streams[sid].data) > 200, 10, "the scope message")
    data = bytes(client.streams[sid].data)
    # The scope is longer than 125 bytes: a 16-bit extended length follows the header byte.
    assert data[0] == 0x81 and data[1] == 126, data[:4]
    length = struct.unpack("!H", data[2:4])[0]
    client.wait(lambda: len(client.streams[sid].data) >= 4 + length, 10, "the whole scope")
    scope = json.loads(bytes(client.streams[sid].data)[4:4 + length])
    assert scope["type"] == "websocket" and scope["http_version"] == "2" and scope["scheme"] == "ws", scope
    assert scope["path"] == "/scope"
    names = [name for name, _ in scope["headers"]]
    assert "host" in names and "sec-websocket-version" in names and "sec-websocket-key" not in names, names


def test_a_denied_websocket_is_an_http_answer_on_the_stream(srv):
    client = H2Client(srv.address)
    sid = open_websocket(client, "/deny")
    stream = client.response(sid)
    assert stream.status == 403, stream.headers


def test_ws_none_announces_no_extended_connect(server_factory):
    srv = server_factory("ws_app:app", "--ws", "none")
    client = H2Client(srv.address)
    settings = client.handshake()
    assert settings.get(ENABLE_CONNECT_PROTOCOL, 0) == 0, settings
    assert client.get("/plain").status == 200
