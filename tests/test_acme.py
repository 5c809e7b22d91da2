"""Domain mode (automatic HTTPS, issue 9) against a real ACME CA: Debian's pebble.

Every test runs the real `ferrogate` command with --domain against the session's
pebble (tests/pebble.py). Pebble validates HTTP-01 on its `http_port` and
TLS-ALPN-01 on its `tls_port`, both on 127.0.0.1, and those ports are fixed for the
session: tests run one server at a time. Clients verify the served certificate
against pebble's root (`roots_pem()`, new at every pebble start), with SNI set to
the test domain while connecting to 127.0.0.1.

The renewal tests make a renewal due without waiting years: they move the dates in
the certificate's meta.json (the state directory's record of when it was issued and
expires) back, as if two thirds of its lifetime had passed; the master re-reads the
state directory every 10 s and renews. Helpers and the `domain_server` fixture are in
acme_support.py; the `ferrogate certs` tests in test_acme_certs.py.
"""

from __future__ import annotations

import re
import socket
import ssl
import stat
from pathlib import Path

import pytest

from acme_support import (DOMAIN, RENEWAL_TIMEOUT, ConnectionLoop, domain_server, got_line, http_get,  # noqa: F401
                          forget_accounts, https_get, make_renewal_due, read_meta, start_domain_server, stored_serial,
                          tls_context)
from conftest import free_port, wait_until


@pytest.fixture(scope="module")
def served(module_server_factory, pebble, tmp_path_factory):
    """For the tests that only look: one certificate, issued through pebble's ports by a
    first server, then served from the state directory by a second one on free ports
    (pebble's stay free for the other tests). `root` verifies it even after pebble restarts."""
    state = tmp_path_factory.mktemp("served") / "state"
    start_domain_server(module_server_factory, pebble, state).stop()
    srv = start_domain_server(module_server_factory, pebble, state, http_port=free_port(), https_port=free_port())
    srv.root = pebble.roots_pem()
    return srv


# --------------------------------------------------------------------------
# Issuance
# --------------------------------------------------------------------------

def test_http01_issuance_with_three_workers_places_exactly_one_order(domain_server, pebble):
    mark = pebble.mark()
    # HTTPS on a port pebble never connects to: only HTTP-01 can succeed.
    srv = domain_server(challenge="http-01", https_port=free_port())
    m = got_line(srv)
    reply = https_get(srv.https_port, pebble.roots_pem())
    assert reply.status == 200 and reply.body == b"Hello, world!\n"
    assert reply.serial == int(m.group(3), 16) == stored_serial(srv.state)
    assert int(m.group(1)) == srv.pid, "the master, not a worker, orders"
    assert srv.count(r"Ordering a certificate for ") == 1
    assert pebble.orders(since=mark) == 1, pebble.log_since(mark)
    assert "Attempting to validate w/ HTTP" in pebble.log_since(mark)


def test_tls_alpn01_issuance_with_three_workers_places_exactly_one_order(domain_server, pebble):
    mark = pebble.mark()
    # Plain HTTP on a port pebble never connects to: only TLS-ALPN-01 can succeed.
    srv = domain_server(challenge="tls-alpn-01", http_port=free_port())
    m = got_line(srv)
    reply = https_get(srv.https_port, pebble.roots_pem())
    assert reply.status == 200 and reply.serial == int(m.group(3), 16)
    assert int(m.group(1)) == srv.pid
    assert srv.count(r"Ordering a certificate for ") == 1
    assert pebble.orders(since=mark) == 1, pebble.log_since(mark)
    assert "Attempting to validate w/ HTTP" not in pebble.log_since(mark)  # (pebble 2.4 logs no TLS-ALPN line)


def test_auto_falls_back_to_tls_alpn01_in_a_new_order_when_http01_fails(domain_server, pebble):
    mark = pebble.mark()
    srv = domain_server(challenge="auto", http_port=free_port())
    got_line(srv)
    assert https_get(srv.https_port, pebble.roots_pem()).status == 200
    log = pebble.log_since(mark)
    assert pebble.orders(since=mark) == 2, log
    assert "Attempting to validate w/ HTTP" in log  # the first order tried HTTP-01 (and failed)


def test_served_chain_verifies_against_pebble_root_alone(served):
    """The server sends the intermediate: a client that trusts only the root verifies."""
    srv = served
    root = srv.root
    assert root.count("BEGIN CERTIFICATE") == 1
    with socket.create_connection(("127.0.0.1", srv.https_port), timeout=10) as raw:
        with tls_context(root).wrap_socket(raw, server_hostname=DOMAIN) as s:
            cert = s.getpeercert()
            assert s.version() in ("TLSv1.2", "TLSv1.3")
    assert ("DNS", DOMAIN) in cert["subjectAltName"]


