"""Prints the README's benchmark table from a full run's results.json.

    python3 bench/readme_table.py [docs/benchmarks/results.json]

Standard library only. Each row is a median with every round's range in brackets; the best
of each row is bold. The certificate row comes from docs/benchmarks/acme_time.json (its
own harness, bench/acme_time.py), next to the results file.
"""

import json
import statistics
import sys
from pathlib import Path

SERVERS = ("ferrogate", "granian", "uvicorn", "nginx+gunicorn")
HEADER = "| workload | ferrogate | granian | uvicorn | nginx + gunicorn |\n|---|---:|---:|---:|---:|"

# Who serves a row's files or compresses its responses, where that is not the server itself.
STATIC = {"ferrogate": "`--static`", "uvicorn": "app", "nginx+gunicorn": "nginx"}
GZIP_APP = {"granian": "GZipMiddleware", "uvicorn": "GZipMiddleware", "nginx+gunicorn": "nginx `gzip on`"}
GZIP_STATIC = {"ferrogate": "`--static`", **GZIP_APP}
STATIC_H2 = {"nginx+gunicorn": "nginx"}

# (label, workload, field, digits, higher is better, notes per server)
ROWS = [
    ("raw ASGI: req/s", "raw", "rps", 0, True, {}),
    ("raw ASGI: CPU µs/req", "raw", "cpu_us_per_req", 1, False, {}),
    ("FastAPI GET: req/s", "fastapi-get", "rps", 0, True, {}),
    ("FastAPI GET: CPU µs/req", "fastapi-get", "cpu_us_per_req", 1, False, {}),
    ("FastAPI POST, pydantic: req/s", "fastapi-post", "rps", 0, True, {}),
    ("FastAPI GET, all cores: req/s", "fastapi-get-allcores", "rps", 0, True, {}),
    ("raw ASGI, all cores: req/s", "raw-allcores", "rps", 0, True, {}),
    ("WebSocket echo: messages/s", "ws", "rps", 0, True, {}),
    ("WebSocket echo: CPU µs/message", "ws", "cpu_us_per_req", 1, False, {}),
    ("10 KiB static file: CPU µs/req", "static-10k", "cpu_us_per_req", 1, False, STATIC),
    ("1 MiB static file: req/s", "static-1m", "rps", 0, True, STATIC),
    ("1 MiB static file: CPU µs/req", "static-1m", "cpu_us_per_req", 0, False, STATIC),
    ("100 MiB download: MiB/s", "download-100m", "mib_per_s", 0, True, STATIC),
    ("100 MiB download: CPU ms", "download-100m", "cpu_ms_per_download", 1, False, STATIC),
    ("100 MiB download: RSS growth MiB", "download-100m", "rss_growth_mib", 1, False, STATIC),
    ("gzip'd 100 KiB JSON from the app: CPU µs/req", "gzip-json", "cpu_us_per_req", 0, False, GZIP_APP),
    ("gzip'd 100 KiB static text file: CPU µs/req", "gzip-static", "cpu_us_per_req", 0, False, GZIP_STATIC),
    ("idle keep-alive connection: KiB each", "idle", "kib_per_conn", 1, False, {}),
    ("HTTPS raw ASGI: req/s", "https-raw", "rps", 0, True, {}),
    ("HTTPS FastAPI GET: CPU µs/req", "https-fastapi", "cpu_us_per_req", 1, False, {}),
    ("TLS full handshakes per CPU-second", "tls-full", "handshakes_per_cpu_s", 0, True, {}),
    ("TLS resumed handshakes per CPU-second", "tls-resumed", "handshakes_per_cpu_s", 0, True, {}),
    ("sessions resumed, 2 workers", "tls-resumed-allcores", "resumed_pct", 0, True, {}),
    ("HTTP/2 (h2c) raw ASGI: CPU µs/req", "h2-raw", "cpu_us_per_req", 1, False, {}),
    ("HTTP/2 (h2c) FastAPI GET: CPU µs/req", "h2-fastapi", "cpu_us_per_req", 1, False, {}),
    ("HTTP/2 (h2c) 10 KiB static file: CPU µs/req", "h2-static-10k", "cpu_us_per_req", 1, False, STATIC_H2),
    ("HTTP/2 over TLS, FastAPI GET: CPU µs/req", "h2s-fastapi", "cpu_us_per_req", 1, False, {}),
    ("HTTP/2 over TLS, 10 KiB static file: CPU µs/req", "h2s-static-10k", "cpu_us_per_req", 1, False, STATIC_H2),
]


def number(value: float, digits: int, field: str) -> str:
    # Counts get thousands separators; costs (the gzip rows' 1105 µs) do not.
    grouped = field in ("rps", "mib_per_s", "handshakes_per_cpu_s")
    text = f"{value:,.{digits}f}" if grouped else f"{value:.{digits}f}"
    return text + " %" if field == "resumed_pct" else text


def cell(entry: dict, field: str, digits: int) -> str:
    low, high = entry.get(f"{field}_min"), entry.get(f"{field}_max")
    spread = f" ({number(low, digits, field)}–{number(high, digits, field)})" if low is not None else ""
    return number(entry[field], digits, field) + spread


def row(summary: dict, label, workload, field, digits, higher, notes) -> str:
    entries = {s: summary.get((workload, s)) for s in SERVERS}
    values = {s: e[field] for s, e in entries.items() if e and e.get("status") == "ok" and e.get(field) is not None}
    best = (max if higher else min)(values.values()) if values else None
    cells = []
    for server in SERVERS:
        if server not in values:
            cells.append("")
            continue
        text = cell(entries[server], field, digits)
        main, bracket, spread = text.partition(" (")
        if values[server] == best:
            main = f"**{main}**"
        text = main + bracket + spread
        if server in notes:
            text += f" ({notes[server]})"
        cells.append(text)
    return f"| {label} | " + " | ".join(cells) + " |"


def certificate_row(acme_path: Path) -> str | None:
    if not acme_path.exists():
        return None
    rounds = json.loads(acme_path.read_text())["rounds"]

    def seconds(name):
        ok = [r["seconds"] for r in rounds.get(name, []) if r.get("status") == "ok"]
        return (statistics.median(ok), min(ok), max(ok)) if ok else None

    ours, certbot, caddy = seconds("ferrogate"), seconds("certbot"), seconds("caddy")
    if not ours:
        return None
    others = "; ".join(f"{n} {v[0]:.2f} s" for n, v in (("certbot", certbot), ("caddy", caddy)) if v)
    return (f"| first certificate served after start ([pebble](docs/benchmarks/acme_time.md)) | "
            f"**{ours[0]:.2f} s** ({ours[1]:.2f}–{ours[2]:.2f}) | | | {others} |")


def main() -> None:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/benchmarks/results.json")
    data = json.loads(path.read_text())
    summary = {(e["workload"], e["server"]): e for e in data["summary"]}
    lines = [HEADER] + [row(summary, *spec) for spec in ROWS]
    cert = certificate_row(path.with_name("acme_time.json"))
    if cert:
        lines.append(cert)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
