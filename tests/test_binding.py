"""Where ferrogate listens: TCP (IPv4/IPv6), unix sockets, inherited descriptors."""

import fcntl
import os
import socket
import stat
import tempfile

import httpx
import pytest

from conftest import FERROGATE, free_port, has_ipv6_loopback, json_of, wait_until

needs_ipv6 = pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback on this machine")


@pytest.fixture
def short_dir():
    """A short directory for unix socket paths (sun_path holds 108 bytes)."""
    d = tempfile.mkdtemp(prefix="fg-")
    yield d
    for name in os.listdir(d):
        os.unlink(os.path.join(d, name))
    os.rmdir(d)


def uds_client(path: str) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(uds=path), base_url="http://localhost", timeout=10)


def tcp_listener(host="127.0.0.1") -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, 0))
    s.listen(128)
    return s


def test_ipv4_any_address(server_factory):
    srv = server_factory("basic:app", host="0.0.0.0")
    r = httpx.get(f"http://127.0.0.1:{srv.port}/scope", timeout=10)
    scope = json_of(r)
    assert scope["server"][1] == srv.port
    assert f"Listening at: http://0.0.0.0:{srv.port}" in srv.log()


@needs_ipv6
def test_ipv6_loopback(server_factory):
    srv = server_factory("basic:app", host="::1")
    scope = json_of(srv.get("/scope"))
    assert scope["client"][0] == "::1"
    assert scope["server"] == ["::1", srv.port]
    assert f"Listening at: http://[::1]:{srv.port}" in srv.log()