# --------------------------------------------------------------------------
# Plain HTTP: redirect and challenges; HSTS
# --------------------------------------------------------------------------

@pytest.mark.parametrize("host", [DOMAIN, "{domain}:{http_port}"])
def test_plain_http_redirects_308_to_https_port_keeping_path_and_query(served, host):
    srv = served
    status, headers, _ = http_get(srv.http_port, "/a/b?x=1&y=%2F", host=host.format(domain=DOMAIN, http_port=srv.http_port))
    assert status == 308
    assert headers["location"] == f"https://{DOMAIN}:{srv.https_port}/a/b?x=1&y=%2F"
    assert "strict-transport-security" not in headers, "HSTS over plain HTTP is ignored by browsers (RFC 6797 7.2)"


def test_https_responses_carry_hsts(served):
    srv = served
    reply = https_get(srv.https_port, srv.root)
    assert reply.status == 200
    assert reply.headers.get("strict-transport-security") == "max-age=63072000"


def test_no_hsts_removes_the_header(domain_server, pebble):
    srv = domain_server("--no-hsts")
    reply = https_get(srv.https_port, pebble.roots_pem())
    assert reply.status == 200 and "strict-transport-security" not in reply.headers


def test_no_redirect_serves_the_app_over_plain_http_and_still_answers_http01(domain_server, pebble):
    srv = domain_server("--no-redirect", challenge="http-01")  # the certificate came through the plain listener
    status, _, body = http_get(srv.http_port, "/hello")
    assert (status, body) == (200, b"Hello, world!\n")


def test_challenge_path_answers_from_the_state_directory_and_404s_unknown_tokens(served):
    srv = served
    challenges = srv.state / "challenges" / "http-01"
    challenges.mkdir(parents=True, exist_ok=True, mode=0o700)
    token = "tok-EN_sq3cVFUOsh8xL1"
    (challenges / token).write_text(f"{token}.thumbprint")
    status, _, body = http_get(srv.http_port, f"/.well-known/acme-challenge/{token}")
    assert (status, body) == (200, f"{token}.thumbprint".encode())
    status, headers, _ = http_get(srv.http_port, "/.well-known/acme-challenge/no-such-token")
    assert status == 404 and "location" not in headers


@pytest.mark.parametrize("path", [
    "/.well-known/acme-challenge/..%2f..%2fcerts%2fapp.example.test%2fkey.pem",
    "/.well-known/acme-challenge/../../certs/app.example.test/key.pem",
    "/.well-known/acme-challenge/%2e%2e/%2e%2e/certs/app.example.test/key.pem",
])
def test_challenge_path_never_serves_files_outside_the_challenge_directory(served, path):
    srv = served
    status, _, body = http_get(srv.http_port, path)
    assert status != 200 and b"PRIVATE KEY" not in body, (status, body[:200])


def test_unknown_sni_gets_no_certificate(served):
    srv = served
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # any certificate at all would be accepted
    with socket.create_connection(("127.0.0.1", srv.https_port), timeout=10) as raw:
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            with ctx.wrap_socket(raw, server_hostname="other.example.test"):
                pass
    # That connection only: the served name still works.
    assert https_get(srv.https_port, srv.root).status == 200


# --------------------------------------------------------------------------
# State directory
# --------------------------------------------------------------------------

def test_restart_serves_the_stored_certificate_and_orders_nothing(domain_server, pebble):
    first = domain_server()
    root = pebble.roots_pem()
    serial = https_get(first.https_port, root).serial
    first.stop()
    mark = pebble.mark()
    second = domain_server(state=first.state)
    second.wait_for_log(rf"Serving the stored certificate for {re.escape(DOMAIN)} \(valid until ")
    assert https_get(second.https_port, root).serial == serial
    assert second.count(r"Ordering a certificate") == 0
    assert pebble.orders(since=mark) == 0, pebble.log_since(mark)


def test_private_keys_are_0600_and_directories_0700(served):
    srv = served
    state = srv.state

    def mode(p: Path) -> int:
        return stat.S_IMODE(p.stat().st_mode)

    key = state / "certs" / DOMAIN / "key.pem"
    assert mode(key) == 0o600 and "PRIVATE KEY" in key.read_text()
    accounts = list((state / "accounts").glob("*.json"))
    assert accounts and all(mode(a) == 0o600 for a in accounts)
    dirs = [state] + [p for p in state.rglob("*") if p.is_dir()]
    assert {state / "accounts", state / "certs", state / "certs" / DOMAIN} <= set(dirs)
    assert {str(d.relative_to(state)): oct(mode(d)) for d in dirs if mode(d) != 0o700} == {}
    assert (state / "lock").exists() and (state / "certs" / DOMAIN / "cert.pem").exists()


