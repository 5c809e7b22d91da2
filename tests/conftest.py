"""Integration tests for ferrogate: they run the real `ferrogate` command.

Every server a test starts is a subprocess in its own process group, with its
stderr (where ferrogate writes its log and access log) captured to a file the
test can read. A server is always stopped at teardown: SIGTERM to the master,
then SIGKILL to the whole group if it does not exit in time.

Run:  cd /work/main && . .venv/bin/activate && pytest tests -q
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
APPS_DIR = TESTS_DIR / "apps"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0


def ferrogate_exe() -> str:
    """The `ferrogate` console script of the interpreter running the tests."""
    here = Path(sys.executable).parent / "ferrogate"
    if here.exists():
        return str(here)
    found = shutil.which("ferrogate")
    if not found:
        pytest.exit("the `ferrogate` command is not installed (maturin develop)", returncode=2)
    return found


FERROGATE = ferrogate_exe()


# --------------------------------------------------------------------------
# Small utilities
# --------------------------------------------------------------------------

def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05, message: str | None = None):
    """Polls `predicate` until it returns a truthy value; returns that value.

    Fails the test with `message` (a string or a callable building one) when the
    deadline passes."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 - the predicate may fail until the condition holds
            last_exc = e
        if time.monotonic() >= deadline:
            msg = message() if callable(message) else message
            msg = msg or f"condition not met within {timeout}s"
            if last_exc is not None:
                msg += f" (last error: {last_exc!r})"
            pytest.fail(msg)
        time.sleep(interval)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def children_of(pid: int) -> list[int]:
    """Direct children of `pid`, from /proc/PID/task/*/children."""
    kids: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return kids
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids.extend(int(x) for x in f.read().split())
        except OSError:
            continue
    return sorted(set(k for k in kids if pid_alive(k)))


def proc_status(pid: int) -> dict[str, str]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def rss_kib(pid: int, key: str = "VmRSS") -> int:
    return int(proc_status(pid)[key].split()[0])


def raw_http(address, data: bytes, timeout: float = 10.0, read_until_close: bool = True) -> bytes:
    """Sends raw bytes and returns everything the server answers until it closes
    the connection (or, with read_until_close=False, the first response head and
    the body its Content-Length announces)."""
    family = socket.AF_UNIX if isinstance(address, str) else (socket.AF_INET6 if ":" in address[0] else socket.AF_INET)
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(address)
        s.sendall(data)
        return read_response(s, read_until_close)


def read_response(s: socket.socket, read_until_close: bool = True) -> bytes:
    buf = b""
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        buf += chunk
        if not read_until_close and b"\r\n\r\n" in buf:
            head, _, body = buf.partition(b"\r\n\r\n")
            m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            if m and len(body) >= int(m.group(1)):
                break
    return buf


