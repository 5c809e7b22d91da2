"""Running as a service: privilege drop (--user/--group), --pid, the control socket
(`ferrogate status|reload|stop|workers|upgrade` from another process), self-upgrade
with no failed request, process titles, and the tutorial's gunicorn command line.

The --user tests run as root (CI does) and switch to `nobody`. That user cannot read
a virtualenv under /root, so the `portable` fixture copies the ferrogate package and
the test app to a directory anyone may read and runs Debian's python3.11 on it (same
ABI as the build), as a service would run from /srv/app.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest

from conftest import APPS_DIR, FERROGATE, children_of, free_port, pid_alive, proc_status, run_cli, wait_until

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="switching to another user needs root")
NOBODY = pwd.getpwnam("nobody")


def ctl(*args: str, socket: Path, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """`ferrogate ARGS --control-socket SOCKET`, from another process."""
    return run_cli(*args, "--control-socket", str(socket), env=env, timeout=timeout)


def status(socket: Path) -> dict:
    r = ctl("status", "--json", socket=socket)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").replace(b"\0", b" ").decode()


def uids(pid: int) -> tuple[int, int]:
    """(real uid, real gid) of a process."""
    st = proc_status(pid)
    return int(st["Uid"].split()[0]), int(st["Gid"].split()[0])


# ---------------------------------------------------------------------------
# The control socket
# ---------------------------------------------------------------------------

def test_status_reload_workers_and_stop_from_another_process(server_factory, tmp_path):
    sock = tmp_path / "control.sock"
    srv = server_factory("basic:app", "--control-socket", str(sock), workers=2)
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600, "only its owner may command the server"
    for _ in range(5):
        assert srv.get("/hello").status_code == 200

    def counted():
        s = status(sock)
        return s if s["requests_served"] >= 5 else None
    s = wait_until(counted, timeout=10, message="the heartbeats never brought the request count")
    assert s["master_pid"] == srv.pid and s["state"] == "serving" and s["target_workers"] == 2
    assert sorted(w["pid"] for w in s["workers"]) == srv.worker_pids()
    assert all(w["state"] == "serving" and w["rss_bytes"] > 1_000_000 for w in s["workers"]), s
    assert s["listeners"] == [srv.url]

    text = ctl("status", socket=sock)
    assert text.returncode == 0
    assert f"master   pid {srv.pid}" in text.stdout and "2 of 2 serving" in text.stdout, text.stdout
    for pid in srv.worker_pids():
        assert f" {pid} " in text.stdout

    before = set(srv.worker_pids())
    r = ctl("reload", socket=sock)
    assert r.returncode == 0, r.stderr
    assert "reloaded: workers" in r.stdout, r.stdout
    after = set(srv.wait_workers(2))
    assert not before & after, "every worker was replaced"
    assert srv.count(r"ferrogate reload: rolling restart") == 1

    r = ctl("workers", "+1", socket=sock)
    assert r.returncode == 0 and "3 workers serving" in r.stdout, r.stdout + r.stderr
    assert len(srv.wait_workers(3)) == 3
    r = ctl("workers", "-2", socket=sock)
    assert r.returncode == 0 and "1 workers serving" in r.stdout, r.stdout + r.stderr
    srv.wait_workers(1)

    r = ctl("stop", socket=sock)
    assert r.returncode == 0 and "stopped" in r.stdout, r.stdout + r.stderr
    assert srv.wait_exit() == 0
    assert not sock.exists(), "the control socket goes with the server"


def test_commands_say_when_no_server_runs(tmp_path):
    r = ctl("status", socket=tmp_path / "none.sock")
    assert r.returncode == 3
    assert "no ferrogate server is running" in r.stderr and "--control-socket" in r.stderr, r.stderr
    r = run_cli("workers", "--control-socket", str(tmp_path / "none.sock"))
    assert r.returncode == 2 and "+N or -N" in r.stderr


def test_a_second_server_does_not_take_the_first_ones_socket(server_factory, tmp_path):
    sock = tmp_path / "control.sock"
    first = server_factory("basic:app", "--control-socket", str(sock))
    second = server_factory("basic:app", "--control-socket", str(sock))
    second.wait_for_log(r"Another ferrogate answers on the control socket")
    assert second.get("/hello").status_code == 200, "it serves anyway"
    assert status(sock)["master_pid"] == first.pid


def test_pid_file_is_written_and_removed(server_factory, tmp_path):
    pid_file = tmp_path / "app.pid"
    srv = server_factory("basic:app", "--pid", str(pid_file), "--control-socket", str(tmp_path / "c.sock"))
    assert pid_file.read_text() == f"{srv.pid}\n"
    assert srv.stop() == 0
    assert not pid_file.exists()


# ---------------------------------------------------------------------------
# Upgrading ferrogate itself
# ---------------------------------------------------------------------------

def wrk_errors(output: str) -> list[str]:
    return [line for line in output.splitlines() if "errors" in line.lower() or "Non-2xx" in line]


def test_upgrade_under_load_fails_no_request(server_factory, tmp_path):
    if not shutil.which("wrk"):
        pytest.skip("wrk is not installed (.ci/run installs it)")
    sock = tmp_path / "control.sock"
    pid_file = tmp_path / "app.pid"
    srv = server_factory("basic:app", "--control-socket", str(sock), "--pid", str(pid_file), workers=2)
    old_workers = srv.worker_pids()
    load = subprocess.Popen(["wrk", "-t1", "-c16", "-d6s", f"{srv.url}/hello"], stdout=subprocess.PIPE, text=True)
    time.sleep(1.5)
    r = ctl("upgrade", socket=sock)
    out, _ = load.communicate(timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"upgraded: master {srv.pid} -> " in r.stdout, r.stdout
    assert "requests in" in out and not wrk_errors(out), out

    s = status(sock)
    new_master = s["master_pid"]
    assert new_master != srv.pid and pid_alive(new_master)
    assert srv.wait_exit() == 0, "the old master drains and exits 0"
    assert not set(old_workers) & {w["pid"] for w in s["workers"]}
    assert pid_file.read_text() == f"{new_master}\n", "--pid names the new master"
    assert sock.exists(), "the new master's control socket stays when the old one exits"
    assert httpx.get(f"{srv.url}/hello").status_code == 200
    assert "ferrogate: master [basic:app]" in cmdline(new_master)
    os.kill(new_master, signal.SIGTERM)
    wait_until(lambda: not pid_alive(new_master), timeout=20)


def test_sigusr2_upgrades_and_a_failed_upgrade_keeps_the_old_master(server_factory, tmp_path):
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    shutil.copy(APPS_DIR / "basic.py", app_dir / "basic.py")
    sock = tmp_path / "control.sock"
    srv = server_factory("basic:app", "--control-socket", str(sock), cwd=app_dir)
    # The new master cannot import the app: it stops, and the old one keeps serving.
    (app_dir / "basic.py").rename(app_dir / "gone.py")
    r = ctl("upgrade", socket=sock)
    assert r.returncode == 1 and "the upgrade failed" in r.stderr, r.stdout + r.stderr
    srv.wait_for_log(r"Upgrade failed: the new master \(pid \d+\) stopped before serving", timeout=30)
    assert srv.alive() and status(sock)["master_pid"] == srv.pid
    assert srv.get("/hello").status_code == 200

    (app_dir / "gone.py").rename(app_dir / "basic.py")
    srv.signal(signal.SIGUSR2)
    wait_until(lambda: status(sock)["master_pid"] != srv.pid, timeout=30, message=srv.log_tail)
    assert srv.wait_exit() == 0
    new_master = status(sock)["master_pid"]
    assert httpx.get(f"{srv.url}/pid").status_code == 200
    os.kill(new_master, signal.SIGTERM)
    wait_until(lambda: not pid_alive(new_master), timeout=20)


def test_sighup_after_a_reinstall_upgrades_the_master(server_factory, tmp_path):
    sock = tmp_path / "control.sock"
    srv = server_factory("basic:app", "--control-socket", str(sock))
    module = Path(importlib.util.find_spec("ferrogate._ferrogate").origin)
    # What pip install -U does to the extension module: a new file in its place.
    copy = module.with_name(module.name + ".reinstall")
    shutil.copy2(module, copy)
    os.replace(copy, module)
    srv.signal(signal.SIGHUP)
    srv.wait_for_log(r"SIGHUP: ferrogate was reinstalled since this master started; upgrading the master as well")
    wait_until(lambda: status(sock)["master_pid"] != srv.pid, timeout=30, message=srv.log_tail)
    assert srv.wait_exit() == 0
    new_master = status(sock)["master_pid"]
    os.kill(new_master, signal.SIGTERM)
    wait_until(lambda: not pid_alive(new_master), timeout=20)


# ---------------------------------------------------------------------------
# Titles and the tutorial's command line
# ---------------------------------------------------------------------------

def test_processes_show_what_they_are_in_ps(server_factory, tmp_path):
    srv = server_factory("basic:app", "--control-socket", str(tmp_path / "c.sock"), workers=2)
    assert cmdline(srv.pid) == "ferrogate: master [basic:app]"
    titles = sorted(cmdline(pid) for pid in srv.worker_pids())
    assert titles == ["ferrogate: worker 1 [basic:app]", "ferrogate: worker 2 [basic:app]"], titles
    ps = subprocess.run(["ps", "-o", "args=", "-p", str(srv.pid)], capture_output=True, text=True).stdout
    assert ps.strip() == "ferrogate: master [basic:app]"


def test_the_tutorials_gunicorn_start_line(server_factory, tmp_path):
    """gunicorn_start's exec line with `gunicorn` replaced by `ferrogate`."""
    sock = tmp_path / "gunicorn.sock"
    access = tmp_path / "access.log"
    pid_file = tmp_path / "gunicorn.pid"
    srv = server_factory(None, argv=[
        FERROGATE, "basic:app", "--name", "shop", "-w", "2", "-k", "uvicorn.workers.UvicornWorker",
        f"--bind=unix:{sock}", "--log-file=-", "--access-logfile", str(access), "--pid", str(pid_file),
        "--control-socket", str(tmp_path / "c.sock"),
    ], workers=2, wait_address=str(sock))
    assert stat.S_IMODE(sock.stat().st_mode) == 0o666, "nginx (www-data) can connect, as with uvicorn and gunicorn"
    assert "--worker-class uvicorn.workers.UvicornWorker is ignored" in srv.log()
    assert pid_file.read_text() == f"{srv.pid}\n"
    assert cmdline(srv.pid) == "ferrogate: master [shop]"
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(sock))) as c:
        assert c.get("http://localhost/hello").status_code == 200
    wait_until(lambda: "GET /hello" in access.read_text(), timeout=5)


