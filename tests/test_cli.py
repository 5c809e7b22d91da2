"""The command line: help, flag errors, environment variables, --env-file, --factory,
--app-dir, and uvicorn compatibility of the flag set."""

import subprocess
import sys

import pytest

from conftest import APPS_DIR, FERROGATE, TESTS_DIR, free_port, json_of, run_cli

# A flag whose check runs last when the flags are turned into a configuration:
# seeing its error proves every flag before it was accepted, without starting a server.
SENTINEL = ["--max-header-size", "100"]
SENTINEL_ERROR = "--max-header-size must be at least"


def test_help_lists_option_groups_and_exits_0():
    r = run_cli("--help")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for heading in ["Usage: ferrogate", "Application:", "Listening:", "Workers:", "HTTP:", "Proxy:",
                    "WebSocket:", "Logging:", "Signals", "FERROGATE_WORKERS"]:
        assert heading in out, f"--help lacks {heading!r}"
    for flag in ["--workers", "--uds", "--fd", "--reload", "--timeout", "--forwarded-allow-ips", "--access-log-format"]:
        assert flag in out


def test_short_help_and_version():
    r = run_cli("-h")
    assert r.returncode == 0 and "Usage:" in r.stdout
    r = run_cli("--version")
    assert r.returncode == 0
    assert r.stdout.startswith("ferrogate ")


