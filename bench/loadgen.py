"""HTTP load: a one-request probe, wrk and h2load runs parsed into numbers,
and TLS handshake runs (parallel `openssl s_time`)."""

import contextlib
import http.client
import json
import math
import os
import re
import shutil
import ssl
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
WRK_SCRIPT = os.path.join(BENCH_DIR, "wrk", "bench.lua")


@dataclass(frozen=True)
class Request:
    method: str = "GET"
    path: str = "/"
    body: str = ""
    headers: tuple = ()  # extra request headers, (name, value) pairs: wrk -H, the probe


class ProbeError(Exception):
    pass


class LoadError(Exception):
    """The load generator (wrk, h2load, openssl s_time) did not produce a result."""


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
            headers = dict(request.headers)
            if request.body:
                headers["Content-Type"] = "application/json"
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


def curl_path():
    return shutil.which("curl")


def probe_h2(port, request, timeout=20.0, ca=None):
    """probe() over HTTP/2, with curl: h2c by prior knowledge, or ALPN h2 with `ca`.

    Returns (status, headers, body) like probe(). An answer over any other
    HTTP version is an error at once: the server does not speak HTTP/2 there.
    """
    scheme = "https" if ca else "http"
    cmd = [curl_path() or "curl", "--silent", "--show-error", "--noproxy", "*",
           "--max-time", "10", "--dump-header", "-", "--output", "-",
           "--write-out", "\n%{http_version}"]
    cmd += ["--http2", "--cacert", ca] if ca else ["--http2-prior-knowledge"]
    if request.method != "GET":
        cmd += ["--request", request.method]
    for name, value in request.headers:
        cmd += ["--header", f"{name}: {value}"]
    if request.body:
        cmd += ["--header", "Content-Type: application/json", "--data-binary", request.body]
    cmd.append(f"{scheme}://127.0.0.1:{port}{request.path}")
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        proc = subprocess.run(cmd, capture_output=True, timeout=30)
        if proc.returncode == 60:  # peer certificate cannot be authenticated
            raise ProbeError(f"curl: {proc.stderr.decode(errors='replace').strip()}")
        if proc.returncode == 0:
            head, _, rest = proc.stdout.partition(b"\r\n\r\n")
            body, _, version = rest.rpartition(b"\n")
            lines = head.decode("latin-1").split("\r\n")
            if version.strip() != b"2":
                raise ProbeError(f"{request.method} {request.path} was answered over "
                                 f"HTTP/{version.decode(errors='replace').strip()}, not HTTP/2")
            status = int(lines[0].split()[1])
            headers = {k.strip().lower(): v.strip()
                       for k, _, v in (line.partition(":") for line in lines[1:])}
            return status, headers, body
        last = proc.stderr.decode(errors="replace").strip()
        time.sleep(0.2)
    raise ProbeError(f"no HTTP/2 answer to {request.method} {request.path}: {last}")


# ---------------------------------------------------------------------------
# Big downloads: one curl at a time, the body to /dev/null.

DOWNLOAD_WRITE_OUT = "%{size_download} %{speed_download} %{http_code}"


def download_command(port, request, max_seconds=60):
    """curl for one download on its own connection. `Connection: close` so the
    server lets the connection (and whatever it holds) go at once, not after a
    keep-alive timeout, before the next download's memory is sampled."""
    return ["curl", "--silent", "--show-error", "--noproxy", "*", "--http1.1",
            "--max-time", str(max_seconds), "--header", "Connection: close",
            *[arg for name, value in request.headers for arg in ("--header", f"{name}: {value}")],
            "--output", "/dev/null", "--write-out", DOWNLOAD_WRITE_OUT,
            f"http://127.0.0.1:{port}{request.path}"]


