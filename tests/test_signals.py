"""The master under signals: graceful stop, rolling restart, worker replacement."""

import os
import re
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from conftest import APPS_DIR, copy_app, json_of, pid_alive, read_response, wait_until


def hold_request(srv, tmp_path, name="held", route="/wait-file"):
    """Starts GET /wait-file (or `route`, which takes the same `started` marker) in a thread;
    returns (gate, thread, result dict) once the app is inside it."""
    gate, started = tmp_path / f"{name}.gate", tmp_path / f"{name}.started"
    result = {}

    def run():
        try:
            result["response"] = httpx.get(f"{srv.url}{route}", params={"path": str(gate), "started": str(started)},
                                           timeout=30)
        except Exception as e:  # noqa: BLE001
            result["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    wait_until(lambda: started.exists() and started.read_text(), 10, message="the held request never reached the app")
    result["pid"] = int(started.read_text())
    return gate, t, result


# --------------------------------------------------------------------------
# Graceful stop
# --------------------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_graceful_stop_lets_in_flight_request_finish(server_factory, tmp_path, sig):
    marker = tmp_path / "shutdown"
    srv = server_factory("basic:app", workers=2, env={"FG_SHUTDOWN_MARKER": str(marker)})
    workers = srv.worker_pids()
    gate, t, result = hold_request(srv, tmp_path)
    mark = srv.log_mark()
    srv.signal(sig)
    srv.wait_for_log(rf"Received {signal.Signals(sig).name}", since=mark)
    # The master waits for the in-flight request: it must still be running, and the
    # worker serving it must not have run lifespan shutdown yet.
    assert srv.alive()
    assert pid_alive(result["pid"])
    done = marker.read_text().split() if marker.exists() else []
    assert str(result["pid"]) not in done, "lifespan shutdown ran before the in-flight request finished"
    gate.touch()
    t.join(20)
    assert "error" not in result, f"in-flight request failed: {result.get('error')!r}"
    assert result["response"].status_code == 200
    rc = srv.wait_exit()
    assert "Shutdown complete" in srv.log()
    assert "KeyboardInterrupt" not in srv.log(), f"a graceful stop must not end in a traceback:\n{srv.log_tail(8)}"
    assert rc == 0, f"exit status {rc} after a graceful stop on {signal.Signals(sig).name}"
    assert {int(x) for x in marker.read_text().split()} == set(workers)
    for pid in workers:
        wait_until(lambda: not pid_alive(pid), 5, message=f"worker {pid} outlived the master")


def test_new_connections_are_not_left_hanging_while_draining(server_factory, tmp_path):
    """Once stopping, the server must refuse (or promptly close) new connections instead of
    leaving them in the listen queue until it exits."""
    srv = server_factory("basic:app")
    gate, t, result = hold_request(srv, tmp_path)
    mark = srv.log_mark()
    srv.signal(signal.SIGTERM)
    srv.wait_for_log(r"Received SIGTERM", since=mark)

    def refused_or_closed():
        try:
            with socket.create_connection(srv.address, timeout=2) as s:
                s.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                s.settimeout(2)
                data = s.recv(65536)
                return data == b"" or data.startswith(b"HTTP/1.1 503")
        except ConnectionRefusedError:
            return True
        except ConnectionResetError:
            return True
        except (TimeoutError, socket.timeout):
            return False

    try:
        wait_until(refused_or_closed, 6, interval=0.2,
                   message="during the graceful stop a new connection was accepted and left hanging")
    finally:
        gate.touch()
        t.join(20)
    assert result.get("response") is not None and result["response"].status_code == 200
    assert srv.wait_exit() == 0


def test_graceful_timeout_bounds_the_stop(server_factory, tmp_path):
    srv = server_factory("basic:app", "--timeout-graceful-shutdown", "1")
    gate, t, result = hold_request(srv, tmp_path)
    started = time.monotonic()
    srv.signal(signal.SIGTERM)
    # The request never finishes; the server must still exit, well before the 30 s default.
    assert srv.wait_exit(timeout=15) == 0
    assert time.monotonic() - started < 15
    log = srv.log()
    assert "graceful timeout (1s) reached" in log.lower()
    # The handler is cancelled, not abandoned: its client gets a 503 and asyncio has no pending task to complain of.
    t.join(10)
    assert result.get("response") is not None and result["response"].status_code == 503, result
    assert "cancelled at the graceful-shutdown timeout" in log
    assert "Task was destroyed" not in log


def test_a_request_that_swallows_its_cancellation_is_given_up_on_once(server_factory, tmp_path):
    """At the graceful timeout the request is cancelled and gets a few seconds; one that
    catches every CancelledError is then abandoned, said once. It is not cancelled, waited
    for and reported a second time with the tasks the app started itself."""
    srv = server_factory("basic:app", "--timeout-graceful-shutdown", "1")
    hold_request(srv, tmp_path, route="/stubborn")
    srv.signal(signal.SIGTERM)
    assert srv.wait_exit(timeout=20) == 0
    log = srv.log()
    assert re.search(r"1 request task\(s\) still running \d+s after being cancelled", log), srv.log_tail(20)
    assert "task(s) the app started" not in log, srv.log_tail(20)
    # Cancelled and waited for twice, the worker would outlast its stop and be killed.
    assert "did not stop in time" not in log, srv.log_tail(20)


def test_second_signal_forces_the_stop(server_factory, tmp_path):
    srv = server_factory("basic:app")
    gate, t, result = hold_request(srv, tmp_path)
    mark = srv.log_mark()
    srv.signal(signal.SIGINT)
    srv.wait_for_log(r"Received SIGINT", since=mark)
    srv.signal(signal.SIGINT)
    srv.wait_for_log(r"Second signal", since=mark)
    srv.wait_exit(timeout=10)
    t.join(10)
    assert "response" not in result, "the held request must not have completed normally"


# --------------------------------------------------------------------------
# Rolling restart (SIGHUP)
# --------------------------------------------------------------------------

class Load:
    """A steady load from a pool of httpx clients, bounded in time and count."""

    def __init__(self, url: str, threads: int = 4, max_requests: int = 20000, max_seconds: float = 40):
        self.url = url
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.failures: list[str] = []
        self.versions: list[tuple[float, str, int]] = []
        self.max_requests = max_requests
        self.deadline = time.monotonic() + max_seconds
        self.pool = ThreadPoolExecutor(threads)
        self.futures = [self.pool.submit(self._run) for _ in range(threads)]

    def _run(self):
        # A new connection per request: every request goes through accept(), the
        # part a rolling restart must not break.
        with httpx.Client(timeout=10, headers={"Connection": "close"}) as c:
            while not self.stop.is_set() and time.monotonic() < self.deadline:
                with self.lock:
                    if self.ok + len(self.failures) >= self.max_requests:
                        return
                try:
                    r = c.get(self.url + "/")
                    if r.status_code != 200:
                        raise RuntimeError(f"status {r.status_code}: {r.text[:200]}")
                    data = r.json()
                    with self.lock:
                        self.ok += 1
                        self.versions.append((time.monotonic(), data["version"], data["pid"]))
                except Exception as e:  # noqa: BLE001
                    with self.lock:
                        self.failures.append(repr(e))

    def count(self):
        with self.lock:
            return self.ok

    def finish(self):
        self.stop.set()
        for f in self.futures:
            f.result(30)
        self.pool.shutdown()


def write_version(path, version: str):
    src = (APPS_DIR / "versioned.py").read_text().replace('VERSION = "v1"', f'VERSION = "{version}"')
    path.write_text(src)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))


