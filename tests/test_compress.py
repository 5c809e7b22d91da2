"""Response compression (gzip, brotli, zstd): the app's responses and static files,
negotiated by Accept-Encoding, with real clients (httpx decoding all three with the
brotli and zstandard packages, curl --compressed, HTTP/2) and real decoders."""

import gzip
import json
import os
import subprocess
import time

import brotli
import httpx
import pytest
import zstandard

from conftest import parse_response, raw_http

APP = "compress_app:app"
CODINGS = ["gzip", "br", "zstd"]


def decode(coding: str, data: bytes) -> bytes:
    if coding == "gzip":
        return gzip.decompress(data)
    if coding == "br":
        return brotli.decompress(data)
    if coding == "zstd":
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    assert coding in ("", "identity"), coding
    return data


def raw_get(srv, path: str, accept: str | None, method: str = "GET", **kw):
    """The response as sent: status, headers and the undecoded body."""
    headers = {"accept-encoding": accept} if accept is not None else {}
    headers.update(kw.pop("headers", {}))
    with httpx.Client(base_url=srv.url, timeout=30, **kw) as c:
        with c.stream(method, path, headers=headers) as r:
            body = b"".join(r.iter_raw())
            return r.status_code, r.headers, body


def varies(headers) -> bool:
    return "accept-encoding" in [t.strip().lower() for t in headers.get("vary", "").split(",")]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("compress-site")
    text = "".join(f"function f{i}() {{ return {i} * 2; }}\n" for i in range(3000)).encode()
    (root / "app.js").write_bytes(text)                       # ~ 100 KiB, no sibling
    (root / "big.txt").write_bytes(text * 15)                 # > 1 MiB: compressed as sent, never cached
    (root / "small.css").write_text("body { color: red }\n")  # below the minimum size
    (root / "logo.png").write_bytes(b"\x89PNG" + b"\0" * 20000)
    # style.css has fresh siblings, decoding to a marked text so that a test can tell them apart.
    css = b"".join(b".c%d { margin: %dpx }\n" % (i, i) for i in range(2000))
    (root / "style.css").write_bytes(css)
    (root / "style.css.br").write_bytes(brotli.compress(b"/* br sibling */\n" + css))
    (root / "style.css.gz").write_bytes(gzip.compress(b"/* gz sibling */\n" + css))
    # old.css has a sibling older than itself: a leftover, not served.
    (root / "old.css.gz").write_bytes(gzip.compress(b"/* stale */\n"))
    (root / "old.css").write_bytes(css)
    past = time.time() - 3600
    os.utime(root / "old.css.gz", (past, past))
    return root


@pytest.fixture(scope="module")
def srv(module_server_factory, site):
    return module_server_factory(APP, "--static", f"/static={site}")


@pytest.mark.parametrize("coding", CODINGS)
def test_fastapi_json_compressed_with_each_coding(srv, coding):
    status, h, body = raw_get(srv, "/json", coding)
    assert status == 200
    assert h["content-encoding"] == coding
    assert varies(h)
    # Compressed at once: the length is the compressed one, not chunked.
    assert int(h["content-length"]) == len(body)
    assert h["etag"] == 'W/"json-v1"'
    _, identity_h, identity = raw_get(srv, "/json", "identity")
    assert "content-encoding" not in identity_h and identity_h["etag"] == '"json-v1"' and varies(identity_h)
    assert len(body) < len(identity) / 5
    assert decode(coding, body) == identity
    assert len(json.loads(identity)) == 2000


def test_httpx_decodes_what_it_asked_for(srv):
    # httpx offers gzip, deflate, br and zstd (the brotli and zstandard packages are installed).
    r = httpx.get(srv.url + "/json?n=500", timeout=30)
    assert r.headers["content-encoding"] == "zstd"
    assert len(r.json()) == 500


