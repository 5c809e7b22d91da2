"""Differential tests, Django over ASGI (tests/apps/compat/djsite, served as Django's "How
to deploy with ASGI" says: djsite.asgi:application from get_asgi_application()).

The fixture migrates a sqlite database in a temporary directory and creates a superuser
with `manage.py createsuperuser --noinput` (DJANGO_SUPERUSER_* variables) before starting
ferrogate and uvicorn on the same database."""

import os
import re
import subprocess
import sys
import uuid

import httpx
import pytest

from compat_support import COMPAT_APPS_DIR, COMPARED_HEADERS, assert_same_response, effects

ADMIN_USER, ADMIN_PASSWORD = "admin", "compat-Password-1"
# Set-Cookie values are random per response (tokens, session ids, expiry dates): compared apart.
HEADERS = tuple(h for h in COMPARED_HEADERS if h != "set-cookie")


def manage(*args, env):
    proc = subprocess.run([sys.executable, "manage.py", *args], cwd=COMPAT_APPS_DIR, env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, f"manage.py {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"


@pytest.fixture(scope="module")
def pair(pair_factory, tmp_path_factory):
    db_dir = tmp_path_factory.mktemp("djdb")
    env = {"COMPAT_DJANGO_DB": str(db_dir / "db.sqlite3"), "COMPAT_DJANGO_SECRET_KEY": uuid.uuid4().hex * 2}
    manage_env = {**os.environ, **env, "PYTHONDONTWRITEBYTECODE": "1", "DJANGO_SETTINGS_MODULE": "djsite.settings",
                  "DJANGO_SUPERUSER_USERNAME": ADMIN_USER, "DJANGO_SUPERUSER_EMAIL": "admin@example.com",
                  "DJANGO_SUPERUSER_PASSWORD": ADMIN_PASSWORD}
    manage("migrate", "--noinput", env=manage_env)
    manage("createsuperuser", "--noinput", env=manage_env)
    return pair_factory("djsite.asgi:application", env=env)


def cookie_shapes(resp) -> list[tuple]:
    """Set-Cookie headers without their random parts: (name, attributes without expires/max-age)."""
    out = []
    for value in resp.headers.get_list("set-cookie"):
        first, *attrs = [p.strip() for p in value.split(";")]
        name = first.partition("=")[0]
        attrs = sorted(a for a in attrs if not a.lower().startswith(("expires", "max-age")))
        out.append((name, tuple(attrs)))
    return sorted(out)


def mask_tokens(body: bytes) -> bytes:
    return re.sub(rb'name="csrfmiddlewaretoken" value="[^"]+"', b'name="csrfmiddlewaretoken" value="X"', body)


def csrf_token(html: str) -> str:
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)


def test_csrf_form_get_sets_the_csrftoken_cookie(pair):
    fg, uv = pair.map(lambda srv: httpx.get(f"{srv.url}/contact/", timeout=10))
    assert uv.status_code == 200 and "csrftoken" in uv.cookies
    assert fg.status_code == 200 and "csrftoken" in fg.cookies, fg.headers
    assert cookie_shapes(fg) == cookie_shapes(uv)
    assert mask_tokens(fg.content) == mask_tokens(uv.content)
    assert_same_response(fg, uv, headers=HEADERS, body=False, what="GET /contact/")


def test_post_without_csrf_token_is_403(pair):
    fg, uv = pair.map(lambda srv: httpx.post(f"{srv.url}/contact/", data={"name": "nobody"}, timeout=10))
    assert uv.status_code == 403
    assert_same_response(fg, uv, headers=HEADERS, what="POST /contact/ without a CSRF token")
    for srv in pair:
        assert not effects(srv, "contact posted", name="nobody"), srv.name


def test_post_with_csrf_token_is_200(pair):
    names = {}

    def run(srv):
        names[srv.name] = name = f"n{uuid.uuid4().hex[:8]}"
        with httpx.Client(base_url=srv.url, timeout=10) as client:
            form = client.get("/contact/")
            token = csrf_token(form.text)
            return client.post("/contact/", data={"name": name, "csrfmiddlewaretoken": token})

    fg, uv = pair.map(run)
    assert uv.status_code == 200 and uv.text == f"Thanks, {names['uvicorn']}."
    assert fg.status_code == 200 and fg.text == f"Thanks, {names['ferrogate']}.", fg.text[:300]
    assert_same_response(fg, uv, headers=HEADERS, body=False, what="POST /contact/ with the token")
    for srv in pair:
        assert effects(srv, "contact posted", name=names[srv.name]), srv.name


def test_admin_login_flow(pair):
    def run(srv):
        steps = []
        with httpx.Client(base_url=srv.url, timeout=10) as client:
            r = client.get("/admin/")
            steps.append(("GET /admin/", r.status_code, r.headers.get("location")))
            r = client.get("/admin/login/", params={"next": "/admin/"})
            steps.append(("GET /admin/login/", r.status_code, None))
            assert r.status_code == 200, f"{srv.name}: {r.status_code}"
            token = csrf_token(r.text)
            r = client.post("/admin/login/?next=/admin/", data={
                "username": ADMIN_USER, "password": ADMIN_PASSWORD, "csrfmiddlewaretoken": token, "next": "/admin/"})
            steps.append(("POST /admin/login/", r.status_code, r.headers.get("location")))
            steps.append(("cookies", tuple(cookie_shapes(r)), None))
            r = client.get(r.headers["location"])
            steps.append(("GET /admin/ logged in", r.status_code, "Site administration" in r.text))
            r = client.get("/admin/auth/user/")
            steps.append(("GET /admin/auth/user/", r.status_code, ADMIN_USER in r.text))
        return steps

    fg, uv = pair.map(run)
    assert uv[0] == ("GET /admin/", 302, "/admin/login/?next=/admin/")
    assert uv[2] == ("POST /admin/login/", 302, "/admin/")
    assert uv[4] == ("GET /admin/ logged in", 200, True)
    assert uv[5] == ("GET /admin/auth/user/", 200, True)
    assert fg == uv


def test_async_streaming_view(pair):
    fg, uv = pair.map(lambda srv: httpx.get(f"{srv.url}/stream/?n=30", timeout=10))
    assert uv.status_code == 200 and uv.content == b"".join(b"part %d\n" % i for i in range(30))
    assert_same_response(fg, uv, headers=HEADERS, what="StreamingHttpResponse")
    assert fg.headers.get("transfer-encoding") == uv.headers.get("transfer-encoding")


def test_not_found_and_bad_host(pair):
    fg, uv = pair.map(lambda srv: httpx.get(f"{srv.url}/nowhere/", timeout=10))
    assert uv.status_code == 404
    assert_same_response(fg, uv, headers=HEADERS, what="404")
    # A Host outside ALLOWED_HOSTS: Django answers 400.
    fg, uv = pair.map(lambda srv: httpx.get(f"{srv.url}/contact/", headers={"host": "evil.example"}, timeout=10))
    assert uv.status_code == 400
    # Django answers this one from a middleware's exception, without a Content-Length, in one
    # final body message. uvicorn frames it chunked; ferrogate, which has the whole body at
    # once, sends a Content-Length instead (a difference in framing only: both are correct).
    assert uv.headers.get("transfer-encoding") == "chunked" and "content-length" not in uv.headers
    assert fg.headers.get("content-length") == str(len(fg.content)) or fg.headers.get("transfer-encoding") == "chunked"
    assert_same_response(fg, uv, headers=tuple(h for h in HEADERS if h != "content-length"), what="disallowed host")
