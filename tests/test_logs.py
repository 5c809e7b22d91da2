"""What ferrogate writes to stderr: startup lines, the access log, tracebacks."""

import re
import socket
import threading

import httpx
import pytest

from conftest import LOG_LINE, wait_until

ACCESS_LINE = re.compile(
    r'^(?P<addr>\S+) - - \[(?P<time>\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4})\] '
    r'"(?P<request>[^"]*)" (?P<status>\d{3}) (?P<bytes>\d+) "(?P<referer>[^"]*)" "(?P<ua>[^"]*)" (?P<time_taken>\d+\.\d{3})$'
)


@pytest.fixture(scope="module")
def srv(module_server_factory):
    return module_server_factory("basic:app", workers=2)


def access_lines(text: str):
    return [m for m in (ACCESS_LINE.match(line) for line in text.splitlines()) if m]


def test_startup_lines(srv):
    lines = srv.log_lines()
    master = srv.pid
    workers = srv.worker_pids()
    parsed = [LOG_LINE.match(line) for line in lines]
    startup = [m for m in parsed if m]
    assert startup, srv.log()
    by_msg = {m.group(4): m for m in startup}

    def find(pattern):
        hits = [m for m in startup if re.search(pattern, m.group(4))]
        assert hits, f"no log line matches {pattern!r}:\n{srv.log()}"
        return hits

    (start,) = find(r"^Starting ferrogate \S+")
    assert int(start.group(2)) == master and start.group(3) == "INFO"
    (listen,) = find(rf"^Listening at: http://127\.0\.0\.1:{srv.port}\s*$")
    assert int(listen.group(2)) == master
    find(r"^Using 2 workers for basic:app$")
    booting = find(r"^Booting worker with pid: \d+$")
    assert {int(m.group(4).split()[-1]) for m in booting} == set(workers)
    serving = find(r"^Worker \d+ is serving$")
    assert {int(m.group(4).split()[1]) for m in serving} == set(workers)
    assert all(int(m.group(2)) == master for m in serving)
    ready = find(r"^Worker ready")
    assert {int(m.group(2)) for m in ready} == set(workers), "each worker logs its readiness under its own pid"
    assert by_msg  # every startup line above parsed with the [date] [pid] [LEVEL] layout


def test_listening_line_has_no_trailing_whitespace(srv):
    line = next(line for line in srv.log_lines() if "Listening at:" in line)
    assert line == line.rstrip(), f"trailing whitespace in {line!r}"


def test_access_log_combined_format(srv):
    mark = srv.log_mark()
    r = srv.get("/hello?x=1", headers={"user-agent": "test-agent/1.0", "referer": "http://ref.example/page"})
    assert r.status_code == 200
    srv.wait_for_log(r'"GET /hello\?x=1 HTTP/1\.1"', since=mark)
    (m,) = [m for m in access_lines(srv.log_since(mark)) if "/hello?x=1" in m.group("request")]
    assert m.group("addr") == "127.0.0.1"
    assert m.group("request") == "GET /hello?x=1 HTTP/1.1"
    assert m.group("status") == "200"
    assert m.group("bytes") == str(len(r.content))
    assert m.group("referer") == "http://ref.example/page"
    assert m.group("ua") == "test-agent/1.0"


def test_access_log_counts_streamed_bytes_and_errors(srv):
    mark = srv.log_mark()
    srv.get("/stream?n=4&size=250")
    srv.get("/error-before")
    srv.get("/status?code=404")
    srv.wait_for_log(r'"GET /status\?code=404 HTTP/1\.1" 404', since=mark)
    lines = {m.group("request").split()[1]: m for m in access_lines(srv.log_since(mark))}
    assert lines["/stream?n=4&size=250"].group("bytes") == "1000"
    assert lines["/error-before"].group("status") == "500"
    assert lines["/status?code=404"].group("bytes") == "0"


def test_access_log_escapes_quotes_and_control_bytes(srv):
    mark = srv.log_mark()
    srv.raw(b'GET /hello HTTP/1.1\r\nHost: x\r\nUser-Agent: evil "agent" \xe9\\\r\nConnection: close\r\n\r\n')
    srv.wait_for_log(r'"GET /hello HTTP/1\.1" 200 14 "-" "evil', since=mark)
    line = next(line for line in srv.log_since(mark).splitlines() if '"evil' in line)
    assert ACCESS_LINE.match(line), line
    assert r'"evil \x22agent\x22 \xE9\x5C"' in line, line


