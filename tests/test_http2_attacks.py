"""HTTP/2 under hostile clients: the known denial-of-service shapes (rapid reset,
CONTINUATION flood, HPACK bomb, control-frame and empty-DATA floods, bad
WINDOW_UPDATEs, too many streams, a reader that never opens its window), each
sent as crafted frames over h2c (prior knowledge) by tests/h2_support.py.

Each test asserts what the server did to the attacking connection (the GOAWAY,
RST_STREAM or close it sent, and its error code where the RFC fixes one), how
many of the crafted requests reached the app (basic.py logs every request it is
called for in FG_REQUEST_LOG before doing anything else), and then that nothing
else was harmed: a fresh HTTP/2 request on a new connection
and a fresh HTTP/1.1 request both get 200 from the same worker process as before
the attack (not a crashed-and-replaced one), with no panic in the log, and, for
the attacks aimed at memory, that the worker's peak RSS during the attack grew
by less than MEMORY_BOUND_MIB. Assertion messages carry everything the server
sent (H2Conn.summary()).
"""

import itertools
import time

import httpx
import pytest

from conftest import pid_alive, wait_until
from h2_support import (CANCEL, FLOW_CONTROL_ERROR, HEADER_TABLE_SIZE, INITIAL_WINDOW_SIZE,
                        MAX_CONCURRENT_STREAMS, MAX_WINDOW, PROTOCOL_ERROR, REFUSED_STREAM, H2Conn, MemoryWatch,
                        batched, continuation_frame, data_frame, error_name, headers_frame, indexed, literal,
                        literal_indexed, ping_frame, repeated, request_block, rst_stream_frame, settings_frame,
                        window_update_frame)

MAX_STREAMS = 16          # --h2-max-concurrent-streams
TIMEOUT_IO = 2            # --timeout-io
KEEP_ALIVE = 2            # --timeout-keep-alive
MAX_HEADER_SIZE = 65536   # ferrogate's default --max-header-size
MEMORY_BOUND_MIB = 64     # how much a worker's RSS may grow during one attack


@pytest.fixture(scope="module")
def requests_file(tmp_path_factory):
    return tmp_path_factory.mktemp("http2-attacks") / "requests.log"


@pytest.fixture(scope="module")
def srv(module_server_factory, requests_file):
    """One worker, so that the pid/RSS checks are all about the process the attacks reached.
    Short --timeout-io and --timeout-keep-alive (as in test_http1.py): the stalls these tests cause
    must end on those clocks, and the tests wait for no more than a few seconds past them."""
    return module_server_factory("basic:app", "--h2-max-concurrent-streams", str(MAX_STREAMS),
                                 "--timeout-io", str(TIMEOUT_IO), "--timeout-keep-alive", str(KEEP_ALIVE),
                                 env={"FG_REQUEST_LOG": str(requests_file)})


# --------------------------------------------------------------------------
# The victim's health, before and after
# --------------------------------------------------------------------------

def h2_get(srv, path: str) -> httpx.Response:
    """A well-behaved HTTP/2 request on a new connection (h2c with prior knowledge)."""
    with httpx.Client(http1=False, http2=True, timeout=10) as client:
        return client.get(srv.url + path)


def app_saw(requests_file, prefix: str, since: int = 0) -> int:
    """How many requests whose path starts with `prefix` the app was called for (from byte `since`
    of the request log: basic.py appends "METHOD PATH" before anything else)."""
    if not requests_file.exists():
        return 0
    lines = requests_file.read_bytes()[since:].decode("latin-1").splitlines()
    return sum(1 for line in lines if line.partition(" ")[2].startswith(prefix))


def log_size(requests_file) -> int:
    return requests_file.stat().st_size if requests_file.exists() else 0


def reached_app(requests_file, prefix: str, since: int = 0, settle: float = 0.3, timeout: float = 5.0) -> int:
    """app_saw(), once the number stops moving (requests the server dispatched just before may
    still be on their way to the app)."""
    deadline = time.monotonic() + timeout
    last = app_saw(requests_file, prefix, since)
    while time.monotonic() < deadline:
        time.sleep(settle)
        now = app_saw(requests_file, prefix, since)
        if now == last:
            return now
        last = now
    return last


