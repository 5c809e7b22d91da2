"""Instructions per request, counted rather than timed.

    python bench/count.py [--app raw_json:app] [--path /] [--requests 4000]
                          [--io-mode thread|loop] [--venv bench/.venv] [--keep DIR]

A timed A/B on this project's two-core VMs cannot tell a 1 % change from the
spread between two 5 s runs. An instruction count of the same requests can:
this runs one ferrogate worker under valgrind's callgrind, warms it up with
instrumentation off, then counts the instructions its threads execute while
a client sends --requests keep-alive GETs over 8 connections, and prints
them per request, per thread, and for the functions that cost the most.

What it counts is user space only: the kernel's part of a request (the
sockets, the wake-ups between the threads) is not in it, and how requests
batch under valgrind (every thread runs about 50 times slower, one at a
time) differs from a real run, so compare two builds with it; do not read
its figures as time. Two runs of one build differ by well under 1 %.
"""

import argparse
import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
CONNECTIONS = 8
WARMUP_REQUESTS = 400


def request_bytes(path):
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: count/1\r\n\r\n".encode()


def read_response(sock, pending):
    """One response off a keep-alive socket (content-length framed); returns leftovers."""
    while b"\r\n\r\n" not in pending:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        pending += chunk
    head, _, rest = pending.partition(b"\r\n\r\n")
    status = int(head[9:12])
    if status != 200:
        raise RuntimeError(f"status {status}: {head[:200]!r}")
    match = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    if not match:
        raise RuntimeError("the response has no content-length: this tool reads only those")
    length = int(match.group(1))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection mid-body")
        rest += chunk
    return rest[length:]


def load(port, path, total):
    """`total` requests over CONNECTIONS keep-alive connections, each one request at a time."""
    errors = []

    def one(n):
        try:
            with socket.create_connection(("127.0.0.1", port)) as sock:
                pending = b""
                data = request_bytes(path)
                for _ in range(n):
                    sock.sendall(data)
                    pending = read_response(sock, pending)
        except Exception as exc:  # reported below, with the thread's share
            errors.append(f"{type(exc).__name__}: {exc}")

    share = [total // CONNECTIONS + (i < total % CONNECTIONS) for i in range(CONNECTIONS)]
    threads = [threading.Thread(target=one, args=(n,)) for n in share]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"{len(errors)} connection(s) failed, first: {errors[0]}")


def wait_for_answer(port, path, proc, seconds=300):
    """Until the worker answers (the master listens before its worker is up)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode} before answering")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                sock.sendall(request_bytes(path))
                read_response(sock, b"")
                return
        except (OSError, RuntimeError):
            time.sleep(1)
    raise RuntimeError(f"no answer on port {port} within {seconds} s")


def worker_pid(master):
    kids = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout.split()
    if len(kids) != 1:
        raise RuntimeError(f"expected one worker under the master {master}, found {kids}")
    return int(kids[0])


def control(pid, *command):
    """A callgrind monitor command, through valgrind's gdbserver (callgrind_control does the
    same, but finds its processes by their command line, which a worker's title replaces)."""
    subprocess.run(["vgdb", f"--pid={pid}", *command], check=True, capture_output=True)


def totals(path):
    """The instruction total of one callgrind dump file."""
    with open(path) as f:
        for line in f:
            if line.startswith(("totals:", "summary:")):
                return int(line.split()[1])
    raise RuntimeError(f"{path} has no totals line")


def thread_name(path):
    """The thread a dump is for, from its file name (cg.PID.PART-NN): callgrind numbers
    threads as they start, and the worker's first is the one that runs Python."""
    n = int(path.rsplit("-", 1)[-1])
    return "1 (Python's, the event loop)" if n == 1 else str(n)