def parse_response(raw: bytes):
    """(status, headers dict with lowercased names, body) of one raw HTTP/1.1 response."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.decode().strip().lower()] = value.decode().strip()
    if headers.get("transfer-encoding") == "chunked":
        body = dechunk(body)
    return status, headers, body


def dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2:]
    return out


# --------------------------------------------------------------------------
# The server under test
# --------------------------------------------------------------------------

LOG_LINE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4})\] \[(\d+)\] \[([A-Z]+)\] (.*)$")


class ServerStartError(AssertionError):
    pass


class Server:
    """One `ferrogate` master process and its workers.

    `args` are extra command-line flags. Unless `bind` is given (a list of flags
    such as ["--uds", path]), the server listens on 127.0.0.1 at a free port.
    """

    name = "ferrogate"  # in file names and failure messages (UvicornServer says "uvicorn")

    def __init__(self, app: str | None, *args: str, workers: int | None = 1, env: dict | None = None,
                 cwd: Path | str = APPS_DIR, bind: list[str] | None = None, pass_fds=(),
                 argv: list[str] | None = None, log_dir: Path | None = None, host: str = "127.0.0.1",
                 port: int | None = None, wait_address=None):
        self.host = host
        self.port = port if port is not None else (free_port(host) if bind is None else None)
        self.workers = workers
        self.cwd = str(cwd)
        if argv is None:
            argv = [FERROGATE]
            if app is not None:
                argv.append(app)
            if bind is None:
                argv += ["--host", host, "--port", str(self.port)]
            else:
                argv += bind
            if workers is not None:
                argv += ["--workers", str(workers)]
            argv += list(args)
        self.argv = argv
        self.wait_address = wait_address
        full_env = dict(os.environ)
        # The suite's own environment must not configure the server under test.
        for k in list(full_env):
            if k.startswith(("FERROGATE_", "UVICORN_")) or k in ("LISTEN_PID", "LISTEN_FDS", "FORWARDED_ALLOW_IPS"):
                del full_env[k]
        full_env["PYTHONUNBUFFERED"] = "1"
        full_env["PYTHONDONTWRITEBYTECODE"] = "1"
        # CI runs the whole suite a second time with every worker's I/O on its event loop's
        # thread (.ci/run); the tests' own settings still win.
        if os.environ.get("FERROGATE_TEST_IO_MODE"):
            full_env["FERROGATE_IO_MODE"] = os.environ["FERROGATE_TEST_IO_MODE"]
        if env:
            full_env.update(env)
        self.env = full_env
        log_dir = Path(log_dir) if log_dir else Path(os.environ.get("FERROGATE_TEST_LOGS", "/tmp/ferrogate-test-logs"))
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{'server' if self.name == 'ferrogate' else self.name}-{os.getpid()}-{time.monotonic_ns()}.log"
        self._log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            argv, cwd=self.cwd, env=full_env, stdin=subprocess.DEVNULL, stdout=self._log_file,
            stderr=subprocess.STDOUT, start_new_session=True, pass_fds=tuple(pass_fds),
        )
        self.pid = self.proc.pid
        self._stopped = False

    # ---- addresses ------------------------------------------------------
    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def address(self):
        return (self.host, self.port)

    def client(self, **kw):
        import httpx
        kw.setdefault("timeout", 30.0)
        return httpx.Client(base_url=self.url, **kw)

    def get(self, path: str, **kw):
        import httpx
        kw.setdefault("timeout", 30.0)
        return httpx.get(self.url + path, **kw)

    def post(self, path: str, **kw):
        import httpx
        kw.setdefault("timeout", 30.0)
        return httpx.post(self.url + path, **kw)

    def raw(self, data: bytes, **kw) -> bytes:
        return raw_http(self.wait_address or self.address, data, **kw)

    # ---- log ------------------------------------------------------------
    def log(self) -> str:
        return self.log_path.read_bytes().decode("utf-8", "replace")

    def log_lines(self) -> list[str]:
        return self.log().splitlines()

    def log_since(self, mark: int) -> str:
        return self.log_path.read_bytes()[mark:].decode("utf-8", "replace")

    def log_mark(self) -> int:
        return self.log_path.stat().st_size

    def count(self, pattern: str, since: int = 0) -> int:
        return len(re.findall(pattern, self.log_since(since), re.M))

    def wait_for_log(self, pattern: str, count: int = 1, timeout: float = 20.0, since: int = 0) -> list[re.Match]:
        """Waits until `pattern` (a regex) matches `count` times in the log (from byte `since`)."""
        def found():
            ms = list(re.finditer(pattern, self.log_since(since), re.M))
            return ms if len(ms) >= count else None
        return wait_until(found, timeout, message=lambda: f"log never matched {pattern!r} x{count} within {timeout}s; "
                          f"exit={self.proc.poll()}\n--- log ---\n{self.log_tail()}")

    def log_tail(self, n: int = 80) -> str:
        return "\n".join(self.log_lines()[-n:])

    def serving_pids(self, since: int = 0) -> list[int]:
        return [int(m) for m in re.findall(r"Worker (\d+) is serving", self.log_since(since))]

    # ---- processes ------------------------------------------------------
    def worker_pids(self) -> list[int]:
        return children_of(self.pid)

    def wait_workers(self, n: int, timeout: float = 20.0, exclude=()) -> list[int]:
        """Waits until the master has exactly `n` live children that are serving, none in `exclude`."""
        def ok():
            kids = self.worker_pids()
            serving = set(self.serving_pids())
            if len(kids) == n and all(k in serving for k in kids) and not set(kids) & set(exclude):
                return kids
            return None
        return wait_until(ok, timeout, message=lambda: f"expected {n} serving workers (not {list(exclude)}), "
                          f"have children {self.worker_pids()}\n--- log ---\n{self.log_tail()}")

    def signal(self, sig: int):
        os.kill(self.pid, sig)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_exit(self, timeout: float = STOP_TIMEOUT) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{self.name} (pid {self.pid}) did not exit within {timeout}s\n--- log ---\n{self.log_tail()}")

    # ---- lifecycle --------------------------------------------------------
    def wait_ready(self, timeout: float = START_TIMEOUT) -> "Server":
        """Waits until the listener accepts and every worker logged that it is serving."""
        deadline = time.monotonic() + timeout
        accepted = False
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                raise ServerStartError(f"{self.name} exited with status {rc} during startup: {' '.join(self.argv)}\n"
                                       f"--- log ---\n{self.log()}")
            if not accepted:
                accepted = self._accepts()
            if accepted and (self.workers is None or len(set(self.serving_pids())) >= self.workers):
                return self
            time.sleep(0.05)
        self.stop()
        raise ServerStartError(f"{self.name} did not start within {timeout}s (accepting={accepted}, "
                               f"serving={self.serving_pids()}, workers={self.workers}): {' '.join(self.argv)}\n"
                               f"--- log ---\n{self.log()}")

    def _accepts(self) -> bool:
        addr = self.wait_address or self.address
        if addr is None or (isinstance(addr, tuple) and addr[1] is None):
            return True
        family = socket.AF_UNIX if isinstance(addr, str) else (socket.AF_INET6 if ":" in addr[0] else socket.AF_INET)
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            try:
                s.connect(addr)
                return True
            except OSError:
                return False

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM, then SIGKILL to the whole process group. Returns the exit status."""
        if self._stopped:
            return self.proc.returncode
        self._stopped = True
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        # Whatever is left of the group (workers of a master that died, or a hung master).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        self._log_file.close()
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class ServerFactory:
    """Starts servers for one test (or module) and stops them all afterwards."""

    def __init__(self, log_dir: Path):
        self.servers: list[Server] = []
        self.log_dir = log_dir

    def __call__(self, app: str | None, *args: str, wait: bool = True, **kw) -> Server:
        kw.setdefault("log_dir", self.log_dir)
        srv = Server(app, *args, **kw)
        self.servers.append(srv)
        if wait:
            srv.wait_ready()
        return srv

    def run(self, app: str | None, *args: str, timeout: float = 30.0, **kw) -> tuple[int, str]:
        """Starts a server that is expected to exit by itself; returns (status, log)."""
        kw.setdefault("log_dir", self.log_dir)
        srv = Server(app, *args, **kw)
        self.servers.append(srv)
        try:
            rc = srv.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            srv.stop()
            pytest.fail(f"ferrogate was expected to exit by itself within {timeout}s but kept running\n"
                        f"--- log ---\n{srv.log()}")
        return rc, srv.log()

    def stop_all(self):
        for s in reversed(self.servers):
            s.stop()


