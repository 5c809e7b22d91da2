"""Differential tests, raw ASGI (tests/apps/compat/raw_compat.py): the receive() contract
that frameworks rely on, odd-but-legal responses, scope["headers"] order, and request
lines that ferrogate deliberately refuses. Each test runs against ferrogate and uvicorn."""

import contextlib
import json
import socket
import uuid

import pytest

from compat_support import RawResponse, assert_same_response, effects, raw_exchange, wait_until


@pytest.fixture(scope="module")
def pair(pair_factory):
    return pair_factory("raw_compat:app")


def new_tag() -> str:
    return uuid.uuid4().hex[:12]


def events_of(srv, tag) -> list[str]:
    return [e["event"] for e in effects(srv, tag=tag)]


def read_until_close(s: socket.socket) -> bytes:
    buf = b""
    while True:
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, TimeoutError, socket.timeout):
            break
        if not chunk:
            break
        buf += chunk
    return buf


def raw_answer(srv, data: bytes, timeout: float = 3.0) -> bytes:
    """Whatever the server answers to `data` until it closes or `timeout` passes without data."""
    with socket.create_connection(srv.address, timeout=timeout) as s:
        s.sendall(data)
        return read_until_close(s)


# --------------------------------------------------------------------------
# receive(): timed out, cancelled, concurrent
# --------------------------------------------------------------------------

def held_body_upload(srv, path: str, tag: str, after_events) -> RawResponse:
    """POSTs 'hello world' in two parts: sends the head and 'hello ', waits until the app
    recorded one of `after_events` (its receive() of the missing part gave up), sends 'world'."""
    with socket.create_connection(srv.address, timeout=10) as s:
        s.sendall(f"POST {path}?tag={tag} HTTP/1.1\r\nHost: test\r\nContent-Length: 11\r\n"
                  f"Connection: close\r\n\r\nhello ".encode())
        wait_until(lambda: set(events_of(srv, tag)) & set(after_events), 10,
                   message=lambda: f"{srv.name}: the app never got past its first receive(): {events_of(srv, tag)}"
                   f"\n--- log ---\n{srv.log_tail(30)}")
        with contextlib.suppress(OSError):  # a server that already answered may have closed
            s.sendall(b"world")
        return RawResponse(read_until_close(s))


@pytest.mark.parametrize("route, gave_up", [
    ("/receive-timeout", "receive timed out"),
    ("/receive-cancel", "receive cancelled"),
])
def test_receive_again_after_timed_out_or_cancelled_receive(pair, route, gave_up):
    """asyncio.wait_for(receive(), 0.05) timing out, or a receive() task cancelled, must leave
    the connection usable: the next receive() delivers the rest of the body (uvicorn does)."""
    tags = {}

    def run(srv):
        tags[srv.name] = tag = new_tag()
        return held_body_upload(srv, route, tag, {gave_up, "receive did not time out", "receive was not cancelled"})

    fg, uv = pair.map_parallel(run)
    assert uv.status_code == 200 and uv.content == b"hello world", uv
    assert fg.status_code == 200 and fg.content == b"hello world", (
        f"ferrogate: the receive() after a {gave_up.split()[1]} one must deliver the rest of the body: {fg}"
        f"\n--- log ---\n{pair.fg.log_tail(30)}")
    assert_same_response(fg, uv, what=route)
    expected = ["request", "receive first", gave_up, "receive rest"]
    assert events_of(pair.uv, tags["uvicorn"]) == expected
    assert events_of(pair.fg, tags["ferrogate"]) == expected