class Victim:
    """The server's single worker as it was before the attack."""

    def __init__(self, srv):
        self.srv = srv
        pids = srv.worker_pids()
        assert len(pids) == 1, f"expected one worker, have {pids}"
        self.pid = pids[0]
        self.mark = srv.log_mark()
        self.memory = MemoryWatch(self.pid)

    def assert_unharmed(self, what: str, memory: bool = False):
        srv = self.srv
        assert pid_alive(self.pid), (f"{what} killed worker {self.pid}: workers now {srv.worker_pids()}\n"
                                     f"--- log ---\n{srv.log_tail()}")
        if memory:
            growth = self.memory.growth_mib()
            print(f"{what}: worker {self.memory.describe()}")
            assert growth < MEMORY_BOUND_MIB, (f"{what}: the worker's RSS grew by {growth:.0f} MiB "
                                               f"(bound {MEMORY_BOUND_MIB} MiB): {self.memory.describe()}")
        r2 = h2_get(srv, "/hello")
        assert (r2.status_code, r2.http_version, r2.content) == (200, "HTTP/2", b"Hello, world!\n"), \
            f"after {what}, a fresh HTTP/2 request got {r2.status_code} {r2.http_version} {r2.content[:100]!r}"
        r1 = srv.get("/hello")
        assert (r1.status_code, r1.http_version) == (200, "HTTP/1.1"), \
            f"after {what}, a fresh HTTP/1.1 request got {r1.status_code} {r1.http_version}"
        assert srv.worker_pids() == [self.pid], (f"after {what}, worker {self.pid} is gone: workers now "
                                                f"{srv.worker_pids()}\n--- log ---\n{srv.log_tail()}")
        log = srv.log_since(self.mark)
        assert "panicked" not in log and "died unexpectedly" not in log, f"{what}:\n{log[-5000:]}"


@pytest.fixture
def victim(srv):
    return Victim(srv)


# --------------------------------------------------------------------------
# Streams: the concurrency limit, rapid reset, server-side resets
# --------------------------------------------------------------------------

def test_streams_beyond_max_concurrent_streams_are_refused(srv, victim, requests_file, tmp_path):
    """--h2-max-concurrent-streams is advertised in SETTINGS; the streams opened beyond it are refused
    (RST_STREAM REFUSED_STREAM or PROTOCOL_ERROR, RFC 9113 5.1.2) without reaching the app, while the
    admitted ones, held by the app meanwhile (/wait-file), complete."""
    extra = 4
    gate = tmp_path / "gate"
    mark = log_size(requests_file)
    with H2Conn(srv.address) as c:
        try:
            c.handshake()
            advertised = c.server_settings.get(MAX_CONCURRENT_STREAMS)
            assert advertised == MAX_STREAMS, c.summary()
            sids = [c.request(f"/wait-file?path={gate}") for _ in range(MAX_STREAMS + extra)]
            admitted, excess = sids[:MAX_STREAMS], sids[MAX_STREAMS:]

            def excess_answered_and_admitted_held():
                return (all(c.streams[s].reset is not None or c.streams[s].status is not None for s in excess)
                        and app_saw(requests_file, "/wait-file", mark) >= MAX_STREAMS)

            c.pump(excess_answered_and_admitted_held, 10)
        finally:
            gate.touch()
        c.pump(lambda: all(c.streams[s].ended or c.streams[s].reset is not None for s in admitted), 10)
        seen = reached_app(requests_file, "/wait-file", mark)

    detail = f"{c.summary()}; " + ", ".join(f"stream {s}: {c.streams[s].describe()}" for s in sids)
    print(f"concurrent streams: the app saw {seen}; {detail}")
    for s in excess:
        assert c.streams[s].status is None and c.streams[s].reset in (REFUSED_STREAM, PROTOCOL_ERROR), \
            f"stream {s}, beyond the limit of {MAX_STREAMS}, was not refused: {detail}"
    for s in admitted:
        st = c.streams[s]
        assert (st.status, st.ended) == (200, True) and b'"size": 0' in st.data, \
            f"admitted stream {s} did not complete: {detail}"
    assert seen == MAX_STREAMS, f"the app saw {seen} of the {len(sids)} streams (limit {MAX_STREAMS}): {detail}"
    victim.assert_unharmed("too many concurrent streams")


RESETS = 20000
REACHED_BOUND = RESETS // 10
# What the reset requests ask for: a response that takes the app a while (as the endpoints a real
# attack picks do), so that each reset lands on a request still in progress.
WORK = "/slow?secs=0.5"


def stream_then(frame_after, path: str, count: int):
    """`count` requests (HEADERS with END_STREAM, each on a new stream), each followed at once by
    frame_after(stream_id), in chunks of 64 KiB."""
    block = request_block(path)
    return batched(headers_frame(sid, block) + frame_after(sid) for sid in range(1, 2 * count, 2))


