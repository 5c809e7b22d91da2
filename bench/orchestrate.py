"""The measuring half of bench/run.py, run inside bench/.venv.

Order of work: floors (the apps alone), then for each workload R rounds, each
round running every server once in the same order (A B C D A B C D ...), then
medians, the report, the chart.
"""

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import chart
import loadgen
import machine
import measure
import nginx_conf
import proctree
import report
import servers
import setup_env
import tls_certs
import workloads

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
# A server that failed this many workloads in a row is skipped for the rest
# of the run, so a broken build costs a few start-up timeouts, not one per run.
GIVE_UP_AFTER = 2
# Above this much CPU (% of one core) used by other programs, wait before a
# measurement (see --quiet-wait).
QUIET_THRESHOLD_PCT = 20
QUIET_BUDGET_FACTOR = 5  # total wait per run <= 5 x --quiet-wait
GZIP_LEVEL = 5  # the gzip workloads' level: ferrogate balanced, nginx, GZipMiddleware


def say(msg):
    print(msg, flush=True)


def raise_fd_limit():
    # Servers inherit our limit: thousands of idle connections need it.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _floor(python, static_dir, seconds, extra):
    env = dict(os.environ, BENCH_STATIC_DIR=static_dir)
    proc = subprocess.run([python, os.path.join(BENCH_DIR, "floor.py"), "--seconds", str(seconds), *extra],
                          capture_output=True, text=True, env=env, timeout=300)
    if proc.returncode != 0:
        say(f"  floor {' '.join(extra)} failed: {(proc.stderr or proc.stdout).strip()[-300:]}")
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])["cpu_us_per_call"]


def compute_floors(chosen, static_dir, python, reps, seconds):
    """CPU µs per call of each workload's app with no server (median of reps)."""
    floors = {}
    for w in chosen:
        if not w.has_floor:
            continue
        r = w.request
        base = ["--app", w.app, "--kind", "ws" if w.kind == "ws" else "http",
                "--method", r.method, "--path", r.path, "--body", r.body]
        variants = {w.app_key: base}
        if w.static:
            variants = {f"{w.app_key}:bytes": base, f"{w.app_key}:pathsend": base + ["--pathsend"]}
        if w.encoding == "gzip":
            # Not an overhead floor, a reference: the app plus zlib at the level
            # every server uses here, in-process (results.md's floor table).
            variants[f"{w.app_key}+zlib{GZIP_LEVEL}"] = base + ["--gzip-level", str(GZIP_LEVEL)]
        for key, extra in variants.items():
            if key in floors:
                continue
            values = [v for v in (_floor(python, static_dir, seconds, extra) for _ in range(reps))
                      if v is not None]
            floors[key] = statistics.median(values) if values else None
            if floors[key] is not None:
                say(f"  floor {key}: {floors[key]:.2f} µs/call")
    return floors


def _others_busy_pct(interval=0.5):
    """% of one core used by processes other than ours, over `interval`."""
    busy0, ours0 = proctree.machine_busy_seconds(), measure.own_and_children_cpu()
    time.sleep(interval)
    busy = proctree.machine_busy_seconds() - busy0
    ours = measure.own_and_children_cpu() - ours0
    return max(0.0, busy - ours) / interval * 100


def wait_for_quiet(max_wait, threshold=QUIET_THRESHOLD_PCT):
    """Wait (at most max_wait s) until nothing else keeps a core busy.

    On a shared development machine a compiler run next door would
    otherwise land in the sample; the noise % column shows what remained.
    """
    if max_wait <= 0:
        return 0.0
    started = time.monotonic()
    announced = False
    while True:
        busy = _others_busy_pct()
        waited = time.monotonic() - started
        if busy < threshold or waited >= max_wait:
            return waited
        if not announced:
            say(f"  (machine busy: {busy:.0f}% of a core used by other programs; "
                f"waiting up to {max_wait:.0f} s)")
            announced = True
        time.sleep(1.0)


def _one_line(sample):
    if sample["status"] != "ok":
        first = (sample.get("error") or "").strip()
        return f"{sample['status'].upper()}: {first}"
    if "kib_per_conn" in sample:
        return (f"{sample['connections']} conns held, {sample['kib_per_conn']:.1f} KiB/conn, "
                f"{sample['closed_by_server']} closed by server")
    if "mib_per_s" in sample:
        return (f"{sample['mib_per_s']:,.0f} MiB/s  CPU {sample['cpu_ms_per_download']:.1f} ms/download  "
                f"RSS {sample['rss_before_mib']:.0f} -> peak {sample['peak_rss_mib']:.0f} MiB  "
                f"{sample['downloads']} downloads, errors {sample['errors']}")
    if "resumed_pct" in sample:
        return (f"{sample['rps']:,.0f} handshakes/s  CPU {sample['cpu_us_per_req']:.1f} µs/handshake  "
                f"resumed {sample['resumed_pct']:.0f}%  RSS {sample['peak_rss_mib']:.0f} MiB  "
                f"errors {sample['errors']}")
    return (f"{sample['rps']:,.0f}/s  CPU {sample['cpu_us_per_req']:.1f} µs  "
            f"p50 {sample['p50_ms']:.2f} ms  p99 {sample['p99_ms']:.2f} ms  "
            f"RSS {sample['peak_rss_mib']:.0f} MiB  errors {sample['errors']}")


