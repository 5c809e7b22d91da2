"""The configuration file (ferrogate.toml, --config, FERROGATE_CONFIG), its precedence
below the environment and the command line, `ferrogate check` and `ferrogate config`."""

import json
import re
from pathlib import Path

from conftest import APPS_DIR, FERROGATE, Server, free_port, run_cli


def write_config(directory: Path, text: str, name: str = "ferrogate.toml") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text)
    return path


def test_ferrogate_alone_serves_what_the_file_in_its_directory_says(server_factory, tmp_path):
    port = free_port()
    (tmp_path / "public").mkdir()
    (tmp_path / "public" / "a.txt").write_text("from the static table\n")
    write_config(tmp_path, f'''
app = "basic:app"
app-dir = "{APPS_DIR}"
port = {port}
workers = 2
header = ["x-from-file:yes"]

[static]
"/files" = "public"   # relative to this file's directory
''')
    srv = server_factory(None, argv=[FERROGATE], cwd=tmp_path, port=port, workers=2)
    assert len(set(srv.serving_pids())) == 2, "workers = 2 from the file"
    r = srv.get("/hello")
    assert r.status_code == 200 and r.text == "Hello, world!\n"
    assert r.headers["x-from-file"] == "yes"
    assert srv.get("/files/a.txt").text == "from the static table\n"


def test_dash_c_names_another_file_whose_relative_paths_are_its_own(server_factory, tmp_path):
    port = free_port()
    app_dir = tmp_path / "conf" / "app"
    app_dir.mkdir(parents=True)
    (app_dir / "hello_app.py").write_text('''
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello from conf/app"})
''')
    write_config(tmp_path / "conf", f'app = "hello_app:app"\napp-dir = "app"\nport = {port}\nworkers = 1\n', name="other.toml")
    # A ferrogate.toml in the working directory is not read when another file is named.
    write_config(tmp_path / "elsewhere", 'app = "nothing:here"\nworkers = "many"\n')
    srv = server_factory(None, argv=[FERROGATE, "-c", "../conf/other.toml"], cwd=tmp_path / "elsewhere", port=port, workers=1)
    assert srv.get("/").text == "hello from conf/app"


def test_environment_beats_the_file_and_the_command_line_beats_both(server_factory, tmp_path):
    file_port, env_port = free_port(), free_port()
    write_config(tmp_path, f'''
app = "basic:app"
app-dir = "{APPS_DIR}"
port = {file_port}
workers = 1
header = ["x-layer:file", "x-file-only:1"]
''')
    env = {"FERROGATE_PORT": str(env_port), "FERROGATE_HEADER": "x-layer:env"}
    srv = server_factory(None, argv=[FERROGATE, "--header", "x-layer:cli"], cwd=tmp_path, env=env, port=env_port, workers=1)
    r = srv.get("/hello")
    assert r.status_code == 200
    assert r.headers.get_list("x-layer") == ["cli"], "the command line's list replaces the others"
    assert "x-file-only" not in r.headers, "lists are replaced, not merged"