@pytest.mark.parametrize("body_first", [True, False], ids=["body-already-there", "both-pending"])
def test_two_concurrent_receives(pair, body_first):
    """Two tasks awaiting receive() at once: uvicorn allows it. The body is delivered once,
    to one of them; the other gets the next message. With `both-pending` the client sends
    the body only once both tasks are inside receive()."""
    tags = {}

    def run(srv):
        tags[srv.name] = tag = new_tag()
        with socket.create_connection(srv.address, timeout=10) as s:
            s.sendall(f"POST /receive-concurrent?tag={tag} HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\n"
                      f"Connection: close\r\n\r\n{'hello' if body_first else ''}".encode())
            if not body_first:
                wait_until(lambda: {"concurrent waiting", "concurrent receive failed"} & set(events_of(srv, tag)), 10,
                           message=lambda: f"{srv.name}: {effects(srv, tag=tag)}")
                with contextlib.suppress(OSError):
                    s.sendall(b"hello")
            resp = RawResponse(read_until_close(s))
        if resp.status_code == 200:
            wait_until(lambda: len(effects(srv, "concurrent message", tag=tag)) == 2, 10,
                       message=lambda: f"{srv.name}: {effects(srv, tag=tag)}")
        return resp

    fg, uv = pair.map_parallel(run)

    def messages(srv):
        return sorted((e["type"], e["body"], e["more_body"]) for e in effects(srv, "concurrent message", tag=tags[srv.name]))

    body = ("http.request", "hello", False)
    # uvicorn: with the body already there, the other task gets http.disconnect once the response
    # is sent; when both were pending, both wake on the body and the second gets an empty final
    # http.request. Either is "the next message"; ferrogate may give either.
    after_response, empty_final = sorted([("http.disconnect", "", False), body]), sorted([body, ("http.request", "", False)])
    expected_uv = after_response if body_first else empty_final
    assert uv.status_code == 200 and uv.content == b"hello", uv
    assert messages(pair.uv) == expected_uv
    assert fg.status_code == 200 and fg.content == b"hello", (
        f"ferrogate refused a second concurrent receive(): {fg}; app recorded {effects(pair.fg, tag=tags['ferrogate'])}")
    fg_messages = messages(pair.fg)
    assert fg_messages in (after_response, empty_final), (
        f"ferrogate: the body must reach one task, the other gets the next message: {fg_messages}")
    assert_same_response(fg, uv, what="concurrent receive")


# --------------------------------------------------------------------------
# Odd but legal responses
# --------------------------------------------------------------------------

@pytest.mark.parametrize("method, path, status, length, body", [
    ("GET", "/not-modified", 304, "11", b""),       # 304 keeps the representation's Content-Length
    ("HEAD", "/head", 200, "11", b""),              # HEAD: Content-Length, no body sent by the app
    ("HEAD", "/head?body=1", 200, "11", b""),       # HEAD: the app sends the body, the server drops it
    ("GET", "/head", 200, "11", b"hello world"),
    ("GET", "/no-content", 204, None, b""),
    ("GET", "/cookies", 200, "7", b"cookies"),
])
def test_odd_but_legal_responses(pair, method, path, status, length, body):
    request = f"{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode()
    fg, uv = pair.map(lambda srv: raw_exchange(srv, request))
    assert (uv.status_code, uv.get("content-length"), uv.content) == (status, length, body), uv
    assert (fg.status_code, fg.get("content-length"), fg.content) == (status, length, body), (
        f"ferrogate: {fg}\n--- log ---\n{pair.fg.log_tail(20)}")
    assert_same_response(fg, uv, what=f"{method} {path}")
    assert fg.get("transfer-encoding") == uv.get("transfer-encoding")
    if path == "/cookies":
        assert fg.get_list("set-cookie") == ["a=1; Path=/", "b=2; Path=/; HttpOnly"]


