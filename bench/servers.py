"""The servers under test: how each is launched, checked and stopped.

Every server is started in its own process group (so one killpg reaches its
workers), bound on 127.0.0.1 with a free port, with the benchmark apps on its
import path. A `Plan` says what the workload needs; each server turns it into
its own command line.
"""

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

import nginx_conf
import proctree

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
APPS_DIR = os.path.join(BENCH_DIR, "apps")

START_TIMEOUT = 60.0  # seconds; a cold FastAPI import on a busy box is slow
STOP_GRACE = 5.0


class ServerStartError(Exception):
    """The server did not come up; the message carries its stderr tail."""


@dataclass
class Plan:
    """What a workload asks of a server."""

    app: str                     # MODULE:ATTR inside bench/apps
    workers: int = 1
    static_dir: str | None = None  # serve /static/ natively from here, if the server can
    websocket: bool = False
    long_keepalive: bool = False   # idle-connection workload: don't time idle clients out
    hold_connections: int = 0      # idle-connection workload: how many it will hold open
    tls: tuple | None = None       # (certificate PEM, PKCS#8 key PEM): listen with TLS
    http2: bool = False            # HTTP/2: h2c by prior knowledge, or ALPN h2 with tls
    compress: str = ""             # "gzip": responses must be compressed (the client offers it)
    compress_app: str | None = None  # the app wrapped in GZipMiddleware, for servers that
                                     # cannot compress themselves


@dataclass
class Running:
    """A launched server: its processes, port and logs."""

    name: str
    port: int
    procs: list = field(default_factory=list)
    commands: list = field(default_factory=list)
    logs: list = field(default_factory=list)
    workdir: str = ""

    @property
    def root_pids(self):
        return [p.pid for p in self.procs]

    def stderr_tail(self, lines=20):
        out = []
        for path in self.logs:
            try:
                with open(path, errors="replace") as f:
                    tail = f.read().splitlines()[-lines:]
            except OSError:
                continue
            if tail:
                out.append(f"--- {os.path.basename(path)} ---")
                out.extend(tail)
        return "\n".join(out) or "(no output)"

    def dead(self):
        """Name of the first launched process that has exited, else None."""
        for proc, cmd in zip(self.procs, self.commands):
            if proc.poll() is not None:
                return f"{os.path.basename(cmd[0])} exited with code {proc.returncode}"
        return None

    def stop(self):
        # Stop the front process first (nginx) so it stops taking requests.
        for proc in reversed(self.procs):
            _stop_group(proc)
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _stop_group(proc):
    pids = proctree.tree([proc.pid])
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(STOP_GRACE)
    except subprocess.TimeoutExpired:
        pass
    # SIGKILL whatever is left: the group, and any descendant that left it.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        proc.wait(STOP_GRACE)
    except subprocess.TimeoutExpired:
        pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _connectable(address, family=socket.AF_INET):
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        try:
            s.connect(address)
            return True
        except OSError:
            return False


