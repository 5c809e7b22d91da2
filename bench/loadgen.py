"""HTTP load: a one-request probe, and wrk runs parsed into numbers."""

import http.client
import json
import os
import shutil
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


def probe(port, request, timeout=20.0):
    """Send one request until the server answers it; return (status, headers, body).

    A server can accept connections before its workers are ready (the
    listener is bound first), so retry until the deadline.
    """
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            headers = {"Content-Type": "application/json"} if request.body else {}
            conn.request(request.method, request.path, body=request.body or None, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
        except (OSError, http.client.HTTPException) as exc:
            last = exc
            time.sleep(0.2)
        finally:
            conn.close()
    raise ProbeError(f"no answer to {request.method} {request.path}: {last}")


def wrk_path():
    return shutil.which("wrk")


def wrk_command(port, request, duration, connections, threads):
    # wrk takes whole seconds only.
    seconds = max(1, round(duration))
    return ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency",
            "-s", WRK_SCRIPT, f"http://127.0.0.1:{port}{request.path}"]


def run_wrk(port, request, duration, connections=64, threads=1):
    """Run wrk once; return its numbers as a dict (latencies in microseconds)."""
    cmd = wrk_command(port, request, duration, connections, threads)
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