def top_functions(paths, limit):
    out = subprocess.run(["callgrind_annotate", "--inclusive=no", "--threshold=99", *paths],
                         capture_output=True, text=True).stdout
    rows = []
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+)\s+\(\s*([\d.]+)%\)\s+(.*)", line)
        if m and "PROGRAM TOTALS" not in line:
            # "FILE:FUNCTION [OBJECT]" -> "FUNCTION (object's file name)"
            where, _, obj = m.group(3).partition(" [")
            name = where.split(":", 1)[1] if ":" in where else where
            rows.append((int(m.group(1).replace(",", "")), f"{name} ({os.path.basename(obj.rstrip(']'))})"))
    return rows[:limit]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--app", default="raw_json:app", help="the bench app (bench/apps), as ferrogate takes it")
    p.add_argument("--path", default="/")
    p.add_argument("--requests", type=int, default=4000)
    p.add_argument("--io-mode", default="thread", choices=["thread", "loop"])
    p.add_argument("--venv", default=os.path.join(BENCH_DIR, ".venv"), help="where `ferrogate` is installed")
    p.add_argument("--port", type=int, default=18979)
    p.add_argument("--top", type=int, default=15, help="how many functions to list")
    p.add_argument("--keep", help="keep the callgrind dumps in this directory")
    args = p.parse_args()
    exe = os.path.join(args.venv, "bin", "ferrogate")  # installed there, run as `python -m ferrogate`
    if not shutil.which("valgrind") or not shutil.which("vgdb"):
        sys.exit("count.py needs valgrind (Debian: apt-get install valgrind)")
    if not os.path.exists(exe):
        sys.exit(f"no ferrogate at {exe}: build it (bench/run.py does) or pass --venv")

    out_dir = args.keep or tempfile.mkdtemp(prefix="ferrogate-count-")
    os.makedirs(out_dir, exist_ok=True)
    # Only the worker runs under callgrind: the master spawns workers with its own
    # sys.executable, which CPython takes from argv[0]. So the master runs the venv's
    # interpreter under the name of a wrapper beside it (the venv is still found from
    # that directory), and the wrapper starts valgrind on the real interpreter.
    python = os.path.realpath(os.path.join(args.venv, "bin", "python"))
    wrapper = os.path.join(args.venv, "bin", "python-callgrind")
    with open(wrapper, "w") as f:
        f.write("#!/bin/sh\n"
                f"exec valgrind --tool=callgrind --instr-atstart=no --separate-threads=yes "
                f"--callgrind-out-file={out_dir}/cg.%p {os.path.join(args.venv, 'bin', 'python')} \"$@\"\n")
    os.chmod(wrapper, 0o755)
    cmd = [wrapper, "-m", "ferrogate", args.app, "--app-dir", os.path.join(BENCH_DIR, "apps"),
           "--host", "127.0.0.1", "--port", str(args.port), "--workers", "1", "--no-access-log",
           # Under valgrind the worker answers the master's heartbeat slowly.
           "--timeout", "3600"]
    env = dict(os.environ, FERROGATE_IO_MODE=args.io_mode)
    server = subprocess.Popen(cmd, executable=python, cwd=os.path.join(BENCH_DIR, "apps"), env=env,
                              stdout=subprocess.DEVNULL, stderr=open(os.path.join(out_dir, "server.log"), "w"),
                              start_new_session=True)
    try:
        wait_for_answer(args.port, args.path, server)
        worker = worker_pid(server.pid)
        load(args.port, args.path, WARMUP_REQUESTS)
        control(worker, "instrumentation", "on")
        control(worker, "zero")
        started = time.monotonic()
        load(args.port, args.path, args.requests)
        elapsed = time.monotonic() - started
        before = set(glob.glob(f"{out_dir}/cg.{worker}*"))
        control(worker, "dump")
        dumps = sorted(set(glob.glob(f"{out_dir}/cg.{worker}*")) - before)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        os.unlink(wrapper)
    if not dumps:
        sys.exit(f"callgrind wrote no dump for the worker {worker}: see {out_dir}/server.log")

    n = args.requests
    per_thread = [(thread_name(d), totals(d)) for d in dumps]
    all_ir = sum(ir for _, ir in per_thread)
    print(f"{args.app} {args.path}, {n} requests over {CONNECTIONS} connections, "
          f"--io-mode {args.io_mode} ({elapsed:.0f} s under callgrind)")
    print(f"instructions per request: {all_ir / n:,.0f}")
    for name, ir in per_thread:
        if ir:
            print(f"  thread {name}: {ir / n:,.0f}")
    print(f"the {args.top} functions with the most instructions of their own, per request:")
    for ir, fn in top_functions(dumps, args.top):
        print(f"  {ir / n:10,.0f}  {fn}")
    if not args.keep:
        shutil.rmtree(out_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
