"""A throwaway ECDSA P-256 CA and a server certificate for localhost/127.0.0.1.

Made once per run with the openssl command line (Debian's `openssl`, which
nginx's package pulls in), in a directory the caller deletes afterwards.
The CA signs the server certificate directly, so the server sends the leaf
alone (server.pem); clients trust ca.pem. The key is an unencrypted PKCS#8
PEM, which every server under test reads.
"""

import os
import shutil
import subprocess
from dataclasses import dataclass


@dataclass(frozen=True)
class Certs:
    ca: str        # CA certificate (PEM): what clients trust
    cert: str      # server certificate, PEM
    key: str       # server private key, PKCS#8 PEM


def openssl_path():
    return shutil.which("openssl")


def _run(*args, cwd):
    proc = subprocess.run([openssl_path() or "openssl", *args], cwd=cwd,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args[:2])} failed: {proc.stderr.strip()[-500:]}")


def make(directory, names=("localhost",), ips=("127.0.0.1",), days=7):
    """Write ca.pem, server.pem and server.key into directory; return their paths."""
    os.makedirs(directory, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
    _run("req", "-x509", *ec, "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
         "-days", str(days), "-subj", "/CN=ferrogate bench throwaway CA",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=directory)
    _run("req", *ec, "-nodes", "-keyout", "server.key", "-out", "server.csr",
         "-subj", f"/CN={names[0]}", cwd=directory)
    san = ",".join([f"DNS:{n}" for n in names] + [f"IP:{ip}" for ip in ips])
    with open(os.path.join(directory, "server.ext"), "w") as f:
        f.write(f"subjectAltName={san}\n"
                "basicConstraints=critical,CA:FALSE\n"
                "keyUsage=critical,digitalSignature\n"
                "extendedKeyUsage=serverAuth\n")
    _run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
         "-CAcreateserial", "-out", "server.pem", "-days", str(days),
         "-extfile", "server.ext", cwd=directory)
    # World-readable: nginx's worker and the servers read them.
    for name in ("ca.pem", "server.pem", "server.key"):
        os.chmod(os.path.join(directory, name), 0o644)
    os.chmod(directory, 0o755)
    return Certs(ca=os.path.join(directory, "ca.pem"), cert=os.path.join(directory, "server.pem"),
                 key=os.path.join(directory, "server.key"))