@pytest.mark.parametrize("accept,expected", [
    ("gzip, deflate, br, zstd", "zstd"),          # ties: the server's order (zstd, br, gzip)
    ("gzip;q=1.0, br;q=0.5", "gzip"),
    ("br;q=0.9, zstd;q=0.1", "br"),
    ("br;q=0, gzip;q=0", None),                   # q=0 refuses
    ("*", "zstd"),
    ("*;q=0.5, gzip", "gzip"),
    ("zstd;q=0, *", "br"),
    ("identity", None),
    ("gzip;q=0.5, identity", None),
    ("compress, deflate", None),
    (None, None),                                 # no header: identity
])
def test_negotiation(srv, accept, expected):
    if accept is None:  # httpx always sends one: a raw request without
        raw = raw_http(srv.address, b"GET /json?n=300 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        _, h, body = parse_response(raw)
    else:
        _, h, body = raw_get(srv, "/json?n=300", accept)
    assert h.get("content-encoding") == expected
    assert varies(h)
    assert json.loads(decode(expected or "", body))[299]["id"] == 299


@pytest.mark.parametrize("coding", CODINGS)
def test_curl_compressed(srv, coding, tmp_path):
    out = tmp_path / "body"
    p = subprocess.run(["curl", "-sS", "--compressed", "-H", f"accept-encoding: {coding}", "-D", "-", "-o", str(out),
                        srv.url + "/json"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert f"content-encoding: {coding}" in p.stdout.lower()
    assert json.loads(out.read_bytes()) == json.loads(raw_get(srv, "/json", "identity")[2])


def test_curl_compressed_default_offer(srv):
    p = subprocess.run(["curl", "-sS", "--compressed", "-D", "/dev/stderr", srv.url + "/json?n=50"],
                       capture_output=True, text=True, timeout=30)
    assert "content-encoding: zstd" in p.stderr.lower()  # this curl offers deflate, gzip, br, zstd
    assert len(json.loads(p.stdout)) == 50


@pytest.mark.parametrize("coding", CODINGS)
def test_streaming_response_is_compressed_chunked(srv, coding):
    status, h, body = raw_get(srv, "/stream?n=50", coding)
    assert status == 200 and h["content-encoding"] == coding and varies(h)
    assert "content-length" not in h and h["transfer-encoding"] == "chunked"
    assert decode(coding, body) == "".join(f"line {i}: {'x' * 100}\n" for i in range(50)).encode()


def test_small_responses_are_untouched(srv):
    _, h, body = raw_get(srv, "/small", "gzip, br, zstd")
    assert "content-encoding" not in h and not varies(h)
    assert json.loads(body) == {"ok": True}


def test_images_are_untouched(srv):
    _, h, body = raw_get(srv, "/png", "gzip, br, zstd")
    assert "content-encoding" not in h and not varies(h) and len(body) == 5100


def test_a_content_type_that_is_not_ascii_is_served_untouched(srv):
    status, h, body = raw_get(srv, "/odd-type", "gzip")
    assert status == 200 and "content-encoding" not in h and body == b"odd " * 1000
    assert dict(h.raw)[b"content-type"] == "applicatiéü+json".encode()


def test_already_encoded_response_is_untouched(srv):
    _, h, body = raw_get(srv, "/encoded", "br, zstd")
    assert h["content-encoding"] == "gzip"
    assert gzip.decompress(body) == ("already " * 1000).encode()


def test_no_transform_is_respected(srv):
    _, h, body = raw_get(srv, "/no-transform", "gzip")
    assert "content-encoding" not in h and body == ("keep me " * 1000).encode()


def test_vary_is_merged_with_the_apps(srv):
    _, h, body = raw_get(srv, "/vary", "gzip")
    assert h["content-encoding"] == "gzip"
    assert h.get_list("vary") == ["Origin, accept-encoding"]


def test_head_has_the_headers_of_get(srv):
    _, get_h, _ = raw_get(srv, "/json", "br")
    status, h, body = raw_get(srv, "/json", "br", method="HEAD")
    assert status == 200 and body == b""
    for name in ("content-encoding", "vary", "etag", "content-type"):
        assert h[name] == get_h[name], name
    # The compressed length is not known without compressing: none is announced.
    assert "content-length" not in h


@pytest.mark.parametrize("coding", CODINGS)
def test_static_file_compressed_then_served_from_the_cache(srv, site, coding):
    status, h, body = raw_get(srv, "/static/app.js", coding)
    assert status == 200 and h["content-encoding"] == coding and varies(h)
    assert h["content-type"].startswith("text/javascript") or h["content-type"].startswith("application/javascript")
    assert h["etag"].startswith('W/"') and "accept-ranges" not in h
    assert decode(coding, body) == (site / "app.js").read_bytes()
    # The first request may stream it; the cached variant comes with its length.
    _, h2, body2 = raw_get(srv, "/static/app.js", coding)
    assert body2 == body and int(h2["content-length"]) == len(body)
    assert h2["etag"] == h["etag"]


def test_static_file_over_the_cache_limit_streams(srv, site):
    for _ in range(2):
        _, h, body = raw_get(srv, "/static/big.txt", "gzip")
        assert h["content-encoding"] == "gzip" and "content-length" not in h
        assert decode("gzip", body) == (site / "big.txt").read_bytes()


def test_static_identity_and_revalidation(srv, site):
    _, h, body = raw_get(srv, "/static/app.js", "identity")
    assert "content-encoding" not in h and varies(h) and h["etag"].startswith('"')
    assert body == (site / "app.js").read_bytes() and h["accept-ranges"] == "bytes"
    # The weak tag of a compressed copy revalidates it; the 304 says Vary too.
    _, gz, _ = raw_get(srv, "/static/app.js", "gzip")
    status, h304, _ = raw_get(srv, "/static/app.js", "gzip", headers={"if-none-match": gz["etag"]})
    assert status == 304 and varies(h304) and h304["etag"] == gz["etag"]


@pytest.mark.parametrize("coding,marker", [("br", b"/* br sibling */"), ("gzip", b"/* gz sibling */")])
def test_precompressed_siblings_are_served(srv, site, coding, marker):
    status, h, body = raw_get(srv, "/static/style.css", coding)
    assert status == 200 and h["content-encoding"] == coding and varies(h)
    assert h["content-type"].startswith("text/css")
    assert int(h["content-length"]) == len(body) == (site / f"style.css.{'br' if coding == 'br' else 'gz'}").stat().st_size
    assert decode(coding, body).startswith(marker)
    status, h, body = raw_get(srv, "/static/style.css", coding, method="HEAD")
    assert h["content-encoding"] == coding and body == b""


def test_sibling_order_follows_the_client_then_the_server(srv):
    # zstd is preferred but has no sibling: the br sibling beats compressing now.
    _, h, body = raw_get(srv, "/static/style.css", "zstd, br, gzip")
    assert h["content-encoding"] == "br" and decode("br", body).startswith(b"/* br sibling */")
    _, h, body = raw_get(srv, "/static/style.css", "zstd")
    assert h["content-encoding"] == "zstd" and decode("zstd", body).startswith(b".c0")


def test_stale_sibling_is_not_served(srv, site):
    _, h, body = raw_get(srv, "/static/old.css", "gzip")
    assert h["content-encoding"] == "gzip"
    assert decode("gzip", body) == (site / "old.css").read_bytes()


def test_static_range_requests_get_identity(srv, site):
    status, h, body = raw_get(srv, "/static/app.js", "gzip, br", headers={"range": "bytes=10-19"})
    assert status == 206 and "content-encoding" not in h
    assert body == (site / "app.js").read_bytes()[10:20]
    assert h["etag"].startswith('"')


def test_static_small_and_binary_files_are_untouched(srv, site):
    _, h, body = raw_get(srv, "/static/small.css", "gzip")
    assert "content-encoding" not in h and not varies(h) and body == b"body { color: red }\n"
    _, h, body = raw_get(srv, "/static/logo.png", "gzip")
    assert "content-encoding" not in h and not varies(h) and len(body) == 20004


def test_app_file_response_is_compressed(srv, site):
    # FileResponse goes out as http.response.pathsend.
    path = str(site / "app.js")
    _, h, body = raw_get(srv, f"/file?path={path}", "br")
    assert h["content-encoding"] == "br" and "accept-ranges" not in h and h["etag"].startswith('W/"')
    assert decode("br", body) == (site / "app.js").read_bytes()
    # A range of it is the app's 206, sent as it is.
    status, h, body = raw_get(srv, f"/file?path={path}", "br", headers={"range": "bytes=0-9"})
    assert status == 206 and "content-encoding" not in h and body == (site / "app.js").read_bytes()[:10]


@pytest.mark.parametrize("path", ["/json", "/stream", "/static/app.js", "/static/style.css"])
def test_http2_compressed(srv, site, path):
    with httpx.Client(http1=False, http2=True, base_url=srv.url, timeout=30) as c:
        r = c.get(path, headers={"accept-encoding": "br"})
    assert r.http_version == "HTTP/2" and r.status_code == 200
    assert r.headers["content-encoding"] == "br" and varies(r.headers)
    if path.startswith("/static/app"):
        assert r.content == (site / "app.js").read_bytes()
    elif path == "/json":
        assert len(r.json()) == 2000


def test_curl_http2_prior_knowledge(srv):
    p = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "--compressed", "-D", "/dev/stderr",
                        srv.url + "/json?n=100"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert "HTTP/2 200" in p.stderr and "content-encoding: zstd" in p.stderr.lower()
    assert len(json.loads(p.stdout)) == 100


def events_one_at_a_time(srv, coding: str, http2: bool):
    """Reads the SSE stream decoded; asks for event i+1 only after event i was decoded.
    An event held in a compressor would never arrive: the read timeout fails the test."""
    n = 5
    got = []
    with httpx.Client(base_url=srv.url, http1=not http2, http2=http2, timeout=httpx.Timeout(10.0)) as c, \
            httpx.Client(base_url=srv.url, timeout=10) as control:
        with c.stream("GET", f"/sse?n={n}", headers={"accept-encoding": coding}) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            assert r.headers["content-encoding"] == coding and varies(r.headers)
            buffer = ""
            for text in r.iter_text():
                buffer += text.replace("\r\n", "\n")
                while "\n\n" in buffer:
                    block, buffer = buffer.split("\n\n", 1)
                    data = [line[6:] for line in block.split("\n") if line.startswith("data: ")]
                    if data:
                        got.append(data[0])
                        if len(got) < n:
                            assert control.get("/next").status_code == 200
    return got


@pytest.mark.parametrize("coding", CODINGS)
def test_sse_events_arrive_one_by_one_through_compression(srv, coding):
    assert events_one_at_a_time(srv, coding, http2=False) == [f"Event {i} " + "y" * 50 for i in range(5)]


def test_sse_over_http2(srv):
    assert events_one_at_a_time(srv, "gzip", http2=True) == [f"Event {i} " + "y" * 50 for i in range(5)]


# --- the options ---------------------------------------------------------------------------

def test_no_compress(server_factory, site):
    srv = server_factory(APP, "--no-compress", "--static", f"/static={site}")
    for path in ("/json", "/static/app.js", "/static/style.css"):
        _, h, body = raw_get(srv, path, "gzip, br, zstd")
        assert "content-encoding" not in h and not varies(h), path
        assert int(h["content-length"]) == len(body)


def test_compress_options(server_factory, site):
    srv = server_factory(APP, "--compress-min-size", "100000", "--compress-types", "application/json",
                         "--compress-encodings", "br,gzip", "--compress-level", "best", "--static", f"/static={site}")
    _, h, body = raw_get(srv, "/json?n=10000", "zstd, gzip, br")   # over the minimum size: br first, no zstd
    assert h["content-encoding"] == "br" and len(json.loads(decode("br", body))) == 10000
    _, h, _ = raw_get(srv, "/json?n=10000", "zstd")
    assert "content-encoding" not in h and varies(h)
    _, h, _ = raw_get(srv, "/json?n=100", "gzip")                 # under it
    assert "content-encoding" not in h
    _, h, _ = raw_get(srv, "/stream?n=2000", "gzip")              # text/plain is not listed now
    assert "content-encoding" not in h
