"""The ASGI `http` scope ferrogate hands to the app."""

import json
import socket

import httpx
import pytest

from conftest import json_of, parse_response


@pytest.fixture(scope="module")
def srv(module_server_factory):
    return module_server_factory("basic:app")


@pytest.fixture(scope="module")
def fastapi_srv(module_server_factory):
    return module_server_factory("fastapi_app:app")


def test_scope_has_every_asgi_key(srv):
    scope = json_of(srv.get("/scope?x=1&y=two", headers={"X-Custom-Header": "Some Value"}))
    assert scope["type"] == "http"
    assert scope["asgi"]["version"] == "3.0"
    assert scope["asgi"]["spec_version"].startswith("2.")
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "GET"
    assert scope["scheme"] == "http"
    assert scope["path"] == "/scope"
    assert scope["raw_path"] == "/scope"
    assert scope["query_string"] == "x=1&y=two"
    assert scope["root_path"] == ""
    assert scope["server"] == ["127.0.0.1", srv.port]
    assert scope["client"][0] == "127.0.0.1" and isinstance(scope["client"][1], int) and scope["client"][1] > 0
    assert "http.response.pathsend" in scope["extensions"]
    assert isinstance(scope["state"], dict)


def test_headers_are_lowercased_byte_pairs_in_order(srv):
    raw = (b"GET /scope HTTP/1.1\r\nHost: example.test\r\nX-Custom-Header: Some Value\r\n"
           b"X-Dup: first\r\nX-DUP: second\r\nConnection: close\r\n\r\n")
    status, _, body = parse_response(srv.raw(raw))
    assert status == 200
    headers = json.loads(body)["headers"]
    assert ["host", "example.test"] in headers
    assert ["x-custom-header", "Some Value"] in headers
    dups = [v for k, v in headers if k == "x-dup"]
    assert dups == ["first", "second"]
    assert all(k == k.lower() for k, _ in headers)


def test_header_values_keep_raw_bytes(srv):
    # Non-ASCII bytes in a header value reach the app unchanged (latin-1 round trip in the app).
    raw = b"GET /scope HTTP/1.1\r\nHost: x\r\nX-Bytes: caf\xc3\xa9\r\nConnection: close\r\n\r\n"
    status, _, body = parse_response(srv.raw(raw))
    assert status == 200
    headers = dict(map(tuple, json.loads(body)["headers"]))
    assert headers["x-bytes"].encode("latin-1") == b"caf\xc3\xa9"


def test_path_is_percent_decoded_and_raw_path_is_not(srv):
    raw = b"GET /caf%C3%A9/a%2Fb%20c?q=%20x%26y HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    status, _, body = parse_response(srv.raw(raw))
    assert status == 200
    scope = json.loads(body)
    assert scope["path"] == "/caf\u00e9/a/b c"
    assert scope["raw_path"] == "/caf%C3%A9/a%2Fb%20c"
    # The query string is passed through undecoded.
    assert scope["query_string"] == "q=%20x%26y"


def test_methods_are_passed_through(srv):
    with srv.client() as c:
        for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "PURGE"]:
            scope = json_of(c.request(method, "/scope"))
            assert scope["method"] == method


def test_http_10_request(srv):
    status, headers, body = parse_response(srv.raw(b"GET /scope HTTP/1.0\r\nHost: x\r\n\r\n"))
    assert status == 200
    assert json.loads(body)["http_version"] == "1.0"


def test_client_is_the_peer_address(srv):
    with socket.create_connection(srv.address) as s:
        port = s.getsockname()[1]
        s.sendall(b"GET /scope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    status, _, body = parse_response(data)
    assert status == 200
    assert json.loads(body)["client"] == ["127.0.0.1", port]


def test_keep_alive_connection_serves_several_requests(srv):
    with srv.client() as c:
        ports = {tuple(json_of(c.get("/scope"))["client"]) for _ in range(5)}
    assert len(ports) == 1, f"expected one connection reused, got {ports}"


def test_state_comes_from_lifespan_and_is_copied_per_request(srv):
    first = json_of(srv.get("/state?set=leak"))
    assert first["greeting"] == "hello from lifespan"
    assert first["leak"] == "set by a request"
    second = json_of(srv.get("/state"))
    assert second["greeting"] == "hello from lifespan"
    assert "leak" not in second, "a request's changes to scope['state'] leaked into the next request"


def test_a_request_that_overwrites_its_scope_leaves_the_next_ones_alone(srv):
    # Scopes start as copies of templates that hold what a listener's requests share
    # (scheme, http_version, server, root_path): a request's scope must be its own.
    with srv.client() as c:
        first = json_of(c.get("/scope"))
        assert json_of(c.get("/scope?overwrite=1"))["scheme"] == "http"
        second = json_of(c.get("/scope"))
    third = json_of(srv.get("/scope"))
    for later in (second, third):
        overwritten = sorted(k for k, v in later.items() if v == "overwritten")
        assert overwritten == [], f"keys a previous request overwrote: {overwritten}"
        for key in ("type", "asgi", "http_version", "scheme", "server", "root_path", "method", "extensions"):
            assert later[key] == first[key], key


def test_root_path_is_prefixed_to_path(server_factory):
    srv = server_factory("basic:app", "--root-path", "/api/v1")
    scope = json_of(srv.get("/items/3?x=1"))
    assert scope["root_path"] == "/api/v1"
    assert scope["path"] == "/api/v1/items/3"
    assert scope["raw_path"] == "/api/v1/items/3"
    assert scope["query_string"] == "x=1"


def test_fastapi_routes_params_and_json(fastapi_srv):
    assert json_of(fastapi_srv.get("/items/42?q=hi")) == {"item_id": 42, "q": "hi"}
    r = fastapi_srv.get("/items/notanint")
    assert r.status_code == 422
    r = fastapi_srv.post("/items", json={"name": "pen", "price": 10, "tags": ["a", "b"]})
    assert r.status_code == 200, r.text
    assert r.json() == {"name": "pen", "price_with_tax": 12.0, "tags": ["a", "b"]}
    assert fastapi_srv.get("/missing").status_code == 404


def test_fastapi_lifespan_state_reaches_requests(fastapi_srv):
    data = json_of(fastapi_srv.get("/state"))
    assert data["db"] == "connected"
    assert isinstance(data["pid"], int)


def test_fastapi_sees_request_url(fastapi_srv):
    info = json_of(fastapi_srv.get("/request-info?a=b"))
    assert info["url"] == f"{fastapi_srv.url}/request-info?a=b"
    assert info["path"] == "/request-info"
    assert info["scheme"] == "http"
    assert info["client"][0] == "127.0.0.1"


def test_fastapi_under_root_path(server_factory):
    srv = server_factory("fastapi_app:app", "--root-path", "/prefix")
    # A proxy that strips the prefix forwards /items/5; the app must still route it.
    assert json_of(srv.get("/items/5")) == {"item_id": 5, "q": None}
    info = json_of(srv.get("/request-info"))
    assert info["root_path"] == "/prefix"
    assert info["url"] == f"{srv.url}/prefix/request-info"


def test_unicode_in_query_and_path_via_httpx(srv):
    r = srv.get("/\u00fcber", params={"name": "J\u00fcrgen & co"})
    scope = json_of(r)
    assert scope["path"] == "/\u00fcber"
    assert scope["query_string"] == httpx.URL(srv.url + "/", params={"name": "J\u00fcrgen & co"}).query.decode()