@pytest.mark.parametrize("method, path", [("GET", "/not-modified"), ("HEAD", "/head?body=1"), ("GET", "/no-content")])
def test_keep_alive_after_a_bodiless_response(pair, method, path):
    """After a 304/HEAD/204 that announces a length it does not send, the next response on the
    same connection starts right after the head (no stray body bytes, no hang)."""
    def run(srv):
        with socket.create_connection(srv.address, timeout=10) as s:
            s.sendall(f"{method} {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
            buf = b""
            while b"\r\n\r\n" not in buf:
                chunk = s.recv(65536)
                assert chunk, f"{srv.name} closed after the head of {method} {path}: {buf!r}"
                buf += chunk
            s.sendall(b"GET /hello HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            buf += read_until_close(s)
        first_head, _, rest = buf.partition(b"\r\n\r\n")
        return first_head, rest

    (fg_head, fg_rest), (uv_head, uv_rest) = pair.map(run)
    assert uv_head.split()[1] == fg_head.split()[1], f"ferrogate: {fg_head!r}, uvicorn: {uv_head!r}"
    uv_next, fg_next = RawResponse(uv_rest), RawResponse(fg_rest)
    assert uv_next.status_code == 200 and uv_next.content == b"ok"
    assert fg_next.status_code == 200 and fg_next.content == b"ok", f"ferrogate: {fg_next}"


@pytest.mark.parametrize("body_held", [False, True], ids=["body-with-head", "body-after-receive"])
def test_receive_and_send_stepped_by_hand_or_under_a_tracer(pair, body_held):
    """receive() and send() give their result to `await` without a StopIteration (am_send);
    code that steps them by hand, and CPython under a tracer (debuggers, coverage), use
    `__next__`/`send` instead and must get the same results through StopIteration, whether
    the message is there at once or receive() must wait for it (body_held)."""
    tag = new_tag()
    head = (f"POST /await-paths?tag={tag} HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\n"
            f"Connection: close\r\n\r\n").encode()

    def exchange(srv) -> RawResponse:
        if not body_held:
            return raw_exchange(srv, head + b"hello")
        with socket.create_connection(srv.address, timeout=10) as s:
            s.sendall(head)
            # "receiving" is recorded in the same step as the receive() call: once it is
            # there, the app waits inside receive() and the body arrives after.
            wait_until(lambda: "receiving" in events_of(srv, tag), 10,
                       message=lambda: f"{srv.name}: the app never reached receive()\n{srv.log_tail(30)}")
            s.sendall(b"hello")
            return RawResponse(read_until_close(s))

    fg, uv = pair.map(exchange)
    assert_same_response(fg, uv, what="POST /await-paths")
    assert json.loads(fg.content) == {
        "message": {"type": "http.request", "body": "hello", "more_body": False},
        "traced send returned": "None"}
    for srv in pair:
        got = {e["event"]: e for e in effects(srv, tag=tag)}
        assert got["send by hand"]["returned"] == "None", f"{srv.name}: {effects(srv, tag=tag)}"
        if body_held:
            assert got["received by hand"]["waited"] is True, f"{srv.name}: {effects(srv, tag=tag)}"


# --------------------------------------------------------------------------
# scope["headers"]
# --------------------------------------------------------------------------

def test_scope_headers_keep_the_received_order(pair):
    request = (b"GET /headers HTTP/1.1\r\nHost: test\r\nX-A: 1\r\nX-B: 2\r\nX-A: 3\r\n"
               b"Connection: close\r\n\r\n")
    fg, uv = pair.map(lambda srv: json.loads(raw_exchange(srv, request).content))
    assert [h for h in uv if h[0].startswith("x-")] == [["x-a", "1"], ["x-b", "2"], ["x-a", "3"]]
    assert [h for h in fg if h[0].startswith("x-")] == [["x-a", "1"], ["x-b", "2"], ["x-a", "3"]], (
        f"ferrogate must keep repeated header names in the order received: {fg}")
    assert fg == uv


# --------------------------------------------------------------------------
# Request lines ferrogate refuses (deliberately stricter than uvicorn)
# --------------------------------------------------------------------------

def test_connect_is_405_and_never_reaches_the_app(pair):
    request = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"
    fg_raw, uv_raw = pair.map(lambda srv: raw_answer(srv, request))
    # uvicorn (h11) hands CONNECT to the app, which answers it like any request; recorded here
    # for the record, not asserted: ferrogate is deliberately stricter (a CONNECT tunnel is
    # nothing an ASGI app can serve).
    uv_reached = [e for e in effects(pair.uv, "request") if e["method"] == "CONNECT"]
    print(f"uvicorn answered CONNECT with {uv_raw[:60]!r}; reached the app: {bool(uv_reached)}")
    assert fg_raw.startswith(b"HTTP/1.1 405"), f"ferrogate answered CONNECT with {fg_raw[:200]!r}"
    assert not [e for e in effects(pair.fg, "request") if e["method"].upper() == "CONNECT"], (
        "ferrogate: a CONNECT request reached the app")


def test_lowercase_method_is_400_and_never_reaches_the_app(pair):
    request = b"get /lowercase HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    fg_raw, uv_raw = pair.map(lambda srv: raw_answer(srv, request))
    # uvicorn (h11) accepts any token as a method and gives the app method "get"; recorded,
    # not asserted: ferrogate is deliberately stricter (methods are case-sensitive, RFC 9110
    # 9.1, and `get` is no method any app routes).
    uv_reached = [e for e in effects(pair.uv, "request") if e["path"] == "/lowercase"]
    print(f"uvicorn answered `get` with {uv_raw[:60]!r}; the app saw {uv_reached}")
    assert fg_raw.startswith(b"HTTP/1.1 400"), f"ferrogate answered `get /` with {fg_raw[:200]!r}"
    assert not [e for e in effects(pair.fg, "request") if e["path"] == "/lowercase"], (
        "ferrogate: a lowercase-method request reached the app")


def test_absolute_form_request_target(pair):
    """`GET http://test/path HTTP/1.1` (absolute-form, which RFC 9112 3.2.2 says a server MUST
    accept): ferrogate gives the app path "/absolute-form". uvicorn (h11) passes the whole
    target through as the path; recorded, not asserted."""
    tag = new_tag()
    request = f"GET http://test/absolute-form?tag={tag} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode()
    fg, uv = pair.map(lambda srv: raw_exchange(srv, request))
    uv_seen = [e["path"] for e in effects(pair.uv, "request", tag=tag)]
    print(f"uvicorn: {uv.status_code}, the app saw path {uv_seen}")
    assert fg.status_code == 200
    assert [e["path"] for e in effects(pair.fg, "request", tag=tag)] == ["/absolute-form"]
