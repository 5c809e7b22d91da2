"""Log destinations: --log-file, --access-log-file (and gunicorn's spellings, `-`),
reopening on SIGUSR1 after logrotate renamed the files, and --log-format json."""

import json
import os
import re
import signal
import stat
import textwrap
from pathlib import Path

import pytest

from conftest import APPS_DIR, FERROGATE, LOG_LINE, free_port, wait_until

ACCESS_LINE = re.compile(r'^\S+ - - \[[^\]]+\] "(?P<request>[^"]*)" (?P<status>\d{3}) \d+ "[^"]*" "[^"]*" \d+\.\d{3}$')
SERVER_KEYS = {"time", "level", "pid", "message"}
ACCESS_KEYS = {"time", "remote_addr", "method", "path", "query", "protocol", "status", "bytes", "referer",
               "user_agent", "request_time", "pid", "host"}
RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

# An app that writes to stderr itself: at import, on a request, and through a
# traceback Python prints (an exception in a thread), besides one ferrogate logs.
STDERR_APP = textwrap.dedent('''
    import sys, threading
    print("app imported, said on stderr", file=sys.stderr)

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                await send({"type": msg["type"] + ".complete"})
                if msg["type"] == "lifespan.shutdown":
                    return
        if scope["path"] == "/raise":
            raise ValueError("boom raised by the app")
        if scope["path"] == "/print":
            print("printed to stderr by the app", file=sys.stderr)
        if scope["path"] == "/thread":
            def fail():
                raise RuntimeError("boom in the app's thread")
            t = threading.Thread(target=fail)
            t.start()
            t.join()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
''')


