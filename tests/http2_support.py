"""An HTTP/2 client on a raw socket for the HTTP/2 tests (tests/test_http2.py).

Real clients (curl, httpx, h2load, nghttp, Chromium) do most of the work there;
this one is for what they do not show: the SETTINGS the server announced, response
trailers, RST_STREAM and GOAWAY frames, and a client that resets a stream or goes
away at a moment the test chooses. It is Python's `h2` state machine (the one httpx
uses) over a blocking socket, cleartext (h2c by prior knowledge) or TLS with ALPN h2.
"""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings


class SocketClient:
    """A test client over one socket (`self.sock`), closed at the end of a `with` block."""

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@dataclass
class Stream:
    """What arrived on one stream."""
    headers: list[tuple[str, str]] = field(default_factory=list)
    data: bytearray = field(default_factory=bytearray)
    trailers: list[tuple[str, str]] | None = None
    ended: bool = False          # END_STREAM seen: the response is complete
    reset: int | None = None     # RST_STREAM's error code, if the server reset the stream

    @property
    def status(self) -> int | None:
        for name, value in self.headers:
            if name == ":status":
                return int(value)
        return None

    def header(self, name: str) -> str | None:
        for n, v in self.headers:
            if n == name:
                return v
        return None

    @property
    def done(self) -> bool:
        return self.ended or self.reset is not None


class H2Client(SocketClient):
    """One HTTP/2 connection. `tls`: an ssl.SSLContext (ALPN h2 is set on it)."""

    def __init__(self, address, tls: ssl.SSLContext | None = None, server_hostname: str = "localhost",
                 timeout: float = 10.0, settings: dict | None = None):
        self.sock = socket.create_connection(address, timeout=timeout)
        if tls is not None:
            tls.set_alpn_protocols(["h2"])
            self.sock = tls.wrap_socket(self.sock, server_hostname=server_hostname)
            assert self.sock.selected_alpn_protocol() == "h2", self.sock.selected_alpn_protocol()
        self.timeout = timeout
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(config=config)
        self.conn.initiate_connection()
        if settings:
            self.conn.update_settings(settings)
        self.streams: dict[int, Stream] = {}
        self.server_settings: dict[int, int] | None = None  # the server's first SETTINGS frame
        self.goaways: list[h2.events.ConnectionTerminated] = []  # every GOAWAY, in order
        self._buf = b""
        self.closed = False  # the server closed the TCP connection
        self.flush()

    # ---- sending ----------------------------------------------------------
    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, path: str, method: str = "GET", headers=(), body: bytes | None = None,
                end: bool = True, authority: str | None = "localhost", scheme: str = "http") -> int:
        """Opens a stream. With `end=False` and no body, the request body stays open (send_data)."""
        sid = self.conn.get_next_available_stream_id()
        pseudo = [(":method", method), (":path", path), (":scheme", scheme)]
        if authority is not None:
            pseudo.append((":authority", authority))
        self.streams[sid] = Stream()
        only_headers = end and not body
        self.conn.send_headers(sid, pseudo + list(headers), end_stream=only_headers)
        if body:
            self.send_data(sid, body, end=end)
        self.flush()
        return sid

    def send_data(self, sid: int, data: bytes, end: bool = False):
        """Sends `data` as the flow-control windows allow (reading the server's WINDOW_UPDATEs)."""
        view = memoryview(data)
        while view:
            window = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if window <= 0:
                self.pump()
                continue
            n = min(window, len(view))
            self.conn.send_data(sid, bytes(view[:n]), end_stream=end and n == len(view))
            view = view[n:]
            self.flush()
        if end and not data:
            self.conn.end_stream(sid)
        self.flush()

    def reset(self, sid: int, code: int = 8):  # 8 = CANCEL
        self.conn.reset_stream(sid, error_code=code)
        self.flush()

    def ping(self):
        self.conn.ping(b"12345678")
        self.flush()

    # ---- receiving --------------------------------------------------------
    def pump(self, timeout: float | None = None) -> bool:
        """Reads once (waiting at most `timeout`) and handles what came. False on a timeout."""
        self.sock.settimeout(self.timeout if timeout is None else timeout)
        try:
            data = self.sock.recv(65536)
        except (TimeoutError, socket.timeout):
            return False
        except (ConnectionResetError, ssl.SSLError, OSError):
            data = b""
        if not data:
            self.closed = True
            return True
        self._buf += data
        # One frame at a time: Python's h2 takes a GOAWAY as the end of everything, but
        # RFC 9113 6.8 lets the streams it admits finish (curl, nghttp2 and browsers wait
        # for them), so the connection is put back in the open state after each GOAWAY.
        while len(self._buf) >= 9:
            end = 9 + int.from_bytes(self._buf[:3], "big")
            if len(self._buf) < end:
                break
            frame, self._buf = self._buf[:end], self._buf[end:]
            events = self.conn.receive_data(frame)
            for ev in events:
                self._handle(ev)
            if any(isinstance(ev, h2.events.ConnectionTerminated) for ev in events):
                self.conn.state_machine.state = h2.connection.ConnectionState.CLIENT_OPEN
            try:
                self.flush()
            except OSError:
                self.closed = True
        return True

    def _handle(self, ev):
        if isinstance(ev, h2.events.RemoteSettingsChanged) and self.server_settings is None:
            self.server_settings = {int(k): v.new_value for k, v in ev.changed_settings.items()}
        elif isinstance(ev, h2.events.ResponseReceived):
            self.streams[ev.stream_id].headers = list(ev.headers)
        elif isinstance(ev, h2.events.DataReceived):
            self.streams[ev.stream_id].data += ev.data
            self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, h2.events.TrailersReceived):
            self.streams[ev.stream_id].trailers = list(ev.headers)
        elif isinstance(ev, h2.events.StreamEnded):
            self.streams[ev.stream_id].ended = True
        elif isinstance(ev, h2.events.StreamReset):
            if ev.stream_id in self.streams:
                self.streams[ev.stream_id].reset = ev.error_code
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.goaways.append(ev)

    def wait(self, predicate, timeout: float = 10.0, what: str = "condition"):
        """Pumps until `predicate()` holds; AssertionError after `timeout` or when the server closed first."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.closed:
                raise AssertionError(f"the server closed the connection before {what} "
                                     f"(GOAWAYs: {self.goaways}, streams: {self.streams})")
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{what} did not happen within {timeout}s (streams: {self.streams})")
            self.pump(min(left, 1.0))

    def handshake(self, timeout: float = 10.0) -> dict[int, int]:
        """Waits for the server's SETTINGS; returns them."""
        self.wait(lambda: self.server_settings is not None, timeout, "the server's SETTINGS")
        return self.server_settings

    def response(self, sid: int, timeout: float = 10.0) -> Stream:
        """Waits until stream `sid` ended (END_STREAM) or was reset."""
        self.wait(lambda: self.streams[sid].done, timeout, f"the end of stream {sid}")
        return self.streams[sid]

    def get(self, path: str, timeout: float = 10.0, **kw) -> Stream:
        return self.response(self.request(path, **kw), timeout)

    def wait_closed(self, timeout: float = 10.0):
        """Pumps until the server closes the TCP connection."""
        deadline = time.monotonic() + timeout
        while not self.closed:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"the server did not close the connection within {timeout}s (GOAWAYs: {self.goaways})")
            self.pump(min(left, 1.0))



SETTINGS_MAX_CONCURRENT_STREAMS = int(h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS)
NO_ERROR, INTERNAL_ERROR, CANCEL = 0x0, 0x2, 0x8
