"""Certificates and HTTPS clients for the TLS tests (tests/test_tls*.py).

Every certificate comes from a throwaway trustme CA; files are written where a
user would keep theirs, and the server is started with uvicorn's --ssl-* flags.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
from pathlib import Path
from types import SimpleNamespace

import trustme

from conftest import parse_response, read_response

HOST = "127.0.0.1"


def write_cert(cert: trustme.LeafCert, directory: Path, stem: str) -> SimpleNamespace:
    """Writes STEM.crt (leaf then intermediates), STEM.key and STEM.pem (both in one file)."""
    crt, key, both = directory / f"{stem}.crt", directory / f"{stem}.key", directory / f"{stem}.pem"
    chain = b"".join(p.bytes() for p in cert.cert_chain_pems)
    crt.write_bytes(chain)
    key.write_bytes(cert.private_key_pem.bytes())
    both.write_bytes(chain + cert.private_key_pem.bytes())
    return SimpleNamespace(crt=crt, key=key, pem=both, leaf_pem=cert.cert_chain_pems[0].bytes().decode(),
                           serial=serial_of(cert.cert_chain_pems[0].bytes()))


def serial_of(pem: bytes) -> int:
    from cryptography import x509
    return x509.load_pem_x509_certificate(pem).serial_number


def make_pki(directory: Path) -> SimpleNamespace:
    ca = trustme.CA()
    client_ca = trustme.CA()
    rogue_ca = trustme.CA()
    ca_file = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    client_ca_file = directory / "client-ca.pem"
    client_ca.cert_pem.write_to_path(str(client_ca_file))
    return SimpleNamespace(
        dir=directory, ca=ca, ca_file=ca_file, client_ca_file=client_ca_file,
        server=write_cert(ca.issue_cert("localhost", HOST), directory, "server"),
        # Same names, another key: for "key does not belong to the certificate" and reloads.
        other=write_cert(ca.issue_cert("localhost", HOST), directory, "other"),
        client=write_cert(client_ca.issue_cert("alice@example.com"), directory, "client"),
        rogue_client=write_cert(rogue_ca.issue_cert("mallory@example.com"), directory, "rogue"),
    )


def https_url(srv, path: str = "") -> str:
    return f"https://{HOST}:{srv.port}{path}"


def client_context(pki, client=None, version: str | None = None, ciphers: str | None = None) -> ssl.SSLContext:
    """A verifying client context trusting the test CA; `client` (a write_cert result) is presented if given."""
    ctx = ssl.create_default_context(cafile=str(pki.ca_file))
    if client is not None:
        ctx.load_cert_chain(str(client.crt), str(client.key))
    if version is not None:
        v = getattr(ssl.TLSVersion, version)
        ctx.minimum_version = ctx.maximum_version = v
    if ciphers is not None:
        ctx.set_ciphers(ciphers)
    return ctx


def tls_request(srv, ctx: ssl.SSLContext, path: str = "/hello", timeout: float = 10.0):
    """One GET over a fresh TLS connection. Returns (status, headers, body, info) where info has the
    negotiated version, cipher name and the server certificate's serial as the client saw them."""
    with socket.create_connection((HOST, srv.port), timeout=timeout) as raw:
        with ctx.wrap_socket(raw, server_hostname=HOST) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
            data = read_response(s)
            info = SimpleNamespace(version=s.version(), cipher=s.cipher()[0],
                                   serial=int(s.getpeercert()["serialNumber"], 16))
    status, headers, body = parse_response(data)
    return status, headers, body, info


def served_serial(srv, pki) -> int:
    return tls_request(srv, client_context(pki))[3].serial


def s_client(srv, *args: str, request: bytes | None = None, timeout: float = 15.0) -> str:
    """Runs `openssl s_client -connect 127.0.0.1:PORT ARGS`; returns stdout and stderr together.
    With `request`, sends it and reads the answer until the server closes (-ign_eof)."""
    argv = ["openssl", "s_client", "-connect", f"{HOST}:{srv.port}", "-servername", "localhost", *args]
    if request is not None:
        argv.append("-ign_eof")
    p = subprocess.run(argv, input=request or b"", capture_output=True, timeout=timeout)
    return (p.stdout + p.stderr).decode("utf-8", "replace")


def client_hello() -> bytes:
    """The bytes of a real TLS ClientHello (Python's default client) for 'localhost'."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()
