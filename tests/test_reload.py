"""--reload: workers restart when a .py file under the watched directories changes."""

import os

from conftest import APPS_DIR, copy_app, json_of, wait_until


def write_version(path, version: str):
    src = (APPS_DIR / "versioned.py").read_text().replace('VERSION = "v1"', f'VERSION = "{version}"')
    path.write_text(src)
    st = path.stat()
    # Make sure the change is visible even on coarse-grained file systems.
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))


def version(srv):
    return json_of(srv.get("/", headers={"Connection": "close"}))["version"]


def test_reload_picks_up_an_edited_file(server_factory, tmp_path):
    app_file = copy_app("versioned.py", tmp_path, "reloadapp.py")
    srv = server_factory("reloadapp:app", "--reload", "--app-dir", str(tmp_path))
    assert version(srv) == "v1"
    old = srv.worker_pids()
    srv.wait_for_log(r"Will reload on changes")
    mark = srv.log_mark()
    write_version(app_file, "v2")
    srv.wait_for_log(r"Detected a change in .*reloadapp\.py", since=mark)
    srv.wait_workers(1, exclude=old)
    wait_until(lambda: version(srv) == "v2", 20, message=lambda: f"still serving the old code\n{srv.log_tail()}")


def test_reload_watches_new_files_in_subpackages(server_factory, tmp_path):
    copy_app("versioned.py", tmp_path, "reloadpkg.py")
    (tmp_path / "sub").mkdir()
    srv = server_factory("reloadpkg:app", "--reload", "--app-dir", str(tmp_path))
    srv.wait_for_log(r"Will reload on changes")
    mark = srv.log_mark()
    (tmp_path / "sub" / "helper.py").write_text("X = 1\n")
    srv.wait_for_log(r"Detected a change in .*sub/helper\.py", since=mark)


def test_reload_ignores_non_python_files(server_factory, tmp_path):
    app_file = copy_app("versioned.py", tmp_path, "reloadnonpy.py")
    srv = server_factory("reloadnonpy:app", "--reload", "--app-dir", str(tmp_path))
    srv.wait_for_log(r"Will reload on changes")
    mark = srv.log_mark()
    (tmp_path / "notes.txt").write_text("not code")
    (tmp_path / "data.json").write_text("{}")
    # Then a real change: the first change detected must be the .py file.
    write_version(app_file, "v2")
    (m,) = srv.wait_for_log(r"Detected a change in ([^;\s]+)", since=mark)[:1]
    assert m.group(1).endswith("reloadnonpy.py"), m.group(0)


def test_reload_dir_limits_what_is_watched(server_factory, tmp_path):
    code, other = tmp_path / "code", tmp_path / "other"
    code.mkdir()
    other.mkdir()
    copy_app("versioned.py", code, "reloaddir.py")
    srv = server_factory("reloaddir:app", "--reload", "--app-dir", str(code), "--reload-dir", str(other))
    srv.wait_for_log(r"Will reload on changes to \*\.py under .*other")
    mark = srv.log_mark()
    (other / "watched.py").write_text("Y = 2\n")
    srv.wait_for_log(r"Detected a change in .*other/watched\.py", since=mark)


def test_reload_survives_a_syntax_error_and_recovers(server_factory, tmp_path):
    app_file = copy_app("versioned.py", tmp_path, "reloadbroken.py")
    srv = server_factory("reloadbroken:app", "--reload", "--app-dir", str(tmp_path))
    srv.wait_for_log(r"Will reload on changes")
    mark = srv.log_mark()
    app_file.write_text("def broken(:\n")
    srv.wait_for_log(r"SyntaxError", since=mark)
    assert srv.alive(), "a syntax error while reloading must not stop the server"
    assert version(srv) == "v1"
    write_version(app_file, "v3")
    wait_until(lambda: version(srv) == "v3", 20, message=lambda: f"never recovered\n{srv.log_tail()}")
