"""Support for the domain-mode tests (test_acme.py, test_acme_certs.py): clients that
verify against pebble's root with SNI = the test domain while connecting to
127.0.0.1, a loop of new HTTPS connections, and the `domain_server` fixture that runs
`ferrogate basic:app --domain app.example.test` against the session's pebble.
"""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import stat
import threading
import time
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import APPS_DIR, FERROGATE, parse_response, read_response

DOMAIN = "app.example.test"
# The master looks at the state directory every 10 s; an order against pebble takes ~1.5 s.
RENEWAL_TIMEOUT = 40.0


# --------------------------------------------------------------------------
# Clients
# --------------------------------------------------------------------------

@dataclass
class Reply:
    status: int
    headers: dict
    body: bytes
    serial: int


def tls_context(root_pem: str) -> ssl.SSLContext:
    """Verifies the chain up to pebble's root and the name against the SNI."""
    return ssl.create_default_context(cadata=root_pem)


def https_get(port: int, root_pem: str, path: str = "/hello", sni: str = DOMAIN, timeout: float = 10.0) -> Reply:
    """One GET on a new TLS connection to 127.0.0.1:port; the certificate must verify."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
        with tls_context(root_pem).wrap_socket(raw, server_hostname=sni) as s:
            serial = int(s.getpeercert()["serialNumber"], 16)
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n".encode())
            status, headers, body = parse_response(read_response(s, read_until_close=False))
    return Reply(status, headers, body, serial)


def http_get(port: int, path: str, host: str = DOMAIN) -> tuple[int, dict, bytes]:
    """One GET over plain HTTP (raw bytes: the path goes out exactly as given)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        return parse_response(read_response(s, read_until_close=False))


def read_meta(state: Path) -> dict:
    """The stored certificate's meta.json: names, serial (hex), issuer, not_before/not_after (unix)."""
    return json.loads((state / "certs" / DOMAIN / "meta.json").read_text())


def stored_serial(state: Path) -> int:
    return int(read_meta(state)["serial"], 16)


def snapshot(state: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under the state directory (but the lock file): mode and contents."""
    return {str(p.relative_to(state)): (stat.S_IMODE(p.stat().st_mode), p.read_bytes())
            for p in sorted(state.rglob("*")) if p.is_file() and p.name != "lock"}


def forget_accounts(state: Path):
    """Removes the stored ACME accounts: the next order registers a new one."""
    for path in (state / "accounts").glob("*.json"):
        path.unlink()


def make_renewal_due(state: Path):
    """Rewrites meta.json as if the certificate were 60 days into a 90-day life: a third
    is left, so renewal is due now (30 days left: no expiry warning yet)."""
    path = state / "certs" / DOMAIN / "meta.json"
    meta = json.loads(path.read_text())
    now = int(time.time())
    meta["not_before"], meta["not_after"] = now - 60 * 86400, now + 30 * 86400
    tmp = path.with_name("meta.json.test-tmp")
    tmp.write_text(json.dumps(meta, indent=2))
    os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
    os.replace(tmp, path)


class ConnectionLoop(threading.Thread):
    """Opens new HTTPS connections one after another (a full handshake each), verifying
    every certificate, until stopped; records each serial served and every failure."""

    def __init__(self, port: int, root_pem: str):
        super().__init__(daemon=True)
        self.port, self.root_pem = port, root_pem
        self.serials: list[int] = []
        self.failures: list[str] = []
        self._halt = threading.Event()

    def run(self):
        while not self._halt.is_set():
            try:
                r = https_get(self.port, self.root_pem)
                if r.status != 200 or r.body != b"Hello, world!\n":
                    self.failures.append(f"status {r.status}, body {r.body[:100]!r}")
                self.serials.append(r.serial)
            except Exception as e:  # noqa: BLE001 - every failure counts
                self.failures.append(repr(e))

    def stop(self):
        self._halt.set()
        self.join(30)
        assert not self.is_alive(), "the connection loop hung"


# --------------------------------------------------------------------------
# The server under test
# --------------------------------------------------------------------------

def domain_options(pebble, state: Path, http_port: int | None = None, https_port: int | None = None,
                   challenge: str | None = None) -> list[str]:
    """The domain-mode options, the same for the server and for `ferrogate certs`."""
    options = ["--host", "127.0.0.1", "--domain", DOMAIN, "--acme-directory", pebble.directory,
               "--acme-ca-root", str(pebble.ca_root), "--acme-email", "ops@example.test",
               "--http-port", str(http_port or pebble.http_port), "--https-port", str(https_port or pebble.tls_port),
               "--state-dir", str(state)]
    if challenge:
        options += ["--acme-challenge", challenge]
    return options


def certs(options: list[str], *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Runs `ferrogate certs ARGS OPTIONS` to completion."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERROGATE_")}
    return subprocess.run([FERROGATE, "certs", *args, *options], cwd=str(APPS_DIR), env=env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def start_domain_server(factory, pebble, state: Path, *extra: str, challenge: str | None = None,
                        http_port: int | None = None, https_port: int | None = None, workers: int = 3,
                        wait_cert: bool = True):
    """Starts `ferrogate basic:app --domain app.example.test` against pebble with `factory`
    (conftest's ServerFactory).

    By default it listens on pebble's ports (any challenge can succeed) with 3 workers, and
    waits until a certificate is served (issued, or read from the state directory)."""
    http_port = http_port or pebble.http_port
    https_port = https_port or pebble.tls_port
    options = domain_options(pebble, state, http_port, https_port, challenge)
    argv = [FERROGATE, "basic:app", "--workers", str(workers), *options, *extra]
    srv = factory(None, argv=argv, workers=workers, port=http_port)
    srv.state, srv.http_port, srv.https_port, srv.options = state, http_port, https_port, options
    if wait_cert:
        m = srv.wait_for_log(rf"Got a certificate for {DOMAIN}|Serving the stored certificate for {DOMAIN}"
                             rf"|Could not get a certificate for {DOMAIN}.*", timeout=30)[0]
        if m.group(0).startswith("Could not"):
            pytest.fail(f"no certificate: {m.group(0)}\n--- log ---\n{srv.log_tail()}")
    return srv


@pytest.fixture
def domain_server(server_factory, pebble, tmp_path):
    """start_domain_server for one test; the state directory is the test's own unless given."""

    def start(*extra: str, state: Path | None = None, **kw):
        return start_domain_server(server_factory, pebble, Path(state or tmp_path / "state"), *extra, **kw)

    return start


def got_line(srv) -> re.Match:
    return srv.wait_for_log(rf"\[(\d+)\] \[INFO\] Got a certificate for {re.escape(DOMAIN)} from (.+?) in [\d.]+ s "
                            r"\(serial ([0-9a-f]+), valid until ([^)]+)\)")[0]
