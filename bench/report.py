"""Turn samples into medians, and medians into results.md and results.json."""

import json
import os
import statistics
from collections import Counter

NUMERIC = ["rps", "p50_ms", "p99_ms", "cpu_us_per_req", "kernel_us_per_req", "peak_rss_mib", "errors",
           "connections", "closed_by_server", "rss_before_mib", "rss_after_mib",
           "kib_per_conn", "connect_seconds", "other_cpu_pct",
           "handshakes_per_cpu_s", "resumed_pct",
           "bytes_per_response", "encoded_bytes", "identity_bytes",
           "mib_per_s", "cpu_ms_per_download", "rss_growth_mib", "downloads"]
# Shown with their spread over the rounds (min-max beside the median): a median
# alone hides a row that wins in one round and loses in the next.
SPREAD = ["rps", "cpu_us_per_req", "kernel_us_per_req", "kib_per_conn", "handshakes_per_cpu_s", "resumed_pct",
          "mib_per_s", "cpu_ms_per_download", "rss_growth_mib"]
# The peers ferrogate is compared with round by round (nginx+gunicorn is a
# different kind of stack: a proxy in front of an app server).
ROUND_PEERS = ("granian", "uvicorn")


def floor_key(workload, sent_via):
    """Which in-process floor a server's figure compares with (None: no app ran)."""
    if not workload.has_floor:
        return None
    if workload.static:
        return f"{workload.app_key}:{sent_via}" if sent_via else None
    return workload.app_key


def summarize(samples, workloads, server_names, floors):
    """One row per (workload, server): medians over the rounds that succeeded."""
    rows = []
    for w in workloads:
        for name in server_names:
            mine = [s for s in samples if s["workload"] == w.key and s["server"] == name]
            if not mine:
                continue
            ok = [s for s in mine if s["status"] == "ok"]
            row = {"workload": w.key, "server": name, "rounds": len(mine), "rounds_ok": len(ok)}
            if not ok:
                statuses = Counter(s["status"] for s in mine)
                row["status"] = "n/a" if statuses.get("n/a") else "failed"
                row["error"] = next(s.get("error") for s in mine if s.get("error"))
                rows.append(row)
                continue
            row["status"] = "ok"
            for field in NUMERIC:
                values = [s[field] for s in ok if s.get(field) is not None]
                if values:
                    row[field] = statistics.median(values)
                    if field in SPREAD:
                        row[f"{field}_min"], row[f"{field}_max"] = min(values), max(values)
            sent = Counter(s.get("sent_via") for s in ok).most_common(1)[0][0]
            row["sent_via"] = sent
            key = floor_key(w, sent)
            # A static file that the server (granian's mount, nginx) sent without the app.
            row["served_without_app"] = w.static and not sent
            if w.has_floor:
                floor = floors.get(key) if key else 0.0
                row["floor_us"] = floor
                if floor is not None and row.get("cpu_us_per_req") is not None:
                    row["overhead_us"] = row["cpu_us_per_req"] - floor
            rows.append(row)
    return rows


def _fmt(value, digits=0):
    if value is None:
        return "–"
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def _spread(row, field, digits=0):
    """The median, and the range over the rounds when there was more than one."""
    median, low, high = row.get(field), row.get(f"{field}_min"), row.get(f"{field}_max")
    if median is None or low is None or row.get("rounds_ok", 1) < 2:
        return _fmt(median, digits)
    return f"{_fmt(median, digits)} ({_fmt(low, digits)}–{_fmt(high, digits)})"


def _status_cell(row, columns):
    label = "n/a" if row["status"] == "n/a" else "failed"
    return f"| {row['server']} | {label} |" + " |" * (columns - 2)


def _floor_cell(row):
    if row.get("floor_us") is None:
        return "–"
    if row["floor_us"] == 0.0 and row.get("served_without_app"):
        return "0 (served without the app)"
    return _fmt(row["floor_us"], 1)


def _table(rows, columns):
    """A markdown table, one line per server: `columns` is a list of (header, align, cell)
    where `cell(row)` renders that column; rows that did not run show their status."""
    head = "| server | " + " | ".join(h for h, _, _ in columns) + " |"
    rule = "|---|" + "|".join(a for _, a, _ in columns) + "|"
    lines = [head, rule]
    for r in rows:
        if r["status"] != "ok":
            lines.append(_status_cell(r, len(columns) + 1))
            continue
        lines.append(f"| {r['server']} | " + " | ".join(cell(r) for _, _, cell in columns) + " |")
    return "\n".join(lines)


