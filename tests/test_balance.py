"""Connections spread over the workers (http/balance.rs). All workers accept from one
listening socket; without the board, a burst of connections could all go to the
worker that happens to be running (the benchmark's 64 wrk connections did, 4 times in
10). A worker with more connections than its least-loaded peer by more than 8 and a
quarter leaves new ones to the peers for 2 ms first; a peer that does not take them
(stopped here with SIGSTOP) must not stop the others from serving."""

from __future__ import annotations

import json
import os
import signal
import socket
from collections import Counter

import pytest

from conftest import parse_response, read_response, wait_until

CONNECTIONS = 60


def pid_on(sock: socket.socket) -> int:
    """The worker serving a kept-alive connection: GET /pid on it."""
    sock.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, body = parse_response(read_response(sock, read_until_close=False))
    assert status == 200, (status, body)
    return json.loads(body)["pid"]


def burst(srv, n: int) -> list[socket.socket]:
    """n connections opened as fast as the client can, before any request."""
    return [socket.create_connection(srv.address, timeout=10) for _ in range(n)]


def all_threads_in(pid: int, state: str) -> bool:
    """Whether every thread of `pid` is in that state of /proc/PID/stat (T stopped, S asleep)."""
    tasks = os.listdir(f"/proc/{pid}/task")
    return all(open(f"/proc/{pid}/task/{t}/stat").read().rpartition(")")[2].split()[0] == state for t in tasks)


@pytest.mark.parametrize("workers", [2, 3])
def test_a_burst_of_connections_is_spread_over_the_workers(server_factory, workers):
    srv = server_factory("basic:app", workers=workers)
    socks = burst(srv, CONNECTIONS)
    try:
        per_worker = Counter(pid_on(s) for s in socks)
    finally:
        for s in socks:
            s.close()
    assert set(per_worker) == set(srv.worker_pids()), per_worker
    # Even to within the margin when every worker keeps up; a worker slow to be
    # scheduled can fall further behind, so the floor is half an even share.
    fair = CONNECTIONS // workers
    assert min(per_worker.values()) >= fair // 2, per_worker


def test_a_stopped_worker_does_not_hold_up_the_others(server_factory):
    srv = server_factory("basic:app", workers=2)
    stopped, running = srv.worker_pids()
    os.kill(stopped, signal.SIGSTOP)
    socks = []
    try:
        # A stop takes effect thread by thread: until then the worker may still accept.
        wait_until(lambda: all_threads_in(stopped, "T"), message="the worker did not stop")
        # The stopped worker holds no connection: past the margin every new one is over
        # it for the running worker, which must still take them all after its holds.
        socks = burst(srv, CONNECTIONS)
        assert Counter(pid_on(s) for s in socks) == {running: CONNECTIONS}
        os.kill(stopped, signal.SIGCONT)
        # Back, and through what piled up while it was stopped (its timers, the burst's
        # wake-ups), so that it is waiting for connections as its peer is.
        wait_until(lambda: all_threads_in(stopped, "S"), message="the worker did not resume")
        # With none against the other's 60: new connections go to it.
        more = burst(srv, 4)
        socks += more
        assert {pid_on(s) for s in more} == {stopped}
    finally:
        os.kill(stopped, signal.SIGCONT)
        for s in socks:
            s.close()
