"""One measurement: start a server, load it, read its CPU and memory, stop it.

Each function returns a sample dict. `status` is "ok", "failed" (the server
did not start or answer; `error` says why) or "n/a" (the server does not
support the workload, e.g. no WebSocket).
"""

import contextlib
import gzip
import json
import zlib
import os
import resource
import select
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

import loadgen
import proctree
from servers import ServerStartError

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
CLIENTS_DIR = os.path.join(BENCH_DIR, "clients")
MIB = 1024 * 1024


@dataclass
class Settings:
    duration: float = 8.0      # measured seconds per run
    warmup: float = 2.0        # unmeasured load before each run
    connections: int = 64      # wrk -c, h2load -c
    threads: int = 1           # wrk -t, h2load -t
    h2_streams: int = 10       # h2load -m: concurrent streams per HTTP/2 connection
    idle_connections: int = 5000
    ws_connections: int = 16
    ws_message_size: int = 32
    tls_clients: int = 4       # parallel openssl s_time processes (handshake workloads)
    ca: str | None = None      # the run's throwaway CA (HTTPS workloads verify against it)
    python: str = sys.executable  # runs the Python load clients


class MeasureError(Exception):
    pass


def own_and_children_cpu():
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        r = resource.getrusage(who)
        total += r.ru_utime + r.ru_stime
    return total


class Window:
    """The measured window: the server tree's CPU, and what else ran.

    `other_cpu_pct` is the machine's busy time minus the server's, the load
    generator's and the harness's own, in percent of one core: anything well
    above a few percent means another program competed for the cores and the
    sample is noisy. A load generator that exits inside the window (wrk) is
    in the harness's children's time; one still running when the window
    closes (h2load: the window is its measured part) is read from /proc
    through `load_pids`.
    """

    def __init__(self, pids, load_pids=()):
        self.pids = pids
        self.load_pids = list(load_pids)

    def __enter__(self):
        self.wall0 = time.monotonic()
        self.busy0 = proctree.machine_busy_seconds()
        self.ours0 = own_and_children_cpu()
        self.tree0 = proctree.CpuSnapshot(self.pids)
        self.load0 = proctree.CpuSnapshot(self.load_pids)
        return self

    def __exit__(self, *exc):
        user, kernel = proctree.CpuSnapshot(self.pids).split_since(self.tree0)
        self.server_cpu, self.server_kernel_cpu = user + kernel, kernel
        load = proctree.CpuSnapshot(self.load_pids).seconds_since(self.load0)
        ours = own_and_children_cpu() - self.ours0
        busy = proctree.machine_busy_seconds() - self.busy0
        self.wall = time.monotonic() - self.wall0
        self.other_cpu_pct = max(0.0, busy - self.server_cpu - load - ours) / self.wall * 100


def measure(server, workload, plan, settings):
    """Run one measurement; never raises for a server's own failure."""
    base = {"server": server.name, "workload": workload.key}
    why = server.unsupported(plan)
    if why:
        return dict(base, status="n/a", error=why)
    try:
        running = server.start(plan)
    except ServerStartError as exc:
        return dict(base, status="failed", error=f"server did not start: {exc}")
    try:
        kind = {"http": _http, "idle": _idle, "ws": _ws, "handshake": _handshake,
                "download": _download}[workload.kind]
        result = kind(running, workload, settings)
        why = running.dead()
        if why:
            raise MeasureError(f"server died during the run: {why}\n{running.stderr_tail()}")
        return dict(base, **result)
    except (MeasureError, loadgen.ProbeError, loadgen.LoadError) as exc:
        return dict(base, status="failed", error=f"{exc}\n{running.stderr_tail(10)}")
    finally:
        running.stop()


def _check_probe(running, request, ca=None, http2=False):
    """One request must answer 200; returns its headers and body."""
    status, headers, body = (loadgen.probe_h2 if http2 else loadgen.probe)(running.port, request,
                                                                            ca=ca)
    if status != 200:
        raise MeasureError(f"{request.method} {request.path} answered {status}: {body[:200]!r}")
    return headers, body


# A compressed row must read at most this share of the identity body per
# response from wrk's byte count (the documents compress about 6x).
MAX_COMPRESSED_SHARE = 0.5


