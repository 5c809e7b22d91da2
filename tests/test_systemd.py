"""systemd's Type=notify, as systemd sees it: the datagrams the master sends to NOTIFY_SOCKET.

The test plays systemd: it binds a unix datagram socket, starts the real `ferrogate` with
NOTIFY_SOCKET (and WATCHDOG_USEC) pointing at it, and reads what arrives. The app's
lifespan startup waits for a gate file, so "not ready yet" is a state the test holds, not
a race it hopes to win.
"""

import os
import signal
import socket
import tempfile
import threading
import time

import pytest

from conftest import wait_until


class FakeSystemd:
    """A notify socket and every assignment received on it, in order."""

    def __init__(self, abstract: bool = False):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"ferrogate-test-{os.getpid()}-{time.monotonic_ns()}"
            self.sock.bind("\0" + name)
            self.address = "@" + name
        else:
            # A short directory: a unix socket path has room for 107 bytes only.
            self.dir = tempfile.mkdtemp(prefix="fg-notify-")
            self.address = os.path.join(self.dir, "notify.sock")
            self.sock.bind(self.address)
        self.sock.settimeout(0.2)
        self.messages: list[list[str]] = []
        self.lock = threading.Lock()
        self.running = True
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        while self.running:
            try:
                data = self.sock.recv(65536)
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            with self.lock:
                self.messages.append(data.decode().split("\n"))

    def lines(self) -> list[str]:
        with self.lock:
            return [line for m in self.messages for line in m]

    def mark(self) -> int:
        return len(self.lines())

    def since(self, mark: int) -> list[str]:
        return self.lines()[mark:]

    def wait_for(self, predicate, what: str, since: int = 0, timeout: float = 20.0) -> list[str]:
        """Waits until `predicate` holds for the lines received since `since`; returns them."""
        return wait_until(lambda: (lambda got: got if predicate(got) else None)(self.since(since)), timeout,
                          message=lambda: f"systemd never got {what}; it got {self.since(since)}")

    def wait_line(self, line: str, since: int = 0, count: int = 1, timeout: float = 20.0) -> list[str]:
        return self.wait_for(lambda got: got.count(line) >= count, f"{line!r} x{count}", since, timeout)

    def value(self, name: str, since: int = 0) -> str | None:
        """The first value given to NAME= since `since`."""
        for line in self.since(since):
            if line.startswith(name + "="):
                return line.split("=", 1)[1]
        return None

    def close(self):
        self.running = False
        self.thread.join(2)
        self.sock.close()
        if hasattr(self, "dir"):
            if os.path.exists(self.address):
                os.unlink(self.address)
            os.rmdir(self.dir)


@pytest.fixture
def systemd():
    s = FakeSystemd()
    yield s
    s.close()


def notify_env(systemd: FakeSystemd, **extra) -> dict:
    return {"NOTIFY_SOCKET": systemd.address, "WATCHDOG_USEC": "1000000", **extra}


def test_ready_reloading_stopping_follow_the_workers(server_factory, tmp_path, systemd):
    gate = tmp_path / "gate"
    srv = server_factory("lifespan_apps:gated_startup", workers=2, wait=False,
                         env=notify_env(systemd, FG_STARTUP_GATE=str(gate)))

    # Booting: the watchdog is pinged and the status says so, but the app is not ready.
    got = systemd.wait_line("WATCHDOG=1", count=2)
    assert "READY=1" not in got, f"READY=1 while the app's startup was still blocked: {got}"
    assert any(line.startswith("STATUS=starting: 0 of 2 workers serving") for line in got), got

    gate.touch()
    systemd.wait_line("READY=1")
    assert systemd.value("MAINPID") == str(srv.pid), "MAINPID must name the master"
    assert srv.get("/").text == "yes", "READY=1 before lifespan startup completed"
    systemd.wait_for(lambda got: any(line.startswith("STATUS=2 workers serving, ") and line.endswith(" requests served") for line in got),
                     "STATUS=2 workers serving, N requests served")

    # SIGHUP: RELOADING=1 at once, READY=1 only once the new workers serve.
    gate.unlink()
    mark = systemd.mark()
    srv.signal(signal.SIGHUP)
    got = systemd.wait_line("RELOADING=1", since=mark)
    usec = systemd.value("MONOTONIC_USEC", since=mark)
    assert usec is not None and int(usec) > 0, got
    systemd.wait_line("STATUS=rolling restart: 0 of 2 replaced", since=mark)
    got = systemd.wait_line("WATCHDOG=1", since=mark, count=2)
    assert "READY=1" not in got, f"READY=1 while the new workers were still starting: {got}"
    gate.touch()
    systemd.wait_line("READY=1", since=mark)
    srv.wait_for_log(r"Worker \d+ is serving", count=4)

    # SIGTERM: STOPPING=1, then the master waits for its workers and exits.
    mark = systemd.mark()
    srv.signal(signal.SIGTERM)
    got = systemd.wait_line("STOPPING=1", since=mark)
    assert any(line.startswith("STATUS=stopping: waiting for") for line in got), got
    assert srv.wait_exit() == 0
    assert "READY=1" not in systemd.since(mark)


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_workers_cannot_speak_for_the_service(server_factory, abstract):
    systemd = FakeSystemd(abstract=abstract)
    try:
        srv = server_factory("basic:app", env=notify_env(systemd, FG_VISIBLE="seen", WATCHDOG_PID=""))
        systemd.wait_line("READY=1")
        env = lambda name: srv.get("/env", params={"name": name}).json()["value"]  # noqa: E731
        assert env("FG_VISIBLE") == "seen", "the app reads the worker's environment"
        for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            assert env(name) is None, f"a worker inherited {name}"
    finally:
        systemd.close()


def test_a_watchdog_meant_for_another_process_is_not_pinged(server_factory, systemd):
    srv = server_factory("basic:app", env=notify_env(systemd, WATCHDOG_PID="1"))
    # Pings, when there are any, start with the master's first update, long before READY=1.
    systemd.wait_line("READY=1")
    assert srv.get("/hello").status_code == 200
    mark = systemd.mark()
    srv.signal(signal.SIGTERM)
    systemd.wait_line("STOPPING=1", since=mark)
    srv.wait_exit()
    assert "WATCHDOG=1" not in systemd.lines()
