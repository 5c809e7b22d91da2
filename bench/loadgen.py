"""HTTP load: a one-request probe, wrk runs parsed into numbers, and TLS
handshake runs (parallel `openssl s_time`)."""

import http.client
import json
import os
import shutil
import ssl
import subprocess
import time
from dataclasses import dataclass

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
WRK_SCRIPT = os.path.join(BENCH_DIR, "wrk", "bench.lua")


@dataclass(frozen=True)
class Request:
    method: str = "GET"
    path: str = "/"
    body: str = ""


class ProbeError(Exception):
    pass


class LoadError(Exception):
    """wrk did not produce a result."""


def probe(port, request, timeout=20.0, ca=None):
    """Send one request until the server answers it; return (status, headers, body).

    A server can accept connections before its workers are ready (the
    listener is bound first), so retry until the deadline. With `ca` (the
    run's CA certificate) the request goes over HTTPS, and the server's
    certificate must verify against it for 127.0.0.1.
    """
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if ca:
            context = ssl.create_default_context(cafile=ca)
            conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            headers = {"Content-Type": "application/json"} if request.body else {}
            conn.request(request.method, request.path, body=request.body or None, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
        except ssl.SSLCertVerificationError:
            raise  # a wrong certificate will not fix itself
        except (OSError, http.client.HTTPException) as exc:
            last = exc
            time.sleep(0.2)
        finally:
            conn.close()
    raise ProbeError(f"no answer to {request.method} {request.path}: {last}")


def wrk_path():
    return shutil.which("wrk")


def wrk_command(port, request, duration, connections, threads, scheme="http"):
    # wrk takes whole seconds only.
    seconds = max(1, round(duration))
    return ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency",
            "-s", WRK_SCRIPT, f"{scheme}://127.0.0.1:{port}{request.path}"]


def run_wrk(port, request, duration, connections=64, threads=1, scheme="http"):
    """Run wrk once; return its numbers as a dict (latencies in microseconds).

    Over https wrk keeps its connections alive like over http (it does not
    verify the certificate). It is not used for handshake loads: on
    reconnecting it resumes the previous session, so it cannot make full
    handshakes (see run_handshakes).
    """
    cmd = wrk_command(port, request, duration, connections, threads, scheme)
    cmd[0] = wrk_path() or "wrk"
    env = dict(os.environ, BENCH_METHOD=request.method, BENCH_BODY=request.body)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True,
                          timeout=duration + 60)
    result = None
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            result = json.loads(line[len("BENCH_JSON "):])
    if proc.returncode != 0 or result is None:
        raise LoadError(f"wrk failed (exit {proc.returncode}): "
                           f"{proc.stderr.strip() or proc.stdout.strip()}")
    result["socket_errors"] = (result["connect_errors"] + result["read_errors"]
                               + result["write_errors"] + result["timeout_errors"])
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    # Keep wrk's own human-readable report (with --latency) for the record.
    result["wrk_output"] = "\n".join(l for l in proc.stdout.splitlines()
                                     if not l.startswith("BENCH_JSON "))
    return result


# ---------------------------------------------------------------------------
# TLS handshakes: new connections, one request each.
#
# `openssl s_time -new` makes a full handshake on every connection (a fresh
# SSL object each time, so no session to offer); `-reuse` makes one
# connection, then offers that connection's session (with TLS 1.3: the newest
# ticket) on every next one. Both send `GET PATH HTTP/1.0` and read the
# response until the server closes, so each connection is one request. For
# every connection s_time prints one character: `r` if the session was
# resumed, anything else (`*` for TLS 1.3) if it was a full handshake, which
# is how each run counts what really happened on the wire.
#
# One s_time makes one connection at a time, so `clients` of them run in
# parallel. (wrk and h2load with `Connection: close` were tried first: both
# resume the session on every reconnection, so they cannot make full
# handshakes.)

HANDSHAKE_CHARS = set("r*t23")


def s_time_path():
    return shutil.which("openssl")


def s_time_command(port, path, seconds, resume):
    return ["openssl", "s_time", "-connect", f"127.0.0.1:{port}",
            "-reuse" if resume else "-new", "-time", str(seconds), "-www", path]


def _count_handshakes(stdout):
    """(connections, resumed) from s_time's one-character-per-connection lines."""
    total = resumed = 0
    for line in stdout.splitlines():
        line = line.strip()
        if line and set(line) <= HANDSHAKE_CHARS:
            total += len(line)
            resumed += line.count("r")
    return total, resumed


def run_handshakes(port, path, duration, clients, resume):
    """Run `clients` s_time processes for `duration` s; return their totals.

    s_time stops at whole seconds of its own clock (time(NULL)), so one
    running "-time 2" may run 1.x to 2 s: the rate here is connections over
    the wall time from the first start to the last exit, which is the window
    the caller measures the server's CPU over.
    """
    seconds = max(1, round(duration))
    cmd = s_time_command(port, path, seconds, resume)
    cmd[0] = s_time_path() or "openssl"
    started = time.monotonic()
    procs = [subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for _ in range(clients)]
    total = resumed = failed = 0
    first_error = None
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=seconds + 60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        n, r = _count_handshakes(out)
        total += n
        resumed += r
        if proc.returncode != 0:
            failed += 1
            first_error = first_error or (err.strip() or out.strip())[-300:]
    wall = time.monotonic() - started
    if total == 0:
        raise LoadError(f"openssl s_time made no connection: {first_error or '(no output)'}")
    return {"handshakes": total, "resumed": resumed, "seconds": wall,
            "rate": total / wall, "failed_clients": failed, "first_error": first_error}
