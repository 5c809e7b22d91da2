"""--io-mode: each worker's network I/O on a thread of its own, or on its event loop's thread.

CI also runs the whole suite with FERROGATE_TEST_IO_MODE=loop (.ci/run), so every other
test covers the loop mode's serving; these check what differs between the two modes.
"""

import os
import socket
import threading

import httpx
import pytest

from conftest import read_response, wait_until


def thread_names(pid: int) -> list[str]:
    names = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/comm") as f:
            names.append(f.read().strip())
    return sorted(names)


@pytest.mark.parametrize("mode, io_thread, said", [
    ("thread", True, "I/O on a thread of its own"),
    ("loop", False, "I/O on the loop's thread"),
])
def test_the_mode_decides_whether_a_worker_has_an_io_thread(server_factory, mode, io_thread, said):
    srv = server_factory("basic:app", "--io-mode", mode)
    [worker] = srv.worker_pids()
    assert srv.get("/hello").status_code == 200
    assert ("ferrogate-io" in thread_names(worker)) == io_thread, thread_names(worker)
    assert f"Worker ready: serving basic:app with uvloop, {said}" in srv.log() or \
        f"Worker ready: serving basic:app with asyncio, {said}" in srv.log(), srv.log_tail(10)


def test_auto_puts_the_io_on_the_loop_when_every_core_has_a_worker(server_factory):
    cores = len(os.sched_getaffinity(0))
    srv = server_factory("basic:app", "--io-mode", "auto", workers=cores)
    srv.wait_for_log(r"Worker ready", count=cores)
    assert srv.count(r"Worker ready: .*, I/O on the loop's thread") == cores, srv.log_tail(10)
    for pid in srv.worker_pids():
        assert "ferrogate-io" not in thread_names(pid)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs a core to spare for the I/O thread")
def test_auto_keeps_an_io_thread_when_cores_are_spare(server_factory):
    srv = server_factory("basic:app", "--io-mode", "auto", workers=1)
    srv.wait_for_log(r"Worker ready: .*, I/O on a thread of its own")
    [worker] = srv.worker_pids()
    assert "ferrogate-io" in thread_names(worker)


def test_timers_run_while_the_loop_mode_worker_is_at_rest(server_factory):
    """Timers advance only on the runtime's turns: with nothing else to do, the worker's tick
    must still close an idle keep-alive connection."""
    srv = server_factory("basic:app", "--io-mode", "loop", "--timeout-keep-alive", "1")
    with socket.create_connection(srv.address, timeout=20) as s:
        s.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(s, read_until_close=False).startswith(b"HTTP/1.1 200")
        # Then nothing more from either side: the server must close on its own.
        assert s.recv(1) == b"", "the idle keep-alive connection was not closed"


def test_a_worker_blocking_its_loop_leaves_new_connections_to_the_others(server_factory):
    """In loop mode a worker whose app blocks the loop does not accept meanwhile, so the
    other worker takes every new connection instead of some waiting for the block to end."""
    srv = server_factory("basic:app", "--io-mode", "loop", "--timeout", "60", workers=2)
    srv.wait_workers(2)
    blocked = {}

    def block():
        with httpx.Client(timeout=30) as c:
            blocked["pid"] = c.get(f"{srv.url}/pid").json()["pid"]
            blocked["response"] = c.get(f"{srv.url}/block", params={"secs": "6"})

    t = threading.Thread(target=block, daemon=True)
    t.start()
    wait_until(lambda: "pid" in blocked, 10)
    # time.sleep in the app: the worker's only thread sleeps in the kernel.
    wait_until(lambda: "nanosleep" in open(f"/proc/{blocked['pid']}/wchan").read(), 10,
               message="the worker never blocked")
    served_by = set()
    for _ in range(8):
        # A new connection each time: httpx.get opens one per call.
        served_by.add(httpx.get(f"{srv.url}/pid", timeout=30).json()["pid"])
        assert t.is_alive(), "the blocking request ended before the others were served"
    assert blocked["pid"] not in served_by, (blocked["pid"], served_by)
    t.join(30)
    assert blocked["response"].status_code == 200
