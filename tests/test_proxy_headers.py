"""X-Forwarded-For / X-Forwarded-Proto: honoured only from trusted peers."""

import os
import tempfile

import httpx
import pytest

from conftest import has_ipv6_loopback, json_of


@pytest.fixture(scope="module")
def srv(module_server_factory):
    return module_server_factory("basic:app")


def scope_with(srv, headers):
    return json_of(srv.get("/scope", headers=headers))


def test_trusted_loopback_peer_sets_client_and_scheme(srv):
    scope = scope_with(srv, {"x-forwarded-for": "203.0.113.7", "x-forwarded-proto": "https"})
    assert scope["client"] == ["203.0.113.7", 0]
    assert scope["scheme"] == "https"


def test_without_headers_the_peer_is_the_client(srv):
    scope = scope_with(srv, {})
    assert scope["client"][0] == "127.0.0.1" and scope["client"][1] > 0
    assert scope["scheme"] == "http"


def test_rightmost_untrusted_address_wins(srv):
    # A client can prepend anything; only what our trusted proxy appended counts.
    scope = scope_with(srv, {"x-forwarded-for": "6.6.6.6, 203.0.113.7"})
    assert scope["client"][0] == "203.0.113.7"
    scope = scope_with(srv, {"x-forwarded-for": "203.0.113.7, 127.0.0.1"})
    assert scope["client"][0] == "203.0.113.7"


def test_ipv6_forwarded_address(srv):
    scope = scope_with(srv, {"x-forwarded-for": "2001:db8::1"})
    assert scope["client"][0] == "2001:db8::1"


def test_garbage_forwarded_for_is_ignored(srv):
    scope = scope_with(srv, {"x-forwarded-for": "not-an-ip", "x-forwarded-proto": "gopher"})
    assert scope["client"][0] == "127.0.0.1"
    assert scope["scheme"] == "http"


def test_access_log_shows_the_forwarded_client(srv):
    mark = srv.log_mark()
    srv.get("/hello?via=proxy", headers={"x-forwarded-for": "198.51.100.23"})
    srv.wait_for_log(r'^198\.51\.100\.23 - - \[.*\] "GET /hello\?via=proxy HTTP/1\.1" 200 ', since=mark)


def test_fastapi_sees_https_url_behind_proxy(server_factory):
    srv = server_factory("fastapi_app:app")
    info = json_of(srv.get("/request-info", headers={"x-forwarded-proto": "https", "x-forwarded-for": "203.0.113.50"}))
    assert info["scheme"] == "https"
    assert info["url"].startswith("https://")
    assert info["client"][0] == "203.0.113.50"


def test_no_proxy_headers_ignores_them(server_factory):
    srv = server_factory("basic:app", "--no-proxy-headers")
    scope = scope_with(srv, {"x-forwarded-for": "203.0.113.7", "x-forwarded-proto": "https"})
    assert scope["client"][0] == "127.0.0.1"
    assert scope["scheme"] == "http"


def test_untrusted_peer_is_ignored(server_factory):
    srv = server_factory("basic:app", "--forwarded-allow-ips", "10.0.0.1,192.0.2.0/24")
    scope = scope_with(srv, {"x-forwarded-for": "203.0.113.7", "x-forwarded-proto": "https"})
    assert scope["client"][0] == "127.0.0.1"
    assert scope["scheme"] == "http"


def test_trust_everyone_with_star(server_factory):
    srv = server_factory("basic:app", "--forwarded-allow-ips", "*")
    scope = scope_with(srv, {"x-forwarded-for": "6.6.6.6, 203.0.113.7", "x-forwarded-proto": "https"})
    # With every hop trusted, the first (leftmost) address is the client.
    assert scope["client"][0] == "6.6.6.6"
    assert scope["scheme"] == "https"


def test_trusted_network_range(server_factory):
    srv = server_factory("basic:app", "--forwarded-allow-ips", "127.0.0.0/8")
    scope = scope_with(srv, {"x-forwarded-for": "203.0.113.7"})
    assert scope["client"][0] == "203.0.113.7"


