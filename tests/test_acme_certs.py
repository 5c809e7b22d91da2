"""`ferrogate certs list|renew|revoke` (issue 9 point 8) against pebble, beside a running
domain-mode server or without one. The commands take the server's options
(acme_support.domain_options); the running server serves what they store within ~10 s.
"""

from __future__ import annotations

import email.utils
import json
import re
import time

from acme_support import (DOMAIN, RENEWAL_TIMEOUT, ConnectionLoop, certs, domain_server,  # noqa: F401
                          https_get, make_renewal_due, read_meta, snapshot, start_domain_server, stored_serial)
from pebble import Pebble
from conftest import wait_until

REUSED = "the CA still held a validation of"


def orders_placed(r) -> int:
    """Orders one `certs renew` of one certificate placed: one, plus one for each time the
    CA reused a validation (pebble does, one order in a hundred) and renew deactivated it."""
    return 1 + (r.stdout + r.stderr).count(REUSED)


HTTP_DATE = r"[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT"


def test_list_shows_names_expiry_days_left_next_renewal_and_issuer(domain_server, pebble):
    srv = domain_server()
    meta = read_meta(srv.state)
    r = certs(srv.options, "list")
    assert r.returncode == 0, r.stdout + r.stderr
    header = next(line for line in r.stdout.splitlines() if line.startswith("NAMES"))
    for column in ("NOT AFTER", "DAYS LEFT", "NEXT RENEWAL", "ISSUER"):
        assert column in header, header
    row = next(line for line in r.stdout.splitlines() if line.split() and line.split()[0] == DOMAIN)
    not_after = email.utils.formatdate(meta["not_after"], usegmt=True)
    assert not_after in row, row
    assert meta["issuer"] in row, row
    days_left = (meta["not_after"] - time.time()) / 86400
    assert re.search(rf"GMT\s+({int(days_left)}|{int(days_left) + 1})\s", row), f"days left ~{days_left:.1f}: {row}"
    dates = [email.utils.parsedate_to_datetime(d).timestamp() for d in re.findall(HTTP_DATE, row)]
    assert len(dates) == 2, row
    assert time.time() < dates[1] < meta["not_after"], f"next renewal not between now and expiry: {row}"


def test_renew_orders_nothing_when_not_due(domain_server, pebble):
    srv = domain_server()
    before, mark = snapshot(srv.state), pebble.mark()
    r = certs(srv.options, "renew")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "not due" in r.stdout, r.stdout
    assert pebble.orders(since=mark) == 0
    assert snapshot(srv.state) == before


def test_renew_dry_run_goes_through_the_ca_and_stores_nothing(domain_server, pebble):
    srv = domain_server()
    before, mark = snapshot(srv.state), pebble.mark()
    r = certs(srv.options, "renew", "--dry-run")
    assert r.returncode == 0, r.stdout + r.stderr
    # A real order, validated by the running server's workers...
    assert pebble.orders(since=mark) == orders_placed(r), pebble.log_since(mark)
    assert "Attempting to validate w/ HTTP" in pebble.log_since(mark)
    # ...and nothing of it kept.
    assert snapshot(srv.state) == before


def test_forced_renewal_is_served_while_new_connections_keep_coming(domain_server, pebble):
    srv = domain_server()
    root = pebble.roots_pem()
    old = https_get(srv.https_port, root).serial
    workers = sorted(srv.worker_pids())
    mark, pebble_mark = srv.log_mark(), pebble.mark()
    loop = ConnectionLoop(srv.https_port, root)
    loop.start()
    try:
        wait_until(lambda: len(loop.serials) >= 5, 20, message="the connection loop got no answers")
        r = certs(srv.options, "renew", "--force")
        assert r.returncode == 0, r.stdout + r.stderr
        new_hex = read_meta(srv.state)["serial"]
        new = int(new_hex, 16)
        assert new != old and new_hex in r.stdout, r.stdout
        wait_until(lambda: new in loop.serials, RENEWAL_TIMEOUT,
                   message=lambda: f"the renewed certificate was never served; failures {loop.failures[:5]}\n{srv.log_tail()}")
        wait_until(lambda: len(loop.serials) > 30 and all(s == new for s in loop.serials[-30:]), 20,
                   message="some connections still got the old certificate")
    finally:
        loop.stop()
    assert loop.failures == [], loop.failures[:10]
    srv.wait_for_log(rf"Serving the renewed certificate for {re.escape(DOMAIN)} \(serial {new_hex},", since=mark)
    assert srv.alive() and sorted(srv.worker_pids()) == workers, "no process was restarted"
    assert srv.count(r"Booting worker|Ordering a certificate", since=mark) == 0
    assert pebble.orders(since=pebble_mark) == 1


