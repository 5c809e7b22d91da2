"""The HTTP/1.1 connection layer under clients that misbehave: slow or stalled
senders, request smuggling shapes, a stop in the middle of a request."""

import json
import signal
import socket
import threading
import time

import pytest

from conftest import parse_response, read_response, wait_until


@pytest.fixture(scope="module")
def requests_file(tmp_path_factory):
    return tmp_path_factory.mktemp("http1") / "requests.log"


@pytest.fixture(scope="module")
def srv(module_server_factory, requests_file):
    return module_server_factory("basic:app", "--timeout-keep-alive", "1", "--timeout-io", "1",
                                 env={"FG_REQUEST_LOG": str(requests_file)})


def closed_within(sock, seconds):
    """Seconds until the server closed `sock`, or None if it stayed open."""
    sock.settimeout(seconds)
    start = time.monotonic()
    try:
        while sock.recv(65536):
            pass
    except (ConnectionResetError, BrokenPipeError):
        pass
    except (TimeoutError, socket.timeout):
        return None
    return time.monotonic() - start


@pytest.mark.parametrize("size", [100, 4096, 4097, 20000])
def test_an_unfinished_head_is_closed_on_time(srv, size):
    # 4096 bytes fill the server's first read exactly, the case where a wait on
    # socket readiness alone would never time out.
    start = b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Pad: "
    with socket.create_connection(srv.address) as s:
        s.sendall(start + b"a" * (size - len(start)))
        took = closed_within(s, 6)
    assert took is not None, f"a {size}-byte unfinished head kept the connection open past 6 s"
    assert srv.get("/hello").status_code == 200


def test_a_connection_that_never_sends_is_closed_on_time(srv):
    with socket.create_connection(srv.address) as s:
        assert closed_within(s, 6) is not None


def test_a_stalled_request_body_is_dropped_after_timeout_io(srv, tmp_path):
    out = tmp_path / "got"
    with socket.create_connection(srv.address) as s:
        s.sendall(f"POST /disconnect?path={out} HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab".encode())
        wait_until(lambda: out.exists() and out.read_text(), 8,
                   message="the app never heard that the client stopped sending its body")
        assert out.read_text().startswith("http.disconnect")
        assert closed_within(s, 5) is not None


def test_many_small_chunks_reach_the_app_as_few_messages(srv):
    chunks = b"".join(b"1\r\nx\r\n" for _ in range(5000)) + b"0\r\n\r\n"
    data = b"POST /body HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunks
    with socket.create_connection(srv.address, timeout=10) as s:
        s.sendall(data)
        status, _, body = parse_response(read_response(s))
    assert status == 200
    got = json.loads(body)
    assert got["size"] == 5000
    assert got["chunks"] < 100, f"5000 one-byte chunks reached the app as {got['chunks']} messages"


@pytest.mark.parametrize("name, head", [
    ("no-host", b"GET /never-host HTTP/1.1\r\n\r\n"),
    ("two-hosts", b"GET /never-host HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
])
def test_http_11_needs_exactly_one_host(srv, requests_file, name, head):
    with socket.create_connection(srv.address, timeout=5) as s:
        s.sendall(head)
        reply = read_response(s)
    assert reply.startswith(b"HTTP/1.1 400"), reply[:200]
    assert "/never-host" not in (requests_file.read_text() if requests_file.exists() else "")


def test_http_10_without_host_is_served(srv):
    with socket.create_connection(srv.address, timeout=5) as s:
        s.sendall(b"GET /hello HTTP/1.0\r\n\r\n")
        status, _, body = parse_response(read_response(s))
    assert status == 200 and body == b"Hello, world!\n"


@pytest.mark.parametrize("chunk_line", [b"2;\nxx", b"2\n", b"2 x", b"2;a\x01b"])
def test_chunk_lines_a_proxy_could_read_differently_are_refused(srv, requests_file, chunk_line):
    # A front end that ends chunk lines at a bare LF would see one request here; a
    # lenient back end would see a second one hidden in the body.
    hidden = b"0\r\n\r\nGET /smuggled-chunk HTTP/1.1\r\nHost: x\r\n\r\n"
    body = chunk_line + b"\r\n" + b"%x" % len(hidden) + b"\r\n" + hidden + b"\r\n0\r\n\r\n"
    with socket.create_connection(srv.address, timeout=5) as s:
        s.sendall(b"POST /body HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
        reply = read_response(s)
    assert reply.startswith(b"HTTP/1.1 400"), reply[:300]
    assert b"/smuggled-chunk" not in reply
    assert "/smuggled-chunk" not in (requests_file.read_text() if requests_file.exists() else "")


def test_informational_status_from_the_app_is_a_500(srv):
    # A 1xx is not a final response: sent as one, the client would wait for the real one.
    r = srv.get("/status?code=103")
    assert r.status_code == 500


def test_a_stop_during_a_request_closes_the_connection_after_it(server_factory, tmp_path):
    srv = server_factory("basic:app")
    replies = []
    gate, started = tmp_path / "gate", tmp_path / "started"

    def held():
        with socket.create_connection(srv.address, timeout=10) as s:
            s.sendall(f"GET /wait-file?path={gate}&started={started} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            replies.append(read_response(s, read_until_close=False))

    t = threading.Thread(target=held)
    t.start()
    wait_until(started.exists, 10, message="the request never reached the app")
    srv.signal(signal.SIGTERM)
    srv.wait_for_log(r"shutting down gracefully")
    gate.touch()
    t.join(10)
    assert replies, "the in-flight request got no response"
    status, headers, _ = parse_response(replies[0])
    assert status == 200
    assert headers.get("connection") == "close", replies[0][:300]
    assert srv.wait_exit() == 0


def test_a_client_that_stops_reading_is_dropped_after_timeout_io(srv, tmp_path):
    # The app streams without end; the client reads nothing. Once the socket
    # buffers are full, no write progresses: after --timeout-io (1 s here) the
    # connection closes and the app's send() fails instead of waiting forever.
    out = tmp_path / "send-error"
    with socket.create_connection(srv.address) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(f"GET /stream-until-disconnect?path={out} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        wait_until(lambda: out.exists() and out.read_text(), 15,
                   message="a client that never reads held the response (and the app) past --timeout-io")
    assert out.read_text() != "never failed"
    assert srv.get("/hello").status_code == 200


# A half-sent head at a stop (it must not hold the worker for --timeout-keep-alive):
# src/http/h1/tests.rs, a_half_sent_head_does_not_hold_up_a_stop, where the
# connection's state is known rather than guessed with a sleep.