def _col(header, key, digits=0, spread=False):
    render = (lambda r: _spread(r, key, digits)) if spread else (lambda r: _fmt(r.get(key), digits))
    return (header, "---:", render)


_TAIL = [
    _col("peak RSS MiB", "peak_rss_mib", 1),
    _col("errors", "errors"),
    _col("noise %", "other_cpu_pct"),
    ("rounds ok", "---:", lambda r: f"{r['rounds_ok']}/{r['rounds']}"),
]


def _kib(value):
    return f"{value / 1024:,.1f}" if value is not None else "–"


# Compressed rows: what went over the wire, so the sizes (compression levels) compare too.
_COMPRESSED = [
    ("KiB/response on the wire", "---:", lambda r: _kib(r.get("bytes_per_response"))),
    ("body KiB, encoded / identity", "---:",
     lambda r: f"{_kib(r.get('encoded_bytes'))} / {_kib(r.get('identity_bytes'))}"),
]


def _http_table(rows, compressed=False):
    return _table(rows, [
        _col("req/s (min–max)", "rps", spread=True),
        _col("p50 ms", "p50_ms", 2),
        _col("p99 ms", "p99_ms", 2),
        _col("CPU µs/req (min–max)", "cpu_us_per_req", 1, spread=True),
        _col("of which kernel µs/req", "kernel_us_per_req", 1),
        ("app floor µs", "---:", _floor_cell),
        _col("overhead µs/req", "overhead_us", 1),
    ] + (_COMPRESSED if compressed else []) + _TAIL)


def _idle_table(rows):
    return _table(rows, [
        _col("connections held", "connections"),
        _col("closed by server", "closed_by_server"),
        _col("RSS before MiB", "rss_before_mib", 1),
        _col("RSS after MiB", "rss_after_mib", 1),
        _col("KiB per idle connection (min–max)", "kib_per_conn", 1, spread=True),
        ("rounds ok", "---:", lambda r: f"{r['rounds_ok']}/{r['rounds']}"),
    ])


def _download_table(rows):
    return _table(rows, [
        _col("MiB/s (min–max)", "mib_per_s", spread=True),
        _col("CPU ms per download (min–max)", "cpu_ms_per_download", 1, spread=True),
        _col("RSS before MiB", "rss_before_mib", 1),
        _col("peak RSS MiB", "peak_rss_mib", 1),
        # With its range: one round that grew is what this row is looking for.
        _col("RSS growth MiB (min–max)", "rss_growth_mib", 1, spread=True),
        _col("errors", "errors"),
        ("rounds ok", "---:", lambda r: f"{r['rounds_ok']}/{r['rounds']}"),
    ])


def _handshake_table(rows):
    return _table(rows, [
        _col("handshakes/s (min–max)", "rps", spread=True),
        _col("CPU µs/handshake (min–max)", "cpu_us_per_req", 1, spread=True),
        _col("handshakes per CPU-second (min–max)", "handshakes_per_cpu_s", spread=True),
        _col("resumed % (min–max)", "resumed_pct", 1, spread=True),
        ("app floor µs", "---:", _floor_cell),
        _col("overhead µs/handshake", "overhead_us", 1),
    ] + _TAIL)


