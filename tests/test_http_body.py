"""Request bodies: streaming, backpressure, Expect: 100-continue, disconnects."""

import hashlib
import json
import os
import socket
import threading
import time

import pytest

from conftest import json_of, parse_response, read_response, rss_kib, wait_until

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def srv(module_server_factory):
    # A short graceful timeout: connections left stuck by the unread-body tests below
    # would otherwise hold the stop at teardown for the default 30 s. No body limit: the
    # uploads here (200 and 256 MiB) are past the default 100M (test_front_limits.py tests it).
    return module_server_factory("basic:app", "--timeout-graceful-shutdown", "3", "--limit-request-body", "0")


def worker_pid(srv) -> int:
    pids = srv.worker_pids()
    assert len(pids) == 1, pids
    return pids[0]


def test_small_body_with_content_length(srv):
    data = os.urandom(100_000)
    info = json_of(srv.post("/body", content=data))
    assert info["size"] == len(data)
    assert info["sha256"] == hashlib.sha256(data).hexdigest()


def test_empty_body_gives_one_final_message(srv):
    info = json_of(srv.post("/body", content=b""))
    assert info["size"] == 0
    assert info["chunks"] == 0
    info = json_of(srv.get("/body"))
    assert info["size"] == 0


def test_chunked_upload(srv):
    pieces = [os.urandom(n) for n in (1, 1000, 70_000, 5, 300_000)]

    def gen():
        yield from pieces

    r = srv.post("/body", content=gen())
    info = json_of(r)
    whole = b"".join(pieces)
    assert info["size"] == len(whole)
    assert info["sha256"] == hashlib.sha256(whole).hexdigest()


def test_chunked_upload_over_raw_socket_with_extensions_and_trailers(srv):
    body = (b"5;ext=1\r\nhello\r\n"
            b"6\r\n world\r\n"
            b"0\r\nX-Trailer: yes\r\n\r\n")
    raw = b"POST /body HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + body
    status, _, resp = parse_response(srv.raw(raw))
    assert status == 200
    info = json.loads(resp)
    assert info["size"] == 11
    assert info["sha256"] == hashlib.sha256(b"hello world").hexdigest()


@pytest.mark.slow(reason="uploads 200 MiB through the app")
@pytest.mark.timeout(120)
def test_huge_streaming_upload_keeps_worker_memory_flat(srv):
    """200 MiB generated on the fly; the worker must never hold it in memory."""
    total = 200 * MiB
    chunk = os.urandom(MiB)
    pid = worker_pid(srv)
    baseline = rss_kib(pid)
    peak = [baseline]
    done = threading.Event()

    def sample():
        while not done.is_set():
            try:
                peak[0] = max(peak[0], rss_kib(pid))
            except OSError:
                return
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()

    def gen():
        sent = 0
        while sent < total:
            yield chunk
            sent += len(chunk)

    try:
        r = srv.post("/body-count", content=gen(), headers={"content-length": str(total)}, timeout=100)
    finally:
        done.set()
        sampler.join()
    info = json_of(r)
    assert info["size"] == total
    assert info["pid"] == pid
    hwm = rss_kib(pid, "VmHWM")
    grown_mib = (max(peak[0], hwm) - baseline) / 1024
    assert grown_mib < 64, f"worker RSS grew by {grown_mib:.0f} MiB while streaming a 200 MiB upload (baseline {baseline // 1024} MiB)"


@pytest.mark.slow(reason="fills socket buffers and waits for the send side to stall")
def test_backpressure_when_app_does_not_read(srv, tmp_path):
    """While the app does not call receive(), the server must stop reading the body,
    so the client's sends stall after at most a few socket buffers' worth."""
    gate = tmp_path / "gate"
    total = 256 * MiB
    pid = worker_pid(srv)
    baseline = rss_kib(pid)
    s = socket.create_connection(srv.address)
    try:
        s.sendall(f"POST /wait-file?path={gate} HTTP/1.1\r\nHost: x\r\nContent-Length: {total}\r\n"
                  f"Connection: close\r\n\r\n".encode())
        s.setblocking(False)
        block = b"b" * 65536
        sent = 0
        last_progress = time.monotonic()
        while time.monotonic() - last_progress < 1.0 and sent < total:
            try:
                n = s.send(block[: min(len(block), total - sent)])
                sent += n
                last_progress = time.monotonic()
            except BlockingIOError:
                time.sleep(0.01)
        assert sent < 64 * MiB, f"the server swallowed {sent // MiB} MiB of body the app never asked for"
        grown = (rss_kib(pid) - baseline) / 1024
        assert grown < 48, f"worker RSS grew by {grown:.0f} MiB while the app was not reading"

        # Let the app read: the rest of the body must flow and be counted exactly.
        gate.touch()
        s.setblocking(True)
        s.settimeout(60)
        while sent < total:
            n = s.send(block[: min(len(block), total - sent)])
            sent += n
        status, _, body = parse_response(read_response(s))
    finally:
        s.close()
    assert status == 200
    assert json.loads(body)["size"] == total


