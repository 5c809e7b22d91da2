"""The benchmark's workloads: which app, which request, which load client."""

import os
from dataclasses import dataclass

import static_text
from loadgen import Request
from servers import Plan

POST_BODY = '{"name":"widget","price":9.99,"quantity":3,"tags":["red","small","sale"]}'

MIB = 1024 * 1024
STATIC_FILES = {"10k.bin": 10 * 1024, "1m.bin": MIB}

# The gzip workloads' request header: the client offers gzip only, as curl
# --compressed and older clients do, so every server answers with gzip.
ACCEPT_GZIP = (("Accept-Encoding", "gzip"),)


@dataclass(frozen=True)
class Workload:
    key: str
    title: str
    kind: str                 # "http" (wrk, or h2load if http2), "idle" (held connections),
                              # "ws" (echo), "handshake" (new TLS connections, one request each)
                              # or "download" (one big file at a time with curl)
    app: str                  # MODULE:ATTR in bench/apps
    request: Request = Request()
    all_cores: bool = False
    static: bool = False      # needs the static directory; /static/ may be served natively
    tls: bool = False         # the server listens with TLS (throwaway cert of the run)
    resume: bool = False      # handshake workloads: resume the session (else full handshakes)
    floor: str = ""           # the floor to compare with, when another workload's (same app+request)
    http2: bool = False       # HTTP/2 with h2load: h2c by prior knowledge, or ALPN h2 over TLS
    http1: str = ""           # the HTTP/1.1 workload with the same app, request and transport
    target: tuple | None = None  # (reference server, factor): ferrogate's CPU µs/req should
                                 # be at most factor x the reference's (the HTTP/2 targets)
    encoding: str = ""        # every response must come back with this Content-Encoding
                              # (the request offers it; see ACCEPT_GZIP)
    compress_app: str = ""    # the app for servers that cannot compress: `app` wrapped in
                              # GZipMiddleware (apps/gzip_wrapped.py)
    note: str = ""            # said under the workload's title in results.md
    download_bytes: int = 0   # "download" kind: the size of the file at request.path, made
                              # only when the workload is chosen (make_static_dir)
    rounds_table: bool = False  # results.md shows its rounds one by one ("Round by round"),
                                # as for every all-cores workload

    @property
    def app_key(self):
        """Names the app's in-process floor: the same app and request share one."""
        return self.floor or self.key.removesuffix("-allcores")

    @property
    def has_floor(self):
        """Whether an in-process floor means anything: not for held idle connections,
        nor for a 100 MiB download (its table has no floor column)."""
        return self.kind not in ("idle", "download")

    @property
    def by_round(self):
        """Shown round by round in results.md: the all-cores rows, whose rounds
        differ most (the load generator shares the cores), and the big static files."""
        return self.all_cores or self.rounds_table

    @property
    def rate_unit(self):
        """What the workload's rate counts, as its tables say it."""
        return {"ws": "messages/s", "handshake": "handshakes/s",
                "download": "MiB/s"}.get(self.kind, "req/s")

    def workers(self, ncpu):
        return ncpu if self.all_cores else 1

    def plan(self, static_dir, ncpu, idle_connections=0, certs=None):
        if self.tls and certs is None:
            raise ValueError(f"workload {self.key} needs the run's TLS certificate")
        return Plan(
            app=self.app,
            workers=self.workers(ncpu),
            static_dir=static_dir if self.static else None,
            websocket=self.kind == "ws",
            long_keepalive=self.kind == "idle",
            hold_connections=idle_connections if self.kind == "idle" else 0,
            tls=(certs.cert, certs.key) if self.tls else None,
            http2=self.http2,
            compress=self.encoding,
            compress_app=self.compress_app or None,
        )


_GZIP_NOTE = (
    "The client (wrk -H 'Accept-Encoding: gzip') offers gzip only; every response must come "
    "back gzip'd (checked on a probe, and on the bytes wrk read per response). ferrogate "
    "compresses itself (on by default; gzip level 5 = --compress-level balanced); nginx with "
    "`gzip on; gzip_types application/json text/css application/javascript; "
    "gzip_comp_level 5;` in front of the uncompressed app; granian and uvicorn have no "
    "compression, so their app is wrapped in Starlette's GZipMiddleware(compresslevel=5), "
    "as a user of those servers does. For scale, the floor table's `+zlib5` line is the app "
    "plus zlib level 5 of the same body, in-process: what the compression alone costs.")

