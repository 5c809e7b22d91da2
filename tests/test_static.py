"""--static: files the server answers itself, without the app.

Real files on disk, the real command, httpx, curl and raw sockets; the app's
request counter proves Python never saw these requests.
"""

import email.utils
import hashlib
import os
import socket
import subprocess
import time

import httpx
import pytest

from conftest import parse_response, raw_http, read_response, run_cli

BIG = 3 * 1024 * 1024 + 17  # more than one 256 KiB read, not a multiple of it


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    www = root / "www"
    (www / "css").mkdir(parents=True)
    (www / "docs").mkdir()
    (www / "empty-dir").mkdir()
    (www / ".git").mkdir()
    (www / ".well-known").mkdir()
    (www / "css" / "app.css").write_text("body { color: red }\n")
    (www / "index.html").write_text("<h1>home</h1>\n")
    (www / "docs" / "index.html").write_text("<h1>docs</h1>\n")
    (www / "hello world.txt").write_text("spaced\n")
    (www / "data.bin").write_bytes(os.urandom(BIG))
    (www / "empty.txt").write_bytes(b"")
    (www / ".env").write_text("SECRET=1\n")
    (www / ".git" / "config").write_text("[core]\n")
    (www / ".well-known" / "security.txt").write_text("Contact: mailto:a@example.com\n")
    (root / "outside.txt").write_text("outside the root\n")
    os.symlink(root / "outside.txt", www / "escape.txt")          # absolute, leads out
    os.symlink("../outside.txt", www / "escape-relative.txt")    # relative, leads out
    os.symlink("css/app.css", www / "alias.css")                 # stays inside
    os.mkfifo(www / "pipe")
    img = root / "img"
    img.mkdir()
    (img / "logo.svg").write_text("<svg/>\n")
    return root


@pytest.fixture(scope="module")
def srv(module_server_factory, site):
    return module_server_factory(
        "basic:app", "--static", f"/static={site / 'www'}", "--static", f"/static/img={site / 'img'}",
        "--static-max-age", "3600")


def app_requests(srv):
    return srv.get("/count").json()["served"]


def test_file_is_served_with_type_length_and_validators(srv, site):
    before = app_requests(srv)
    r = srv.get("/static/css/app.css")
    assert r.status_code == 200
    assert r.text == "body { color: red }\n"
    assert r.headers["content-type"] == "text/css; charset=utf-8"
    assert r.headers["content-length"] == str(len(r.content))
    assert r.headers["cache-control"] == "public, max-age=3600"
    assert r.headers["accept-ranges"] == "bytes"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["server"] == "ferrogate"
    assert r.headers["etag"].startswith('"') and r.headers["etag"].endswith('"')
    modified = email.utils.parsedate_to_datetime(r.headers["last-modified"])
    assert int(modified.timestamp()) == int(os.stat(site / "www" / "css" / "app.css").st_mtime)
    # The app answered /count before and after, and nothing in between.
    assert app_requests(srv) == before + 1


def test_large_file_arrives_whole(srv, site):
    r = srv.get("/static/data.bin")
    assert r.status_code == 200
    assert int(r.headers["content-length"]) == BIG
    assert hashlib.sha256(r.content).digest() == hashlib.sha256((site / "www" / "data.bin").read_bytes()).digest()
    assert r.headers["content-type"] == "application/octet-stream"


def test_empty_file(srv):
    r = srv.get("/static/empty.txt")
    assert r.status_code == 200 and r.content == b"" and r.headers["content-length"] == "0"


def test_percent_encoded_names(srv):
    r = srv.get("/static/hello%20world.txt")
    assert r.status_code == 200 and r.text == "spaced\n"


def test_longest_mount_wins(srv):
    r = srv.get("/static/img/logo.svg")
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/svg+xml"


def test_paths_outside_the_mounts_reach_the_app(srv):
    r = srv.get("/staticfoo")
    assert r.status_code == 200 and r.json()["path"] == "/staticfoo"