def test_expect_100_continue(srv):
    body = b"x" * 5000
    with socket.create_connection(srv.address, timeout=10) as s:
        s.sendall(b"POST /body HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                  b"Content-Length: 5000\r\nConnection: close\r\n\r\n")
        interim = s.recv(1024)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n"), interim
        s.sendall(body)
        status, _, resp = parse_response(read_response(s))
    assert status == 200
    assert json.loads(resp)["size"] == 5000


def test_expect_100_continue_not_sent_when_app_answers_without_reading(srv):
    # /hello never calls receive(): the server must not ask for the body, and with
    # Connection: close it must close the connection once the response is out.
    with socket.create_connection(srv.address, timeout=5) as s:
        s.sendall(b"POST /hello HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                  b"Content-Length: 5000\r\nConnection: close\r\n\r\n")
        data = read_response(s)
    assert data.startswith(b"HTTP/1.1 200"), data[:200]
    assert b"100 Continue" not in data


def test_client_disconnect_during_body_reaches_app(srv, tmp_path):
    out = tmp_path / "seen"
    with socket.create_connection(srv.address) as s:
        s.sendall(f"POST /disconnect?path={out} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n".encode()
                  + b"x" * 10)
    wait_until(lambda: out.exists() and out.read_text(), 10, message="the app never got http.disconnect after the client left mid-body")
    assert "http.disconnect" in out.read_text()
    # The worker is fine afterwards.
    assert srv.get("/hello").status_code == 200


def test_client_disconnect_before_response_reaches_app(srv, tmp_path):
    out = tmp_path / "seen"
    with socket.create_connection(srv.address) as s:
        s.sendall(f"POST /disconnect?path={out} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello".encode())
    wait_until(lambda: out.exists() and out.read_text(), 10, message="the app never got http.disconnect after the client closed the connection")
    assert out.read_text() == "http.disconnect"


def test_receive_after_response_returns_disconnect(srv, tmp_path):
    out = tmp_path / "seen"
    with srv.client() as c:
        r = c.get("/after-response", params={"path": str(out)})
        assert r.text == "done"
        # The connection stays open (keep-alive); the app must still get http.disconnect.
        wait_until(lambda: out.exists() and out.read_text(), 10, message="receive() after the response completed never returned")
        assert out.read_text() == "http.disconnect"
        assert c.get("/hello").status_code == 200


def test_send_raises_after_client_disconnects_mid_stream(srv, tmp_path):
    out = tmp_path / "seen"
    with socket.create_connection(srv.address) as s:
        s.sendall(f"GET /stream-until-disconnect?path={out} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        got = 0
        while got < 300_000:
            got += len(s.recv(65536))
    wait_until(lambda: out.exists() and out.read_text(), 15, message="the app's send() never failed after the client went away")
    kind, is_oserror = out.read_text().split("|")
    assert kind != "never failed"
    assert is_oserror == "True", f"send() raised {kind}, expected an OSError (ClientDisconnected)"
    assert srv.get("/hello").status_code == 200


def test_pipelined_requests_with_bodies(srv):
    reqs = b"".join(
        f"POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: {n}\r\n\r\n".encode() + b"a" * n
        for n in (3, 0, 7)
    ) + b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    data = srv.raw(reqs)
    assert data.count(b"HTTP/1.1 200 OK") == 4, data
    sizes = [json.loads(part.split(b"\r\n\r\n", 1)[1].split(b"HTTP/1.1")[0])["size"]
             for part in data.split(b"HTTP/1.1 200 OK")[1:4]]
    assert sizes == [3, 0, 7]


def test_unread_body_does_not_stall_the_keep_alive_connection(srv):
    """The app answers without calling receive(); the next request on the same
    connection must still be served (the server drains or discards the body, or
    closes the connection so the client reconnects)."""
    with srv.client(timeout=5) as c:
        r = c.post("/hello", content=b"x" * 100_000)
        assert r.status_code == 200
        r = c.get("/hello")
        assert r.status_code == 200


def test_large_unread_body_still_gets_its_response(srv):
    """A 5 MiB upload to a handler that never reads it: the client must get the
    response instead of blocking forever on a server that stopped reading."""
    r = srv.post("/hello", content=b"x" * (5 * MiB), timeout=5)
    assert r.status_code == 200
    assert r.text == "Hello, world!\n"