ALL = [
    Workload("raw", "raw ASGI, small JSON (1 worker)", "http", "raw_json:app"),
    Workload("fastapi-get", "FastAPI GET / (1 worker)", "http", "fastapi_app:app"),
    Workload("fastapi-post", "FastAPI POST, pydantic body (1 worker)", "http", "fastapi_app:app",
             Request("POST", "/items", POST_BODY)),
    Workload("static-10k", "static file 10 KiB (1 worker)", "http", "static_files:app",
             Request("GET", "/static/10k.bin"), static=True),
    Workload("static-1m", "static file 1 MiB (1 worker)", "http", "static_files:app",
             Request("GET", "/static/1m.bin"), static=True, rounds_table=True),
    Workload("idle", "idle keep-alive connections (1 worker)", "idle", "raw_json:app"),
    Workload("ws", "WebSocket echo (1 worker)", "ws", "ws_echo:app"),
    Workload("raw-allcores", "raw ASGI, small JSON (all cores)", "http", "raw_json:app",
             all_cores=True),
    Workload("fastapi-get-allcores", "FastAPI GET / (all cores)", "http", "fastapi_app:app",
             all_cores=True),
    # HTTPS (issue 9). The same apps and requests as raw / fastapi-get, over
    # TLS with keep-alive (wrk), then new connections with one request each
    # (openssl s_time): every handshake full, or every one resuming the
    # session of the previous connection. The -allcores variant shows whether
    # a session resumes on another worker process (shared ticket keys/cache).
    Workload("https-raw", "HTTPS keep-alive, raw ASGI, small JSON (1 worker)", "http",
             "raw_json:app", tls=True, floor="raw"),
    Workload("https-fastapi", "HTTPS keep-alive, FastAPI GET / (1 worker)", "http",
             "fastapi_app:app", tls=True, floor="fastapi-get"),
    Workload("tls-full", "TLS full handshakes, 1 request per connection (1 worker)", "handshake",
             "raw_json:app", tls=True, floor="raw"),
    Workload("tls-resumed", "TLS resumed handshakes, 1 request per connection (1 worker)",
             "handshake", "raw_json:app", tls=True, resume=True, floor="raw"),
    Workload("tls-resumed-allcores", "TLS resumed handshakes, 1 request per connection (all cores)",
             "handshake", "raw_json:app", tls=True, resume=True, all_cores=True, floor="raw"),
    # HTTP/2 (h2load -c 64 -m 10): the raw, FastAPI and 10 KiB static
    # workloads over h2c (prior knowledge) and over TLS (ALPN h2). uvicorn has
    # no HTTP/2 (n/a); nginx serves the file itself and proxies the app rows to
    # gunicorn as over HTTP/1.1. The targets: static CPU/request at
    # most nginx's, FastAPI at most 0.8x granian's.
    Workload("h2-raw", "HTTP/2 h2c, raw ASGI, small JSON (1 worker)", "http", "raw_json:app",
             http2=True, floor="raw", http1="raw"),
    Workload("h2-fastapi", "HTTP/2 h2c, FastAPI GET / (1 worker)", "http", "fastapi_app:app",
             http2=True, floor="fastapi-get", http1="fastapi-get", target=("granian", 0.8)),
    Workload("h2-static-10k", "HTTP/2 h2c, static file 10 KiB (1 worker)", "http",
             "static_files:app", Request("GET", "/static/10k.bin"), static=True, http2=True,
             floor="static-10k", http1="static-10k", target=("nginx+gunicorn", 1.0)),
    Workload("h2s-raw", "HTTP/2 over TLS, raw ASGI, small JSON (1 worker)", "http",
             "raw_json:app", tls=True, http2=True, floor="raw", http1="https-raw"),
    Workload("h2s-fastapi", "HTTP/2 over TLS, FastAPI GET / (1 worker)", "http",
             "fastapi_app:app", tls=True, http2=True, floor="fastapi-get", http1="https-fastapi",
             target=("granian", 0.8)),
    Workload("h2s-static-10k", "HTTP/2 over TLS, static file 10 KiB (1 worker)", "http",
             "static_files:app", Request("GET", "/static/10k.bin"), static=True, tls=True,
             http2=True, floor="static-10k", target=("nginx+gunicorn", 1.0)),
    # Compression (issue 12): the client sends Accept-Encoding: gzip and every
    # response must come back gzip'd (checked on the probe and on wrk's byte
    # count). ferrogate compresses itself (on by default, gzip level 5 at
    # --compress-level balanced); nginx with `gzip on`, gzip_types and
    # gzip_comp_level 5 in front of the uncompressed app, or serving the file
    # itself; granian and uvicorn have no compression, so their app is wrapped
    # in Starlette's GZipMiddleware at compresslevel 5 (granian then serves the
    # static file through the app: its static mount cannot compress).
    Workload("gzip-json", "gzip'd 100 KiB JSON from the app (1 worker)", "http",
             "big_json:app", Request("GET", "/", headers=ACCEPT_GZIP), encoding="gzip",
             compress_app="gzip_wrapped:big_json_app", note=_GZIP_NOTE + (
                 " The app sends a constant ~100 KiB JSON document (a page of product "
                 "records, apps/big_json.py) uncompressed; the floor is that app alone, so the overhead "
                 "includes the compression.")),
    Workload("gzip-static", "gzip'd 100 KiB static stylesheet (1 worker)", "http",
             "static_files:app", Request("GET", f"/static/{static_text.NAME}", headers=ACCEPT_GZIP),
             static=True, encoding="gzip", compress_app="gzip_wrapped:static_app",
             note=_GZIP_NOTE + (
                 " The file: ~100 KiB of generated CSS (bench/static_text.py), text/css. "
                 "ferrogate serves it with `--static` and nginx from its root, both without the "
                 "app; granian's static mount cannot compress, so granian, like uvicorn, serves "
                 "it through the wrapped static-file app (floor: that app sending the bytes). "
                 "Each does what it does by default: ferrogate keeps a static file's compressed "
                 "form in memory once made (src/http/compress/cache.rs), nginx's `gzip on` and "
                 "GZipMiddleware compress on every request (nginx's way around that, "
                 "`gzip_static on` with a prebuilt app.css.gz, is not what this row measures).")),
    # A large file, one download at a time (issue 13): throughput of one
    # connection, CPU per download, and whether the server's memory stays flat
    # while it streams 100 MiB (it should not buffer the file).
    Workload("download-100m", "100 MiB static file download (1 worker)", "download",
             "static_files:app", Request("GET", "/static/100m.bin"), static=True,
             download_bytes=100 * MIB, rounds_table=True, note=(
                 "One `curl` at a time downloads the 100 MiB file of random bytes to /dev/null, "
                 "each on a new connection (`Connection: close`), one after another for the "
                 "run's duration (at least 3 downloads); no warm-up download, so whatever the "
                 "first download allocates shows as growth. Each download must be 200 with "
                 "all 104,857,600 bytes, else it is an error. Served as `static-1m` is: "
                 "ferrogate with `--static`, nginx from its root, granian from its static "
                 "mount, uvicorn through apps/static_files.py, which has no pathsend there and "
                 "so reads the file and sends it in 1 MiB pieces (as Starlette's FileResponse "
                 "does, in 64 KiB ones). MiB/s: the median of the "
                 "run's downloads (curl's average speed of each); CPU ms per download: the "
                 "server tree's CPU over the downloads ÷ downloads; RSS before: the tree's RSS "
                 "after one small probe request, before the first download; peak RSS: sampled "
                 "every 50 ms during the downloads; growth = peak − before.")),
]
BY_KEY = {w.key: w for w in ALL}
# CI's smoke run: HTTPS keep-alive is one more wrk run per server (~15 s for
# four servers); the handshake workloads stay out of it. HTTP/2 adds one h2c
# row (~12 s: uvicorn is n/a): FastAPI, the target row that reaches the app
# through every server (the static rows never run the app on granian/nginx).
# gzip-json (~18 s for four servers) checks the compressed path end to end: the
# request header, the Content-Encoding check, nginx's gzip and the wrapped app;
# gzip-static differs only in the file, so it stays for the full run.
QUICK = ["raw", "fastapi-get", "static-10k", "idle", "ws", "https-raw", "h2-fastapi",
         "gzip-json"]