def _check_encoding(request, headers, body, encoding):
    """The probe's answer is really `encoding` (gzip) and decodes: so a row can never
    measure uncompressed responses without failing. Returns (encoded, identity) sizes."""
    got = headers.get("content-encoding", "")
    if got.lower() != encoding:
        raise MeasureError(
            f"{request.method} {request.path} with Accept-Encoding: {encoding} came back with "
            f"Content-Encoding: {got or '(none)'}, {len(body)} bytes: the server did not "
            f"compress it")
    try:
        identity = gzip.decompress(body)
    except (OSError, EOFError, zlib.error) as exc:
        raise MeasureError(f"{request.method} {request.path}: the {encoding} body does not "
                           f"decode: {exc}") from None
    if len(body) > len(identity) * MAX_COMPRESSED_SHARE:
        raise MeasureError(f"{request.method} {request.path}: {len(body)} {encoding} bytes for "
                           f"a {len(identity)}-byte body: not really compressed")
    return len(body), len(identity)


def _check_load_encoded(r, sizes):
    """Over the whole wrk run, too: the bytes read per response (headers included) must be
    those of compressed responses, not of the identity body."""
    _encoded, identity = sizes
    per_response = r["bytes"] / max(r["requests"], 1)
    if per_response > identity * MAX_COMPRESSED_SHARE:
        raise MeasureError(f"wrk read {per_response:,.0f} bytes per response for a "
                           f"{identity:,}-byte body: responses were not compressed")
    return per_response


def _wrk(running, workload, settings, scheme):
    """wrk: a warm-up run, then the measured run inside the window."""
    if settings.warmup > 0:
        loadgen.run_wrk(running.port, workload.request, settings.warmup,
                        settings.connections, settings.threads, scheme)
    pids = running.root_pids
    with Window(pids) as window, proctree.RssSampler(pids) as rss:
        r = loadgen.run_wrk(running.port, workload.request, settings.duration,
                            settings.connections, settings.threads, scheme)
    return r, window, rss


def _h2load(running, workload, settings, scheme):
    """h2load: one run; the window covers its measured duration, not its warm-up."""
    pids = running.root_pids
    held = {}

    @contextlib.contextmanager
    def measured(load_pid):
        with Window(pids, [load_pid]) as window, proctree.RssSampler(pids) as rss:
            held.update(window=window, rss=rss)
            yield

    r = loadgen.run_h2load(running.port, workload.request, settings.duration, settings.warmup,
                           settings.connections, settings.h2_streams, settings.threads, scheme,
                           measured=measured)
    if "window" not in held:
        raise MeasureError(f"h2load never started its measured duration:\n{r['h2load_output']}")
    return r, held["window"], held["rss"]


def _http(running, workload, settings):
    ca = settings.ca if workload.tls else None
    scheme = "https" if workload.tls else "http"
    if workload.encoding and workload.http2:
        raise MeasureError("compressed workloads are checked on wrk's byte count: HTTP/1.1 only")
    headers, body = _check_probe(running, workload.request, ca, http2=workload.http2)
    sizes = (_check_encoding(workload.request, headers, body, workload.encoding)
             if workload.encoding else None)
    load = _h2load if workload.http2 else _wrk
    r, window, rss = load(running, workload, settings, scheme)
    per_response = _check_load_encoded(r, sizes) if sizes else None
    cpu = window.server_cpu
    served = r["requests"]
    sample = {
        "status": "ok",
        "rps": r["rps"],
        "p50_ms": r["p50_us"] / 1000 if r["p50_us"] is not None else None,
        "p99_ms": r["p99_us"] / 1000 if r["p99_us"] is not None else None,
        "cpu_us_per_req": cpu * 1e6 / served if served else None,
        "kernel_us_per_req": window.server_kernel_cpu * 1e6 / served if served else None,
        "cpu_seconds": cpu,
        "requests": served,
        "peak_rss_mib": rss.peak / MIB,
        "socket_errors": r["socket_errors"],
        "non2xx": r["status_errors"],
        "errors": r["socket_errors"] + r["status_errors"],
        "other_cpu_pct": window.other_cpu_pct,
        # How the app sent a static file (pathsend/bytes), or None if the
        # server answered /static/ itself.
        "sent_via": headers.get("x-bench-sent"),
    }
    if sizes:
        # Compressed rows: the probe's body, encoded and decoded, and what wrk
        # read per response (headers included) over the measured run.
        sample.update(encoded_bytes=sizes[0], identity_bytes=sizes[1],
                      bytes_per_response=per_response)
    if workload.http2:
        sample.update(protocol=r["protocol"], window_s=window.wall,
                      h2load_output=r["h2load_output"])
    else:
        sample["wrk_output"] = r["wrk_output"]
    return sample