VERSIONS = ["v1", "v2", "v3", "v4", "v5", "v6"]


@pytest.mark.slow(reason="five rolling restarts of 2 workers under load")
def test_sighup_rolling_restart_under_load_drops_nothing(server_factory, tmp_path):
    app_file = copy_app("versioned.py", tmp_path, "hupapp.py")
    srv = server_factory("hupapp:app", "--app-dir", str(tmp_path), workers=2)
    first = srv.worker_pids()
    load = Load(srv.url, threads=6)
    all_old = list(first)
    try:
        wait_until(lambda: load.count() >= 50, 20, message="the load never got going")
        # Rolling restarts in a row, each to a new version.
        for version in VERSIONS[1:]:
            old = srv.worker_pids()
            write_version(app_file, version)
            srv.signal(signal.SIGHUP)
            new = srv.wait_workers(2, timeout=30, exclude=all_old)
            all_old += new
            n = load.count()
            wait_until(lambda: load.count() >= n + 50, 20, message="the load stalled after the restart")
    finally:
        load.finish()
    assert load.failures == [], f"{len(load.failures)} of {load.ok + len(load.failures)} requests failed " \
                                f"during SIGHUP, e.g. {load.failures[:5]}"
    seen = [v for _, v, _ in load.versions]
    assert set(seen) == set(VERSIONS), set(seen)
    # Every old worker is gone and the new ones serve the newest code.
    for pid in first + old:
        assert not pid_alive(pid)
    for _ in range(10):
        data = json_of(srv.get("/"))
        assert data["version"] == VERSIONS[-1]
        assert data["pid"] in new
    assert "rolling restart" in srv.log()