# --------------------------------------------------------------------------
# Failures and renewal
# --------------------------------------------------------------------------

def test_failed_challenge_logs_the_domain_ca_detail_and_fix_and_keeps_serving_http(domain_server, pebble):
    # HTTP-01 only, listening where pebble never connects: the CA's validation really fails.
    srv = domain_server(challenge="http-01", http_port=free_port(), https_port=free_port(), wait_cert=False)
    line = srv.wait_for_log(rf"\[ERROR\] Could not get a certificate for {re.escape(DOMAIN)}: (.*)$", timeout=30)[0].group(1)
    assert "http-01" in line, line
    assert re.search(r"(?i)connection refused|connect", line), f"the CA's own detail is missing: {line}"
    assert "port 80 must be reachable" in line, line
    assert line.endswith("HTTP keeps being served; next attempt in 60 s"), line
    assert srv.alive()
    status, headers, _ = http_get(srv.http_port, "/still/here?q=1")
    assert status == 308 and headers["location"] == f"https://{DOMAIN}:{srv.https_port}/still/here?q=1"


def test_ca_down_during_renewal_keeps_the_old_certificate_and_names_the_directory(domain_server, pebble):
    srv = domain_server()
    root = pebble.roots_pem()  # the root changes when pebble restarts
    serial = https_get(srv.https_port, root).serial
    mark = srv.log_mark()
    pebble.stop()
    try:
        make_renewal_due(srv.state)
        line = srv.wait_for_log(rf"\[ERROR\] Could not get a certificate for {re.escape(DOMAIN)}: (.*)$",
                                since=mark, timeout=RENEWAL_TIMEOUT)[0].group(1)
        assert f"cannot reach the ACME directory {pebble.directory}" in line, line
        assert re.search(r"(?i)connection refused|connect", line), f"no error named: {line}"
        assert "the current certificate stays in use" in line, line
        assert srv.alive()
        reply = https_get(srv.https_port, root)
        assert reply.status == 200 and reply.serial == serial
        assert stored_serial(srv.state) == serial
    finally:
        pebble.start()


def test_due_renewal_is_served_hot_while_new_connections_keep_coming(domain_server, pebble):
    srv = domain_server()
    root = pebble.roots_pem()
    old = https_get(srv.https_port, root).serial
    workers = sorted(srv.worker_pids())
    mark, pebble_mark = srv.log_mark(), pebble.mark()
    loop = ConnectionLoop(srv.https_port, root)
    loop.start()
    try:
        wait_until(lambda: len(loop.serials) >= 5, 20, message="the connection loop got no answers")
        # A new account holds no validation pebble could reuse (it reuses one order in a
        # hundred even at PEBBLE_AUTHZREUSE=0): the workers must answer a real HTTP-01.
        forget_accounts(srv.state)
        make_renewal_due(srv.state)
        wait_until(lambda: any(s != old for s in loop.serials), RENEWAL_TIMEOUT,
                   message=lambda: f"the renewed certificate was never served; failures {loop.failures[:5]}\n{srv.log_tail()}")
        # Every worker ends up serving it: the last 30 connections all get the new serial.
        wait_until(lambda: len(loop.serials) > 30 and all(s != old for s in loop.serials[-30:]), 20,
                   message="some connections still got the old certificate")
    finally:
        loop.stop()
    new = loop.serials[-1]
    assert loop.failures == [], loop.failures[:10]
    assert new == stored_serial(srv.state) != old
    new_hex = read_meta(srv.state)["serial"]
    srv.wait_for_log(rf"Got a certificate for {re.escape(DOMAIN)} .*\(serial {new_hex},", since=mark)
    assert srv.alive() and sorted(srv.worker_pids()) == workers, "no process was restarted"
    assert srv.count(r"Booting worker", since=mark) == 0
    # The workers answered a real HTTP-01 validation meanwhile, for the new account.
    ca_log = "\n".join(line for line in pebble.log_since(pebble_mark).splitlines() if "nonce" not in line)
    assert pebble.orders(since=pebble_mark) == 1, ca_log
    assert "Attempting to validate w/ HTTP" in ca_log, ca_log
