"""Worker recycling by resources: --max-worker-memory (RSS read by the master)
and --max-worker-lifetime. Each replaces the worker successor first, with the
reason and its figures in the log, and no request fails meanwhile."""

import re
import threading

import httpx
import pytest

from conftest import pid_alive, rss_kib, wait_until


class Traffic:
    """A client on another thread looping over a cheap route until stopped,
    counting the requests that failed and the worker pids that answered.

    Each request has its own connection (Connection: close), as the suite's
    other no-failure tests do: a request sent on a kept-alive connection at the
    instant the draining worker closes it is lost however the server behaves,
    and HTTP leaves retrying it to the client."""

    def __init__(self, srv):
        self.srv = srv
        self.failures: list[str] = []
        self.pids: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        with httpx.Client(base_url=self.srv.url, headers={"Connection": "close"}, timeout=10) as c:
            while not self._stop.is_set():
                try:
                    r = c.get("/pid")
                    if r.status_code != 200:
                        self.failures.append(f"status {r.status_code}: {r.text[:200]!r}")
                    else:
                        self.pids.append(r.json()["pid"])
                except Exception as e:  # noqa: BLE001 - every failure is the finding
                    self.failures.append(repr(e))
                self._stop.wait(0.01)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(15)


def successor_of(srv, old: int, timeout: float = 30.0) -> int:
    """Waits until a worker other than `old` logged that it serves; returns its pid."""
    return wait_until(lambda: next((p for p in srv.serving_pids() if p != old), None), timeout,
                      message=lambda: f"no successor of worker {old} became ready\n--- log ---\n{srv.log_tail()}")


def test_a_worker_over_max_worker_memory_is_replaced_successor_first(server_factory):
    srv = server_factory("grow:app", "--max-worker-memory", "80", workers=1)
    (old,) = srv.worker_pids()
    with Traffic(srv) as traffic:
        with httpx.Client(base_url=srv.url, headers={"Connection": "close"}, timeout=10) as c:
            # 20 MiB kept per request, until the worker is clearly past 80 MiB.
            while rss_kib(old) < 100 * 1024:
                r = c.get("/grow", params={"mb": 20})
                assert r.status_code == 200 and r.json()["pid"] == old, r.text
        new = successor_of(srv, old)
        wait_until(lambda: not pid_alive(old), 30, message=lambda: f"worker {old} never stopped\n{srv.log_tail()}")
        # A few more requests answered by the successor alone.
        seen = len(traffic.pids)
        wait_until(lambda: len(traffic.pids) > seen + 5, 10)
    assert traffic.failures == [], f"{len(traffic.failures)} requests failed during the replacement: {traffic.failures[:5]}"
    assert old in traffic.pids and new in traffic.pids
    assert srv.worker_pids() == [new]

    log = srv.log()
    m = re.search(rf"Worker {old} uses (\d+) MB \(--max-worker-memory 80\): replacing it; its successor starts first", log)
    assert m, log
    assert int(m.group(1)) > 80
    # Successor first: it serves before the old worker is told to go.
    assert log.index(f"Worker {new} is serving") < log.index(f"Worker {old} stopped"), log
    assert "MB (--max-worker-memory" not in log[log.index(f"Worker {new} is serving"):], "the successor, under the limit, was replaced too"


@pytest.mark.slow
def test_max_worker_lifetime_replaces_the_worker_while_requests_succeed(server_factory):
    srv = server_factory("grow:app", "--max-worker-lifetime", "3", workers=1)
    (old,) = srv.worker_pids()
    with Traffic(srv) as traffic:
        new = successor_of(srv, old)
        wait_until(lambda: not pid_alive(old), 30, message=lambda: f"worker {old} never stopped\n{srv.log_tail()}")
        seen = len(traffic.pids)
        wait_until(lambda: len(traffic.pids) > seen + 5, 10)
    assert traffic.failures == [], f"{len(traffic.failures)} requests failed during the replacement: {traffic.failures[:5]}"
    assert old in traffic.pids and new in traffic.pids
    m = re.search(rf"Worker {old} has run for (\d+)s \(--max-worker-lifetime 3\): replacing it", srv.log())
    assert m, srv.log()
    assert int(m.group(1)) >= 3
