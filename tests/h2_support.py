"""A raw HTTP/2 client for tests/test_http2_attacks.py: it sends frames no
well-behaved client would (floods, resets, oversized or never-ending header
blocks, bad WINDOW_UPDATEs) and records everything the server answers.

Frames are built by hand (`frame()` and the helpers below: a frame is 9 bytes of
head and its payload, RFC 9113 section 4.1) so that nothing refuses to produce
them; header blocks are HPACK literals that never touch the dynamic table
(`request_block`), so a block can be sent any number of times, in any order, on
any connection. Received frames are parsed here too (hpack decodes response
headers): `H2Conn` answers the server's SETTINGS and PINGs, opens its windows
for received DATA unless told not to, and keeps what a test asserts on:
the server's SETTINGS, GOAWAY, RST_STREAMs, responses, and how the connection
ended. `summary()` says all of it in one line for assertion messages.
"""

from __future__ import annotations

import collections
import select
import socket
import struct
import time

import hpack

from http2_support import SocketClient

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
FRAME_NAMES = {DATA: "DATA", HEADERS: "HEADERS", PRIORITY: "PRIORITY", RST_STREAM: "RST_STREAM",
               SETTINGS: "SETTINGS", PUSH_PROMISE: "PUSH_PROMISE", PING: "PING", GOAWAY: "GOAWAY",
               WINDOW_UPDATE: "WINDOW_UPDATE", CONTINUATION: "CONTINUATION"}

# Flags
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

# Error codes
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, SETTINGS_TIMEOUT, STREAM_CLOSED, \
    FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR, CONNECT_ERROR, ENHANCE_YOUR_CALM, \
    INADEQUATE_SECURITY, HTTP_1_1_REQUIRED = range(14)
ERROR_NAMES = {NO_ERROR: "NO_ERROR", PROTOCOL_ERROR: "PROTOCOL_ERROR", INTERNAL_ERROR: "INTERNAL_ERROR",
               FLOW_CONTROL_ERROR: "FLOW_CONTROL_ERROR", SETTINGS_TIMEOUT: "SETTINGS_TIMEOUT",
               STREAM_CLOSED: "STREAM_CLOSED", FRAME_SIZE_ERROR: "FRAME_SIZE_ERROR",
               REFUSED_STREAM: "REFUSED_STREAM", CANCEL: "CANCEL", COMPRESSION_ERROR: "COMPRESSION_ERROR",
               CONNECT_ERROR: "CONNECT_ERROR", ENHANCE_YOUR_CALM: "ENHANCE_YOUR_CALM",
               INADEQUATE_SECURITY: "INADEQUATE_SECURITY", HTTP_1_1_REQUIRED: "HTTP_1_1_REQUIRED"}

# SETTINGS parameters
HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE, \
    MAX_HEADER_LIST_SIZE = range(1, 7)
SETTING_NAMES = {HEADER_TABLE_SIZE: "HEADER_TABLE_SIZE", ENABLE_PUSH: "ENABLE_PUSH",
                 MAX_CONCURRENT_STREAMS: "MAX_CONCURRENT_STREAMS", INITIAL_WINDOW_SIZE: "INITIAL_WINDOW_SIZE",
                 MAX_FRAME_SIZE: "MAX_FRAME_SIZE", MAX_HEADER_LIST_SIZE: "MAX_HEADER_LIST_SIZE"}

MAX_WINDOW = 2**31 - 1


def error_name(code: int) -> str:
    return ERROR_NAMES.get(code, f"0x{code:x}")


# --------------------------------------------------------------------------
# Building frames
# --------------------------------------------------------------------------