def _handshake(running, workload, settings):
    """New TLS connections, one request each: handshakes/s and CPU per handshake."""
    _check_probe(running, workload.request, settings.ca)
    path = workload.request.path
    if settings.warmup > 0:
        loadgen.run_handshakes(running.port, path, settings.warmup, settings.tls_clients,
                               workload.resume)
    pids = running.root_pids
    with Window(pids) as window, proctree.RssSampler(pids) as rss:
        r = loadgen.run_handshakes(running.port, path, settings.duration, settings.tls_clients,
                                   workload.resume)
    cpu = window.server_cpu
    n = r["handshakes"]
    resumed_pct = r["resumed"] * 100 / n
    if not workload.resume and r["resumed"]:
        # s_time -new offers no session: this would be a client bug.
        raise MeasureError(f"{r['resumed']} of {n} connections resumed a session in a "
                           "full-handshake run")
    return {
        "status": "ok",
        "rps": r["rate"],
        "cpu_us_per_req": cpu * 1e6 / n,
        "handshakes_per_cpu_s": n / cpu if cpu else None,
        "cpu_seconds": cpu,
        "requests": n,
        "resumed": r["resumed"],
        # For the resumed workloads, the share of connections that really
        # resumed: well under 100 % means the server lost the session (e.g.
        # per-process ticket keys and another worker took the connection).
        "resumed_pct": resumed_pct,
        "peak_rss_mib": rss.peak / MIB,
        "errors": r["failed_clients"],
        "first_error": r["first_error"],
        "clients": settings.tls_clients,
        "other_cpu_pct": window.other_cpu_pct,
    }


def _rss_now(pids, samples=3, gap=0.2):
    values = []
    for i in range(samples):
        if i:
            time.sleep(gap)
        values.append(proctree.tree_rss(pids))
    return statistics.median(values)


def _read_tagged_line(proc, tag, timeout):
    """Read the client's stdout until a line starting with `tag`."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise MeasureError(f"client gave no {tag} line in {timeout:.0f}s")
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if not ready:
            continue
        line = proc.stdout.readline()
        if not line:
            err = proc.stderr.read() if proc.stderr else ""
            raise MeasureError(f"client exited (code {proc.wait()}) before {tag}: {err.strip()[-500:]}")
        if line.startswith(tag + " "):
            return json.loads(line[len(tag) + 1:])


def _idle(running, workload, settings):
    _check_probe(running, workload.request)
    pids = running.root_pids
    time.sleep(1.0)  # let start-up allocations settle
    before = _rss_now(pids)
    count = settings.idle_connections
    client = subprocess.Popen(
        [settings.python, os.path.join(CLIENTS_DIR, "idle_conns.py"),
         "--port", str(running.port), "--path", workload.request.path, "--count", str(count),
         "--deadline", str(15 + count // 100)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready = _read_tagged_line(client, "READY", timeout=180)
        time.sleep(1.0)  # let the server finish its per-connection bookkeeping
        after = _rss_now(pids)
        client.stdin.write("go\n")
        client.stdin.flush()
        done = _read_tagged_line(client, "DONE", timeout=60)
    finally:
        if client.poll() is None:
            try:
                client.wait(30)
            except subprocess.TimeoutExpired:
                client.kill()
                client.wait()
    held = ready["established"]
    if held == 0:
        raise MeasureError(f"no connection established: {ready.get('first_error')}")
    return {
        "status": "ok",
        "connections": held,
        "failed_connections": ready["failed"],
        "closed_by_server": held - done["still_open"],
        "connect_seconds": ready["seconds"],
        "rss_before_mib": before / MIB,
        "rss_after_mib": after / MIB,
        "peak_rss_mib": after / MIB,
        "kib_per_conn": (after - before) / held / 1024,
        "errors": ready["failed"] + (held - done["still_open"]),
    }


# The download workload: at least this many downloads per run, however long
# they take, and no new one started after this many seconds (so a slow
# server costs at most about this, not --duration x downloads).
MIN_DOWNLOADS = 3
DOWNLOAD_BUDGET_S = 25.0
# The peak RSS sampler's period there: a fast server sends 100 MiB in well
# under 0.2 s (the other workloads' period), and a buffer it holds only for
# one download would fall between two samples.
DOWNLOAD_RSS_INTERVAL = 0.05
# The probe: a small file through the same route as the big one (same
# server mount or app code path), so the server is ready and we learn how
# the app sent it, without reading 100 MiB in the harness.
DOWNLOAD_PROBE = loadgen.Request("GET", "/static/10k.bin")


def _downloads(running, workload, settings):
    """Download the file one after another for the run's duration; a list of results."""
    results = []
    started = time.monotonic()
    while True:
        elapsed = time.monotonic() - started
        if len(results) >= MIN_DOWNLOADS and elapsed >= settings.duration:
            break
        if elapsed >= DOWNLOAD_BUDGET_S:
            break
        results.append(loadgen.run_download(running.port, workload.request,
                                            workload.download_bytes,
                                            max_seconds=max(5, DOWNLOAD_BUDGET_S - elapsed)))
    return results