def flood_of_resets(srv, requests_file, frame_after):
    """RESETS requests for WORK, each followed at once by `frame_after(stream id)`, on one
    connection; returns the connection, how the flood stopped, and how many reached the app."""
    mark = log_size(requests_file)
    with H2Conn(srv.address) as c:
        c.handshake()
        how = c.flood(stream_then(frame_after, WORK, RESETS), max_seconds=10)
        c.wait_end(5)
        reached = reached_app(requests_file, "/slow", mark)
    return c, how, reached


def test_rapid_reset_is_cut_off(srv, victim, requests_file):
    """CVE-2023-44487: HEADERS immediately followed by RST_STREAM(CANCEL), 20,000 times on one
    connection, each for a request that keeps the app busy for 0.5 s. The server must end the connection (GOAWAY, typically ENHANCE_YOUR_CALM, or a close)
    and let only a few of those requests reach the app; an unmitigated server runs the app for nearly
    all of them."""
    c, how, reached = flood_of_resets(srv, requests_file, lambda sid: rst_stream_frame(sid, CANCEL))
    pair = len(headers_frame(1, request_block(WORK)) + rst_stream_frame(1))
    report = (f"flood stopped: {how}, about {c.bytes_sent // pair} of {RESETS} HEADERS+RST_STREAM sent; "
              f"{reached} requests reached the app; {c.summary()}")
    print(f"rapid reset: {report}")
    assert c.ended(), f"the server neither sent GOAWAY nor closed the connection: {report}"
    assert reached < REACHED_BOUND, f"{reached} reset requests reached the app (bound {REACHED_BOUND}): {report}"
    victim.assert_unharmed("rapid reset", memory=True)


PACED = 2000


def test_rapid_reset_paced_past_the_accept_is_cut_off(srv, victim, requests_file):
    """Rapid reset as it arrives over a real network: each RST_STREAM comes a moment (1 ms) after its
    HEADERS, once the server has taken the request in and the app is working on it (0.5 s), so a guard
    that counts only the streams reset before they were accepted (the h2 crate's) never trips; up to
    2,000 of them, for at most 8 s. The server must still end the connection, and the requests that
    reached the app stay under 10 % of those attempted."""
    mark = log_size(requests_file)
    block = request_block(WORK)
    pairs = 0
    with H2Conn(srv.address) as c:
        c.handshake()
        deadline = time.monotonic() + 8
        while pairs < PACED and not c.ended() and time.monotonic() < deadline:
            sid = 2 * pairs + 1
            c.send(headers_frame(sid, block)).flush()
            time.sleep(0.001)
            c.send(rst_stream_frame(sid, CANCEL)).flush()
            c.poll()
            pairs += 1
        c.wait_end(3)
        reached = reached_app(requests_file, "/slow", mark)
    report = f"{pairs} HEADERS+RST_STREAM pairs sent one by one; {reached} requests reached the app; {c.summary()}"
    print(f"paced rapid reset: {report}")
    assert c.ended(), f"the server neither sent GOAWAY nor closed the connection: {report}"
    assert reached < PACED // 10, f"{reached} reset requests reached the app (bound {PACED // 10}): {report}"
    victim.assert_unharmed("paced rapid reset", memory=True)


def test_resets_provoked_from_the_server_are_cut_off(srv, victim, requests_file):
    """The server-side twin of rapid reset (CVE-2025-8671, "MadeYouReset"): each request is followed by
    a frame the server must answer with RST_STREAM itself (a WINDOW_UPDATE that overflows the stream's
    window: FLOW_CONTROL_ERROR), 20,000 times. The server must end the connection and keep what reaches
    the app bounded, as for resets sent by the client."""
    c, how, reached = flood_of_resets(srv, requests_file, lambda sid: window_update_frame(sid, MAX_WINDOW))
    report = f"flood stopped: {how}; {reached} requests reached the app; {c.summary()}"
    print(f"made-you-reset: {report}")
    assert c.ended(), f"the server neither sent GOAWAY nor closed the connection: {report}"
    assert reached < REACHED_BOUND, f"{reached} reset requests reached the app (bound {REACHED_BOUND}): {report}"
    victim.assert_unharmed("server-provoked resets", memory=True)


# --------------------------------------------------------------------------
# Header blocks: too big, never ending, decompression bombs
# --------------------------------------------------------------------------

