"""HTTPS on the wire (issue 9): protocol versions, ALPN, 0-RTT, session resumption across
workers (openssl s_client), and hostile bytes on the TLS port."""

import os
import re
import socket

import pytest

from conftest import read_response
from tls_support import HOST, client_context, client_hello, make_pki, s_client, tls_request


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def srv(module_server_factory, pki):
    return module_server_factory("basic:app", "--ssl-certfile", str(pki.server.crt),
                                 "--ssl-keyfile", str(pki.server.key))


@pytest.fixture(scope="module")
def srv2(module_server_factory, pki):
    """Two workers: a resumed session must work whichever worker accepts the connection."""
    return module_server_factory("basic:app", "--ssl-certfile", str(pki.server.crt),
                                 "--ssl-keyfile", str(pki.server.key), workers=2)


GET_PID = b"GET /pid HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


# --------------------------------------------------------------------------
# Protocol versions, ALPN, 0-RTT
# --------------------------------------------------------------------------

@pytest.mark.parametrize("flag", ["-tls1", "-tls1_1"])
def test_tls_1_0_and_1_1_are_refused(srv, flag):
    # SECLEVEL=0 so that this OpenSSL really offers the old version: the refusal must be the server's.
    out = s_client(srv, flag, "-cipher", "DEFAULT@SECLEVEL=0")
    assert "no protocols available" not in out, out
    assert "Cipher is (NONE)" in out, out
    assert re.search(r"alert (handshake failure|protocol version)", out), out


@pytest.mark.parametrize("flag,name", [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")])
def test_tls_1_2_and_1_3_are_accepted(srv, pki, flag, name):
    out = s_client(srv, flag, "-CAfile", str(pki.ca_file), "-verify_return_error", request=GET_PID)
    assert f"New, {name}, Cipher is" in out, out
    assert "Verify return code: 0 (ok)" in out
    assert re.search(r'\{"pid": \d+\}', out), out


def test_alpn_http11_is_negotiated(srv):
    out = s_client(srv, "-alpn", "http/1.1", request=GET_PID)
    assert "ALPN protocol: http/1.1" in out, out
    assert re.search(r'\{"pid": \d+\}', out), out


def test_zero_rtt_is_off(srv, pki, tmp_path):
    sess, early = tmp_path / "sess", tmp_path / "early"
    early.write_bytes(GET_PID)
    first = s_client(srv, "-tls1_3", "-sess_out", str(sess), request=GET_PID)
    assert "Max Early Data: 0" in first, first
    again = s_client(srv, "-tls1_3", "-sess_in", str(sess), "-early_data", str(early))
    assert "Reused, TLSv1.3" in again, again
    assert "Early data was not sent" in again or "Early data was rejected" in again, again


# --------------------------------------------------------------------------
# Session resumption across workers
# --------------------------------------------------------------------------

@pytest.mark.parametrize("flag,name", [("-tls1_3", "TLSv1.3"), ("-tls1_2", "TLSv1.2")])
def test_sessions_resume_on_every_worker(srv2, tmp_path, flag, name):
    sess = tmp_path / "sess"
    first = s_client(srv2, flag, "-sess_out", str(sess), request=GET_PID)
    assert f"New, {name}" in first, first
    origin = int(re.search(r'\{"pid": (\d+)\}', first).group(1))
    pids = set()
    # Reconnect until another worker than the one that issued the ticket has resumed it
    # (at least 4 times, at most 30: the kernel spreads connections over both workers).
    for i in range(30):
        out = s_client(srv2, flag, "-sess_in", str(sess), request=GET_PID)
        assert f"Reused, {name}" in out, f"reconnection {i + 1} was not resumed:\n{out}"
        pids.add(int(re.search(r'\{"pid": (\d+)\}', out).group(1)))
        if i >= 3 and pids - {origin}:
            break
    assert pids - {origin}, f"every reconnection reached worker {origin}; cannot tell that tickets are shared"


# --------------------------------------------------------------------------
# Hostile input on the TLS port
# --------------------------------------------------------------------------

def served_by(srv, pki) -> int:
    status, _, body, _ = tls_request(srv, client_context(pki), "/pid")
    assert status == 200
    return int(re.search(rb"\d+", body).group())


def closed_by_server(sock, timeout: float = 15.0) -> bytes:
    """Reads until the server closes; fails if it keeps the connection open."""
    sock.settimeout(timeout)
    try:
        return read_response(sock)
    except (TimeoutError, socket.timeout):
        pytest.fail("the server kept the connection open")


HOSTILE = {
    "garbage": lambda: os.urandom(2048),
    "plain-http": lambda: b"GET /pid HTTP/1.1\r\nHost: localhost\r\n\r\n",
    "truncated-hello-then-eof": lambda: client_hello()[:60],
    "huge-record-length": lambda: b"\x16\x03\x01\xff\xff" + b"\x01" * 100,
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_bytes_close_that_connection_only(srv, pki, case):
    worker = served_by(srv, pki)
    with socket.create_connection((HOST, srv.port), timeout=10) as s:
        s.sendall(HOSTILE[case]())
        if case.endswith("eof"):
            s.shutdown(socket.SHUT_WR)
        answer = closed_by_server(s)
    assert b"HTTP/1.1 200" not in answer and b'"pid"' not in answer, answer[:200]
    assert served_by(srv, pki) == worker
    assert "died unexpectedly" not in srv.log() and "panicked" not in srv.log()


@pytest.mark.slow(reason="waits for the 10 s handshake timeout")
@pytest.mark.parametrize("case", ["silent", "half-a-client-hello"])
def test_stalled_handshakes_do_not_block_other_clients(srv, pki, case):
    """One worker: the stalled connections sit on the same event loop as the clients served meanwhile."""
    worker = served_by(srv, pki)
    stalled = []
    try:
        for _ in range(5):
            s = socket.create_connection((HOST, srv.port), timeout=10)
            stalled.append(s)
            if case != "silent":
                hello = client_hello()
                s.sendall(hello[: len(hello) // 2])
        for _ in range(3):
            assert served_by(srv, pki) == worker
        # The handshake timeout (10 s) closes them all in the end.
        for s in stalled:
            closed_by_server(s, timeout=30)
    finally:
        for s in stalled:
            s.close()
    assert "died unexpectedly" not in srv.log() and "panicked" not in srv.log()
