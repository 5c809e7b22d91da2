"""Describe the machine and software a run measured, for the report."""

import datetime
import importlib.metadata
import os
import platform
import re
import shutil
import subprocess

PACKAGES = ["ferrogate", "granian", "uvicorn", "uvloop", "httptools", "gunicorn",
            "uvicorn-worker", "fastapi", "starlette", "pydantic", "websockets"]


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_gib():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _os_name():
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.system()


def _tool_version(cmd, args, pattern):
    path = shutil.which(cmd) or (f"/usr/sbin/{cmd}" if os.path.exists(f"/usr/sbin/{cmd}") else None)
    if not path:
        return None
    proc = subprocess.run([path, *args], capture_output=True, text=True)
    m = re.search(pattern, proc.stdout + proc.stderr)
    return m.group(1) if m else "unknown"


def package_versions():
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    versions["nginx"] = _tool_version("nginx", ["-v"], r"nginx/(\S+)")
    versions["wrk"] = _tool_version("wrk", ["-v"], r"wrk (\S+)")
    versions["h2load"] = _tool_version("h2load", ["--version"], r"nghttp2/(\S+)")
    versions["openssl"] = _tool_version("openssl", ["version"], r"OpenSSL (\S+)")
    return versions


def source_revision(repo_dir):
    """The repository commit measured, marked when the work tree differs from it."""
    def git(*args):
        proc = subprocess.run(["git", "-C", repo_dir, *args], capture_output=True, text=True)
        return proc.stdout.strip() if proc.returncode == 0 else None
    commit = git("rev-parse", "--short=12", "HEAD")
    if not commit:
        return "no commit yet"
    # Only the server's own sources matter for its numbers.
    dirty = git("status", "--porcelain", "--", "src", "python", "Cargo.toml", "pyproject.toml")
    return commit + (" + uncommitted changes" if dirty else "")


def describe(repo_dir=None, built_from=None):
    """`built_from`: the source revision the measured build was made from, when known."""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "memory_gib": _mem_total_gib(),
        "os": _os_name(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": package_versions(),
        "ferrogate_source": built_from or (source_revision(repo_dir) if repo_dir else None),
    }