def test_python_dash_m_works_like_the_command():
    r = subprocess.run([sys.executable, "-m", "ferrogate", "--version"], capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ferrogate ")


def test_missing_app_is_a_usage_error():
    r = run_cli()
    assert r.returncode == 2
    assert "<APP>" in r.stderr


BAD_VALUES = [
    (["--workers", "abc"], "--workers"),
    (["--workers", "0"], "--workers"),
    (["--port", "70000"], "--port"),
    (["--port", "http"], "--port"),
    (["--uds-mode", "999"], "--uds-mode"),
    (["--lifespan", "maybe"], "--lifespan"),
    (["--log-level", "loud"], "--log-level"),
    (["--timeout", "soon"], "--timeout"),
    (["--timeout", "-1"], "--timeout"),
    (["--backlog", "-5"], "--backlog"),
    (["--header", "nocolon"], "--header"),
    (["--header", "bad name:v"], "--header"),
    (["--forwarded-allow-ips", "localhost"], "--forwarded-allow-ips"),
    (["--access-log-format", "$nope"], "--access-log-format"),
    (["--bind", "nowhere"], "--bind"),
    (["--bind", "127.0.0.1:notaport"], "--bind"),
    (["--max-header-size", "100"], "--max-header-size"),
    (["--ws-ping-interval", "abc"], "--ws-ping-interval"),
    (["--ws-per-message-deflate", "maybe"], "--ws-per-message-deflate"),
    (["--limit-max-requests", "lots"], "--limit-max-requests"),
    (["--env-file", "/nonexistent/ferrogate.env"], "--env-file"),
]


@pytest.mark.parametrize("args, flag", BAD_VALUES, ids=[" ".join(a) for a, _ in BAD_VALUES])
def test_bad_flag_value_names_the_flag_and_exits_2(args, flag):
    r = run_cli("basic:app", *args)
    assert r.returncode == 2, f"exit {r.returncode}: {r.stderr}"
    assert flag in r.stderr, f"the error does not name {flag}: {r.stderr!r}"


def test_app_without_colon_is_a_usage_error():
    r = run_cli("main")
    assert r.returncode == 2
    assert "MODULE:ATTRIBUTE" in r.stderr


def test_bad_environment_value_names_the_flag():
    r = run_cli("basic:app", env={"FERROGATE_WORKERS": "many"})
    assert r.returncode == 2
    assert "--workers" in r.stderr and "many" in r.stderr


def test_header_value_with_a_comma_is_one_header(server_factory):
    srv = server_factory("basic:app", "--header", "cache-control:no-cache, no-store")
    assert srv.get("/hello").headers["cache-control"] == "no-cache, no-store"


# --------------------------------------------------------------------------
# Environment variables
# --------------------------------------------------------------------------

def test_every_option_from_the_environment(server_factory):
    port = free_port()
    srv = server_factory(None, bind=[], workers=None, port=port, env={
        "FERROGATE_APP": "basic:app",
        "FERROGATE_HOST": "127.0.0.1",
        "FERROGATE_PORT": str(port),
        "FERROGATE_WORKERS": "2",
        "FERROGATE_ROOT_PATH": "/env-root",
        "FERROGATE_ACCESS_LOG": "false",
        "FERROGATE_SERVER_HEADER": "false",
        "FERROGATE_HEADER": "x-from-env:yes",
    })
    srv.wait_workers(2)
    r = srv.get("/scope")
    scope = json_of(r)
    assert scope["root_path"] == "/env-root"
    assert "server" not in r.headers
    assert r.headers["x-from-env"] == "yes"
    assert '"GET /scope' not in srv.log(), "FERROGATE_ACCESS_LOG=false did not turn the access log off"


def test_log_level_from_the_environment(server_factory):
    # Without INFO lines the readiness check cannot see "is serving": it only waits for the port.
    srv = server_factory("basic:app", env={"FERROGATE_LOG_LEVEL": "warning"}, workers=None)
    assert srv.get("/hello").status_code == 200
    assert "[INFO]" not in srv.log()


def test_command_line_beats_the_environment(server_factory):
    srv = server_factory("basic:app", workers=1, env={"FERROGATE_WORKERS": "3"})
    srv.wait_workers(1)
    assert "Using 1 worker " in srv.log()


def test_forwarded_allow_ips_env_var_as_uvicorn(server_factory):
    srv = server_factory("basic:app", env={"FORWARDED_ALLOW_IPS": "10.9.9.9"})
    scope = json_of(srv.get("/scope", headers={"x-forwarded-for": "203.0.113.9"}))
    assert scope["client"][0] == "127.0.0.1", "127.0.0.1 is not trusted once FORWARDED_ALLOW_IPS says otherwise"


def test_forwarded_allow_ips_ferrogate_env_var_wins(server_factory):
    srv = server_factory("basic:app", env={"FORWARDED_ALLOW_IPS": "10.9.9.9", "FERROGATE_FORWARDED_ALLOW_IPS": "127.0.0.1"})
    scope = json_of(srv.get("/scope", headers={"x-forwarded-for": "203.0.113.9"}))
    assert scope["client"][0] == "203.0.113.9"


def test_env_file(server_factory, tmp_path):
    env_file = tmp_path / "app.env"
    env_file.write_text(
        "# a comment\n"
        "FG_PLAIN=plain value\n"
        "export FG_EXPORTED=exported\n"
        "FG_QUOTED='quoted # not a comment'\n"
        'FG_DOUBLE="x=y"\n'
        "FG_TRAILING=v # trailing comment\n"
        "\n"
    )
    srv = server_factory("basic:app", "--env-file", str(env_file))

    def env(name):
        return json_of(srv.get(f"/env?name={name}"))["value"]

    assert env("FG_PLAIN") == "plain value"
    assert env("FG_EXPORTED") == "exported"
    assert env("FG_QUOTED") == "quoted # not a comment"
    assert env("FG_DOUBLE") == "x=y"
    assert env("FG_TRAILING") == "v"


def test_env_file_with_a_bad_line_names_it(tmp_path):
    env_file = tmp_path / "bad.env"
    env_file.write_text("A=1\nthis is not an assignment\n")
    r = run_cli("basic:app", "--env-file", str(env_file))
    assert r.returncode == 2
    assert f"{env_file}:2" in r.stderr


# --------------------------------------------------------------------------
# --factory and --app-dir
# --------------------------------------------------------------------------

def test_factory(server_factory):
    srv = server_factory("factory_app:create_app", "--factory", env={"FG_GREETING": "hi from factory"})
    assert srv.get("/").text == "hi from factory"


def test_failing_factory_stops_the_server_once(server_factory):
    rc, log = server_factory.run("factory_app:broken_factory", "--factory", workers=2)
    assert rc == 3, log
    assert log.count("RuntimeError: FG-FACTORY-FAILED") == 1, log


def test_app_dir_absolute(server_factory, tmp_path):
    srv = server_factory("basic:app", "--app-dir", str(APPS_DIR), cwd=tmp_path)
    assert srv.get("/hello").status_code == 200


def test_app_dir_relative_to_cwd(server_factory):
    srv = server_factory("basic:app", "--app-dir", "apps", cwd=TESTS_DIR)
    assert srv.get("/hello").status_code == 200


def test_without_app_dir_the_module_is_not_found(server_factory, tmp_path):
    rc, log = server_factory.run("basic:app", cwd=tmp_path)
    assert rc == 3
    assert 'Could not import module "basic"' in log


# --------------------------------------------------------------------------
# uvicorn drop-in: `uvicorn main:app FLAGS` becomes `ferrogate main:app FLAGS`
# --------------------------------------------------------------------------

# uvicorn's command-line flags (uvicorn 0.30 - 0.54), each with a value uvicorn accepts.
# Its TLS flags work as in uvicorn (tests/test_tls.py serves HTTPS with them); here each
# is checked to parse beside --ssl-certfile, and the ones that need a companion say so.
UVICORN_TLS_FLAGS = [
    ["--ssl-keyfile", "key.pem"],
    ["--ssl-certfile", "cert.pem"],
    ["--ssl-keyfile-password", "secret"],
    ["--ssl-version", "17"],
    ["--ssl-cert-reqs", "0"],
    ["--ssl-ca-certs", "ca.pem"],
    ["--ssl-ciphers", "TLSv1"],
]


@pytest.mark.parametrize("flag", UVICORN_TLS_FLAGS, ids=[f[0] for f in UVICORN_TLS_FLAGS])
def test_uvicorn_tls_flag_is_accepted(flag):
    certificate = [] if flag[0] == "--ssl-certfile" else ["--ssl-certfile", "cert.pem"]
    r = run_cli("basic:app", *certificate, *flag, *SENTINEL)
    assert SENTINEL_ERROR in r.stderr, f"uvicorn's {' '.join(flag)} is not accepted: {r.stderr.strip()}"


@pytest.mark.parametrize("flag", [["--ssl-keyfile", "key.pem"], ["--ssl-keyfile-password", "secret"], ["--ssl-ca-certs", "ca.pem"]],
                         ids=["keyfile", "password", "ca-certs"])
def test_tls_flags_without_a_certificate_say_what_is_missing(flag):
    r = run_cli("basic:app", *flag)
    assert r.returncode == 2, r.stderr
    assert flag[0] in r.stderr and "--ssl-certfile" in r.stderr, r.stderr


UVICORN_FLAGS = [
    ["--host", "127.0.0.1"],
    ["--port", "8001"],
    ["--uds", "/tmp/fg-uvicorn-compat.sock"],
    ["--fd", "3"],
    ["--reload"],
    ["--reload-dir", "."],
    ["--reload-include", "*.py"],
    ["--reload-exclude", "*.tmp"],
    ["--reload-delay", "0.25"],
    ["--workers", "2"],
    ["--loop", "auto"],
    ["--http", "auto"],
    ["--ws", "auto"],
    ["--ws-max-size", "16777216"],
    ["--ws-max-queue", "32"],
    ["--ws-ping-interval", "20.0"],
    ["--ws-ping-timeout", "20.0"],
    ["--ws-per-message-deflate", "true"],
    ["--lifespan", "on"],
    ["--interface", "asgi3"],
    ["--env-file", "ENV_FILE"],
    ["--log-config", "LOG_CONFIG"],
    ["--log-level", "warning"],
    ["--access-log"],
    ["--no-access-log"],
    ["--use-colors"],
    ["--no-use-colors"],
    ["--proxy-headers"],
    ["--no-proxy-headers"],
    ["--server-header"],
    ["--no-server-header"],
    ["--date-header"],
    ["--no-date-header"],
    ["--forwarded-allow-ips", "*"],
    ["--root-path", "/api"],
    ["--limit-concurrency", "100"],
    ["--backlog", "2048"],
    ["--limit-max-requests", "1000"],
    ["--timeout-keep-alive", "5"],
    ["--timeout-graceful-shutdown", "10"],
    ["--header", "x-a:1"],
    ["--app-dir", "."],
    ["--h11-max-incomplete-event-size", "16384"],
    ["--factory"],
]


@pytest.mark.parametrize("flag", UVICORN_FLAGS, ids=[f[0] for f in UVICORN_FLAGS])
def test_uvicorn_flag_is_accepted(flag, tmp_path):
    args = list(flag)
    if "ENV_FILE" in args:
        (tmp_path / "e.env").write_text("A=1\n")
        args[args.index("ENV_FILE")] = str(tmp_path / "e.env")
    if "LOG_CONFIG" in args:
        (tmp_path / "log.json").write_text('{"version": 1}')
        args[args.index("LOG_CONFIG")] = str(tmp_path / "log.json")
    r = run_cli("basic:app", *args, *SENTINEL)
    assert SENTINEL_ERROR in r.stderr, f"uvicorn's {' '.join(args)} is not accepted: {r.stderr.strip()}"


def test_uvicorn_command_line_runs_unchanged(server_factory):
    """A typical production uvicorn command line, only the program name changed."""
    port = free_port()
    srv = server_factory(None, argv=[
        FERROGATE, "basic:app", "--host", "127.0.0.1", "--port", str(port), "--workers", "2",
        "--proxy-headers", "--forwarded-allow-ips", "127.0.0.1", "--timeout-keep-alive", "10",
        "--no-server-header", "--log-level", "info", "--lifespan", "on", "--root-path", "",
    ], workers=2, port=port)
    assert srv.get("/hello").status_code == 200
    assert "server" not in srv.get("/hello").headers


@pytest.mark.parametrize("flag", [["--max-requests", "5"], ["--graceful-timeout", "5"]], ids=lambda f: f[0])
def test_gunicorn_style_aliases_are_accepted(flag):
    r = run_cli("basic:app", *flag, *SENTINEL)
    assert SENTINEL_ERROR in r.stderr, r.stderr


def test_default_worker_count_is_the_number_of_cores(server_factory):
    import os
    cores = len(os.sched_getaffinity(0))
    srv = server_factory("basic:app", workers=None)
    srv.wait_workers(cores)
    assert f"Using {cores} worker" in srv.log()