def _download(running, workload, settings):
    """One big file, one download at a time: MiB/s, CPU per download, and whether the
    server's memory grows while it sends the file."""
    headers, _body = _check_probe(running, DOWNLOAD_PROBE)
    pids = running.root_pids
    time.sleep(1.0)  # let start-up allocations settle, as for the idle workload
    before = _rss_now(pids)
    with Window(pids) as window, proctree.RssSampler(pids, DOWNLOAD_RSS_INTERVAL) as rss:
        results = _downloads(running, workload, settings)
    good = [r for r in results if r["error"] is None]
    errors = [r["error"] for r in results if r["error"] is not None]
    if not good:
        raise MeasureError(f"no complete download in {len(results)}: {errors[0]}")
    speeds = [r["bytes_per_s"] / MIB for r in good]
    cpu = window.server_cpu
    return {
        "status": "ok",
        "mib_per_s": statistics.median(speeds),
        "mib_per_s_downloads": [round(v, 1) for v in speeds],
        "cpu_ms_per_download": cpu * 1e3 / len(results),
        "cpu_seconds": cpu,
        "downloads": len(results),
        "rss_before_mib": before / MIB,
        "peak_rss_mib": rss.peak / MIB,
        "rss_growth_mib": (rss.peak - before) / MIB,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "other_cpu_pct": window.other_cpu_pct,
        "sent_via": headers.get("x-bench-sent"),
    }


def _run_ws_client(running, settings, duration):
    cmd = [settings.python, os.path.join(CLIENTS_DIR, "ws_echo_client.py"),
           "--url", f"ws://127.0.0.1:{running.port}/",
           "--connections", str(settings.ws_connections),
           "--duration", str(duration), "--size", str(settings.ws_message_size)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):]), None
        if line.startswith("ERROR "):
            return None, json.loads(line[len("ERROR "):])["error"]
    return None, f"client exited {proc.returncode}: {proc.stderr.strip()[-500:]}"


def _ws(running, workload, settings):
    _check_probe(running, workload.request)
    # The warm-up doubles as the support check: a server without WebSocket
    # support refuses the upgrade here, which is "n/a", not a failure.
    result, error = _run_ws_client(running, settings, max(settings.warmup, 0.5))
    if result is None:
        return {"status": "n/a", "error": f"WebSocket not available: {error}"}
    pids = running.root_pids
    with Window(pids) as window, proctree.RssSampler(pids) as rss:
        result, error = _run_ws_client(running, settings, settings.duration)
    cpu = window.server_cpu
    if result is None:
        raise MeasureError(f"WebSocket run failed after a good warm-up: {error}")
    messages = result["messages"]
    return {
        "status": "ok",
        "rps": messages / result["seconds"],
        "p50_ms": result["p50_us"] / 1000,
        "p99_ms": result["p99_us"] / 1000,
        "cpu_us_per_req": cpu * 1e6 / messages,
        "kernel_us_per_req": window.server_kernel_cpu * 1e6 / messages,
        "cpu_seconds": cpu,
        "requests": messages,
        "peak_rss_mib": rss.peak / MIB,
        "errors": result["errors"],
        "other_cpu_pct": window.other_cpu_pct,
        "first_error": result.get("first_error"),
    }