def run_download(port, request, expected_bytes, max_seconds=60):
    """Download once; return {"bytes", "bytes_per_s", "status", "error"}.

    `error` is None for a complete 200 answer; otherwise it says what went
    wrong (curl failed, another status, a short or long body), and the
    caller counts the download as an error instead of a speed.
    """
    cmd = download_command(port, request, max_seconds)
    cmd[0] = curl_path() or "curl"
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max_seconds + 30)
    try:
        size, speed, status = proc.stdout.split()
        result = {"bytes": int(size), "bytes_per_s": float(speed), "status": int(status)}
    except ValueError:
        result = {"bytes": 0, "bytes_per_s": 0.0, "status": 0}
    error = None
    if proc.returncode != 0:
        error = f"curl exit {proc.returncode}: {proc.stderr.strip()[-300:]}"
    elif result["status"] != 200:
        error = f"status {result['status']}"
    elif result["bytes"] != expected_bytes:
        error = f"{result['bytes']:,} of {expected_bytes:,} bytes"
    result["error"] = error
    return result


def wrk_path():
    return shutil.which("wrk")


def wrk_command(port, request, duration, connections, threads, scheme="http"):
    # wrk takes whole seconds only.
    seconds = max(1, round(duration))
    headers = [arg for name, value in request.headers for arg in ("-H", f"{name}: {value}")]
    return ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", *headers,
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
# HTTP/2: h2load (nghttp2-client).
#
# h2load speaks h2c by prior knowledge to an http:// URL and offers ALPN
# h2 (then http/1.1) to an https:// one; it does not verify the certificate.
# One run does the warm-up (--warm-up-time) and then the measured duration
# (-D) on the same connections, and counts only the requests of the measured
# part; it prints a line when that part starts and when it ends, which is
# where the caller's measured window (server CPU) opens and closes.

H2LOAD_MAIN_STARTED = "Main benchmark duration is started"
H2LOAD_MAIN_OVER = "Main benchmark duration is over"
_H2LOAD_PATTERNS = {
    "rps": r"^finished in \S+, ([\d.]+) req/s",
    "counts": (r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
               r"(\d+) failed, (\d+) errored, (\d+) timeout"),
    "status": r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx",
    "protocol": r"^Application protocol: (\S+)",
}


def h2load_path():
    return shutil.which("h2load")


def _h2load_seconds(seconds):
    # h2load takes a number with a unit; milliseconds keep fractions (--quick's 0.5 s...).
    return f"{seconds:g}s" if seconds == int(seconds) else f"{round(seconds * 1000)}ms"


def h2load_command(port, request, duration, warmup, connections, streams, threads,
                   scheme="http", log_file=None, data_file=None):
    cmd = ["h2load", f"-t{threads}", f"-c{connections}", f"-m{streams}",
           "-D", _h2load_seconds(duration)]
    if warmup > 0:
        cmd += ["--warm-up-time", _h2load_seconds(warmup)]
    if log_file:
        cmd += ["--log-file", log_file]
    if request.method not in ("GET", "POST") or (request.method == "POST") != bool(request.body):
        raise ValueError(f"h2load sends GET, or POST with a body (-d): not {request.method}")
    if request.body:
        cmd += ["-d", data_file or "BODY_FILE", "-H", "content-type: application/json"]
    for name, value in request.headers:
        cmd += ["-H", f"{name.lower()}: {value}"]
    return cmd + [f"{scheme}://127.0.0.1:{port}{request.path}"]


