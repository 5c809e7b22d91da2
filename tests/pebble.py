"""A real ACME CA for the tests: Debian's pebble (Let's Encrypt's test CA).

Used two ways:
- as the session fixture `pebble` (registered in conftest.py), for tests that run
  ferrogate against it;
- as a command that runs another command with a pebble up, for the Rust test that
  drives src/tls/acme directly:

      python tests/pebble.py cargo test --test acme_pebble

  The child gets FERROGATE_PEBBLE_DIRECTORY, _CA_ROOT, _HTTP_PORT, _TLS_PORT and
  _MGMT (the management URL) and _LOG (pebble's log, to count orders).

Pebble validates challenges by connecting to 127.0.0.1 (pebble-challtestsrv answers
every DNS name with it) on `http_port` (HTTP-01) and `tls_port` (TLS-ALPN-01): the
server under test listens there. Pebble's own HTTPS uses a throwaway CA made with
trustme (Debian ships no certificate for it); `ca_root` is that CA's PEM.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest


def free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1 (the DNS helper uses both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                try:
                    u.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port")


def installed() -> bool:
    return bool(shutil.which("pebble") and shutil.which("pebble-challtestsrv"))


class Pebble:
    def __init__(self, workdir: Path, env: dict | None = None):
        import trustme

        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA()
        cert = ca.issue_cert("localhost", "127.0.0.1")
        self.ca_root = self.workdir / "pebble-ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_root))
        cert_path, key_path = self.workdir / "pebble-cert.pem", self.workdir / "pebble-key.pem"
        cert.private_key_pem.write_to_path(str(key_path))
        with open(cert_path, "wb") as f:
            for blob in cert.cert_chain_pems:
                f.write(blob.bytes())

        self.port, self.mgmt_port = free_port(), free_port()
        self.http_port, self.tls_port = free_port(), free_port()
        self.dns_port, self.dns_mgmt_port = free_port(), free_port()
        self.config = self.workdir / "pebble-config.json"
        self.config.write_text(json.dumps({"pebble": {
            "listenAddress": f"127.0.0.1:{self.port}",
            "managementListenAddress": f"127.0.0.1:{self.mgmt_port}",
            "certificate": str(cert_path),
            "privateKey": str(key_path),
            "httpPort": self.http_port,
            "tlsPort": self.tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }}))
        self.log_path = self.workdir / "pebble.log"
        # No random validation sleeps, no rejected nonces, and as little reuse of a valid
        # authorization as pebble allows (its default reuses one half the time; at 0 it still
        # reuses one order in a hundred, as its check is `rand.Intn(100) > percent`).
        self.env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0", "PEBBLE_AUTHZREUSE": "0",
                    **(env or {})}
        self._ssl = ssl.create_default_context(cafile=str(self.ca_root))
        self._dns: subprocess.Popen | None = None
        self._proc: subprocess.Popen | None = None

    # ---- addresses ------------------------------------------------------
    @property
    def directory(self) -> str:
        return f"https://localhost:{self.port}/dir"

    @property
    def management(self) -> str:
        return f"https://localhost:{self.mgmt_port}"

    def get(self, url: str, timeout: float = 5.0) -> bytes:
        with urllib.request.urlopen(url, context=self._ssl, timeout=timeout) as r:
            return r.read()

    def directory_json(self) -> dict:
        return json.loads(self.get(self.directory))

    def roots_pem(self, with_intermediate: bool = False) -> str:
        """The root that signs issued certificates (new at every pebble start)."""
        pem = self.get(f"{self.management}/roots/0").decode()
        if with_intermediate:
            pem += self.get(f"{self.management}/intermediates/0").decode()
        return pem

    def orders(self, since: int = 0) -> int:
        """New orders placed since the fixture began (across restarts), or since `mark()`."""
        return len(re.findall(r"POST /order-plz", self.log_since(since)))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def mark(self) -> int:
        """A position in pebble's log, for `log_since` and `orders(since=...)`."""
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def log_since(self, mark: int) -> str:
        if not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as f:
            f.seek(mark)
            return f.read().decode("utf-8", "replace")

    # ---- lifecycle --------------------------------------------------------
    def _spawn(self, argv: list[str]) -> subprocess.Popen:
        log = open(self.log_path, "ab")
        try:
            return subprocess.Popen(argv, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()

    def start(self, timeout: float = 20.0) -> "Pebble":
        if self._dns is None or self._dns.poll() is not None:
            self._dns = self._spawn([
                "pebble-challtestsrv", "-dns01", f"127.0.0.1:{self.dns_port}", "-http01", "", "-https01", "",
                "-tlsalpn01", "", "-management", f"127.0.0.1:{self.dns_mgmt_port}",
                "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
            ])
        if self._proc is None or self._proc.poll() is not None:
            self._proc = self._spawn(["pebble", "-config", str(self.config), "-dnsserver", f"127.0.0.1:{self.dns_port}"])
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"pebble exited with {self._proc.returncode}\n--- log ---\n{self.log()}")
            try:
                if "newOrder" in self.directory_json():
                    return self
            except (OSError, ValueError) as e:
                last = e
            time.sleep(0.1)
        self.close()
        raise RuntimeError(f"pebble did not answer {self.directory} within {timeout}s ({last})\n--- log ---\n{self.log()}")

    def stop(self):
        """Stops the CA (not its DNS helper): the directory becomes unreachable."""
        _kill(self._proc)
        self._proc = None

    def close(self):
        self.stop()
        _kill(self._dns)
        self._dns = None

    def child_env(self) -> dict:
        return {
            "FERROGATE_PEBBLE_DIRECTORY": self.directory,
            "FERROGATE_PEBBLE_CA_ROOT": str(self.ca_root),
            "FERROGATE_PEBBLE_HTTP_PORT": str(self.http_port),
            "FERROGATE_PEBBLE_TLS_PORT": str(self.tls_port),
            "FERROGATE_PEBBLE_MGMT": self.management,
            "FERROGATE_PEBBLE_LOG": str(self.log_path),
        }


def _kill(proc: subprocess.Popen | None):
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@pytest.fixture(scope="session")
def pebble(tmp_path_factory):
    """A running pebble for the whole session (skips when pebble is not installed)."""
    if not installed():
        pytest.skip("pebble is not installed (apt-get install pebble)")
    p = Pebble(tmp_path_factory.mktemp("pebble")).start()
    try:
        yield p
    finally:
        p.close()


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    if not installed():
        print("pebble is not installed (apt-get install pebble)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="ferrogate-pebble-") as tmp:
        p = Pebble(Path(tmp)).start()
        try:
            rc = subprocess.call(argv, env=dict(os.environ, **p.child_env()))
            print(f"pebble: {p.orders()} orders placed; log {p.log_path}", file=sys.stderr)
            with contextlib.suppress(OSError):
                shutil.copy(p.log_path, Path(tempfile.gettempdir()) / "ferrogate-pebble-last.log")
            return rc
        finally:
            p.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
