"""--rate-limit: a token bucket per client address, shared by every worker; beyond
it 429 with Retry-After, and the app never hears of the refused request."""

from __future__ import annotations

import time

import httpx


def requests_seen(log_file) -> list[str]:
    try:
        return log_file.read_text().splitlines()
    except FileNotFoundError:
        return []


def test_beyond_the_rate_429_with_retry_after_then_served_after_waiting(server_factory, tmp_path):
    seen = tmp_path / "requests.log"
    srv = server_factory("basic:app", "--rate-limit", "5/s", "--rate-limit-burst", "5", env={"FG_REQUEST_LOG": str(seen)})
    statuses = []
    refused = None
    with srv.client() as c:
        # Faster than 5/s: the burst passes, then a refusal comes (bounded: a loop of
        # 200 requests takes far less than 40 s).
        for _ in range(200):
            r = c.get("/hello")
            statuses.append(r.status_code)
            if r.status_code == 429:
                refused = r
                break
        assert statuses[:5] == [200] * 5, statuses
        assert refused is not None, f"no 429 in {len(statuses)} requests at 5/s"
        retry_after = int(refused.headers["retry-after"])
        assert retry_after >= 1
        assert "Too Many Requests" in refused.text
        # The refused request never reached the app.
        assert len(requests_seen(seen)) == statuses.count(200)
        time.sleep(retry_after)
        assert c.get("/hello").status_code == 200


def test_the_limit_is_shared_by_the_workers(server_factory):
    # 3 requests per minute on /limited: whichever worker each new connection reaches,
    # the address gets 3 in all, not 3 per worker. /pid (unlimited) shows both serve.
    srv = server_factory("basic:app", "--rate-limit-path", "/limited=1/m:3", workers=2)
    passed = 0
    pids = set()
    for _ in range(30):
        # A new connection per request, so that both workers see this client.
        with httpx.Client(base_url=srv.url, headers={"connection": "close"}, timeout=30) as c:
            pids.add(c.get("/pid").json()["pid"])
        with httpx.Client(base_url=srv.url, headers={"connection": "close"}, timeout=30) as c:
            r = c.get("/limited")
            assert r.status_code in (200, 429), r.status_code
            passed += r.status_code == 200
    assert len(pids) == 2, f"only worker(s) {pids} served: the test could not spread the client"
    assert passed == 3, f"{passed} requests passed a 3-per-minute limit across 2 workers"


def test_other_paths_and_other_rules_have_their_own_buckets(server_factory):
    srv = server_factory("basic:app", "--rate-limit", "1/m", "--rate-limit-burst", "2", "--rate-limit-path", "/login=1/m:1")
    with srv.client() as c:
        assert [c.get("/login").status_code for _ in range(2)] == [200, 429]
        # The default's bucket is untouched by /login's.
        assert [c.get("/hello").status_code for _ in range(3)] == [200, 200, 429]
        assert c.get("/login/again").status_code == 429