def frame(ftype: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One frame, whatever its content: length (24 bits), type, flags, stream id, payload."""
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream_id & MAX_WINDOW) + payload


def settings_frame(settings: dict[int, int] | None = None, ack: bool = False) -> bytes:
    payload = b"".join(struct.pack(">HI", k, v) for k, v in (settings or {}).items())
    return frame(SETTINGS, ACK if ack else 0, 0, payload)


def ping_frame(data: bytes = b"\0" * 8, ack: bool = False) -> bytes:
    return frame(PING, ACK if ack else 0, 0, data)


def window_update_frame(stream_id: int, increment: int) -> bytes:
    """Any increment, 0 and values that overflow the window included."""
    return frame(WINDOW_UPDATE, 0, stream_id, struct.pack(">I", increment))


def rst_stream_frame(stream_id: int, code: int = CANCEL) -> bytes:
    return frame(RST_STREAM, 0, stream_id, struct.pack(">I", code))


def data_frame(stream_id: int, data: bytes = b"", end_stream: bool = False) -> bytes:
    return frame(DATA, END_STREAM if end_stream else 0, stream_id, data)


def headers_frame(stream_id: int, block: bytes, end_stream: bool = True, end_headers: bool = True) -> bytes:
    return frame(HEADERS, (END_STREAM if end_stream else 0) | (END_HEADERS if end_headers else 0), stream_id, block)


def continuation_frame(stream_id: int, block: bytes, end_headers: bool = False) -> bytes:
    return frame(CONTINUATION, END_HEADERS if end_headers else 0, stream_id, block)


# --------------------------------------------------------------------------
# HPACK by hand (RFC 7541): integers, strings, literals, indexed fields
# --------------------------------------------------------------------------

def hpack_int(value: int, prefix_bits: int, first: int = 0) -> bytes:
    """An integer with an N-bit prefix; `first` holds the bits above the prefix."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack_str(s: bytes | str) -> bytes:
    """A string literal without Huffman coding."""
    if isinstance(s, str):
        s = s.encode()
    return hpack_int(len(s), 7) + s


# Static table indexes of the names used in requests (RFC 7541 appendix A).
STATIC_NAMES = {":authority": 1, ":method": 2, ":path": 4, ":scheme": 6, "content-length": 28}


def literal(name: str, value: bytes | str) -> bytes:
    """A literal header field without indexing: it leaves the dynamic table alone."""
    idx = STATIC_NAMES.get(name)
    if idx is not None:
        return hpack_int(idx, 4) + hpack_str(value)
    return b"\x00" + hpack_str(name) + hpack_str(value)


def literal_indexed(name: str, value: bytes | str) -> bytes:
    """A literal header field WITH incremental indexing (a new name): it enters the dynamic table
    at index 62 (the first dynamic index)."""
    return b"\x40" + hpack_str(name) + hpack_str(value)


def indexed(index: int) -> bytes:
    """An indexed header field: one byte for index < 127 (62 is the newest dynamic entry)."""
    return hpack_int(index, 7, 0x80)


def request_block(path: str, method: str = "GET", authority: str = "localhost",
                  extra: list[tuple[str, str]] = ()) -> bytes:
    """The header block of a request, all literals without indexing: the same bytes decode the same
    way whatever was sent before on the connection."""
    block = (literal(":method", method) + literal(":scheme", "http") + literal(":path", path)
             + literal(":authority", authority))
    for name, value in extra:
        block += literal(name, value)
    return block


# --------------------------------------------------------------------------
# The connection
# --------------------------------------------------------------------------

class Stream:
    def __init__(self):
        self.headers: list[tuple[str, str]] = []
        self.status: int | None = None
        self.data = bytearray()
        self.ended = False
        self.reset: int | None = None

    def describe(self) -> str:
        state = f"RST {error_name(self.reset)}" if self.reset is not None else ("ended" if self.ended else "open")
        return f"status={self.status} body={len(self.data)}B {state}"


class H2Conn(SocketClient):
    """One HTTP/2 (h2c, prior knowledge) connection on a raw non-blocking socket.

    Nothing is sent by itself but answers: SETTINGS ACK and PING ACK (`auto_ack`),
    and WINDOW_UPDATEs for received DATA (`auto_window`). `send()` queues bytes;
    `pump()` and `flood()` move bytes both ways, with deadlines everywhere."""

    def __init__(self, address, *, rcvbuf: int | None = None, connect_timeout: float = 5.0,
                 auto_ack: bool = True, auto_window: bool = True):
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        if rcvbuf:
            # Before connect, so that the window the kernel advertises stays small.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(connect_timeout)
        self.sock.connect(address)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.auto_ack = auto_ack
        self.auto_window = auto_window
        self.out = bytearray()
        self.inbuf = bytearray()
        self.bytes_sent = 0
        self.bytes_received = 0
        self.frame_counts: collections.Counter = collections.Counter()
        self.server_settings: dict[int, int] | None = None
        self.settings_acks = 0
        self.ping_acks = 0
        self.goaway: tuple[int, int, bytes] | None = None  # (last stream id, error code, debug data)
        self.streams: dict[int, Stream] = collections.defaultdict(Stream)
        self.closed: str | None = None  # how the connection ended, as seen from here
        self.decoder = hpack.Decoder()
        self.decoder.max_header_list_size = 1 << 24
        self._block: tuple[int, int, bytearray] | None = None  # (stream id, flags, fragments) until END_HEADERS
        self.next_stream_id = 1

    # ---- sending ----------------------------------------------------------
    def send(self, *chunks: bytes) -> "H2Conn":
        for c in chunks:
            self.out += c
        return self

    def start(self, settings: dict[int, int] | None = None) -> "H2Conn":
        """Queues the connection preface and our SETTINGS."""
        return self.send(PREFACE, settings_frame(settings))

    def handshake(self, settings: dict[int, int] | None = None, timeout: float = 5.0) -> "H2Conn":
        """Preface and SETTINGS both ways; fails unless the server sent its SETTINGS."""
        self.start(settings)
        if not self.pump(lambda: self.server_settings is not None and not self.out, timeout):
            raise AssertionError(f"no SETTINGS from the server within {timeout}s: {self.summary()}")
        return self

    def new_stream_id(self) -> int:
        sid = self.next_stream_id
        self.next_stream_id += 2
        return sid

    def request(self, path: str, method: str = "GET", end_stream: bool = True, extra=()) -> int:
        """Queues one request's HEADERS on a new stream; returns the stream id."""
        sid = self.new_stream_id()
        self.send(headers_frame(sid, request_block(path, method, extra=extra), end_stream=end_stream))
        return sid

    def _write(self):
        if not self.out or self.closed:
            return
        try:
            n = self.sock.send(self.out[: 1 << 20])
        except (BlockingIOError, InterruptedError):
            return
        except (BrokenPipeError, ConnectionResetError) as e:
            # What the server sent before it closed (its GOAWAY, typically) may still be readable.
            self._read_remaining()
            self.closed = f"{type(e).__name__} while sending"
            return
        del self.out[:n]
        self.bytes_sent += n

    # ---- receiving --------------------------------------------------------
    def _read(self):
        if self.closed:
            return
        try:
            data = self.sock.recv(1 << 18)
        except (BlockingIOError, InterruptedError):
            return
        except ConnectionResetError:
            self.closed = "reset by the server (RST)"
            return
        if not data:
            self.closed = "closed by the server (EOF)"
            return
        self.bytes_received += len(data)
        self.inbuf += data
        self._parse()

    def _read_remaining(self):
        while not self.closed:
            try:
                data = self.sock.recv(1 << 18)
            except (BlockingIOError, InterruptedError, ConnectionResetError, OSError):
                return
            if not data:
                return
            self.bytes_received += len(data)
            self.inbuf += data
            self._parse()

    def _parse(self):
        buf = self.inbuf
        pos = 0
        while len(buf) - pos >= 9:
            length = int.from_bytes(buf[pos:pos + 3], "big")
            if len(buf) - pos < 9 + length:
                break
            ftype, flags = buf[pos + 3], buf[pos + 4]
            sid = int.from_bytes(buf[pos + 5:pos + 9], "big") & MAX_WINDOW
            payload = bytes(buf[pos + 9:pos + 9 + length])
            pos += 9 + length
            self._on_frame(ftype, flags, sid, payload)
        del buf[:pos]

    def _on_frame(self, ftype, flags, sid, payload):
        self.frame_counts[FRAME_NAMES.get(ftype, str(ftype))] += 1
        if ftype == SETTINGS:
            if flags & ACK:
                self.settings_acks += 1
            else:
                values = dict(struct.unpack(">HI", payload[i:i + 6]) for i in range(0, len(payload) - 5, 6))
                if self.server_settings is None:
                    self.server_settings = values
                else:
                    self.server_settings.update(values)
                if self.auto_ack:
                    self.send(settings_frame(ack=True))
        elif ftype == PING:
            if flags & ACK:
                self.ping_acks += 1
            elif self.auto_ack:
                self.send(ping_frame(payload, ack=True))
        elif ftype == GOAWAY:
            last, code = struct.unpack(">II", payload[:8])
            if self.goaway is None:
                self.goaway = (last & MAX_WINDOW, code, payload[8:200])
        elif ftype == RST_STREAM:
            self.streams[sid].reset = struct.unpack(">I", payload[:4])[0]
        elif ftype == DATA:
            body = payload
            if flags & PADDED:
                body = payload[1:len(payload) - payload[0]]
            st = self.streams[sid]
            st.data += body
            if flags & END_STREAM:
                st.ended = True
            if payload and self.auto_window:
                self.send(window_update_frame(0, len(payload)))
                if not st.ended:
                    self.send(window_update_frame(sid, len(payload)))
        elif ftype == HEADERS:
            block = payload
            if flags & PADDED:
                block = block[1:len(block) - block[0]]
            if flags & PRIORITY_FLAG:
                block = block[5:]
            self._block = (sid, flags, bytearray(block))
            if flags & END_HEADERS:
                self._end_block()
        elif ftype == CONTINUATION and self._block is not None:
            self._block[2].extend(payload)
            if flags & END_HEADERS:
                self._end_block()

    def _end_block(self):
        sid, flags, block = self._block
        self._block = None
        st = self.streams[sid]
        try:
            headers = [(n.decode() if isinstance(n, bytes) else n, v.decode() if isinstance(v, bytes) else v)
                       for n, v in self.decoder.decode(bytes(block), raw=False)]
        except Exception as e:  # noqa: BLE001 - recorded, shown in summary()
            headers = [("x-undecodable", repr(e))]
        st.headers += headers
        for n, v in headers:
            if n == ":status" and st.status is None:
                st.status = int(v)
        if flags & END_STREAM:
            st.ended = True

    # ---- moving bytes -----------------------------------------------------
    def pump(self, until=None, timeout: float = 5.0, read: bool = True) -> bool:
        """Sends what is queued and reads (unless read=False) until `until()` holds (True), or the
        connection ended, or `timeout` passed (then whether `until()` holds)."""
        deadline = time.monotonic() + timeout
        while True:
            if until is not None and until():
                return True
            if self.closed:
                return bool(until and until())
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return bool(until and until())
            r, w, _ = select.select([self.sock] if read else [], [self.sock] if self.out else [], [],
                                    min(remaining, 0.1))
            if w:
                self._write()
            if r:
                self._read()

    def flush(self, timeout: float = 5.0) -> bool:
        """Sends what is queued (reading meanwhile); whether all of it went."""
        return self.pump(lambda: not self.out, timeout)

    def poll(self):
        """One non-blocking round: sends what the socket takes, reads what has come."""
        r, w, _ = select.select([self.sock], [self.sock] if self.out else [], [], 0)
        if w:
            self._write()
        if r:
            self._read()

    def flood(self, chunks, *, read: bool = True, stall_timeout: float = 2.0, max_seconds: float = 8.0,
              stop_on_goaway: bool = True) -> str:
        """Sends every chunk of the iterable `chunks` as fast as the server accepts them, reading
        (and answering) meanwhile unless read=False. Returns why it stopped: "sent" (all of it),
        "goaway", "closed", "stalled" (the server took no byte for `stall_timeout` s: it stopped
        reading) or "time" (`max_seconds` passed)."""
        it = iter(chunks)
        start = last_progress = time.monotonic()
        while True:
            if self.closed:
                return "closed"
            if stop_on_goaway and self.goaway is not None:
                return "goaway"
            if not read and self.peer_ended():
                self.closed = f"ended by the server (TCP state {self.tcp_state_name()})"
                return "closed"
            if not self.out:
                chunk = next(it, None)
                if chunk is None:
                    return "sent"
                self.out += chunk
            now = time.monotonic()
            if now - start > max_seconds:
                return "time"
            if now - last_progress > stall_timeout:
                return "stalled"
            r, w, _ = select.select([self.sock] if read else [], [self.sock], [], 0.05)
            before = self.bytes_sent
            if w:
                self._write()
            if self.bytes_sent != before:
                last_progress = time.monotonic()
            if r:
                self._read()

    def wait_end(self, timeout: float = 5.0) -> bool:
        """Reads (and answers) until the server sent GOAWAY or closed the connection."""
        return self.pump(lambda: self.goaway is not None or self.closed is not None, timeout)

    def wait_closed(self, timeout: float = 5.0) -> bool:
        """Reads until the server closed the connection (after its GOAWAY, if any)."""
        return self.pump(lambda: self.closed is not None, timeout)

    # ---- the connection's state without reading from it --------------------
    def tcp_state(self) -> int:
        return self.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]

    def tcp_state_name(self) -> str:
        names = {1: "ESTABLISHED", 4: "FIN_WAIT1", 5: "FIN_WAIT2", 6: "TIME_WAIT", 7: "CLOSE",
                 8: "CLOSE_WAIT", 9: "LAST_ACK", 11: "CLOSING"}
        s = self.tcp_state()
        return names.get(s, str(s))

    def peer_ended(self) -> bool:
        """Whether the server closed (FIN or RST), seen from the kernel's TCP state: this does not
        read the socket, so a client that never reads can still tell."""
        return self.tcp_state() != 1

    def wait_peer_end_without_reading(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.peer_ended():
                return True
            time.sleep(0.05)
        return self.peer_ended()

    def drain(self, timeout: float = 2.0):
        """Reads what the server sent (without answering) until EOF or `timeout`: for the record."""
        self.auto_ack = False
        self.auto_window = False
        self.out.clear()
        self.pump(lambda: False, timeout)

    # ---- reporting -----------------------------------------------------------
    def ended(self) -> bool:
        """The server sent GOAWAY or closed the connection."""
        return self.goaway is not None or self.closed is not None

    def resets(self) -> dict[int, int]:
        return {sid: st.reset for sid, st in self.streams.items() if st.reset is not None}

    def summary(self) -> str:
        parts = [f"sent {self.bytes_sent} B, received {self.bytes_received} B",
                 f"frames from the server {dict(self.frame_counts)}"]
        if self.ping_acks or self.settings_acks:
            parts.append(f"of which ACKs: PING {self.ping_acks}, SETTINGS {self.settings_acks}")
        if self.server_settings is not None:
            parts.append("server SETTINGS " + ", ".join(f"{SETTING_NAMES.get(k, k)}={v}"
                                                         for k, v in self.server_settings.items()))
        if self.goaway is not None:
            last, code, debug = self.goaway
            parts.append(f"GOAWAY(last_stream_id={last}, {error_name(code)}, debug={debug!r})")
        resets = self.resets()
        if resets:
            codes = collections.Counter(error_name(c) for c in resets.values())
            parts.append(f"RST_STREAM on {len(resets)} streams {dict(codes)} (first: {sorted(resets)[:5]})")
        statuses = collections.Counter(st.status for st in self.streams.values() if st.status is not None)
        if statuses:
            parts.append(f"responses {dict(statuses)}")
        parts.append(f"connection: {self.closed or 'open'}")
        return "; ".join(parts)



# --------------------------------------------------------------------------
# Floods: iterables of byte chunks for H2Conn.flood
# --------------------------------------------------------------------------

def batched(frames, chunk_size: int = 1 << 16):
    """Joins the byte strings of the iterable `frames` into chunks of about `chunk_size` bytes."""
    chunk = bytearray()
    for f in frames:
        chunk += f
        if len(chunk) >= chunk_size:
            yield bytes(chunk)
            chunk.clear()
    if chunk:
        yield bytes(chunk)


def repeated(unit: bytes, count: int, chunk_size: int = 1 << 16):
    """`count` copies of `unit`, in chunks of about `chunk_size` bytes."""
    per = max(1, chunk_size // len(unit))
    chunk = unit * per
    full, rest = divmod(count, per)
    for _ in range(full):
        yield chunk
    if rest:
        yield unit * rest


# --------------------------------------------------------------------------
# Server-side measurements
# --------------------------------------------------------------------------

def vm_kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


class MemoryWatch:
    """How much a process's resident memory grew during an attack, peak included.

    Resets the kernel's high-water mark (/proc/PID/clear_refs, "5") at the start, so that
    VmHWM at the end is the peak reached during the attack, however briefly."""

    def __init__(self, pid: int):
        self.pid = pid
        self.hwm_reset = True
        try:
            with open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            self.hwm_reset = False
        self.before_kib = vm_kib(pid, "VmRSS")

    def peak_kib(self) -> int:
        now = vm_kib(self.pid, "VmRSS")
        return max(now, vm_kib(self.pid, "VmHWM")) if self.hwm_reset else now

    def growth_mib(self) -> float:
        return (self.peak_kib() - self.before_kib) / 1024

    def describe(self) -> str:
        return (f"RSS {self.before_kib / 1024:.1f} MiB before, peak {self.peak_kib() / 1024:.1f} MiB during "
                f"(VmHWM {'reset at the start' if self.hwm_reset else 'not resettable: VmRSS after'})")