def _write_random(path, size, chunk=MIB):
    # In chunks: the 100 MiB file need not sit in the harness's memory.
    with open(path, "wb") as f:
        for done in range(0, size, chunk):
            f.write(os.urandom(min(chunk, size - done)))


def make_static_dir(scratch, chosen=()):
    """Create SCRATCH/www/static/ with the static files; return that directory.

    The parent www/ is nginx's root, so /static/NAME maps to a real file.
    Random bytes, so no layer can compress them; and the gzip-static
    workload's stylesheet, text made from a fixed seed (bench/static_text.py).
    The download workloads' big files only when one of `chosen` needs them
    (100 MiB costs a second to write and the disk space).
    """
    static_dir = os.path.join(scratch, "www", "static")
    os.makedirs(static_dir, exist_ok=True)
    files = dict(STATIC_FILES)
    files.update((os.path.basename(w.request.path), w.download_bytes)
                 for w in chosen if w.download_bytes)
    for name, size in files.items():
        _write_random(os.path.join(static_dir, name), size)
    with open(os.path.join(static_dir, static_text.NAME), "wb") as f:
        f.write(static_text.stylesheet())
    # nginx's worker and granian read these; keep them world-readable.
    for path in (scratch, os.path.join(scratch, "www"), static_dir):
        os.chmod(path, 0o755)
    return static_dir