def oversized_over_continuations():
    """About 96 KiB of headers (six 16 KB header fields, one per frame): HEADERS and 5 CONTINUATIONs."""
    def field(i):
        return literal(f"x-big-{i}", "v" * 16000)
    first = headers_frame(1, request_block("/oversized-continuations/x") + field(0), end_headers=False)
    rest = [continuation_frame(1, field(i), end_headers=(i == 5)) for i in range(1, 6)]
    return [first, *rest]


def oversized_many_small_continuations():
    """About 128 KiB of headers in 128 CONTINUATION frames of about 1 KB each."""
    first = headers_frame(1, request_block("/oversized-small-continuations/x"), end_headers=False)
    rest = [continuation_frame(1, literal(f"x-small-{i}", "v" * 1000), end_headers=(i == 127)) for i in range(128)]
    return [first, *rest]


@pytest.mark.parametrize("shape", ["one-header-block-over-continuations", "many-small-continuations"])
def test_a_header_block_over_max_header_size_is_refused(srv, victim, requests_file, shape):
    """A request whose header block is bigger than --max-header-size (built from CONTINUATION frames,
    since one frame holds 16 KiB) is refused with a 431, RST_STREAM or GOAWAY, and never reaches the app."""
    if shape.startswith("one"):
        frames, key = oversized_over_continuations(), "/oversized-continuations"
    else:
        frames, key = oversized_many_small_continuations(), "/oversized-small-continuations"
    assert sum(map(len, frames)) > MAX_HEADER_SIZE * 1.4  # the block is over the limit by far, whatever is counted
    with H2Conn(srv.address) as c:
        c.handshake()
        c.send(*frames)
        st = c.streams[1]
        c.pump(lambda: st.status is not None or st.reset is not None or c.ended(), 10)
        seen = reached_app(requests_file, key)
    report = f"{sum(map(len, frames))} bytes of frames; stream 1: {st.describe()}; {c.summary()}"
    print(f"oversized header block ({shape}): {report}")
    assert st.status == 431 or st.reset is not None or c.goaway is not None, \
        f"an oversized header block was not refused: {report}"
    assert st.status in (None, 431), report
    assert seen == 0, f"the app saw {seen} oversized request(s): {report}"
    victim.assert_unharmed(f"an oversized header block ({shape})")


def test_an_hpack_bomb_is_refused_without_decoding_it_into_memory(srv, victim, requests_file):
    """HPACK bomb: one request puts a ~4 KB header into the server's dynamic table (a 4096-byte table
    holds one such entry), then a second request's header block refers to that entry 64,000 times,
    one byte each (HEADERS and 3 CONTINUATIONs, 64 KB on the wire, about 260 MB decoded). It must be
    refused (431, RST_STREAM or GOAWAY) without reaching the app, and without the worker's memory
    growing by the decoded size."""
    with H2Conn(srv.address) as c:
        c.handshake()
        table = min(4096, c.server_settings.get(HEADER_TABLE_SIZE, 4096))
        name = "x-bomb"
        value = "b" * max(1, table - 32 - len(name))
        seed = request_block("/hello") + literal_indexed(name, value)
        c.send(headers_frame(1, seed))
        c.pump(lambda: c.streams[1].ended or c.streams[1].reset is not None or c.ended(), 10)
        assert c.streams[1].status == 200, f"the seed request (one {len(value)}-byte header) failed: {c.summary()}"

        refs = indexed(62) * 16000
        bomb = [headers_frame(3, request_block("/hpack-bomb") + refs, end_headers=False),
                continuation_frame(3, refs), continuation_frame(3, refs),
                continuation_frame(3, refs, end_headers=True)]
        c.send(*bomb)
        st = c.streams[3]
        c.pump(lambda: st.status is not None or st.reset is not None or c.ended(), 10)
        seen = reached_app(requests_file, "/hpack-bomb")
    decoded_mib = 4 * 16000 * (len(name) + len(value) + 32) / 2**20
    report = (f"{sum(map(len, bomb))} bytes on the wire, {decoded_mib:.0f} MiB once decoded; stream 3: "
              f"{st.describe()}; {c.summary()}")
    print(f"HPACK bomb: {report}")
    assert st.status == 431 or st.reset is not None or c.goaway is not None, f"the HPACK bomb was not refused: {report}"
    assert st.status in (None, 431), report
    assert seen == 0, f"the app saw the HPACK bomb's request: {report}"
    victim.assert_unharmed("an HPACK bomb", memory=True)