def test_directories_redirect_to_their_slash_and_serve_index_html(srv):
    r = srv.get("/static/docs?x=1")
    assert r.status_code == 301 and r.headers["location"] == "/static/docs/?x=1"
    r = srv.get("/static")
    assert r.status_code == 301 and r.headers["location"] == "/static/"
    r = srv.get("/static/")
    assert r.status_code == 200 and r.text == "<h1>home</h1>\n"
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    r = srv.get("/static/docs/")
    assert r.status_code == 200 and r.text == "<h1>docs</h1>\n"
    # No index.html and no listing: nothing about the directory is revealed.
    assert srv.get("/static/empty-dir/").status_code == 404


def test_missing_file_is_404_from_the_server(srv):
    before = app_requests(srv)
    r = srv.get("/static/nope.js")
    assert r.status_code == 404
    assert app_requests(srv) == before + 1


@pytest.mark.parametrize("path", ["/static/.env", "/static/.git/config", "/static/css/../.env"])
def test_hidden_files_are_never_served(srv, path):
    r = srv.raw(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    status, _, body = parse_response(r)
    assert status in (400, 404)
    assert b"SECRET" not in body and b"[core]" not in body


def test_well_known_is_served(srv):
    r = srv.get("/static/.well-known/security.txt")
    assert r.status_code == 200 and "Contact" in r.text


@pytest.mark.parametrize("path", [
    "/static/../outside.txt",
    "/static/%2e%2e/outside.txt",
    "/static/css/%2E%2E%2F..%2Foutside.txt",
    "/static/..%2foutside.txt",
])
def test_dot_dot_is_refused(srv, path):
    status, _, body = parse_response(srv.raw(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()))
    assert status == 400, body
    assert b"outside the root" not in body


@pytest.mark.parametrize("name", ["escape.txt", "escape-relative.txt"])
def test_symlinks_leading_out_are_not_followed(srv, name):
    r = srv.get(f"/static/{name}")
    assert r.status_code == 404
    assert "outside the root" not in r.text


def test_symlinks_inside_the_root_are_followed(srv):
    r = srv.get("/static/alias.css")
    assert r.status_code == 200 and r.text == "body { color: red }\n"


def test_fifo_is_refused_without_blocking(srv):
    r = srv.get("/static/pipe", timeout=5)
    assert r.status_code == 404
    assert srv.get("/static/css/app.css").status_code == 200


def test_nul_byte_is_refused(srv):
    assert srv.get("/static/a%00.txt").status_code == 400


def test_other_methods_get_405_with_allow(srv):
    before = app_requests(srv)
    r = srv.post("/static/css/app.css", content=b"x")
    assert r.status_code == 405
    assert r.headers["allow"] == "GET, HEAD"
    assert app_requests(srv) == before + 1


def test_head_has_the_length_and_no_body(srv):
    data = srv.raw(b"HEAD /static/data.bin HTTP/1.1\r\nHost: x\r\n\r\n"
                   b"GET /static/css/app.css HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    first, _, rest = data.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200 OK"), data[:300]
    assert f"content-length: {BIG}".encode() in first.lower()
    # Straight after the HEAD response's head comes the next response, no body in between.
    assert rest.startswith(b"HTTP/1.1 200 OK"), data[:300]
    assert rest.endswith(b"body { color: red }\n")


def test_if_none_match_and_if_modified_since_give_304(srv):
    first = srv.get("/static/css/app.css")
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    r = srv.get("/static/css/app.css", headers={"if-none-match": etag})
    assert r.status_code == 304 and r.content == b""
    assert r.headers["etag"] == etag
    assert srv.get("/static/css/app.css", headers={"if-none-match": f'"other", W/{etag}'}).status_code == 304
    assert srv.get("/static/css/app.css", headers={"if-none-match": '"other"'}).status_code == 200
    assert srv.get("/static/css/app.css", headers={"if-modified-since": modified}).status_code == 304
    assert srv.get("/static/css/app.css", headers={"if-modified-since": "Mon, 01 Jan 2001 00:00:00 GMT"}).status_code == 200
    # If-None-Match decides when both are sent.
    r = srv.get("/static/css/app.css", headers={"if-none-match": '"other"', "if-modified-since": modified})
    assert r.status_code == 200


def test_a_changed_file_gets_a_new_etag(srv, site):
    path = site / "www" / "changing.txt"
    path.write_text("one\n")
    etag = srv.get("/static/changing.txt").headers["etag"]
    path.write_text("two\n")
    r = srv.get("/static/changing.txt", headers={"if-none-match": etag})
    assert r.status_code == 200 and r.text == "two\n"
    assert r.headers["etag"] != etag


def test_byte_ranges(srv, site):
    data = (site / "www" / "data.bin").read_bytes()
    r = srv.get("/static/data.bin", headers={"range": "bytes=100-199"})
    assert r.status_code == 206
    assert r.headers["content-range"] == f"bytes 100-199/{BIG}"
    assert r.content == data[100:200]
    r = srv.get("/static/data.bin", headers={"range": "bytes=-10"})
    assert r.status_code == 206 and r.content == data[-10:]
    start = BIG - 300_000  # crosses a read boundary of the server
    r = srv.get("/static/data.bin", headers={"range": f"bytes={start}-"})
    assert r.status_code == 206 and r.content == data[start:]


def test_unsatisfiable_range_is_416(srv):
    r = srv.get("/static/css/app.css", headers={"range": "bytes=5000-"})
    assert r.status_code == 416
    assert r.headers["content-range"] == "bytes */20"


def test_multiple_ranges_and_stale_if_range_send_the_whole_file(srv):
    r = srv.get("/static/css/app.css", headers={"range": "bytes=0-1,4-5"})
    assert r.status_code == 200 and len(r.content) == 20
    r = srv.get("/static/css/app.css", headers={"range": "bytes=0-3", "if-range": '"stale"'})
    assert r.status_code == 200 and len(r.content) == 20
    etag = srv.get("/static/css/app.css").headers["etag"]
    r = srv.get("/static/css/app.css", headers={"range": "bytes=0-3", "if-range": etag})
    assert r.status_code == 206 and r.text == "body"


def test_curl_resumes_a_download(srv, site, tmp_path):
    out = tmp_path / "data.bin"
    out.write_bytes((site / "www" / "data.bin").read_bytes()[:1000])
    subprocess.run(["curl", "-sf", "-C", "-", "-o", str(out), f"{srv.url}/static/data.bin"], check=True, timeout=30)
    assert out.read_bytes() == (site / "www" / "data.bin").read_bytes()


def test_static_requests_are_in_the_access_log(srv):
    mark = srv.log_mark()
    srv.get("/static/css/app.css?v=3", headers={"user-agent": "static-test"})
    srv.wait_for_log(r'"GET /static/css/app\.css\?v=3 HTTP/1\.1" 200 20 "-" "static-test"', since=mark)


def test_a_client_that_leaves_mid_download_does_not_hurt_the_worker(srv):
    for _ in range(5):
        with socket.create_connection(srv.address) as s:
            s.sendall(b"GET /static/data.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            s.recv(1000)
    assert srv.get("/static/css/app.css").status_code == 200


def test_missing_directory_is_a_startup_error_naming_the_flag(tmp_path):
    r = run_cli("basic:app", "--static", f"/static={tmp_path / 'nope'}")
    assert r.returncode == 2
    assert "--static" in r.stderr and "nope" in r.stderr and "create it or fix the path" in r.stderr


@pytest.mark.parametrize("spec, words", [
    ("static", "URL_PATH=DIR"),
    ("static=.", "must start with '/'"),
    ("/=.", "hide the whole app"),
    ("/a/../b=.", "plain path"),
])
def test_bad_static_specs_say_how_to_fix_them(spec, words):
    r = run_cli("basic:app", "--static", spec)
    assert r.returncode == 2 and words in r.stderr, r.stderr


def test_static_from_the_environment(server_factory, site):
    srv = server_factory("basic:app", env={"FERROGATE_STATIC": f"/assets={site / 'img'}"})
    assert srv.get("/assets/logo.svg").text == "<svg/>\n"