def wait_until_accepting(running, address, family=socket.AF_INET, timeout=START_TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        why = running.dead()
        if why:
            raise ServerStartError(f"{running.name}: {why}\n{running.stderr_tail()}")
        if _connectable(address, family):
            return
        time.sleep(0.05)
    raise ServerStartError(
        f"{running.name}: nothing accepted on {address} after {timeout:.0f}s\n"
        f"{running.stderr_tail()}")


def server_env(bin_dir, static_dir=None):
    env = dict(os.environ)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    # Workers may be fresh interpreters (spawn): give them the apps on the path
    # through the environment, not only through the working directory.
    env["PYTHONPATH"] = APPS_DIR + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("VIRTUAL_ENV", None)
    if static_dir:
        env["BENCH_STATIC_DIR"] = static_dir
    return env


class Server:
    """Base class: subclasses build command lines; this class runs them."""

    name = "?"
    serves_static = False  # True if /static/ is served without the ASGI app
    compresses = False     # True if the server compresses responses itself (gzip workloads)

    def __init__(self, bin_dir):
        self.bin_dir = bin_dir

    def exe(self, name):
        return os.path.join(self.bin_dir, name)

    def available(self):
        """None if the server can run here, else the reason it cannot."""
        return None

    def unsupported(self, plan):
        """None if the server can run this plan, else why not (reported as n/a)."""
        return None

    def app(self, plan):
        """The app to run: the GZipMiddleware-wrapped one when the workload wants
        compressed responses and this server cannot compress them itself."""
        if plan.compress and not self.compresses and plan.compress_app:
            return plan.compress_app
        return plan.app

    def start(self, plan):
        raise NotImplementedError

    def describe(self, plan):
        """The command line(s) for the report, with stable placeholder paths."""
        raise NotImplementedError

    def _spawn(self, running, cmd, log_name, env):
        log_path = os.path.join(running.workdir, log_name)
        log = open(log_path, "wb")
        try:
            proc = subprocess.Popen(
                cmd, cwd=APPS_DIR, env=env, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()
        running.procs.append(proc)
        running.commands.append(cmd)
        running.logs.append(log_path)
        return proc

    def _start_single(self, plan, cmd_for_port):
        """Start a server that is one command listening on a TCP port."""
        port = free_port()
        running = Running(self.name, port, workdir=tempfile.mkdtemp(prefix=f"bench-{self.name}-"))
        try:
            self._spawn(running, cmd_for_port(port), "server.log",
                        server_env(self.bin_dir, plan.static_dir))
            wait_until_accepting(running, ("127.0.0.1", port))
        except BaseException:
            running.stop()
            raise
        return running


class SingleCommandServer(Server):
    """A server that is one command line (its own master and workers, if any)."""

    def command(self, plan, port):
        raise NotImplementedError

    def start(self, plan):
        return self._start_single(plan, lambda port: self.command(plan, port))

    def describe(self, plan):
        return [shlex.join([self.name] + self.command(plan, "PORT")[1:])]


class Ferrogate(SingleCommandServer):
    name = "ferrogate"
    serves_static = True
    compresses = True  # on by default: gzip level 5 (--compress-level balanced)

    def available(self):
        if not os.path.exists(self.exe("ferrogate")):
            return "the `ferrogate` command is not installed in bench/.venv (build failed or no package yet)"
        return None

    _help = None

    def help_text(self):
        if Ferrogate._help is None:
            try:
                proc = subprocess.run([self.exe("ferrogate"), "--help"], capture_output=True,
                                      text=True, timeout=30)
                Ferrogate._help = proc.stdout + proc.stderr
            except (OSError, subprocess.TimeoutExpired) as exc:
                Ferrogate._help = f"(ferrogate --help failed: {exc})"
        return Ferrogate._help

    def unsupported(self, plan):
        if plan.tls and "--ssl-certfile" not in self.help_text():
            return "this ferrogate build has no --ssl-certfile (TLS not in it yet)"
        if plan.http2 and not re.search(r"\bh2c?\b|\bHTTP/?2\b", self.help_text(), re.IGNORECASE):
            return "this ferrogate build has no HTTP/2 (its --help mentions none of h2, http2, HTTP/2)"
        if plan.compress and "--compress-level" not in self.help_text():
            return "this ferrogate build has no response compression (no --compress-level)"
        return None

    def command(self, plan, port):
        # HTTP/2 needs no flag: h2c by prior knowledge and ALPN h2 (--http auto).
        # Nor does compression: on by default, gzip level 5 when the client
        # offers gzip only (--compress-level balanced).
        cmd = [self.exe("ferrogate"), self.app(plan), "--host", "127.0.0.1", "--port", str(port),
               "--workers", str(plan.workers), "--no-access-log"]
        if plan.long_keepalive:
            cmd += ["--timeout-keep-alive", "300"]
        if plan.static_dir:
            cmd += ["--static", f"/static={plan.static_dir}"]
        if plan.tls:
            # uvicorn's flags; TLS 1.2 and 1.3 (rustls).
            cmd += ["--ssl-certfile", plan.tls[0], "--ssl-keyfile", plan.tls[1]]
        return cmd


class Granian(SingleCommandServer):
    name = "granian"
    serves_static = True

    def command(self, plan, port):
        cmd = [self.exe("granian"), "--interface", "asgi", "--host", "127.0.0.1",
               "--port", str(port), "--workers", str(plan.workers)]
        if plan.static_dir and not plan.compress:
            # (Its static mount cannot compress: the gzip workloads serve the
            # file through the GZipMiddleware-wrapped app instead.)
            cmd += ["--static-path-route", "/static", "--static-path-mount", plan.static_dir]
        if plan.long_keepalive:
            # Granian closes a connection that sends no request header for
            # this long (default 30 s); the idle workload holds them longer.
            cmd += ["--http1-header-read-timeout", "60000"]
        if plan.hold_connections > 1024:
            # Granian serves at most --backpressure connections per worker at
            # once (default backlog/workers = 1024) and leaves the rest
            # unserved, so holding thousands of idle ones needs it raised.
            cmd += ["--backpressure", str(plan.hold_connections + 100)]
        if plan.tls:
            # Granian's default minimum is TLS 1.3; the others accept 1.2 too.
            # (The clients offer 1.3, so every server negotiates 1.3 here.)
            cmd += ["--ssl-certificate", plan.tls[0], "--ssl-keyfile", plan.tls[1],
                    "--ssl-protocol-min", "tls1.2"]
        if plan.http2:
            # HTTP/2 only, as the issue states: h2c by prior knowledge in
            # cleartext, ALPN h2 over TLS. (Granian's default `auto` serves both
            # as well as HTTP/1.1; `2` leaves HTTP/1.1 out.)
            cmd += ["--http", "2"]
        return cmd + [self.app(plan)]


class Uvicorn(SingleCommandServer):
    name = "uvicorn"

    def unsupported(self, plan):
        if plan.http2:
            return "uvicorn has no HTTP/2"
        return None

    def command(self, plan, port):
        cmd = [self.exe("uvicorn"), self.app(plan), "--host", "127.0.0.1", "--port", str(port),
               "--loop", "uvloop", "--http", "httptools", "--no-access-log"]
        # With 1 worker, no --workers: uvicorn then serves in-process with no
        # supervisor, which is how a single uvicorn is normally run.
        if plan.workers > 1:
            cmd += ["--workers", str(plan.workers)]
        if plan.long_keepalive:
            cmd += ["--timeout-keep-alive", "300"]
        if plan.tls:
            cmd += ["--ssl-certfile", plan.tls[0], "--ssl-keyfile", plan.tls[1]]
        return cmd


class ClassicStack(Server):
    """nginx -> unix socket -> gunicorn with uvicorn workers (seed tutorial)."""

    name = "nginx+gunicorn"
    serves_static = True
    compresses = True  # nginx's gzip (gzip_types and gzip_comp_level 5 for the gzip workloads)

    def available(self):
        if not _which("nginx"):
            return "nginx is not installed (apt-get install nginx)"
        return None

    def gunicorn_command(self, plan, sock):
        # The tutorial's gunicorn_start, minus user/group switching.
        return [self.exe("gunicorn"), self.app(plan), "-k", "uvicorn_worker.UvicornWorker",
                "--workers", str(plan.workers), "--bind", f"unix:{sock}",
                "--log-level", "error", "--log-file", "-"]

    def nginx_command(self, tmp, conf):
        return [_which("nginx"), "-p", tmp + "/", "-e", os.path.join(tmp, "error.log"),
                "-c", conf, "-g", "daemon off;"]

    def start(self, plan):
        port = free_port()
        tmp = tempfile.mkdtemp(prefix="bench-classic-")
        os.chmod(tmp, 0o755)
        running = Running(self.name, port, workdir=tmp)
        sock = os.path.join(tmp, "gunicorn.sock")
        root = os.path.dirname(plan.static_dir) if plan.static_dir else os.path.join(tmp, "www")
        os.makedirs(root, exist_ok=True)
        conf = os.path.join(tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write(nginx_conf.render(tmp, port, sock, root, websocket=plan.websocket,
                                      long_keepalive=plan.long_keepalive, tls=plan.tls,
                                      http2=plan.http2, compress=bool(plan.compress),
                                      # nginx keeps 1 worker process in front of N gunicorn
                                      # workers, except where it terminates TLS: the
                                      # handshakes are its work then.
                                      workers=plan.workers if plan.tls else 1))
        env = server_env(self.bin_dir, plan.static_dir)
        try:
            self._spawn(running, self.gunicorn_command(plan, sock), "gunicorn.log", env)
            wait_until_accepting(running, sock, socket.AF_UNIX)
            self._spawn(running, self.nginx_command(tmp, conf), "nginx.log", env)
            running.logs.append(os.path.join(tmp, "error.log"))
            wait_until_accepting(running, ("127.0.0.1", port))
        except BaseException:
            running.stop()
            raise
        return running

    def describe(self, plan):
        return [shlex.join(["gunicorn"] + self.gunicorn_command(plan, "TMP/gunicorn.sock")[1:]),
                "nginx -p TMP/ -e TMP/error.log -c TMP/nginx.conf -g 'daemon off;'"
                "  (config: bench/nginx_conf.py)"]


def _which(name):
    # nginx lives in /usr/sbin, which a non-root PATH may lack.
    return shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None)


ALL = [Ferrogate, Granian, Uvicorn, ClassicStack]
NAMES = [cls.name for cls in ALL]


def make(names, bin_dir):
    by_name = {cls.name: cls for cls in ALL}
    return [by_name[n](bin_dir) for n in names]