def parse_h2load(output):
    """h2load's summary as numbers; LoadError unless it spoke HTTP/2 and completed requests.

    h2load's counters: `succeeded` = responses with a status below 400,
    `failed` = `errored` (streams or connections that failed: reset, closed,
    timed out, never issued) + responses with a status of 400 or more; its
    req/s is every completed response over the measured duration.
    """
    found = {}
    for name, pattern in _H2LOAD_PATTERNS.items():
        m = re.search(pattern, output, re.MULTILINE)
        if not m:
            raise LoadError(f"h2load printed no {name!r} line:\n{output[-1500:]}")
        found[name] = m.groups()
    protocol = found["protocol"][0]
    if protocol not in ("h2", "h2c"):
        # Over TLS the server chose another ALPN protocol (http/1.1): no HTTP/2 row.
        raise LoadError(f"h2load negotiated {protocol!r}, not HTTP/2 (h2)")
    _total, _started, _done, succeeded, failed, errored, timeout = map(int, found["counts"])
    s2xx, s3xx, s4xx, s5xx = map(int, found["status"])
    responses = succeeded + failed - errored
    if responses == 0:
        # E.g. an h2c request answered in HTTP/1.1: every stream fails.
        raise LoadError(f"h2load completed no request ({errored} errored):\n{output[-1500:]}")
    return {
        "protocol": protocol,
        "rps": float(found["rps"][0]),
        "requests": responses,
        "succeeded": succeeded,
        "failed": failed,
        "errored": errored,
        "timeout": timeout,
        "status_2xx": s2xx,
        # Every response that is not 2xx is an error here. (A response whose
        # headers arrived in the warm-up and its end in the measured part is
        # counted as a response but in no status class: not an error.)
        "status_errors": s3xx + s4xx + s5xx,
        # Streams or connections that failed (timeouts are among them).
        "socket_errors": errored,
    }


def _percentile(ordered, pct):
    """Nearest-rank percentile of an ascending list."""
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def _h2load_latencies(log_file):
    """p50/p90/p99/max (µs) from h2load's --log-file (start, status, µs to the response's end).

    h2load logs the requests of the measured duration only; failed ones
    (status -1) are left out, as wrk's latencies cover completed requests.
    """
    values = []
    with open(log_file) as f:
        for line in f:
            parts = line.split("\t")
            if len(parts) == 3 and parts[1] != "-1":
                values.append(int(parts[2]))
    if not values:
        return {"p50_us": None, "p90_us": None, "p99_us": None, "max_us": None}
    values.sort()
    return {"p50_us": _percentile(values, 50), "p90_us": _percentile(values, 90),
            "p99_us": _percentile(values, 99), "max_us": values[-1]}


def run_h2load(port, request, duration, warmup, connections=64, streams=10, threads=1,
               scheme="http", measured=None):
    """Run h2load once (warm-up, then the measured duration); return its numbers.

    `measured(pid)`, if given, returns a context manager that is entered when
    h2load starts its measured duration and left when that ends (pid: h2load's,
    so the caller can tell the load generator's CPU from the rest).
    """
    with tempfile.TemporaryDirectory(prefix="bench-h2load-") as tmp:
        log_file = os.path.join(tmp, "requests.tsv")
        data_file = os.path.join(tmp, "body")
        with open(data_file, "w") as f:
            f.write(request.body)
        cmd = h2load_command(port, request, duration, warmup, connections, streams, threads,
                             scheme, log_file, data_file)
        cmd[0] = h2load_path() or "h2load"
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        watchdog = threading.Timer(warmup + duration + 60, proc.kill)
        watchdog.start()
        lines = []
        try:
            with contextlib.ExitStack() as window:
                if measured and warmup <= 0:
                    window.enter_context(measured(proc.pid))  # no warm-up: measured from the start
                for line in proc.stdout:
                    line = line.rstrip("\n")
                    if not line.startswith("progress: "):
                        lines.append(line)
                    if measured and warmup > 0 and line.startswith(H2LOAD_MAIN_STARTED):
                        window.enter_context(measured(proc.pid))
                    elif line.startswith(H2LOAD_MAIN_OVER):
                        window.close()
            proc.wait()
        finally:
            watchdog.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        output = "\n".join(lines)
        if proc.returncode != 0:
            raise LoadError(f"h2load failed (exit {proc.returncode}): {output[-1500:]}")
        result = parse_h2load(output)
        result.update(_h2load_latencies(log_file))
    result["h2load_output"] = output
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