def test_bad_requests_are_access_logged(srv):
    mark = srv.log_mark()
    srv.raw(b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n\r\n")
    srv.wait_for_log(r'"POST /x HTTP/1\.1" 400 ', since=mark)


def test_traceback_is_logged_once_at_error_level(srv):
    mark = srv.log_mark()
    assert srv.get("/error-before").status_code == 500
    srv.wait_for_log(r"ValueError: boom before start", since=mark)
    text = srv.log_since(mark)
    assert text.count("ValueError: boom before start") == 1
    head = next(line for line in text.splitlines() if "Exception in ASGI application" in line)
    m = LOG_LINE.match(head)
    assert m and m.group(3) == "ERROR"
    assert int(m.group(2)) in srv.worker_pids()
    assert "GET /error-before" in head


def test_lines_do_not_interleave_under_concurrent_load(srv):
    mark = srv.log_mark()

    def hammer():
        with httpx.Client(base_url=srv.url, timeout=10) as c:
            for i in range(100):
                c.get(f"/hello?n={i}", headers={"user-agent": "x" * 300})

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    srv.wait_for_log(r'"GET /hello\?n=99 HTTP/1\.1"', count=4, since=mark)
    for line in srv.log_since(mark).splitlines():
        assert ACCESS_LINE.match(line) or LOG_LINE.match(line), f"mangled log line: {line[:200]!r}"


def test_custom_access_log_format(server_factory):
    srv = server_factory("basic:app", "--access-log-format",
                         "$status $request_method $uri $server_protocol $pid ua=$http_user_agent x=$http_x_custom")
    srv.get("/hello?q=1", headers={"user-agent": "fmt-test", "x-custom": "cv"})
    worker = srv.worker_pids()[0]
    srv.wait_for_log(rf"^200 GET /hello HTTP/1\.1 {worker} ua=fmt-test x=cv$")


def test_no_access_log(server_factory):
    srv = server_factory("basic:app", "--no-access-log")
    srv.get("/hello")
    srv.get("/error-before")
    srv.wait_for_log(r"boom before start")
    assert "GET /hello" not in srv.log()
    assert "Worker ready" in srv.log()


def test_log_level_warning_hides_info_but_keeps_errors(server_factory):
    srv = server_factory("basic:app", "--log-level", "warning", workers=None)
    assert srv.get("/error-before").status_code == 500
    srv.wait_for_log(r"\[ERROR\] Exception in ASGI application")
    assert "[INFO]" not in srv.log()


def test_log_level_error_hides_warnings(server_factory):
    srv = server_factory("basic:app", "--log-level", "error", workers=None)
    srv.get("/hello")
    assert "[INFO]" not in srv.log() and "[WARNING]" not in srv.log()


def test_log_level_debug_is_accepted(server_factory):
    srv = server_factory("basic:app", "--log-level", "debug")
    assert srv.get("/hello").status_code == 200


def test_client_disconnect_is_not_logged_as_an_app_error(server_factory, tmp_path):
    """The app returns quietly after receiving http.disconnect (the client left mid-body):
    that is the client's doing, not an application error (uvicorn logs nothing either)."""
    srv = server_factory("basic:app", workers=1)
    out = tmp_path / "seen"
    mark = srv.log_mark()
    with socket.create_connection(srv.address) as s:
        s.sendall(f"POST /disconnect?path={out} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n".encode()
                  + b"x" * 10)
    wait_until(lambda: out.exists() and out.read_text(), 10, message="the app never saw the disconnect")
    # The same (only) worker serves one more request: by then the first one's epilogue has run.
    assert srv.get("/hello?after=1").status_code == 200
    srv.wait_for_log(r'"GET /hello\?after=1 HTTP/1\.1"', since=mark)
    assert "[ERROR]" not in srv.log_since(mark), srv.log_since(mark)


def test_request_time_covers_the_whole_request(srv):
    mark = srv.log_mark()
    srv.get("/slow?secs=0.3")
    srv.wait_for_log(r'"GET /slow\?secs=0\.3 HTTP/1\.1" 200', since=mark)
    (m,) = [m for m in access_lines(srv.log_since(mark)) if "/slow" in m.group("request")]
    assert 0.3 <= float(m.group("time_taken")) < 10