def test_unix_socket_peer_is_always_trusted(server_factory):
    d = tempfile.mkdtemp(prefix="fg-")
    path = os.path.join(d, "p.sock")
    try:
        server_factory("basic:app", "--forwarded-allow-ips", "10.0.0.1", bind=["--uds", path], wait_address=path)
        with httpx.Client(transport=httpx.HTTPTransport(uds=path), base_url="http://localhost") as c:
            scope = json_of(c.get("/scope", headers={"x-forwarded-for": "203.0.113.7", "x-forwarded-proto": "https"}))
        assert scope["client"][0] == "203.0.113.7"
        assert scope["scheme"] == "https"
    finally:
        if os.path.exists(path):
            os.unlink(path)
        os.rmdir(d)


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback")
def test_ipv6_loopback_peer_trusted_by_default(server_factory):
    srv = server_factory("basic:app", host="::1")
    scope = scope_with(srv, {"x-forwarded-for": "203.0.113.7"})
    assert scope["client"][0] == "203.0.113.7"


# --- RFC 7239 Forwarded, X-Forwarded-Host/-Port/-Prefix --------------------------

def test_forwarded_sets_client_scheme_and_host(srv):
    scope = scope_with(srv, {"forwarded": 'for="[2001:db8::17]:4711";proto=https;host=example.com'})
    assert scope["client"] == ["2001:db8::17", 4711]
    assert scope["scheme"] == "https"
    assert dict(scope["headers"])["host"] == "example.com"


def test_forwarded_rightmost_untrusted_element_wins(server_factory):
    srv = server_factory("basic:app", "--forwarded-allow-ips", "127.0.0.1,10.0.0.0/8")
    value = "for=6.6.6.6;host=evil.test, for=203.0.113.7;proto=https;host=example.com, for=10.0.0.5;proto=http"
    scope = scope_with(srv, {"forwarded": value})
    assert scope["client"][0] == "203.0.113.7"
    assert scope["scheme"] == "https"
    assert dict(scope["headers"])["host"] == "example.com"


def test_forwarded_unknown_node_keeps_the_peer(srv):
    scope = scope_with(srv, {"forwarded": "for=unknown;proto=https"})
    assert scope["client"][0] == "127.0.0.1"
    assert scope["scheme"] == "https"


def test_forwarded_wins_over_x_forwarded(srv):
    scope = scope_with(srv, {"forwarded": "for=203.0.113.7", "x-forwarded-for": "198.51.100.1", "x-forwarded-proto": "https"})
    assert scope["client"][0] == "203.0.113.7"
    assert scope["scheme"] == "http"


def test_x_forwarded_host_and_port(srv):
    scope = scope_with(srv, {"x-forwarded-host": "example.com", "x-forwarded-proto": "https", "x-forwarded-port": "8443"})
    assert dict(scope["headers"])["host"] == "example.com:8443"
    assert scope["server"][1] == 8443
    # The scheme's default port is left out of the Host, as a browser would.
    scope = scope_with(srv, {"x-forwarded-host": "example.com", "x-forwarded-proto": "https", "x-forwarded-port": "443"})
    assert dict(scope["headers"])["host"] == "example.com"


def test_x_forwarded_prefix_feeds_root_path(srv):
    scope = scope_with(srv, {"x-forwarded-prefix": "/api/"})
    assert scope["root_path"] == "/api"
    assert scope["path"] == "/api/scope"
    assert scope["raw_path"] == "/api/scope"


def test_x_forwarded_prefix_is_appended_to_root_path(server_factory):
    srv = server_factory("basic:app", "--root-path", "/app")
    scope = scope_with(srv, {"x-forwarded-prefix": "/v1"})
    assert scope["root_path"] == "/app/v1"
    assert scope["path"] == "/app/v1/scope"
    # The next request, without a prefix, has the configured root path alone.
    scope = scope_with(srv, {})
    assert scope["root_path"] == "/app"
    assert scope["path"] == "/app/scope"


def test_fastapi_builds_urls_for_the_public_host(server_factory):
    srv = server_factory("fastapi_app:app")
    headers = {"x-forwarded-proto": "https", "x-forwarded-host": "api.example.com", "x-forwarded-for": "203.0.113.50"}
    info = json_of(srv.get("/request-info", headers=headers))
    assert info["url"].startswith("https://api.example.com/")


def test_untrusted_peer_gets_none_of_the_new_headers(server_factory):
    srv = server_factory("basic:app", "--forwarded-allow-ips", "10.0.0.1")
    scope = scope_with(srv, {"forwarded": "for=203.0.113.7;proto=https;host=evil.test", "x-forwarded-host": "evil.test",
                             "x-forwarded-port": "1", "x-forwarded-prefix": "/evil"})
    assert scope["client"][0] == "127.0.0.1"
    assert scope["scheme"] == "http"
    assert dict(scope["headers"])["host"].startswith("127.0.0.1:")
    assert scope["root_path"] == ""
    assert scope["server"][1] == srv.port