def test_sighup_with_broken_new_code_keeps_old_workers(server_factory, tmp_path):
    app_file = copy_app("versioned.py", tmp_path, "hupbroken.py")
    srv = server_factory("hupbroken:app", "--app-dir", str(tmp_path), workers=2)
    old = srv.worker_pids()
    app_file.write_text("raise SyntaxError('FG-BROKEN-RELOAD')\n")
    mark = srv.log_mark()
    srv.signal(signal.SIGHUP)
    srv.wait_for_log(r"new code failed to start", since=mark)
    assert srv.alive()
    assert "FG-BROKEN-RELOAD" in srv.log_since(mark)
    assert sorted(srv.worker_pids()) == sorted(old)
    for _ in range(6):
        assert json_of(srv.get("/"))["version"] == "v1"
    # Fixing the code and reloading again works.
    write_version(app_file, "v3")
    srv.signal(signal.SIGHUP)
    srv.wait_workers(2, timeout=30, exclude=old)
    assert json_of(srv.get("/"))["version"] == "v3"


# --------------------------------------------------------------------------
# Worker replacement
# --------------------------------------------------------------------------

def test_killed_worker_is_replaced(server_factory):
    srv = server_factory("basic:app", workers=2)
    victim, survivor = srv.worker_pids()
    mark = srv.log_mark()
    os.kill(victim, signal.SIGKILL)
    pids = srv.wait_workers(2, exclude=[victim])
    assert survivor in pids
    assert re.search(rf"Worker {victim} died unexpectedly.*SIGKILL", srv.log_since(mark))
    served_by = {json_of(srv.get("/pid", headers={"Connection": "close"}))["pid"] for _ in range(20)}
    assert served_by <= set(pids)
    assert victim not in served_by


def test_ttin_adds_and_ttou_removes_a_worker(server_factory):
    srv = server_factory("basic:app", workers=1)
    (first,) = srv.worker_pids()
    srv.signal(signal.SIGTTIN)
    pids = srv.wait_workers(2)
    assert first in pids
    srv.signal(signal.SIGTTIN)
    pids3 = srv.wait_workers(3)
    mark = srv.log_mark()
    srv.signal(signal.SIGTTOU)
    pids2 = srv.wait_workers(2)
    (removed,) = set(pids3) - set(pids2)
    srv.wait_for_log(rf"Worker {removed} stopped", since=mark)
    # The removed worker is not replaced.
    srv.signal(signal.SIGTTOU)
    srv.wait_workers(1)
    assert srv.get("/hello").status_code == 200


def test_blocked_worker_is_killed_with_its_stack_logged(server_factory):
    srv = server_factory("basic:app", "--timeout", "2", workers=1)
    (blocked,) = srv.worker_pids()
    sleep_line = next(i for i, line in enumerate((APPS_DIR / "basic.py").read_text().splitlines(), 1)
                      if "time.sleep(float" in line)

    def call():
        try:
            httpx.get(srv.url + "/block?secs=100", timeout=30)
        except httpx.HTTPError:
            pass

    t = threading.Thread(target=call, daemon=True)
    t.start()
    srv.wait_for_log(rf"Worker {blocked} timed out", timeout=20)
    # faulthandler's dump names the file and line of the blocking call.
    srv.wait_for_log(rf'File "{re.escape(str(APPS_DIR / "basic.py"))}", line {sleep_line}', timeout=10)
    new = srv.wait_workers(1, exclude=[blocked], timeout=20)
    assert not pid_alive(blocked)
    assert json_of(srv.get("/pid"))["pid"] == new[0]
    t.join(30)


@pytest.mark.slow(reason="lets workers crash repeatedly until the master gives up")
def test_crash_loop_makes_the_master_give_up(server_factory):
    rc, log = server_factory.run("lifespan_apps:crash_after_start", workers=1, timeout=45)
    assert rc not in (0, None), log
    assert log.count("died unexpectedly") >= 3, log
    assert re.search(r"crashed \d+ times", log), log