def test_check_accepts_a_good_file_and_says_what_it_sets(tmp_path):
    write_config(tmp_path, 'app = "main:app"\nport = 8001\nworkers = 4\n')
    r = run_cli("check", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ferrogate.toml: configuration OK (3 options set: app, port, workers)"
    # The command line and the environment are part of what is checked.
    r = run_cli("check", "--log-level", "debug", env={"FERROGATE_TIMEOUT": "9"}, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "5 options set" in r.stdout and "log-level" in r.stdout and "timeout" in r.stdout


def test_check_reports_every_error_of_a_bad_file_with_its_line(tmp_path):
    write_config(tmp_path, 'app = "main:app"\nwokers = 4\nlog-level = "loud"\nport = "http"\n')
    r = run_cli("check", cwd=tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert lines == [
        "error: ferrogate.toml:2:1: unknown key `wokers`; did you mean `workers`?",
        'error: ferrogate.toml:3:13: `log-level` = "loud" is not one of trace, debug, info, warning, error, critical',
        'error: ferrogate.toml:4:8: `port` must be a whole number (it is a string: "http"); e.g. port = 8000',
    ], r.stderr
    assert r.stdout == ""
    # Serving refuses the same file with the same words, before starting anything.
    served = run_cli(cwd=tmp_path)
    assert served.returncode == 2 and lines[0] in served.stderr


def test_check_names_the_line_of_a_value_refused_after_parsing(tmp_path):
    write_config(tmp_path, 'app = "main:app"\n\nworkers = 0\n')
    r = run_cli("check", cwd=tmp_path)
    assert r.returncode == 2
    assert "ferrogate.toml:3:1: `workers` = 0: --workers must be at least 1" in r.stderr
    write_config(tmp_path, 'app = "main:app"\n[static]\n"/s" = "no-such-dir"\n')
    r = run_cli("check", cwd=tmp_path)
    assert r.returncode == 2
    assert 'ferrogate.toml:3:8: `static` = "no-such-dir": --static' in r.stderr, r.stderr
    assert str(tmp_path / "no-such-dir") in r.stderr


def test_check_needs_app_and_a_named_file_must_exist(tmp_path):
    write_config(tmp_path, "workers = 2\n")
    r = run_cli("check", cwd=tmp_path)
    assert r.returncode == 2 and "<APP>" in r.stderr
    r = run_cli("check", "main:app", "-c", "missing.toml", cwd=tmp_path)
    assert r.returncode == 2
    assert "cannot read the configuration file (--config missing.toml)" in r.stderr
    r = run_cli("check", "main:app", env={"FERROGATE_CONFIG": str(tmp_path / "gone.toml")}, cwd=tmp_path)
    assert r.returncode == 2 and "FERROGATE_CONFIG=" in r.stderr
    # Without any file, the implicit one is simply absent.
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run_cli("check", "main:app", cwd=empty)
    assert r.returncode == 0 and "no config file" in r.stdout, r.stderr


def test_check_and_config_have_their_own_help():
    for command in ("check", "config"):
        r = run_cli(command, "--help")
        assert r.returncode == 0 and r.stdout.startswith(f"usage: ferrogate {command}")


def config_rows(stdout: str) -> dict[str, tuple[str, str]]:
    """`ferrogate config`'s table as {option: (value, source)}."""
    lines = [line for line in stdout.splitlines() if not line.startswith("#")]
    assert lines[0].split() == ["OPTION", "VALUE", "SOURCE"]
    rows = {}
    for line in lines[1:]:
        m = re.match(r"^(\S+)\s+(.*?)\s\s+(default|command line|environment \S+|file \S+)$", line)
        assert m, f"not a row: {line!r}"
        rows[m[1]] = (m[2], m[3])
    return rows


def test_config_shows_each_value_and_where_it_comes_from(tmp_path):
    write_config(tmp_path, 'app = "main:app"\nworkers = 2\n\nlog-file = "logs/error.log"\nport = 8001\n')
    r = run_cli("config", "--port", "9000", env={"FERROGATE_WORKERS": "3"}, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("# configuration file: ferrogate.toml\n")
    rows = config_rows(r.stdout)
    assert rows["app"] == ("main:app", "file ferrogate.toml:1")
    assert rows["log-file"] == (str(tmp_path / "logs" / "error.log"), "file ferrogate.toml:4")
    assert rows["workers"] == ("3", "environment FERROGATE_WORKERS")
    assert rows["port"] == ("9000", "command line")
    assert rows["timeout"] == ("30", "default")
    assert rows["config"] == ("ferrogate.toml", "default")


def test_config_json_has_the_same_facts_typed(tmp_path):
    write_config(tmp_path, 'app = "main:app"\nheader = ["a:1", "b:2"]\naccess-log = false\n')
    r = run_cli("config", "--json", "--workers", "5", env={"FERROGATE_LOG_LEVEL": "debug"}, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["file"] == "ferrogate.toml"
    options = {o["option"]: o for o in doc["options"]}
    assert options["header"] == {"option": "header", "value": ["a:1", "b:2"], "source": "file",
                                 "file": "ferrogate.toml", "line": 2, "column": 1}
    assert options["access-log"]["value"] is False and options["access-log"]["source"] == "file"
    assert options["workers"] == {"option": "workers", "value": 5, "source": "command line"}
    assert options["log-level"] == {"option": "log-level", "value": "debug", "source": "environment",
                                    "variable": "FERROGATE_LOG_LEVEL"}
    assert options["max-header-size"] == {"option": "max-header-size", "value": 65536, "source": "default"}
    assert options["user"]["value"] is None


def test_config_refuses_a_bad_file_like_check(tmp_path):
    write_config(tmp_path, "wrokers = 2\n")
    r = run_cli("config", cwd=tmp_path)
    assert r.returncode == 2
    assert "ferrogate.toml:1:1: unknown key `wrokers`; did you mean `workers`?" in r.stderr