EXAMPLE_TLS = ("TMP/certs/server.pem", "TMP/certs/server.key")


def _nginx_example(**options):
    """The classic stack's nginx.conf with placeholder paths, for the report."""
    return nginx_conf.render("TMP", "PORT", "TMP/gunicorn.sock", "TMP/www", **options)


def run(args):
    started = time.monotonic()
    ncpu = len(os.sched_getaffinity(0))
    fd_limit = raise_fd_limit()
    chosen = [workloads.BY_KEY[k] for k in args.workloads]
    if any(w.kind == "http" and not w.http2 for w in chosen) and not loadgen.wrk_path():
        say("wrk is not installed (apt-get install wrk): cannot run the HTTP workloads")
        return 2
    if any(w.http2 for w in chosen) and not (loadgen.h2load_path() and loadgen.curl_path()):
        say("h2load or curl is not installed (apt-get install nghttp2-client curl): "
            "cannot run the HTTP/2 workloads")
        return 2
    if any(w.kind == "download" for w in chosen) and not loadgen.curl_path():
        say("curl is not installed (apt-get install curl): cannot run the download workloads")
        return 2
    if any(w.tls for w in chosen) and not tls_certs.openssl_path():
        say("openssl is not installed (apt-get install openssl): cannot run the HTTPS workloads")
        return 2
    if fd_limit < args.idle_connections + 200 and any(w.kind == "idle" for w in chosen):
        args.idle_connections = max(100, fd_limit - 200)
        say(f"fd limit {fd_limit}: idle workload reduced to {args.idle_connections} connections")

    settings = measure.Settings(duration=args.duration, warmup=args.warmup,
                                connections=args.connections, h2_streams=args.h2_streams,
                                idle_connections=args.idle_connections, python=sys.executable,
                                tls_clients=args.tls_clients)
    candidates = servers.make(args.servers, setup_env.VENV_BIN)
    unavailable = {}
    build = setup_env.read_build_status()
    for s in candidates:
        why = s.available()
        if why:
            if s.name == "ferrogate" and build.get("reason"):
                why = f"{why}; last build: {build['reason']}"
            unavailable[s.name] = why
            say(f"{s.name}: unavailable — {why}")
    active = [s for s in candidates if s.name not in unavailable]

    scratch = tempfile.mkdtemp(prefix="bench-run-")
    samples, commands = [], {}
    try:
        static_dir = workloads.make_static_dir(scratch, chosen)
        certs = None
        if any(w.tls for w in chosen):
            # One throwaway ECDSA P-256 CA and localhost certificate per run.
            certs = tls_certs.make(os.path.join(scratch, "certs"))
            settings.ca = certs.ca
        say("App floors (no server):")
        floors = compute_floors(chosen, static_dir, sys.executable,
                                reps=1 if args.quick else 3, seconds=0.3 if args.quick else 0.7)
        total = len(chosen) * args.rounds * len(active)
        n = 0
        failed_workloads = {}  # server -> consecutive workloads it failed
        # Waiting for quiet is capped for the whole run too, so a long build
        # next door delays the run by minutes, not by a minute per sample.
        quiet_budget = args.quiet_wait * QUIET_BUDGET_FACTOR
        for w in chosen:
            plan = w.plan(static_dir, ncpu, settings.idle_connections, certs)
            say(f"\n== {w.key}: {w.title} — {plan.workers} worker(s)")
            failed_here = set()
            for rnd in range(1, args.rounds + 1):
                for s in active:
                    n += 1
                    if s.name in failed_here or failed_workloads.get(s.name, 0) >= GIVE_UP_AFTER:
                        # A server that failed here will fail again: don't
                        # spend a start-up timeout per round on it.
                        sample = {"server": s.name, "workload": w.key, "status": "failed",
                                  "error": "skipped after an earlier failure"}
                    else:
                        waited = wait_for_quiet(min(args.quiet_wait, quiet_budget))
                        quiet_budget -= waited
                        sample = measure.measure(s, w, plan, settings)
                        sample["waited_for_quiet_s"] = round(waited, 1)
                        if sample["status"] == "failed":
                            failed_here.add(s.name)
                    sample["round"] = rnd
                    samples.append(sample)
                    say(f"[{n}/{total}] r{rnd} {s.name:15s} {_one_line(sample)}")
            for s in active:
                failed_workloads[s.name] = failed_workloads.get(s.name, 0) + 1 if s.name in failed_here else 0
                # Report the static dir by a stable name, not this run's temp path.
                commands.setdefault(s.name, {})[w.key] = [
                    c.replace(static_dir, "TMP/www/static").replace(scratch + "/certs", "TMP/certs")
                    for c in s.describe(plan)]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    elapsed = time.monotonic() - started
    rows = report.summarize(samples, chosen, [s.name for s in active], floors)
    meta = {
        "command": os.environ.get("BENCH_COMMAND", "python bench/run.py"),
        "quick": args.quick,
        "rounds": args.rounds,
        "settings": {"duration": settings.duration, "warmup": settings.warmup,
                     "connections": settings.connections, "threads": settings.threads,
                     "h2_streams": settings.h2_streams,
                     "idle_connections": settings.idle_connections,
                     "ws_connections": settings.ws_connections,
                     "ws_message_size": settings.ws_message_size, "workers_all_cores": ncpu,
                     "tls_clients": settings.tls_clients,
                     "quiet_wait": args.quiet_wait, "quiet_threshold_pct": QUIET_THRESHOLD_PCT},
        "machine": machine.describe(setup_env.REPO_DIR, built_from=build.get("source")),
        # The classic stack's nginx.conf as the raw workload renders it ...
        "nginx_conf_example": _nginx_example(),
        # ... as the HTTPS workloads render it (1 worker) ...
        "nginx_tls_conf_example": (_nginx_example(tls=EXAMPLE_TLS)
                                   if any(w.tls for w in chosen) else None),
        # ... and as the HTTP/2 ones do, h2c and over TLS.
        "nginx_h2_conf_example": (_nginx_example(http2=True)
                                  if any(w.http2 and not w.tls for w in chosen) else None),
        "nginx_h2s_conf_example": (_nginx_example(http2=True, tls=EXAMPLE_TLS)
                                   if any(w.http2 and w.tls for w in chosen) else None),
        # ... and with gzip for the compressed workloads.
        "nginx_gzip_conf_example": (_nginx_example(compress=True)
                                    if any(w.encoding for w in chosen) else None),
        "ferrogate_build": build,
        "unavailable": unavailable,
        "commands": commands,
        "seconds": {"setup": float(os.environ.get("BENCH_SETUP_SECONDS", 0)),
                    "measure": round(elapsed, 1)},
    }
    os.makedirs(args.out, exist_ok=True)
    subtitle = f"{meta['machine']['cpu_model']}, {ncpu} cores, 1 worker unless 'allcores'"
    chart_name = _plot(rows, chosen, [s.name for s in active], args.out, subtitle)
    report.write(args.out, rows, samples, chosen, meta, floors, chart_name)
    say(f"\nWrote {os.path.relpath(args.out)}/results.md, results.json"
        f"{', ' + chart_name if chart_name else ''} "
        f"(setup {meta['seconds']['setup']:.0f} s, measuring {elapsed:.0f} s)")
    return _exit_code(samples, args.require, unavailable)