def test_unix_socket_with_mode(server_factory, short_dir):
    path = os.path.join(short_dir, "app.sock")
    srv = server_factory("basic:app", bind=["--uds", path, "--uds-mode", "660"], wait_address=path)
    st = os.stat(path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660
    with uds_client(path) as c:
        scope = json_of(c.get("/scope"))
    assert scope["client"] is None or scope["client"][0] in ("", path)
    assert f"unix:{path}" in srv.log()
    srv.stop()
    assert not os.path.exists(path), "the socket file must be removed on exit"


def test_stale_unix_socket_file_is_replaced(server_factory, short_dir):
    path = os.path.join(short_dir, "stale.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    s.close()  # leaves the file behind, with nobody listening
    assert os.path.exists(path)
    server_factory("basic:app", bind=["--uds", path], wait_address=path)
    with uds_client(path) as c:
        assert c.get("/hello").status_code == 200


def test_unix_socket_in_use_is_an_error(server_factory, short_dir):
    path = os.path.join(short_dir, "busy.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    s.listen(1)
    try:
        rc, log = server_factory.run("basic:app", bind=["--uds", path])
    finally:
        s.close()
    assert rc != 0
    assert path in log and "already listening" in log


def test_tcp_port_in_use_is_a_clear_error(server_factory):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    port = s.getsockname()[1]
    try:
        rc, log = server_factory.run("basic:app", port=port)
    finally:
        s.close()
    assert rc != 0
    assert f"127.0.0.1:{port}" in log
    assert "in use" in log.lower() or "another program" in log


def test_fd_passed_by_the_parent(server_factory):
    lsock = tcp_listener()
    port = lsock.getsockname()[1]
    fd = lsock.fileno()
    try:
        srv = server_factory("basic:app", bind=["--fd", str(fd)], pass_fds=(fd,),
                             wait_address=("127.0.0.1", port))
    finally:
        lsock.close()  # ferrogate has its own copy now
    scope = json_of(httpx.get(f"http://127.0.0.1:{port}/scope", timeout=10))
    assert scope["server"] == ["127.0.0.1", port]
    assert f"fd {fd}" in srv.log() or f"fd://{fd}" in srv.log()


def test_fd_unix_socket_passed_by_the_parent(server_factory, short_dir):
    path = os.path.join(short_dir, "fd.sock")
    lsock = socket.socket(socket.AF_UNIX)
    lsock.bind(path)
    lsock.listen(16)
    fd = lsock.fileno()
    try:
        server_factory("basic:app", bind=["--fd", str(fd)], pass_fds=(fd,), wait_address=path)
    finally:
        lsock.close()
    with uds_client(path) as c:
        assert c.get("/hello").text == "Hello, world!\n"


def test_fd_that_is_not_a_listening_socket_is_an_error(server_factory, tmp_path):
    f = open(tmp_path / "file", "w")
    fd = f.fileno()
    try:
        rc, log = server_factory.run("basic:app", bind=["--fd", str(fd)], pass_fds=(fd,))
    finally:
        f.close()
    assert rc != 0
    assert f"--fd {fd}" in log
    assert "not a listening socket" in log


def socket_activation(server_factory, socks, extra=(), listen_pid="$$", **kw):
    """Runs ferrogate as systemd would: sockets at fds 3.., LISTEN_FDS, LISTEN_PID = its own pid
    (the shell's $$, which `exec` hands on to ferrogate)."""
    # Park the sockets on high descriptors so the shell can lay them out on 3, 4, ... safely.
    fds = [fcntl.fcntl(s.fileno(), fcntl.F_DUPFD, 200) for s in socks]
    redirs = " ".join(f"{3 + i}<&{fd}" for i, fd in enumerate(fds)) + " " + " ".join(f"{fd}<&-" for fd in fds)
    script = f'LISTEN_PID={listen_pid} LISTEN_FDS={len(fds)} exec "$0" "$@" {redirs}'
    # bash, not dash: dash only redirects single-digit descriptors.
    argv = ["bash", "-c", script, FERROGATE, "basic:app", "--workers", "1", *extra]
    try:
        return server_factory(None, argv=argv, pass_fds=tuple(fds), **kw)
    finally:
        for fd in fds:
            os.close(fd)


def test_systemd_socket_activation(server_factory):
    lsock = tcp_listener()
    port = lsock.getsockname()[1]
    try:
        srv = socket_activation(server_factory, [lsock], wait_address=("127.0.0.1", port), workers=1)
    finally:
        lsock.close()
    assert json_of(httpx.get(f"http://127.0.0.1:{port}/scope", timeout=10))["server"] == ["127.0.0.1", port]
    assert "fd 3" in srv.log() or "fd://3" in srv.log()
    # The variables are consumed: neither the workers nor the app see them.
    assert json_of(httpx.get(f"http://127.0.0.1:{port}/env?name=LISTEN_FDS", timeout=10))["value"] is None
    assert json_of(httpx.get(f"http://127.0.0.1:{port}/env?name=LISTEN_PID", timeout=10))["value"] is None


def test_systemd_socket_activation_with_several_listeners(server_factory, short_dir):
    a, b = tcp_listener(), tcp_listener()
    path = os.path.join(short_dir, "act.sock")
    u = socket.socket(socket.AF_UNIX)
    u.bind(path)
    u.listen(16)
    ports = [a.getsockname()[1], b.getsockname()[1]]
    try:
        socket_activation(server_factory, [a, b, u], wait_address=("127.0.0.1", ports[0]), workers=1)
    finally:
        for s in (a, b, u):
            s.close()
    for port in ports:
        assert httpx.get(f"http://127.0.0.1:{port}/hello", timeout=10).status_code == 200
    with uds_client(path) as c:
        assert c.get("/hello").status_code == 200


def test_socket_activation_for_another_pid_is_ignored(server_factory):
    lsock = tcp_listener()
    port = free_port()
    try:
        srv = socket_activation(server_factory, [lsock], extra=("--port", str(port)), listen_pid="1",
                                wait_address=("127.0.0.1", port), workers=1)
        assert httpx.get(f"http://127.0.0.1:{port}/hello", timeout=10).status_code == 200
        assert "fd 3" not in srv.log() and "fd://3" not in srv.log()
    finally:
        lsock.close()


def test_several_bind_addresses(server_factory, short_dir):
    p1, p2 = free_port(), free_port()
    path = os.path.join(short_dir, "bind.sock")
    binds = ["--bind", f"127.0.0.1:{p1},unix:{path}", "--bind", f"127.0.0.1:{p2}"]
    if has_ipv6_loopback():
        p3 = free_port("::1")
        binds += ["--bind", f"[::1]:{p3}"]
    srv = server_factory("basic:app", bind=binds, wait_address=("127.0.0.1", p1))
    wait_until(lambda: os.path.exists(path), 5)
    assert json_of(httpx.get(f"http://127.0.0.1:{p1}/scope", timeout=10))["server"][1] == p1
    assert json_of(httpx.get(f"http://127.0.0.1:{p2}/scope", timeout=10))["server"][1] == p2
    with uds_client(path) as c:
        assert c.get("/hello").status_code == 200
    if has_ipv6_loopback():
        assert json_of(httpx.get(f"http://[::1]:{p3}/scope", timeout=10))["server"] == ["::1", p3]
    assert srv.count(r"Listening at: ") == len(binds) // 2 + 1