def _https_summary(rows):
    """Per server: what TLS adds per request, and full handshakes per CPU-second vs nginx."""
    def get(workload, server, field):
        r = next((r for r in rows if r["workload"] == workload and r["server"] == server), None)
        return r.get(field) if r and r["status"] == "ok" else None

    servers = list(dict.fromkeys(r["server"] for r in rows if r["workload"] in
                                 ("https-raw", "https-fastapi", "tls-full", "tls-resumed",
                                  "tls-resumed-allcores")))
    if not servers:
        return ""
    nginx = get("tls-full", "nginx+gunicorn", "handshakes_per_cpu_s")
    lines = ["## HTTPS summary", "",
             "Medians from the tables above. TLS cost per request = CPU µs/req of `https-raw` "
             "− that of `raw` (keep-alive connections: record encryption only). The project's "
             "target: full handshakes per CPU-second ≥ nginx's (nginx+gunicorn = nginx terminating "
             "TLS, plus the proxied request to gunicorn in its CPU).", "",
             "| server | raw CPU µs/req | https-raw CPU µs/req | TLS cost µs/req "
             "| full handshakes per CPU-s | vs nginx+gunicorn | resumed handshakes per CPU-s "
             "| sessions resumed, 1 worker / all cores |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name in servers:
        raw, https = get("raw", name, "cpu_us_per_req"), get("https-raw", name, "cpu_us_per_req")
        full = get("tls-full", name, "handshakes_per_cpu_s")
        ratio = f"{full / nginx:.2f}×" if full and nginx else "–"
        res1, resn = get("tls-resumed", name, "resumed_pct"), get("tls-resumed-allcores", name,
                                                                   "resumed_pct")
        lines.append(
            f"| {name} | {_fmt(raw, 1)} | {_fmt(https, 1)} "
            f"| {_fmt(https - raw, 1) if raw is not None and https is not None else '–'} "
            f"| {_fmt(full)} | {ratio} | {_fmt(get('tls-resumed', name, 'handshakes_per_cpu_s'))} "
            f"| {_fmt(res1, 0) + ' %' if res1 is not None else '–'} / "
            f"{_fmt(resn, 0) + ' %' if resn is not None else '–'} |")
    return "\n".join(lines)


def _ratio(value, reference):
    return f"{value / reference:.2f}×" if value is not None and reference else "–"


def _h2_comparison(rows, workloads):
    """One line per HTTP/2 workload and server: its CPU µs/req beside the same app's over
    HTTP/1.1, and beside the reference server of the workload's target."""
    def cpu(workload, server):
        r = next((r for r in rows if r["workload"] == workload and r["server"] == server), None)
        return r.get("cpu_us_per_req") if r and r["status"] == "ok" else None

    lines = []
    for w in workloads:
        for r in rows:
            if r["workload"] != w.key or r["status"] != "ok":
                continue
            h2, h1 = r.get("cpu_us_per_req"), cpu(w.http1, r["server"]) if w.http1 else None
            line = {"server": r["server"], "status": "ok", "workload": w.key, "h2": h2,
                    "h1": h1, "h1_workload": w.http1 or "–", "h2_vs_h1": _ratio(h2, h1),
                    "target": "–"}
            if w.target:
                reference, factor = w.target
                if r["server"] == reference:
                    line["target"] = "reference"
                else:
                    ref_cpu = cpu(w.key, reference)
                    if h2 is not None and ref_cpu:
                        line["target"] = f"{_ratio(h2, ref_cpu)} {reference}"
                        if r["server"] == "ferrogate":
                            met = "met" if h2 <= factor * ref_cpu else "missed"
                            line["target"] += f" (target ≤ {factor:.2f}×: {met})"
            lines.append(line)
    return lines


def _h2_section(rows, workloads, settings):
    """The HTTP/2 rows: one table per workload, then the comparison with HTTP/1.1 and
    the targets."""
    c, m = settings["connections"], settings.get("h2_streams", 10)
    parts = ["## HTTP/2", "",
             f"h2load over HTTP/2 (`-c {c} -m {m}`: {c} connections, {m} concurrent streams each): "
             "`h2-*` in cleartext (h2c by prior knowledge), `h2s-*` over TLS (ALPN h2). "
             "uvicorn has no HTTP/2. nginx+gunicorn: nginx speaks HTTP/2 to the client, serves "
             "the static file itself and proxies the app rows to gunicorn over its unix socket. "
             "The project's targets for ferrogate: static file over HTTP/2 CPU µs/req ≤ "
             "nginx's (nginx+gunicorn), FastAPI over HTTP/2 CPU µs/req ≤ 0.8× granian's.", ""]
    parts += _workload_sections(rows, workloads, "###")
    lines = _h2_comparison(rows, workloads)
    if lines:
        parts += ["### HTTP/2 against HTTP/1.1 and the targets", "",
                  "CPU µs/req medians from the tables above; HTTP/1.1 = the same app and "
                  "response over the same transport with wrk (no HTTP/1.1 row over TLS for the "
                  "static file).", "",
                  _table(lines, [
                      ("workload", "---", lambda r: f"`{r['workload']}`"),
                      _col("HTTP/2 CPU µs/req", "h2", 1),
                      ("HTTP/1.1 workload", "---", lambda r: r["h1_workload"]),
                      _col("HTTP/1.1 CPU µs/req", "h1", 1),
                      ("HTTP/2 ÷ HTTP/1.1", "---:", lambda r: r["h2_vs_h1"]),
                      ("÷ target's reference", "---", lambda r: r["target"]),
                  ]), ""]
    return parts


def _ws_table(rows):
    return _http_table(rows).replace("req/s", "messages/s").replace("µs/req", "µs/message", 3)


def _machine_section(meta):
    m = meta["machine"]
    v = m["versions"]
    lines = ["## Machine", "",
             "| | |", "|---|---|",
             f"| date | {m['date']} |",
             f"| nproc | {m['nproc']} |",
             f"| CPU | {m['cpu_model']} |",
             f"| memory | {m['memory_gib']} GiB |",
             f"| OS / kernel | {m['os']} / {m['kernel']} |",
             f"| Python | {m['python']} |"]
    for name, version in v.items():
        lines.append(f"| {name} | {version or 'not installed'} |")
    if m.get("ferrogate_source"):
        lines.append(f"| ferrogate source | {m['ferrogate_source']} |")
    b = meta.get("ferrogate_build", {})
    if b.get("available"):
        lines.append(f"| ferrogate build | {b.get('profile', '')} |")
    return "\n".join(lines)


def _method_section(meta):
    s = meta["settings"]
    wrk = f"wrk -t{s['threads']} -c{s['connections']} -d{s['duration']:g}s --latency -s bench/wrk/bench.lua URL"
    h2load = (f"h2load -t{s['threads']} -c{s['connections']} -m{s.get('h2_streams', 10)} "
              f"-D {s['duration']:g}s --warm-up-time {s['warmup']:g}s --log-file TMP URL")
    return "\n".join([
        "## Method", "",
        f"- Command: `{meta['command']}`; {meta['rounds']} round(s); in each round the servers run "
        "one after another (A B C D A B C D ...), so drift hits all alike. Every figure is the "
        "median over the rounds. Each measurement starts the server afresh.",
        f"- HTTP load: `{wrk}` after a {s['warmup']:g} s warm-up run that is not counted "
        "(POST: method and JSON body from the environment, see bench/wrk/bench.lua; the gzip "
        "rows add `-H 'Accept-Encoding: gzip'`).",
        f"- HTTP/2 load (`h2-*`, `h2s-*`): `{h2load}`: one run, a {s['warmup']:g} s warm-up "
        "then the measured duration on the same connections; h2load counts only the measured "
        "part, and the server's CPU is read over exactly that part (from h2load's "
        "'Main benchmark duration is started' line to its '... is over' line), so connection "
        "set-up and TLS handshakes are in the warm-up. http:// URLs: h2c by prior knowledge; "
        "https://: ALPN h2, and a run that negotiated anything else fails. Latency "
        "percentiles from h2load's per-request log. Errors: failed streams or connections "
        "plus every response that is not 2xx.",
        "- CPU µs/req: utime+stime of every process in the server's tree (the launched "
        "process and all its descendants, from /proc; for the classic stack nginx and gunicorn "
        "together) during the measured run, divided by the requests wrk (or h2load) completed. "
        "Of which kernel: its stime part: the sockets' work (on loopback a send also runs the "
        "receiving side's TCP and wakes the load generator, the same traffic for every server) "
        "and the server's own system calls and wake-ups between its threads and processes, "
        "which differ; the rest is user space, the servers' own code and Python.",
        "- App floor: the same app driven in-process with a synthetic scope, receive and send "
        "in a tight loop (bench/floor.py), CPU µs per call. Overhead = CPU µs/req − floor: "
        "what the server itself spends per request.",
        "- Peak RSS: the sum of RSS over the server's process tree, sampled every 0.2 s "
        "(shared pages count once per process, as `ps` shows them).",
        "- Errors: wrk's socket errors (connect, read, write, timeout) plus responses with "
        "status >= 400.",
        "- Noise %: CPU that neither the server, the load generator nor the harness used "
        "during the measured run (from /proc/stat), in % of one core. Near 0 on a quiet "
        "machine; well above that, another program competed for the cores and that "
        "server's figures are less reliable. "
        + (f"Before each measurement the harness waited (up to {s['quiet_wait']:g} s, and "
           f"{5 * s['quiet_wait']:g} s per run) until other programs used less than "
           f"{s['quiet_threshold_pct']}% of a core."
           if s.get("quiet_wait") else "This run did not wait for a quiet machine."),
        f"- Idle connections: {s['idle_connections']} keep-alive connections, each served one GET, "
        "then held idle (bench/clients/idle_conns.py); KiB per connection = (tree RSS after − "
        "before) / connections held. Keep-alive timeouts are raised for this workload so "
        "nothing closes them while memory is read, and granian's --backpressure is raised "
        "above the connection count (its default, 1024 per worker, leaves further connections "
        "unserved).",
        f"- WebSocket echo: {s['ws_connections']} connections sending {s['ws_message_size']}-byte "
        "text messages and waiting for each echo (bench/clients/ws_echo_client.py, "
        "no compression); CPU µs per message as above. The Python client is usually the "
        "bottleneck on 2 cores, so messages/s says more about it than about the server; "
        "CPU per message is the figure to compare.",
        "- Both wrk (or the Python client) and the server run on the same machine: with 1 "
        "worker each gets about one core; the all-cores variants share the cores with wrk.",
        "- HTTPS: one throwaway ECDSA P-256 CA and `localhost`/127.0.0.1 certificate per run "
        "(openssl, bench/tls_certs.py); the server sends the leaf certificate; TLS 1.2 and 1.3 "
        "enabled everywhere and every client negotiates TLS 1.3 (X25519). `https-*`: wrk over "
        "https with keep-alive, as above. `tls-full` / `tls-resumed`: "
        f"{s.get('tls_clients', 4)} parallel `openssl s_time -new` / `-reuse -www /` clients, "
        "each making one connection at a time with one `GET / HTTP/1.0` request; `-new` offers "
        "no session (a full handshake each time), `-reuse` offers the session of its previous "
        "connection (TLS 1.3 resumption with a PSK and a fresh X25519 exchange). s_time marks "
        "each connection resumed or not, which gives the resumed % column: a resumed "
        "workload well under 100 % means the server did not resume (e.g. each worker process "
        "has its own ticket keys or session cache and another worker took the connection). "
        "Handshakes/s = connections ÷ wall time of the clients; CPU µs/handshake = the "
        "server tree's CPU ÷ connections. The OpenSSL 3.0 client costs more CPU per handshake "
        "than an efficient server, so on 2 cores the clients, not the server, often set "
        "handshakes/s: compare CPU µs/handshake (handshakes per CPU-second).",
    ])


# The nginx.conf examples a run records in meta, and what each one is.
NGINX_EXAMPLES = [
    ("nginx_conf_example", "nginx.conf of the classic stack (raw workload)"),
    ("nginx_tls_conf_example", "nginx.conf of the classic stack terminating TLS "
     "(https-raw, tls-* workloads; N worker processes for -allcores)"),
    ("nginx_h2_conf_example", "nginx.conf of the classic stack speaking h2c "
     "(h2-* workloads: HTTP/2 by prior knowledge)"),
    ("nginx_h2s_conf_example", "nginx.conf of the classic stack speaking HTTP/2 over TLS "
     "(h2s-* workloads: ALPN h2)"),
    ("nginx_gzip_conf_example", "nginx.conf of the classic stack compressing with gzip "
     "(gzip-* workloads)"),
]


def _commands_section(meta):
    lines = ["## Commands", "",
             "PORT is a free port; TMP a fresh temp dir; apps run from bench/apps "
             "(on PYTHONPATH). nginx config: bench/nginx_conf.py (the seed tutorial's).", ""]
    for server, by_workload in meta["commands"].items():
        lines.append(f"### {server}")
        lines.append("")
        for workload, cmds in by_workload.items():
            lines.append(f"- {workload}: " + " ; ".join(f"`{c}`" for c in cmds))
        lines.append("")
    for key, summary in NGINX_EXAMPLES:
        if meta.get(key):
            lines += [f"<details><summary>{summary}</summary>", "",
                      "```nginx", meta[key].rstrip(), "```", "", "</details>", ""]
    return "\n".join(lines)


def _problems_section(rows, meta):
    lines = []
    for name, reason in meta.get("unavailable", {}).items():
        lines.append(f"- **{name}** unavailable: {reason.splitlines()[0]}")
    for r in rows:
        if r["status"] != "ok":
            first = (r.get("error") or "").strip().splitlines()
            lines.append(f"- **{r['server']}** on {r['workload']}: {r['status']}"
                         + (f" — {first[0]}" if first else ""))
    if not lines:
        return ""
    return "## Unavailable, failed or not applicable\n\n" + "\n".join(lines)


def _workload_sections(rows, workloads, heading):
    """A titled table per workload (markdown lines), at the heading level given."""
    parts = []
    for w in workloads:
        mine = [r for r in rows if r["workload"] == w.key]
        if not mine:
            continue
        parts.append(f"{heading} {w.title}  (`{w.key}`)")
        parts.append("")
        if w.note:
            parts += [w.note, ""]
        table = {"idle": _idle_table, "ws": _ws_table, "handshake": _handshake_table,
                 "download": _download_table}.get(w.kind, _http_table)
        parts.append(_http_table(mine, compressed=True) if w.encoding else table(mine))
        parts.append("")
    return parts


def _rate(workload, sample):
    """A sample's rate as its round-by-round table shows it (None if it did not run)."""
    if sample["status"] != "ok":
        return None
    return sample.get("mib_per_s" if workload.kind == "download" else "rps")


def _by_round(workload, samples):
    """{server: {round: sample}} for one workload, servers in run order.

    Samples carry their round; ones that do not (none should) are numbered
    in run order, per server."""
    by_server = {}
    for s in samples:
        if s["workload"] != workload.key:
            continue
        mine = by_server.setdefault(s["server"], {})
        mine[s.get("round") or len(mine) + 1] = s
    return by_server


def _ahead_line(by_server, workload, rounds):
    """How often ferrogate's round beat the best peer's same round."""
    peers = " and ".join(ROUND_PEERS)
    head = f"ferrogate ahead of the best of {peers}"
    mine = by_server.get("ferrogate")
    if mine is None:
        return None
    missing = [p for p in ROUND_PEERS if p not in by_server]
    if missing:
        return f"{head}: n/a ({' and '.join(missing)} not measured)"
    ahead = compared = 0
    notes = []
    for i in rounds:
        theirs = {p: by_server[p].get(i) for p in ROUND_PEERS}
        down = [f"{p} {s['status'] if s else 'not run'}" for p, s in theirs.items()
                if s is None or _rate(workload, s) is None]
        if down:
            # No "best of" to beat: this round does not count either way.
            notes.append(f"round {i}: n/a, {' and '.join(down)}")
            continue
        compared += 1
        own = _rate(workload, mine[i]) if i in mine else None
        if own is None:
            notes.append(f"round {i}: ferrogate {mine[i]['status'] if i in mine else 'not run'}")
        elif own > max(_rate(workload, s) for s in theirs.values()):
            ahead += 1
    line = f"{head} in {ahead} of {compared} round{'s' if compared != 1 else ''}"
    return line + (f" ({'; '.join(notes)})" if notes else "")


def _rounds_section(workloads, samples):
    """"Round by round": each round's rate for the workloads that ask for it, and how
    often ferrogate was ahead of its peers in the same round."""
    parts = []
    for w in workloads:
        by_server = _by_round(w, samples)
        if not by_server:
            continue
        rounds = sorted({i for mine in by_server.values() for i in mine})
        unit = w.rate_unit
        head = ("| server | " + " | ".join(f"round {i} {unit}" if i == rounds[0] else f"round {i}"
                                           for i in rounds) + " |")
        lines = [head, "|---|" + "---:|" * len(rounds)]
        for name, mine in by_server.items():
            cells = []
            for i in rounds:
                s = mine.get(i)
                rate = _rate(w, s) if s else None
                cells.append(_fmt(rate) if rate is not None else (s["status"] if s else "–"))
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        parts += [f"### {w.title}  (`{w.key}`)", "", "\n".join(lines), ""]
        ahead = _ahead_line(by_server, w, rounds)
        if ahead:
            parts += [ahead + ".", ""]
    if not parts:
        return []
    return ["## Round by round", "",
            "Each round's figure, in run order (round i ran every server once, one after "
            "another), for the all-cores workloads, whose rounds differ most (the load "
            "generator shares the cores), and the big static files; the tables above give "
            "their medians. ferrogate's round i is compared with the same round of each peer; "
            "a round where a peer failed does not count.", ""] + parts


# The rows whose CPU per request ferrogate is held to, round by round, against granian's:
# the server's own cost on the plainest request.
CPU_ROUND_ROWS = ("raw",)


def _cpu_rounds_section(workloads, samples):
    """"CPU per request, round by round": ferrogate's CPU µs/req over granian's in the same
    round, in all and in user space alone (the kernel's part holds the sockets' work, the
    same traffic for both, beside each server's own system calls)."""
    parts = []
    for w in workloads:
        if w.key not in CPU_ROUND_ROWS:
            continue
        by_server = _by_round(w, samples)
        mine, theirs = by_server.get("ferrogate"), by_server.get("granian")
        if not mine or not theirs:
            continue
        lines = ["| round | ferrogate CPU µs/req (kernel) | granian CPU µs/req (kernel) "
                 "| ratio | ratio, user space |", "|---:|---:|---:|---:|---:|"]
        for i in sorted(set(mine) & set(theirs)):
            a, b = mine[i], theirs[i]
            # (Samples from before the harness read the kernel's part have none.)
            if any(s["status"] != "ok" or s.get("kernel_us_per_req") is None for s in (a, b)):
                continue
            cpu_a, cpu_b = a["cpu_us_per_req"], b["cpu_us_per_req"]
            user_a = cpu_a - a["kernel_us_per_req"]
            user_b = cpu_b - b["kernel_us_per_req"]
            lines.append(f"| {i} | {cpu_a:.1f} ({a['kernel_us_per_req']:.1f}) "
                         f"| {cpu_b:.1f} ({b['kernel_us_per_req']:.1f}) "
                         f"| {cpu_a / cpu_b:.2f} | {user_a / user_b:.2f} |")
        if len(lines) > 2:
            parts += [f"### {w.title}  (`{w.key}`)", "", "\n".join(lines), ""]
    if not parts:
        return []
    return ["## CPU per request, round by round", "",
            "ferrogate's CPU per request over granian's in the same round, in all and in user "
            "space alone. The kernel's part holds the sockets' work (on loopback also the load "
            "generator's receiving side), the same traffic for both servers, beside each one's "
            "own system calls and wake-ups.", ""] + parts


def render_markdown(rows, workloads, meta, floors, chart_name, samples=()):
    parts = ["# ferrogate benchmark results", "",
             "Generated by the harness in bench/ (see bench/README.md). Lower CPU µs/req "
             "and overhead are better; higher req/s is better.", ""]
    if chart_name:
        parts += [f"![requests/s, CPU per request and memory per idle connection]({chart_name})", ""]
    parts += _workload_sections(rows, [w for w in workloads if not w.http2], "##")
    summary = _https_summary(rows)
    if summary:
        parts += [summary, ""]
    parts += _rounds_section([w for w in workloads if w.by_round], samples)
    parts += _cpu_rounds_section(workloads, samples)
    http2 = [w for w in workloads if w.http2 and any(r["workload"] == w.key for r in rows)]
    if http2:
        parts += _h2_section(rows, http2, meta["settings"])
    if floors:
        parts += ["## App floor (no server)", "", "| floor | CPU µs per call |", "|---|---:|"]
        parts += [f"| {k} | {v:.2f} |" for k, v in sorted(floors.items()) if v is not None]
        parts.append("")
    problems = _problems_section(rows, meta)
    if problems:
        parts += [problems, ""]
    parts += [_method_section(meta), "", _machine_section(meta), "", _commands_section(meta)]
    return "\n".join(parts)


def write(out_dir, rows, samples, workloads, meta, floors, chart_name="chart.png"):
    os.makedirs(out_dir, exist_ok=True)
    md = render_markdown(rows, workloads, meta, floors, chart_name, samples)
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(md)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump({"meta": meta, "floors_us": floors, "summary": rows, "samples": samples},
                  f, indent=1)
    return md
