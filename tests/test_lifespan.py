"""ASGI lifespan: startup, state, shutdown, and startup failures that stop the server."""

import signal
import socket

from conftest import json_of, parse_response, read_response, wait_until

EXIT_STARTUP_FAILED = 3


def test_startup_complete_and_state_reaches_requests(server_factory):
    srv = server_factory("basic:app", workers=2)
    assert srv.count(r"\[INFO\] Application startup complete\.") == 2
    pids = set()
    for _ in range(20):
        state = json_of(srv.get("/state"))
        assert state["greeting"] == "hello from lifespan"
        pids.add(state["started_by"])
    # Each worker ran its own startup: the state a request sees comes from its worker.
    assert pids <= set(srv.worker_pids())


def test_shutdown_runs_in_every_worker_on_sigterm(server_factory, tmp_path):
    marker = tmp_path / "shutdown"
    srv = server_factory("basic:app", workers=2, env={"FG_SHUTDOWN_MARKER": str(marker)})
    workers = set(srv.worker_pids())
    assert len(workers) == 2
    srv.signal(signal.SIGTERM)
    assert srv.wait_exit() == 0
    assert marker.exists(), "lifespan shutdown never ran"
    assert {int(x) for x in marker.read_text().split()} == workers
    assert srv.count(r"Application shutdown complete\.") == 2


def test_fastapi_lifespan_shutdown(server_factory, tmp_path):
    marker = tmp_path / "shutdown"
    srv = server_factory("fastapi_app:app", env={"FG_SHUTDOWN_MARKER": str(marker)})
    assert json_of(srv.get("/state"))["db"] == "connected"
    assert srv.stop() == 0
    assert marker.read_text().startswith("fastapi ")


def test_startup_failed_stops_the_server_and_reports_once(server_factory):
    rc, log = server_factory.run("lifespan_apps:failing_startup", workers=3)
    assert rc == EXIT_STARTUP_FAILED, log
    assert log.count("FG-STARTUP-FAILED") == 1, f"the error must be printed once, not per worker:\n{log}"
    assert "Application startup failed" in log


def test_startup_exception_with_lifespan_on_stops_the_server(server_factory):
    rc, log = server_factory.run("lifespan_apps:raising_startup", "--lifespan", "on", workers=2)
    assert rc == EXIT_STARTUP_FAILED, log
    assert log.count("RuntimeError: FG-STARTUP-RAISED") == 1, log


def test_app_without_lifespan_support_serves_in_auto_mode(server_factory):
    srv = server_factory("lifespan_apps:no_lifespan")
    assert srv.get("/").text == "no lifespan here"
    assert "lifespan" in srv.log() and "unsupported" in srv.log()
    # The app's refusal is not an error in auto mode.
    assert "[ERROR]" not in srv.log()


def test_app_without_lifespan_support_fails_with_lifespan_on(server_factory):
    rc, log = server_factory.run("lifespan_apps:no_lifespan", "--lifespan", "on")
    assert rc == EXIT_STARTUP_FAILED, log
    assert "FG-UNSUPPORTED-SCOPE" in log


def test_lifespan_off_never_sends_lifespan_events(server_factory):
    srv = server_factory("lifespan_apps:recording", "--lifespan", "off")
    assert srv.get("/").text == ""
    assert "Application startup complete" not in srv.log()
    srv2 = server_factory("lifespan_apps:recording", "--lifespan", "on")
    assert srv2.get("/").text == "lifespan.startup"


def test_requests_wait_for_startup_to_complete(server_factory, tmp_path):
    gate = tmp_path / "gate"
    srv = server_factory("lifespan_apps:gated_startup", env={"FG_STARTUP_GATE": str(gate)}, wait=False)
    # The master binds before workers start: the port accepts while startup is still running.
    wait_until(srv._accepts, 20, message=lambda: f"port never opened\n{srv.log()}")
    # The request is in the kernel's queue before startup is allowed to finish.
    with socket.create_connection(srv.address, timeout=30) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert "Application startup complete" not in srv.log()
        gate.touch()
        status, _, body = parse_response(read_response(s))
    assert status == 200
    assert body == b"yes", "a request was served before lifespan startup completed"


def test_shutdown_failure_is_logged(server_factory):
    srv = server_factory("lifespan_apps:failing_shutdown")
    assert srv.get("/").status_code == 200
    srv.stop()
    assert "FG-SHUTDOWN-FAILED" in srv.log()
    assert "[ERROR]" in srv.log()


def test_import_error_stops_the_server_once_with_traceback(server_factory):
    rc, log = server_factory.run("broken_import:app", workers=3)
    assert rc == EXIT_STARTUP_FAILED, log
    assert log.count("ImportError: FG-IMPORT-BROKEN") == 1, f"printed more than once:\n{log}"
    assert "broken_import.py" in log


def test_missing_module_stops_the_server(server_factory):
    rc, log = server_factory.run("no_such_module_here:app", workers=2)
    assert rc == EXIT_STARTUP_FAILED, log
    assert log.count('Could not import module "no_such_module_here"') == 1, log


def test_missing_attribute_stops_the_server(server_factory):
    rc, log = server_factory.run("basic:no_such_attr", workers=2)
    assert rc == EXIT_STARTUP_FAILED, log
    assert log.count('Attribute "no_such_attr" not found in module "basic"') == 1, log


def test_non_callable_app_stops_the_server(server_factory):
    rc, log = server_factory.run("factory_app:not_an_app")
    assert rc == EXIT_STARTUP_FAILED, log
    assert "not an ASGI application" in log


def test_tasks_the_app_leaves_running_are_cancelled_at_the_stop(server_factory, tmp_path):
    """A task the app started itself and never ends (sse-starlette's shutdown watcher is one)
    is cancelled when the loop closes, as asyncio.run() and uvicorn do: it sees CancelledError,
    and asyncio never prints "Task was destroyed but it is pending!"."""
    marker = tmp_path / "cancelled"
    srv = server_factory("lifespan_apps:background_task_left_running", env={"FG_BACKGROUND_MARKER": str(marker)})
    assert srv.get("/").status_code == 200
    srv.signal(signal.SIGTERM)
    assert srv.wait_exit() == 0
    assert "Task was destroyed" not in srv.log(), srv.log_tail()
    assert marker.exists() and marker.read_text() == "cancelled"