def test_max_requests_recycles_the_worker_without_failures(server_factory):
    srv = server_factory("basic:app", "--limit-max-requests", "10", workers=1)
    (first,) = srv.worker_pids()
    pids = []
    failures = []
    deadline = time.monotonic() + 30
    with httpx.Client(base_url=srv.url, headers={"Connection": "close"}, timeout=10) as c:
        while time.monotonic() < deadline and len(pids) < 400:
            try:
                r = c.get("/pid")
                pids.append(r.json()["pid"])
            except Exception as e:  # noqa: BLE001
                failures.append(repr(e))
            if pids and pids[-1] != first:
                break
            time.sleep(0.02)
    assert failures == []
    assert pids[-1] != first, "the worker was never recycled after --limit-max-requests 10"
    srv.wait_workers(1, exclude=[first])
    assert "limit-max-requests" in srv.log()


def test_workers_exit_when_the_master_is_killed(server_factory):
    srv = server_factory("basic:app", workers=2)
    workers = srv.worker_pids()
    os.kill(srv.pid, signal.SIGKILL)
    srv.proc.wait(5)
    for pid in workers:
        wait_until(lambda: not pid_alive(pid), 15, message=f"worker {pid} kept running after its master died")


def test_sighup_lets_in_flight_requests_on_old_workers_finish(server_factory, tmp_path):
    app_file = copy_app("basic.py", tmp_path, "hupinflight.py")
    srv = server_factory("hupinflight:app", "--app-dir", str(tmp_path), workers=1)
    (old,) = srv.worker_pids()
    gate, t, result = hold_request(srv, tmp_path)
    assert result["pid"] == old
    app_file.touch()
    srv.signal(signal.SIGHUP)
    # The successor serves while the old worker still holds the request.
    wait_until(lambda: any(p != old for p in srv.serving_pids()), 30,
               message=lambda: f"no successor became ready\n{srv.log_tail()}")
    assert pid_alive(old), "the old worker exited before its in-flight request finished"
    gate.touch()
    t.join(20)
    assert "error" not in result, f"the in-flight request failed: {result.get('error')!r}"
    assert result["response"].status_code == 200
    srv.wait_workers(1, exclude=[old])


def test_timeout_spares_a_worker_that_awaits(server_factory):
    """--timeout is about a blocked event loop, not a slow request: a handler that
    awaits longer than --timeout must finish on the same worker."""
    srv = server_factory("basic:app", "--timeout", "2", workers=1)
    (pid,) = srv.worker_pids()
    r = srv.get("/slow?secs=4.5", timeout=30)
    assert r.status_code == 200
    assert r.json()["pid"] == pid
    assert srv.worker_pids() == [pid]
    assert "timed out" not in srv.log()


class RawKeepAliveLoad:
    """Clients that reuse each connection for the next request at once, with no
    liveness check before reuse (as wrk and many proxies do), and reconnect only
    when a response says `connection: close`. A request that gets no response
    counts as a failure."""

    def __init__(self, address, threads=4):
        self.address = address
        self.stop = threading.Event()
        self.ok = 0
        self.failures = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def run(self):
        sock = None
        while not self.stop.is_set():
            if sock is None:
                sock = socket.create_connection(self.address, timeout=10)
            try:
                sock.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
                reply = read_response(sock, read_until_close=False)
                if not reply.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(f"no response: {reply[:100]!r}")
                with self.lock:
                    self.ok += 1
                if b"connection: close" in reply.lower():
                    sock.close()
                    sock = None
            except Exception as e:  # noqa: BLE001
                with self.lock:
                    self.failures.append(repr(e))
                sock.close()
                sock = None
        if sock is not None:
            sock.close()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(30)


def test_sighup_resets_no_request_on_a_kept_alive_connection(server_factory):
    srv = server_factory("basic:app", workers=2)
    load = RawKeepAliveLoad(srv.address)
    try:
        wait_until(lambda: load.ok >= 200, 20, message="the load never got going")
        for _ in range(3):
            old = srv.worker_pids()
            srv.signal(signal.SIGHUP)
            srv.wait_workers(2, timeout=30, exclude=old)
            n = load.ok
            wait_until(lambda: load.ok >= n + 200, 20, message="the load stalled after the restart")
    finally:
        load.finish()
    assert load.failures == [], f"{len(load.failures)} of {load.ok + len(load.failures)} requests got no " \
                                f"response during SIGHUP, e.g. {load.failures[:3]}"