def start(factory, app, *args, server_log: Path, separate_stderr: bool = False, workers: int = 1, **kw):
    """Starts ferrogate whose server log is `server_log` (a --log-file, or with
    `separate_stderr` stderr redirected there); the test's capture keeps stdout
    (`srv.stdout_path`). The Server's log helpers read `server_log`."""
    if separate_stderr:
        port = free_port()
        argv = ["sh", "-c", 'exec "$@" 2>"$0"', str(server_log), FERROGATE, app,
                "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers), *args]
        srv = factory(None, argv=argv, port=port, workers=workers, wait=False, **kw)
    else:
        srv = factory(app, *args, workers=workers, wait=False, **kw)
    srv.stdout_path = srv.log_path
    srv.log_path = Path(server_log)
    wait_until(lambda: srv.log_path.exists() or srv.proc.poll() is not None, 20,
               message=lambda: f"{server_log} never appeared\n{srv.stdout_path.read_text()}")
    srv.wait_ready()
    return srv


def stdout_of(srv) -> str:
    return srv.stdout_path.read_bytes().decode("utf-8", "replace")


def lines(path: Path) -> list[str]:
    return path.read_bytes().decode("utf-8", "replace").splitlines() if path.exists() else []


def wait_for_line(path: Path, pattern: str, count: int = 1):
    def found():
        hits = [line for line in lines(path) if re.search(pattern, line)]
        return hits if len(hits) >= count else None
    return wait_until(found, 20, message=lambda: f"{path} never had {count} line(s) matching {pattern!r}:\n"
                      + "\n".join(lines(path)[-40:]))


def test_log_file_gets_the_servers_lines_and_everything_the_app_writes_to_stderr(server_factory, tmp_path):
    (tmp_path / "stderr_app.py").write_text(STDERR_APP)
    log = tmp_path / "logs" / "error.log"
    log.parent.mkdir()
    srv = start(server_factory, "stderr_app:app", "--log-file", str(log), "--app-dir", str(tmp_path),
                server_log=log, workers=2)
    assert srv.get("/raise").status_code == 500
    assert srv.get("/print").status_code == 200
    assert srv.get("/thread").status_code == 200
    srv.wait_for_log(r"RuntimeError: boom in the app's thread")
    srv.wait_for_log(r'"GET /thread HTTP/1\.1" 200')
    text = srv.log()
    for expected in ["Starting ferrogate", "Listening at: ", "Worker ready", "app imported, said on stderr",
                     "Exception in ASGI application", "ValueError: boom raised by the app",
                     "printed to stderr by the app", "Traceback (most recent call last)"]:
        assert expected in text, f"{expected!r} missing from {log}:\n{text}"
    # With no --access-log-file, access lines go where the server's log goes.
    assert any(ACCESS_LINE.match(line) for line in text.splitlines()), text
    workers = set(srv.worker_pids())
    assert {int(m.group(2)) for m in map(LOG_LINE.match, text.splitlines()) if m} >= workers | {srv.pid}
    out = stdout_of(srv)
    assert "Starting ferrogate" not in out and "boom" not in out and "printed to stderr" not in out, out
    assert stat.S_IMODE(log.stat().st_mode) & 0o037 == 0, oct(log.stat().st_mode)


def test_access_log_file_gets_the_access_lines_and_nothing_else(server_factory, tmp_path):
    log, access = tmp_path / "error.log", tmp_path / "access.log"
    srv = start(server_factory, "basic:app", "--error-logfile", str(log), "--access-log-file", str(access),
                server_log=log)
    assert srv.get("/hello?x=1").status_code == 200
    assert srv.get("/error-before").status_code == 500
    wait_for_line(access, r'"GET /error-before HTTP/1\.1" 500')
    srv.wait_for_log(r"ValueError: boom before start")
    got = lines(access)
    assert [ACCESS_LINE.match(line).group("request") for line in got] == ["GET /hello?x=1 HTTP/1.1", "GET /error-before HTTP/1.1"], got
    assert not [line for line in lines(log) if ACCESS_LINE.match(line)], srv.log()
    assert "GET /hello" not in stdout_of(srv)


def test_access_logfile_dash_is_stdout(server_factory, tmp_path):
    stderr = tmp_path / "stderr"
    srv = start(server_factory, "basic:app", "--access-logfile", "-", server_log=stderr, separate_stderr=True)
    srv.get("/hello?on=stdout")
    wait_until(lambda: "/hello?on=stdout" in stdout_of(srv), 20, message=lambda: stdout_of(srv) + srv.log())
    out = [line for line in stdout_of(srv).splitlines() if line]
    assert out and all(ACCESS_LINE.match(line) for line in out), out
    assert "Worker ready" in srv.log() and "/hello" not in srv.log(), srv.log()


def test_log_file_dash_is_stderr(server_factory, tmp_path):
    stderr = tmp_path / "stderr"
    srv = start(server_factory, "basic:app", "--log-file=-", server_log=stderr, separate_stderr=True)
    srv.get("/hello?on=stderr")
    srv.wait_for_log(r'"GET /hello\?on=stderr HTTP/1\.1" 200')
    assert "Starting ferrogate" in srv.log()
    assert "Starting ferrogate" not in stdout_of(srv)
    assert not (APPS_DIR / "-").exists(), "`-` is not a file name here"


def test_sigusr1_reopens_renamed_files_and_the_server_keeps_serving(server_factory, tmp_path):
    log, access = tmp_path / "error.log", tmp_path / "access.log"
    srv = start(server_factory, "basic:app", "--log-file", str(log), "--access-log-file", str(access),
                server_log=log, workers=2)
    workers = sorted(srv.worker_pids())
    srv.get("/hello?before=1")
    wait_for_line(access, r"before=1")
    log.rename(tmp_path / "error.log.1")
    access.rename(tmp_path / "access.log.1")

    srv.signal(signal.SIGUSR1)
    wait_until(log.exists, 20, message="the master did not create a new --log-file")
    srv.wait_for_log(r"\[INFO\] Received SIGUSR1: reopening log files")
    # Each worker says so in the new file: from then on its lines go there.
    for pid in workers:
        srv.wait_for_log(rf"\[{pid}\] \[INFO\] Reopened the log files")
    assert access.exists(), "the master creates the new access log"
    for i in range(4):
        assert srv.get(f"/hello?after={i}").status_code == 200
    assert srv.get("/error-before").status_code == 500
    wait_for_line(access, r"/error-before")
    srv.wait_for_log(r"ValueError: boom before start")

    assert srv.alive(), "SIGUSR1 must not kill the master"
    assert sorted(srv.worker_pids()) == workers, "the workers are the same processes"
    new_access, old_access = "\n".join(lines(access)), "\n".join(lines(tmp_path / "access.log.1"))
    assert "after=3" in new_access and "before=1" not in new_access, new_access
    assert "before=1" in old_access and "after=" not in old_access, old_access
    old_log = "\n".join(lines(tmp_path / "error.log.1"))
    assert "Starting ferrogate" in old_log and "Received SIGUSR1" not in old_log and "boom" not in old_log, old_log
    assert "Starting ferrogate" not in srv.log()
    assert stat.S_IMODE(access.stat().st_mode) & 0o037 == 0


def test_sigusr1_to_every_process_kills_none(server_factory):
    """What `systemctl kill -s USR1` does (it signals the whole unit), with no log file at all."""
    srv = server_factory("basic:app", workers=2)
    workers = sorted(srv.worker_pids())
    mark = srv.log_mark()
    os.killpg(srv.pid, signal.SIGUSR1)
    srv.wait_for_log(r"Received SIGUSR1: reopening log files", since=mark)
    srv.wait_for_log(r"Reopened the log files \(asked by SIGUSR1\)", count=2, since=mark)
    assert srv.get("/hello").status_code == 200
    assert srv.alive() and sorted(srv.worker_pids()) == workers, srv.log_since(mark)


def test_json_lines_parse_with_the_documented_keys(server_factory, tmp_path):
    log, access = tmp_path / "error.log", tmp_path / "access.log"
    srv = start(server_factory, "basic:app", "--log-format", "json", "--log-file", str(log),
                "--access-log-file", str(access), "--access-log-format", "$status", server_log=log)
    srv.get("/hello?q=1", headers={"referer": "http://r.example/", "user-agent": "plain"})
    srv.get("/error-before")
    srv.raw(b'GET /a"b\\c HTTP/1.1\r\nHost: h.example\r\nUser-Agent: evil "q" \\ \t\xe9}\r\nConnection: close\r\n\r\n')
    wait_for_line(access, r"evil", 1)
    wait_for_line(access, r"/error-before", 1)
    srv.wait_for_log(r"boom before start")

    server = [json.loads(line) for line in lines(log)]
    assert server and all(set(o) == SERVER_KEYS for o in server), server
    assert all(RFC3339_UTC.match(o["time"]) and isinstance(o["pid"], int) for o in server), server
    (warning,) = [o for o in server if "--access-log-format" in o["message"]]
    assert warning["level"] == "warning" and warning["pid"] == srv.pid
    (error,) = [o for o in server if "Exception in ASGI application" in o["message"]]
    assert error["level"] == "error" and "ValueError: boom before start" in error["message"]
    assert "\n" in error["message"], "the traceback stays whole, inside one line"

    got = [json.loads(line) for line in lines(access)]
    assert all(set(o) == ACCESS_KEYS for o in got), got
    by_path = {o["path"]: o for o in got}
    hello = by_path["/hello"]
    assert (hello["method"], hello["query"], hello["protocol"], hello["status"]) == ("GET", "q=1", "HTTP/1.1", 200)
    assert (hello["referer"], hello["user_agent"], hello["remote_addr"]) == ("http://r.example/", "plain", "127.0.0.1")
    assert hello["bytes"] == len(b"Hello, world!\n") and hello["pid"] in srv.worker_pids()
    assert isinstance(hello["request_time"], float) and RFC3339_UTC.match(hello["time"])
    evil = by_path['/a"b\\c']
    assert evil["user_agent"] == 'evil "q" \\ \t\u00e9}', evil
    assert (evil["host"], evil["query"], evil["referer"]) == ("h.example", None, None)
    assert by_path["/error-before"]["status"] == 500


@pytest.mark.parametrize("option", ["--log-file", "--access-log-file"])
def test_a_log_path_in_a_missing_directory_is_refused_with_the_fix(server_factory, tmp_path, option):
    bad = tmp_path / "no" / "such" / "file.log"
    rc, out = server_factory.run("basic:app", option, str(bad))
    assert rc == 1, out
    assert (f"cannot open {option} {bad}: No such file or directory (os error 2); "
            f"create the directory {bad.parent} or choose a path the server can write") in out, out
    assert "Starting ferrogate" not in out


def test_a_directory_as_log_file_is_refused(server_factory, tmp_path):
    rc, out = server_factory.run("basic:app", "--log-file", str(tmp_path))
    assert rc == 1, out
    assert f"cannot open --log-file {tmp_path}: Is a directory (os error 21); give a file's path, not a directory's" in out, out