def test_forced_renewal_with_the_ca_down_names_the_directory_and_keeps_the_certificate(domain_server, pebble):
    srv = domain_server()
    root = pebble.roots_pem()  # the root changes when pebble restarts
    serial = https_get(srv.https_port, root).serial
    before = snapshot(srv.state)
    pebble.stop()
    try:
        r = certs(srv.options, "renew", "--force")
        out = r.stdout + r.stderr
        assert r.returncode != 0, out
        assert pebble.directory in out, out
        assert re.search(r"(?i)connection refused|connect", out), out
        assert snapshot(srv.state) == before
        assert https_get(srv.https_port, root).serial == serial
    finally:
        pebble.start()


def test_renew_without_a_running_server_answers_http01_itself(domain_server, pebble):
    first = domain_server()
    old = stored_serial(first.state)
    first.stop()
    mark = pebble.mark()
    r = certs(first.options, "renew", "--force")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Attempting to validate w/ HTTP" in pebble.log_since(mark)
    new = stored_serial(first.state)
    assert new != old
    # The next start serves it and orders nothing.
    second = domain_server(state=first.state)
    assert https_get(second.https_port, pebble.roots_pem()).serial == new
    assert pebble.orders(since=mark) == orders_placed(r)


def test_revoke_revokes_at_the_ca_and_the_running_server_orders_a_new_one(domain_server, pebble):
    srv = domain_server()
    root = pebble.roots_pem()
    old_hex = read_meta(srv.state)["serial"]
    mark, pebble_mark = srv.log_mark(), pebble.mark()
    r = certs(srv.options, "revoke", DOMAIN)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "POST /revoke-cert" in pebble.log_since(pebble_mark)
    status = json.loads(pebble.get(f"{pebble.management}/cert-status-by-serial/{old_hex}"))
    assert status.get("Status") == "Revoked", status
    m = srv.wait_for_log(rf"Got a certificate for {re.escape(DOMAIN)} .*\(serial ([0-9a-f]+),", since=mark,
                         timeout=RENEWAL_TIMEOUT)[0]
    new = int(m.group(1), 16)
    assert new != int(old_hex, 16)
    wait_until(lambda: all(https_get(srv.https_port, root).serial == new for _ in range(6)), 20,
               message="the server kept serving the revoked certificate")


def test_renew_runs_the_challenge_even_when_the_ca_would_reuse_a_validation(server_factory, tmp_path):
    """Against a pebble that reuses every valid authorization (PEBBLE_AUTHZREUSE=100): the
    server's own renewal takes the CA's reuse, and `certs renew` deactivates it and has
    the challenge run, so that its success says validation works now."""
    pebble = Pebble(tmp_path / "pebble", env={"PEBBLE_AUTHZREUSE": "100"}).start()
    try:
        srv = start_domain_server(server_factory, pebble, tmp_path / "state")
        first = stored_serial(srv.state)
        # The premise: this CA reuses the first order's validation for the server's renewal.
        mark, log_mark = pebble.mark(), srv.log_mark()
        make_renewal_due(srv.state)
        srv.wait_for_log(rf"Got a certificate for {DOMAIN}", since=log_mark, timeout=RENEWAL_TIMEOUT)
        assert stored_serial(srv.state) != first
        assert pebble.orders(since=mark) == 1, pebble.log_since(mark)
        assert "Attempting to validate" not in pebble.log_since(mark), pebble.log_since(mark)

        for args in (["--dry-run"], ["--force"]):
            mark = pebble.mark()
            r = certs(srv.options, "renew", *args)
            out = r.stdout + r.stderr
            assert r.returncode == 0, out
            assert f"{REUSED} {DOMAIN}; deactivated it so that the http-01 challenge runs" in out, out
            log = pebble.log_since(mark)
            assert pebble.orders(since=mark) == 2, log
            assert "Attempting to validate w/ HTTP" in log, log
    finally:
        pebble.close()