# One CONTINUATION frame's worth (~16 KB) of header fields, or nothing at all.
CONTINUATION_FLOODS = {
    "16KB-fragments": (b"".join(literal(f"x-flood-{i}", "v" * 1000) for i in range(16)), 128 * 2**20),
    "empty-fragments": (b"", 500_000 * 9),
}


@pytest.mark.parametrize("shape", list(CONTINUATION_FLOODS))
def test_a_continuation_flood_is_cut_off(srv, victim, requests_file, shape):
    """CVE-2024-27316: HEADERS without END_HEADERS, then CONTINUATION frames that never end the block
    (16 KB of header fields each, up to 128 MiB, or empty ones, up to 500,000). The server must end the
    connection (GOAWAY or close) instead of buffering or decoding forever, with bounded memory, and the
    request must never reach the app."""
    fragment, total = CONTINUATION_FLOODS[shape]
    unit = continuation_frame(1, fragment)
    with H2Conn(srv.address) as c:
        c.handshake()
        first = headers_frame(1, request_block(f"/continuation-flood-{shape}"), end_headers=False)
        how = c.flood(itertools.chain([first], repeated(unit, total // len(unit))), max_seconds=8)
        c.wait_end(5)
        seen = reached_app(requests_file, f"/continuation-flood-{shape}")
    report = f"flood stopped: {how} after {c.bytes_sent} bytes; {c.summary()}"
    print(f"CONTINUATION flood ({shape}): {report}")
    assert c.ended(), f"the server neither sent GOAWAY nor closed the connection: {report}"
    assert seen == 0, f"the app saw the flooded request: {report}"
    victim.assert_unharmed(f"a CONTINUATION flood ({shape})", memory=True)


# --------------------------------------------------------------------------
# Floods of frames that cost the server without a request
# --------------------------------------------------------------------------

CONTROL_FLOODS = {
    "PING": ping_frame(b"floodfld"),
    "SETTINGS": settings_frame({INITIAL_WINDOW_SIZE: 65535}),
}


@pytest.mark.parametrize("kind", list(CONTROL_FLOODS))
def test_a_control_frame_flood_from_a_client_that_never_reads(srv, victim, kind):
    """CVE-2019-9512/9515: PING or SETTINGS frames (each owed an ACK) sent without end by a client that
    reads nothing back (a 4 KiB receive buffer), up to 4 million frames. The ACKs cannot be delivered,
    so a server that keeps reading must queue them without bound. It must instead end the connection
    (close, or GOAWAY: by flood detection, by --timeout-io on its stalled writes, or by a liveness PING
    every --timeout-keep-alive that gets no answer within --timeout-io), and do so within a few seconds
    of those clocks, with bounded memory. (A client that does read its ACKs is merely chatty: not tested.)"""
    unit = CONTROL_FLOODS[kind]
    with H2Conn(srv.address, rcvbuf=4096) as c:
        c.handshake()
        how = c.flood(repeated(unit, 4_000_000), read=False, stall_timeout=2, max_seconds=5)
        ended = c.closed is not None or c.wait_peer_end_without_reading(KEEP_ALIVE + TIMEOUT_IO + 3)
        c.drain(1)
    report = f"flood stopped: {how} after {c.bytes_sent} bytes ({c.bytes_sent // len(unit)} frames); {c.summary()}"
    print(f"{kind} flood: {report}")
    assert ended, f"the connection of a {kind} flooder that never reads was left open: {report}"
    victim.assert_unharmed(f"a {kind} flood", memory=True)


def test_an_empty_data_frame_flood_is_cut_off(srv, victim):
    """CVE-2019-9518: a POST whose body comes as zero-length DATA frames without END_STREAM, up to
    500,000 of them: each costs the server a frame's work and carries nothing. The server must end the
    connection (GOAWAY or close) or reset that stream, within a few seconds."""
    with H2Conn(srv.address) as c:
        c.handshake()
        sid = c.request("/body", method="POST", end_stream=False)
        how = c.flood(repeated(data_frame(sid, b""), 500_000), max_seconds=8)
        st = c.streams[sid]
        c.pump(lambda: c.ended() or st.reset is not None, 5)
    report = f"flood stopped: {how} after {c.bytes_sent // 9} frames; stream {sid}: {st.describe()}; {c.summary()}"
    print(f"empty DATA flood: {report}")
    assert c.ended() or st.reset is not None, f"the empty-DATA flood was neither cut off nor reset: {report}"
    assert st.status != 200, f"the flooded request, whose body never ended, got a 200: {report}"
    victim.assert_unharmed("an empty DATA frame flood", memory=True)


# --------------------------------------------------------------------------
# Flow control
# --------------------------------------------------------------------------

WINDOW_UPDATE_ABUSE = {
    # case: (on a stream?, increment, the error code RFC 9113 6.9 / 6.9.1 requires)
    "zero-increment-on-the-connection": (False, 0, PROTOCOL_ERROR),
    "zero-increment-on-a-stream": (True, 0, PROTOCOL_ERROR),
    "connection-window-overflow": (False, MAX_WINDOW, FLOW_CONTROL_ERROR),
    "stream-window-overflow": (True, MAX_WINDOW, FLOW_CONTROL_ERROR),
}


@pytest.mark.parametrize("case", list(WINDOW_UPDATE_ABUSE))
def test_window_update_abuse_is_an_error(srv, victim, tmp_path, case):
    """A WINDOW_UPDATE of 0 is a PROTOCOL_ERROR; one that takes a window beyond 2^31-1 (the initial 65,535
    plus 2^31-1) is a FLOW_CONTROL_ERROR. On the connection (stream 0) that is a GOAWAY with that code;
    on a stream (open: its request is held by the app) an RST_STREAM, or a GOAWAY, with that code."""
    on_stream, increment, code = WINDOW_UPDATE_ABUSE[case]
    gate = tmp_path / "gate"
    with H2Conn(srv.address) as c:
        try:
            c.handshake()
            sid = c.request(f"/wait-file?path={gate}") if on_stream else 0
            c.send(window_update_frame(sid, increment))
            st = c.streams[sid]
            c.pump(lambda: c.ended() or (on_stream and st.reset is not None), 5)
        finally:
            gate.touch()
    report = f"WINDOW_UPDATE(stream {sid}, increment {increment}); {c.summary()}"
    print(f"WINDOW_UPDATE abuse ({case}): {report}")
    goaway_code = c.goaway[1] if c.goaway is not None else None
    if on_stream:
        assert st.reset == code or goaway_code == code, \
            f"expected RST_STREAM or GOAWAY {error_name(code)}: {report}"
    else:
        assert goaway_code == code, f"expected GOAWAY {error_name(code)}: {report}"
    victim.assert_unharmed(f"WINDOW_UPDATE abuse ({case})")


def test_a_stream_that_never_reads_its_response_is_reset_after_timeout_io(srv, victim, tmp_path):
    """A client asks for an endless response (the app streams up to 256 MiB) with a 16 KiB stream window
    and never sends WINDOW_UPDATE. The server sends no more than the window, keeps serving other
    connections meanwhile, and after --timeout-io resets that stream (RST_STREAM) or closes the
    connection; the app's send() then fails instead of waiting forever, and nothing of the response
    piles up in the worker's memory."""
    window = 16384
    out = tmp_path / "send-result"
    with H2Conn(srv.address, auto_window=False) as c:
        c.handshake(settings={INITIAL_WINDOW_SIZE: window})
        sid = c.request(f"/stream-until-disconnect?path={out}&n=4096")
        st = c.streams[sid]
        assert c.pump(lambda: len(st.data) > 0 or st.reset is not None or c.ended(), 10), \
            f"no response DATA: {c.summary()}"
        stalled_at = time.monotonic()

        meanwhile_h2 = h2_get(srv, "/hello")
        meanwhile_h1 = srv.get("/hello")
        assert (meanwhile_h2.status_code, meanwhile_h1.status_code) == (200, 200), \
            f"other connections were not served during the stall: {meanwhile_h2} {meanwhile_h1}"

        c.pump(lambda: st.reset is not None or c.ended(), TIMEOUT_IO + 8)
        waited = time.monotonic() - stalled_at
    report = f"after {waited:.1f} s: stream {sid}: {st.describe()}; {c.summary()}"
    print(f"stalled reader: {report}")
    assert st.reset is not None or c.ended(), \
        f"a stream stalled by flow control was kept past --timeout-io={TIMEOUT_IO}: {report}"
    assert len(st.data) <= window, f"the server sent {len(st.data)} bytes into a {window}-byte window: {report}"
    note = wait_until(lambda: out.exists() and out.read_text(), 5,
                      message=f"the app is still streaming into the stalled stream: {report}")
    print(f"stalled reader: the app's stream ended with {note!r}")
    assert note != "never failed", f"the app streamed all 256 MiB into a stalled stream: {report}"
    victim.assert_unharmed("a stream that never reads its response", memory=True)
