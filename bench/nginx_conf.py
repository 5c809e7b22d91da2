"""The nginx configuration of the "classic stack" (seed tutorial, section 7).

It reproduces the tutorial's server block line for line (upstream on a unix
socket with fail_timeout=0, keepalive_timeout 5, client_max_body_size 4G, the
access log ON, the proxy headers, and `if (!-f $request_filename)` so that
existing files are served by nginx and everything else goes to gunicorn),
inside the http{} defaults of Debian's stock nginx.conf (sendfile, tcp_nopush,
gzip on), which the tutorial relies on by installing nginx from apt.

Deliberate differences, all needed to run it unprivileged-by-path in a temp
directory and on a benchmark, and stated in the results:
- every path (pid, logs, temp files, socket) lives in a temp directory;
- one worker process per nginx (the benchmark gives each server 1 worker);
- worker_connections raised from Debian's 768 so the idle-connections
  workload can hold thousands of connections;
- `root` points at the benchmark's static files (the tutorial leaves nginx's
  default root, which would hold them in a real deployment);
- for the WebSocket workload only, the standard Upgrade/Connection proxy
  headers, without which nginx cannot proxy WebSockets at all;
- for the idle-connections workload only, keepalive_timeout 300 instead of 5,
  so the connections stay open while memory is measured.

For the HTTPS workloads nginx terminates TLS in front of the same stack
(`listen ... ssl`, HTTP/1.1 only, no http2): the certificate and key of the
run, TLS 1.2 and 1.3, Debian's `ssl_prefer_server_ciphers on`, a shared
session cache and session tickets on (nginx makes one ticket key at start-up
and its workers share it and the cache, so sessions resume on any worker).
There nginx runs as many worker processes as gunicorn has workers (1, or one
per core for the -allcores variants), since the handshakes are nginx's work.

For the HTTP/2 workloads (h2-*, h2s-*) the listener gets `http2` (nginx
1.22's syntax; 1.25.1+ would say `http2 on;`): in cleartext that is h2c by
prior knowledge only, with `ssl` ALPN h2 (or http/1.1). nginx still proxies
the app requests to gunicorn over HTTP/1.0 on the unix socket and serves the
static file itself. One more deviation there: `keepalive_requests 1000000`
(default 1000). Since nginx 1.19.7 that limit closes HTTP/2 connections too
(GOAWAY after 1000 requests), and h2load does not reconnect: tried here, a
7 s h2c run on the raw app lost all 64 connections (each after its 1000th
request) and its rate fell to about half of a 4 s run's.

For the gzip workloads (gzip-json, gzip-static) the http{} block also gets
what Debian's stock nginx.conf has commented out under `gzip on;`: the
`gzip_types` of the responses (application/json from the app, text/css for
the file nginx serves itself) and `gzip_comp_level 5` (Debian's comment says
6; 5 matches ferrogate's --compress-level balanced and the GZipMiddleware of
the Python servers). No `gzip_proxied`: it concerns requests that came
through a proxy (a Via header), which wrk's do not.
"""

import os

MIME_TYPES = "/etc/nginx/mime.types"

TEMPLATE = """\
{user_line}worker_processes {workers};
worker_rlimit_nofile {nofile};
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;

events {{
    worker_connections {connections};
}}

http {{
    sendfile on;
    tcp_nopush on;
    types_hash_max_size 2048;
    {mime_line}
    default_type application/octet-stream;
    access_log {tmp}/access.log;
    gzip on;
{gzip_lines}
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;

    upstream app_server {{
        server unix:{socket} fail_timeout=0;
    }}

    server {{
        listen 127.0.0.1:{port}{listen_params};
        server_name localhost;
{tls_lines}
        keepalive_timeout {keepalive};
{keepalive_requests_line}        client_max_body_size 4G;

        access_log {tmp}/nginx-access.log;
        error_log {tmp}/nginx-error.log;

        root {root};

        location / {{
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header Host $http_host;
            proxy_redirect off;
{websocket_lines}
            if (!-f $request_filename) {{
                proxy_pass http://app_server;
                break;
            }}
        }}
    }}
}}
"""

TLS_LINES = """\
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_prefer_server_ciphers on;
        ssl_session_cache shared:SSL:10m;
        ssl_session_timeout 1d;
        ssl_session_tickets on;
"""

GZIP_LINES = """\
    gzip_types application/json text/css application/javascript;
    gzip_comp_level 5;
"""

WEBSOCKET_LINES = """\
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
"""


def render(tmp, port, socket_path, root, websocket=False, long_keepalive=False,
           workers=1, connections=16384, nofile=20000, tls=None, http2=False, compress=False):
    """tls: None, or (certificate, key) to listen with TLS. http2: the listener speaks
    HTTP/2 (cleartext: h2c by prior knowledge only; with tls: ALPN h2 or http/1.1).
    compress: gzip JSON and CSS/JS at level 5 (the gzip workloads)."""
    # Run as root when we are root so the worker can reach the socket and
    # files in our private temp directory; nginx warns if `user` is given
    # without root, so omit it otherwise.
    user_line = "user root;\n" if os.geteuid() == 0 else ""
    mime_line = f"include {MIME_TYPES};" if os.path.exists(MIME_TYPES) else ""
    return TEMPLATE.format(
        user_line=user_line,
        workers=workers,
        nofile=nofile,
        connections=connections,
        tmp=tmp,
        mime_line=mime_line,
        socket=socket_path,
        port=port,
        keepalive=300 if long_keepalive else 5,
        keepalive_requests_line="        keepalive_requests 1000000;\n" if http2 else "",
        root=root,
        websocket_lines=WEBSOCKET_LINES if websocket else "",
        gzip_lines=GZIP_LINES if compress else "",
        listen_params=(" ssl" if tls else "") + (" http2" if http2 else ""),
        tls_lines=TLS_LINES.format(cert=tls[0], key=tls[1]) if tls else "",
    )