def _plot(rows, chosen, names, out, subtitle, name="chart.png"):
    """Draw the chart; its file name, or None when no workload has a panel (a
    download-only run): then results.md links no image, and an older chart.png
    in `out` is removed rather than left to be mistaken for this run's."""
    path = os.path.join(out, name)
    if chart.plot(rows, chosen, names, path, subtitle):
        return name
    if os.path.exists(path):
        os.remove(path)
    return None


def render_only(args):
    """Rewrite results.md and chart.png from OUT/results.json, measuring nothing."""
    path = os.path.join(args.out, "results.json")
    with open(path) as f:
        data = json.load(f)
    samples, meta, floors = data["samples"], data["meta"], data["floors_us"]
    keys = list(dict.fromkeys(s["workload"] for s in samples))
    chosen = [workloads.BY_KEY[k] for k in keys if k in workloads.BY_KEY]
    names = list(dict.fromkeys(s["server"] for s in samples))
    rows = report.summarize(samples, chosen, names, floors)
    m = meta["machine"]
    subtitle = f"{m['cpu_model']}, {m['nproc']} cores, 1 worker unless 'allcores'"
    chart_name = _plot(rows, chosen, names, args.out, subtitle)
    report.write(args.out, rows, samples, chosen, meta, floors, chart_name)
    say(f"Rewrote {os.path.relpath(args.out)}/results.md, results.json"
        f"{' and ' + chart_name if chart_name else ''} from {path}")
    return 0


def _exit_code(samples, required, unavailable):
    if not any(s["status"] == "ok" for s in samples):
        say("No measurement succeeded: every server failed or was unavailable.")
        return 1
    bad = [name for name in required
           if name in unavailable
           or any(s["server"] == name and s["status"] == "failed" for s in samples)]
    if bad:
        say(f"Required server(s) not measured successfully: {', '.join(bad)}")
        return 1
    return 0
