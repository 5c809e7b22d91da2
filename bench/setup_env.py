"""Prepare what the benchmark runs on: system tools, bench/.venv, ferrogate.

Runs under whatever python3 started bench/run.py (standard library only).
The result of the ferrogate build is written to bench/.venv/ferrogate-build.json
so the measuring half (inside the venv) can report why it is unavailable.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

import machine

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(BENCH_DIR)
VENV_DIR = os.path.join(BENCH_DIR, ".venv")
VENV_BIN = os.path.join(VENV_DIR, "bin")
VENV_PYTHON = os.path.join(VENV_BIN, "python")
REQUIREMENTS = os.path.join(BENCH_DIR, "requirements.txt")
REQ_STAMP = os.path.join(VENV_DIR, ".bench-requirements.sha256")
BUILD_STATUS = os.path.join(VENV_DIR, "ferrogate-build.json")
BUILD_LOG = os.path.join(VENV_DIR, "ferrogate-build.log")

# Debian package for each command the harness drives directly.
# openssl: the HTTPS workloads' throwaway certificates and `openssl s_time`,
# their handshake load. h2load: the HTTP/2 workloads' load; curl: their probe.
SYSTEM_TOOLS = {"nginx": "nginx", "wrk": "wrk", "openssl": "openssl",
                "h2load": "nghttp2-client", "curl": "curl"}


def log(msg):
    print(f"[setup] {msg}", flush=True)


def _have(cmd):
    return shutil.which(cmd) or os.path.exists(f"/usr/sbin/{cmd}")


def ensure_system_tools():
    missing = [pkg for cmd, pkg in SYSTEM_TOOLS.items() if not _have(cmd)]
    if not missing:
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        log(f"missing {', '.join(missing)}: install them with apt-get (needs root); "
            "the servers or loads that need them will be skipped")
        return
    log(f"apt-get install {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env)


def _sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def ensure_venv():
    if not os.path.exists(VENV_PYTHON):
        log(f"creating {os.path.relpath(VENV_DIR, REPO_DIR)}")
        subprocess.run([sys.executable, "-m", "venv", VENV_DIR], check=True)
    wanted = _sha256(REQUIREMENTS)
    try:
        with open(REQ_STAMP) as f:
            if f.read().strip() == wanted:
                return
    except OSError:
        pass
    log("pip install -r bench/requirements.txt (peers, clients, matplotlib)")
    subprocess.run([VENV_PYTHON, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    "-r", REQUIREMENTS], check=True)
    with open(REQ_STAMP, "w") as f:
        f.write(wanted)


def build_ferrogate(quick):
    """pip install the repository root; record success or the reason it failed."""
    status = {"available": False, "reason": "", "seconds": 0.0, "profile": ""}
    if not os.path.exists(os.path.join(REPO_DIR, "pyproject.toml")):
        status["reason"] = "no pyproject.toml at the repository root yet"
        return _write_status(status)
    env = dict(os.environ)
    # Build in bench/.target, not the repository's target/, so the harness
    # never races a developer's own cargo build for the same lock. CI, which
    # starts from a fresh clone, may point BENCH_CARGO_TARGET_DIR at a
    # directory that outlives the clone to build incrementally.
    target_root = os.environ.get("BENCH_CARGO_TARGET_DIR") or os.path.join(BENCH_DIR, ".target")
    if quick:
        # A smoke run checks the harness, not speed: skip fat LTO, which is
        # most of a cold release build on 2 cores.
        env["CARGO_TARGET_DIR"] = os.path.join(target_root, "quick")
        env["CARGO_PROFILE_RELEASE_LTO"] = "off"
        env["CARGO_PROFILE_RELEASE_CODEGEN_UNITS"] = "16"
        status["profile"] = "release, LTO off, 16 codegen units (--quick)"
    else:
        env["CARGO_TARGET_DIR"] = os.path.join(target_root, "release")
        status["profile"] = "release profile of Cargo.toml"
    log(f"pip install {REPO_DIR} (builds ferrogate; log: {os.path.relpath(BUILD_LOG, REPO_DIR)})")
    # What is built is the tree as it is now: the report names this, not the commit the
    # tree is at when the run ends an hour later.
    status["source"] = machine.source_revision(REPO_DIR)
    started = time.monotonic()
    with open(BUILD_LOG, "wb") as out:
        proc = subprocess.run([VENV_PYTHON, "-m", "pip", "install", "--disable-pip-version-check",
                               REPO_DIR], stdout=out, stderr=subprocess.STDOUT, env=env)
    status["seconds"] = round(time.monotonic() - started, 1)
    if proc.returncode != 0:
        with open(BUILD_LOG, errors="replace") as f:
            tail = "\n".join(f.read().splitlines()[-15:])
        status["reason"] = f"pip install of the repository failed (exit {proc.returncode}):\n{tail}"
    elif not os.path.exists(os.path.join(VENV_BIN, "ferrogate")):
        status["reason"] = "the package installed but provides no `ferrogate` console script"
    else:
        status["available"] = True
    return _write_status(status)


def _write_status(status):
    with open(BUILD_STATUS, "w") as f:
        json.dump(status, f, indent=2)
    if status["available"]:
        log(f"ferrogate built and installed in {status['seconds']} s")
    else:
        log("ferrogate unavailable: " + status["reason"].replace("\n", "\n[setup]   "))
    return status


def read_build_status():
    """The last build's record (this run's, unless it ran with --no-build)."""
    try:
        with open(BUILD_STATUS) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {"available": False, "reason": "never built by the harness", "profile": "unknown"}


def prepare(quick, build=True):
    """Everything before measuring. Returns the venv's python."""
    ensure_system_tools()
    ensure_venv()
    if build:
        build_ferrogate(quick)
    else:
        log("not building ferrogate (--no-build): using whatever bench/.venv has")
    return VENV_PYTHON
