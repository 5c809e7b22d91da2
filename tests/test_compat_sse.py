"""Differential tests, sse-starlette (tests/apps/compat/sse_compat.py): the README pattern,
a generator that checks `await request.is_disconnected()` before each event. Every event
must arrive on both servers, and a client that leaves must stop the generator on both."""

import socket
import uuid

import httpx
import pytest

from compat_support import effects, wait_effect


@pytest.fixture(scope="module")
def pair(pair_factory):
    return pair_factory("sse_compat:app")


def new_tag() -> str:
    return uuid.uuid4().hex[:12]


def parse_events(text: str) -> list[dict]:
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        fields = {}
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value
        if fields:
            events.append(fields)
    return events


def test_all_events_arrive(pair):
    n = 8
    tags = {}

    def run(srv):
        tags[srv.name] = tag = new_tag()
        body = b""
        with httpx.stream("GET", f"{srv.url}/events", params={"n": n, "tag": tag}, timeout=10) as r:
            try:
                for chunk in r.iter_raw():
                    body += chunk
            except httpx.HTTPError as e:  # the stream broke off: keep what arrived
                body += f"\n\n: stream broke off: {e!r}".encode()
            return r.status_code, r.headers, body.decode()

    (fg_status, fg_headers, fg_body), (uv_status, uv_headers, uv_body) = pair.map_parallel(run)
    expected = [{"event": "tick", "id": str(i), "data": f"Event {i}"} for i in range(n)]
    assert uv_status == 200 and parse_events(uv_body) == expected
    assert fg_status == 200
    assert parse_events(fg_body) == expected, (
        f"ferrogate delivered {len(parse_events(fg_body))} of {n} events: {fg_body!r}\n--- log ---\n"
        f"{pair.fg.log_tail(30)}")
    assert fg_body == uv_body
    for h in ("content-type", "cache-control", "x-accel-buffering", "connection", "transfer-encoding"):
        assert fg_headers.get(h) == uv_headers.get(h), h
    for srv in pair:
        done = wait_effect(srv, "sse generator done", tag=tags[srv.name])
        assert done[0]["sent"] == n, f"{srv.name}: {effects(srv, tag=tags[srv.name])}"
        assert not effects(srv, "sse client gone", tag=tags[srv.name]), srv.name


def test_client_leaving_stops_the_generator(pair):
    """The client reads two events of a long stream and hangs up: on both servers the
    generator ends (is_disconnected() turns true, or the send fails and it is closed)."""
    tags = {}

    def run(srv):
        tags[srv.name] = tag = new_tag()
        with socket.create_connection(srv.address, timeout=10) as s:
            s.sendall(f"GET /events?n=2000&delay=0.01&tag={tag} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
            data = b""
            while data.count(b"data: Event") < 2:
                chunk = s.recv(65536)
                assert chunk, f"{srv.name} ended the stream early: {data!r}"
                data += chunk
        done = wait_effect(srv, "sse generator done", tag=tag)
        return done[0]["sent"]

    fg_sent, uv_sent = pair.map_parallel(run)
    assert 2 <= uv_sent < 2000
    assert 2 <= fg_sent < 2000
    for srv in pair:
        log = srv.log()
        assert "Exception in ASGI application" not in log, f"{srv.name}:\n{log}"