@pytest.fixture
def server_factory(tmp_path_factory):
    f = ServerFactory(tmp_path_factory.mktemp("logs"))
    yield f
    f.stop_all()


@pytest.fixture(scope="module")
def module_server_factory(tmp_path_factory):
    f = ServerFactory(tmp_path_factory.mktemp("logs"))
    yield f
    f.stop_all()


def run_cli(*args: str, env: dict | None = None, timeout: float = 20.0, cwd=APPS_DIR) -> subprocess.CompletedProcess:
    """Runs `ferrogate ARGS` to completion (for flag errors, --help, --version)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("FERROGATE_")}
    if env:
        full_env.update(env)
    return subprocess.run([FERROGATE, *args], cwd=str(cwd), env=full_env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def has_ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def json_of(resp) -> dict:
    assert resp.status_code == 200, f"{resp.status_code}: {resp.text[:500]}"
    return json.loads(resp.content)


def copy_app(name: str, dest: Path, new_name: str | None = None) -> Path:
    """Copies tests/apps/NAME into `dest` (for tests that edit the app)."""
    target = dest / (new_name or name)
    shutil.copy(APPS_DIR / name, target)
    return target


# The differential suite's support (test_compat_*.py): its fixtures are registered here.
from compat_support import fresh_pair_factory, pair_factory  # noqa: E402,F401


def pytest_configure(config):
    config.addinivalue_line("markers", "slow(reason): takes several seconds on 2 cores")
    config.addinivalue_line("markers", "websocket: WebSocket support (being implemented)")

# A real ACME CA (Debian's pebble), session-scoped: tests/pebble.py.
from pebble import pebble  # noqa: E402,F401
