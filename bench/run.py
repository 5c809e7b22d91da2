#!/usr/bin/env python3
"""Benchmark ferrogate against granian, uvicorn and nginx+gunicorn.

    python bench/run.py            full run -> docs/benchmarks/
    python bench/run.py --quick    smoke run (CI) -> bench/out/quick/

Started with any python3, it first prepares bench/.venv (peers, clients,
matplotlib, ferrogate built from this repository) and installs nginx and wrk
with apt-get if they are missing, then re-runs itself inside the venv to
measure. See bench/README.md.

Exit status: 0 whatever the timings; non-zero only if the harness itself
broke (or a server named with --require could not be measured).
"""

import argparse
import os
import sys
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(BENCH_DIR)
VENV_DIR = os.path.join(BENCH_DIR, ".venv")


def parse_args(argv=None):
    import servers
    import workloads
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke mode: 2 s runs after a 1 s warm-up, 1 round, a subset of workloads, "
                        "500 idle connections; writes to bench/out/quick/")
    p.add_argument("--workloads", default=None,
                   help="comma-separated workload keys (default: all; --quick: "
                        f"{','.join(workloads.QUICK)}). Known: {', '.join(workloads.BY_KEY)}")
    p.add_argument("--servers", default=",".join(servers.NAMES),
                   help=f"comma-separated servers (default: {','.join(servers.NAMES)})")
    p.add_argument("--rounds", type=int, default=None, help="rounds per workload (default 3; --quick 1)")
    p.add_argument("--duration", type=float, default=None, help="measured seconds per run (default 8; --quick 2)")
    p.add_argument("--warmup", type=float, default=None, help="warm-up seconds per run (default 2; --quick 1)")
    p.add_argument("--connections", type=int, default=64, help="wrk -c and h2load -c (default 64)")
    p.add_argument("--h2-streams", type=int, default=10,
                   help="h2load -m: concurrent streams per connection, HTTP/2 workloads (default 10)")
    p.add_argument("--idle-connections", type=int, default=None,
                   help="connections held by the idle workload (default 5000; --quick 500)")
    p.add_argument("--tls-clients", type=int, default=4,
                   help="parallel `openssl s_time` clients of the handshake workloads (default 4)")
    p.add_argument("--out", default=None,
                   help="output directory (default docs/benchmarks, or bench/out/quick with --quick)")
    p.add_argument("--quiet-wait", type=float, default=None,
                   help="before each measurement, wait up to this many seconds for other programs "
                        "to stop using the CPU, and at most 5 times that per run (default 60; --quick 0)")
    p.add_argument("--no-build", action="store_true",
                   help="don't (re)build ferrogate: measure whatever bench/.venv has installed")
    p.add_argument("--render-only", action="store_true",
                   help="measure nothing: rewrite results.md and chart.png in --out from its results.json")
    p.add_argument("--require", default="",
                   help="comma-separated servers that must be measured successfully, else exit 1 "
                        "(e.g. --require ferrogate once it exists)")
    args = p.parse_args(argv)

    args.workloads = (args.workloads.split(",") if args.workloads
                      else list(workloads.QUICK if args.quick else workloads.BY_KEY))
    unknown = [w for w in args.workloads if w not in workloads.BY_KEY]
    if unknown:
        p.error(f"unknown workload(s) {', '.join(unknown)}; known: {', '.join(workloads.BY_KEY)}")
    args.servers = [s for s in args.servers.split(",") if s]
    unknown = [s for s in args.servers if s not in servers.NAMES]
    if unknown:
        p.error(f"unknown server(s) {', '.join(unknown)}; known: {', '.join(servers.NAMES)}")
    args.require = [s for s in args.require.split(",") if s]
    missing = [s for s in args.require if s not in args.servers]
    if missing:
        p.error(f"--require {', '.join(missing)}: not among --servers")
    defaults = (1, 2.0, 1.0, 500, 0.0) if args.quick else (3, 8.0, 2.0, 5000, 60.0)
    for name, default in zip(("rounds", "duration", "warmup", "idle_connections", "quiet_wait"), defaults):
        if getattr(args, name) is None:
            setattr(args, name, default)
    if args.out is None:
        args.out = (os.path.join(BENCH_DIR, "out", "quick") if args.quick
                    else os.path.join(REPO_DIR, "docs", "benchmarks"))
    return args


def in_venv():
    return os.path.realpath(sys.prefix) == os.path.realpath(VENV_DIR)


def bootstrap(args):
    """Outside the venv: prepare it, then continue inside it."""
    import setup_env
    started = time.monotonic()
    python = setup_env.prepare(args.quick, build=not (args.no_build or args.render_only))
    os.environ["BENCH_SETUP_SECONDS"] = f"{time.monotonic() - started:.1f}"
    os.environ["BENCH_COMMAND"] = " ".join(["python bench/run.py", *sys.argv[1:]])
    sys.stdout.flush()
    os.execv(python, [python, os.path.abspath(__file__), *sys.argv[1:]])


def main():
    sys.path.insert(0, BENCH_DIR)
    args = parse_args()
    if not in_venv():
        bootstrap(args)  # does not return
    import orchestrate
    if args.render_only:
        return orchestrate.render_only(args)
    try:
        return orchestrate.run(args)
    except KeyboardInterrupt:
        # Servers and temp dirs were cleaned up on the way out.
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