def test_signals_of_logrotate_and_of_gunicorns_upgrade_do_not_kill_the_master(server_factory, tmp_path):
    srv = server_factory("basic:app", "--control-socket", str(tmp_path / "c.sock"))
    srv.signal(signal.SIGUSR1)
    srv.wait_for_log(r"reopening log files")
    assert srv.alive() and srv.get("/hello").status_code == 200


def test_help_offers_only_values_that_work():
    r = run_cli("--help")
    block = r.stdout[r.stdout.index("--interface"):][:300]
    assert "asgi3" in block and "asgi2" not in block and "wsgi" not in block, block


def test_running_as_root_without_user_warns(server_factory, tmp_path):
    if not ROOT:
        pytest.skip("the warning is for root")
    srv = server_factory("basic:app", "--control-socket", str(tmp_path / "c.sock"))
    assert "Running the app as root" in srv.log() and "--user" in srv.log()


# ---------------------------------------------------------------------------
# --user and --group
# ---------------------------------------------------------------------------

@pytest.fixture
def portable():
    """ferrogate and the test apps in a directory any user may read, run by Debian's python3.11."""
    python = shutil.which("python3.11", path="/usr/bin")
    if python is None:
        pytest.skip("Debian's python3.11 is not installed")
    base = Path(tempfile.mkdtemp(prefix="fg-service-"))
    package = Path(importlib.util.find_spec("ferrogate").origin).parent
    shutil.copytree(package, base / "site" / "ferrogate", ignore=shutil.ignore_patterns("__pycache__"))
    (base / "app").mkdir()
    shutil.copy(APPS_DIR / "basic.py", base / "app" / "basic.py")
    for path in [base, *base.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    yield {"python": python, "base": base, "env": {"PYTHONPATH": str(base / "site")}, "cwd": base / "app"}
    shutil.rmtree(base, ignore_errors=True)


def portable_server(server_factory, portable, *args, **kw):
    port = free_port()
    # --bind, not --host/--port: a test's own --bind adds to it instead of replacing it.
    argv = [portable["python"], "-m", "ferrogate", "basic:app", "--bind", f"127.0.0.1:{port}", *args]
    srv = server_factory(None, argv=argv, env=portable["env"], cwd=portable["cwd"], port=port, **kw)
    return srv


@needs_root
def test_user_runs_master_and_workers_unprivileged(server_factory, portable):
    base = portable["base"]
    sock, ctl_sock, pid_file = base / "app.sock", base / "run" / "control.sock", base / "app.pid"
    srv = portable_server(server_factory, portable, "--user", "nobody", "--workers", "2", "--bind", f"unix:{sock}",
                          "--control-socket", str(ctl_sock), "--pid", str(pid_file), workers=2)
    assert "Running as user nobody" in srv.log() and "Running the app as root" not in srv.log()
    for pid in [srv.pid, *srv.worker_pids()]:
        assert uids(pid) == (NOBODY.pw_uid, NOBODY.pw_gid), f"pid {pid}"
    assert srv.get("/pid").json()["pid"] in srv.worker_pids()
    assert NOBODY.pw_dir in srv.get("/env?name=HOME").text, "the workers get the user's HOME"
    for path, mode in [(sock, 0o666), (ctl_sock, 0o600)]:
        st = path.stat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (NOBODY.pw_uid, mode), path
    s = status(ctl_sock)
    assert s["master_user"] == "nobody" and len(s["workers"]) == 2
    assert srv.stop() == 0


@needs_root
def test_master_stays_root_when_it_must_reopen_logs_where_the_user_cannot_write(server_factory, portable):
    logs = portable["base"] / "logs"
    logs.mkdir(mode=0o755)  # root's: nobody could not create a new file there after logrotate
    srv = portable_server(server_factory, portable, "--user", "nobody", "--workers", "1", "--log-file", str(logs / "error.log"),
                          "--control-socket", str(portable["base"] / "c.sock"), wait=False)
    # The server's log goes to the file, not to the fixture's capture.
    def served():
        text = (logs / "error.log").read_text()
        return text if "is serving" in text else None
    log = wait_until(served, timeout=20)
    assert "the master stays root: it creates the new" in log and "on SIGUSR1" in log, log
    assert uids(srv.pid)[0] == 0
    (worker,) = srv.worker_pids()
    assert uids(worker) == (NOBODY.pw_uid, NOBODY.pw_gid)
    assert (logs / "error.log").stat().st_uid == NOBODY.pw_uid, "the workers append to it"


@needs_root
def test_user_errors_are_caught_before_anything_starts(server_factory, portable, tmp_path):
    rc, log = server_factory.run(None, argv=[portable["python"], "-m", "ferrogate", "basic:app", "--user", "no-such-user-fg"],
                                 env=portable["env"], cwd=portable["cwd"])
    assert rc == 2 and "--user no-such-user-fg: no such user" in log and "useradd" in log, log
    closed = portable["base"] / "closed"
    closed.mkdir(mode=0o700)
    shutil.copy(portable["cwd"] / "basic.py", closed / "basic.py")
    rc, log = server_factory.run(None, argv=[portable["python"], "-m", "ferrogate", "basic:app", "--user", "nobody",
                                             "--control-socket", str(tmp_path / "c.sock")],
                                 env=portable["env"], cwd=closed)
    assert rc == 1 and "cannot read the app's directory" in log and str(closed) in log, log


@needs_root
def test_only_root_and_the_service_user_may_use_the_control_socket(server_factory, portable):
    sock = portable["base"] / "control.sock"
    portable_server(server_factory, portable, "--control-socket", str(sock))  # runs as root
    as_nobody = subprocess.run(
        [portable["python"], "-m", "ferrogate", "status", "--control-socket", str(sock)],
        env={**os.environ, **portable["env"]}, capture_output=True, text=True, user=NOBODY.pw_uid, group=NOBODY.pw_gid,
        cwd=portable["cwd"], timeout=30,
    )
    assert as_nobody.returncode == 1, as_nobody.stdout + as_nobody.stderr
    assert "run the command as root" in as_nobody.stderr, as_nobody.stderr


def test_status_lists_the_certificates_served(server_factory, tmp_path):
    from tls_support import make_pki
    pki = make_pki(tmp_path)
    sock = tmp_path / "control.sock"
    server_factory("basic:app", "--ssl-certfile", str(pki.server.crt), "--ssl-keyfile", str(pki.server.key),
                   "--control-socket", str(sock))
    (cert,) = status(sock)["certificates"]
    assert "localhost" in cert["names"] and cert["not_after"] > time.time() + 86_400, cert
    text = ctl("status", socket=sock).stdout
    assert "cert     localhost" in text and "expires in" in text, text
