#!/usr/bin/env python3
"""Time to a served HTTPS certificate: certbot (+ nginx), caddy, ferrogate.

    python3 bench/acme_time.py                      # 3 rounds of every server
    python3 bench/acme_time.py --servers caddy --rounds 5
    python3 bench/acme_time.py --install            # apt-get install pebble certbot caddy nginx first

Against Debian's pebble (Let's Encrypt's test CA) on this machine, each
server starts from a clean state (fresh account, no certificate) and the
clock runs from the server's process start to the first HTTPS request that
verifies against pebble's issuing root (GET https://localhost:15000/roots/0),
which only succeeds when the server sends the intermediate in its chain:

- certbot: `certbot certonly --standalone` (HTTP-01 on pebble's httpPort),
  then nginx started on the certificate it wrote (fullchain.pem); the time
  is certbot's start to nginx's first verified answer, and certbot's own
  part is shown too;
- caddy: Debian's caddy with an automatic-HTTPS Caddyfile (`acme_ca` pebble,
  `acme_ca_root` pebble's own CA);
- ferrogate: `ferrogate APP --domain NAME --acme-directory URL ...` (see
  ferrogate_command); skipped with a message while `ferrogate --help` has
  no --domain.

Pebble connects to `httpPort`/`tlsPort` of its config to validate, so the
server under test listens there (defaults 5002 and 5001). Every name
resolves to 127.0.0.1 through pebble-challtestsrv's DNS. Nothing leaves the
machine. Standard library only; any python3 (3.10+) runs it.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
APPS_DIR = os.path.join(BENCH_DIR, "apps")
sys.path.insert(0, BENCH_DIR)
import tls_certs  # noqa: E402  (openssl CLI: pebble's own throwaway CA)

DOMAIN = "app.example.test"
EMAIL = "x@example.test"
PEBBLE_DIR_PORT = 14000
PEBBLE_MGMT_PORT = 15000
DNS_PORT = 8053
CHALL_MGMT_PORT = 8055
APT_PACKAGES = ["pebble", "certbot", "caddy", "nginx"]
SERVERS = ["certbot", "caddy", "ferrogate"]
SERVE_TIMEOUT = 90.0  # seconds from start to a verified HTTPS answer


def say(msg):
    print(msg, flush=True)


# --------------------------------------------------------------------------
# The ferrogate command line, in one place so it can follow the CLI.

def ferrogate_command(exe, app, domain, directory_url, ca_root, http_port, https_port,
                      state_dir, email):
    return [exe, app, "--domain", domain, "--acme-directory", directory_url,
            "--acme-ca-root", ca_root, "--http-port", str(http_port),
            "--https-port", str(https_port), "--state-dir", state_dir,
            "--acme-email", email]


def ferrogate_exe(given=None):
    for path in (given, os.path.join(BENCH_DIR, ".venv", "bin", "ferrogate"),
                 shutil.which("ferrogate")):
        if path and os.path.exists(path):
            return path
    return None


def ferrogate_missing(exe):
    """None if this ferrogate can get certificates, else why not."""
    if not exe:
        return "no ferrogate command (bench/.venv/bin/ferrogate, PATH or --ferrogate)"
    try:
        proc = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`{exe} --help` failed: {exc}"
    if "--domain" not in proc.stdout + proc.stderr:
        return f"`{exe} --help` has no --domain yet (automatic HTTPS not in this build)"
    return None


# --------------------------------------------------------------------------
# Processes

def spawn(cmd, log_path, env=None, cwd=None):
    log = open(log_path, "ab")
    try:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env=env, cwd=cwd, start_new_session=True)
    finally:
        log.close()


def stop(proc, grace=5.0):
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(grace)
    except ProcessLookupError:
        pass


def tail(path, lines=15):
    try:
        with open(path, errors="replace") as f:
            return "\n".join(f.read().splitlines()[-lines:])
    except OSError:
        return "(no log)"


def port_free(port):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def wait_ports_free(ports, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(port_free(p) for p in ports):
            return
        time.sleep(0.1)
    raise RuntimeError(f"ports {ports} still busy (something else listens there?)")


# --------------------------------------------------------------------------
# Pebble

class Pebble:
    """pebble-challtestsrv (DNS: every name -> 127.0.0.1) and pebble, for the whole run."""

    def __init__(self, work, http_port, https_port):
        self.work = work
        self.http_port, self.https_port = http_port, https_port
        self.directory = f"https://localhost:{PEBBLE_DIR_PORT}/dir"
        self.procs = []

    def start(self):
        for cmd in ("pebble", "pebble-challtestsrv"):
            if not shutil.which(cmd):
                raise RuntimeError(f"{cmd} is not installed (apt-get install pebble, or --install)")
        # Debian ships no certificate for pebble's own HTTPS: a throwaway one.
        certs = tls_certs.make(os.path.join(self.work, "pebble-tls"))
        self.tls_ca = certs.ca
        config = {"pebble": {
            "listenAddress": f"127.0.0.1:{PEBBLE_DIR_PORT}",
            "managementListenAddress": f"127.0.0.1:{PEBBLE_MGMT_PORT}",
            "certificate": certs.cert, "privateKey": certs.key,
            "httpPort": self.http_port, "tlsPort": self.https_port,
            "ocspResponderURL": "", "externalAccountBindingRequired": False}}
        conf = os.path.join(self.work, "pebble.json")
        with open(conf, "w") as f:
            json.dump(config, f)
        self.log = os.path.join(self.work, "pebble.log")
        self.procs.append(spawn(
            ["pebble-challtestsrv", "-dns01", f"127.0.0.1:{DNS_PORT}", "-http01", "", "-https01", "",
             "-tlsalpn01", "", "-management", f"127.0.0.1:{CHALL_MGMT_PORT}",
             "-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""],
            os.path.join(self.work, "challtestsrv.log")))
        time.sleep(0.3)
        env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0")
        self.procs.append(spawn(["pebble", "-config", conf, "-dnsserver", f"127.0.0.1:{DNS_PORT}"],
                                self.log, env=env))
        context = ssl.create_default_context(cafile=self.tls_ca)
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(self.directory, context=context, timeout=5).read()
                break
            except OSError as exc:
                if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                    raise RuntimeError(f"pebble did not come up: {exc}\n{tail(self.log)}")
                time.sleep(0.1)
        # The root it issues under (new at every pebble start).
        root = urllib.request.urlopen(f"https://localhost:{PEBBLE_MGMT_PORT}/roots/0",
                                      context=context, timeout=10).read()
        self.root = os.path.join(self.work, "pebble-root.pem")
        with open(self.root, "wb") as f:
            f.write(root)

    def orders(self):
        with open(self.log, errors="replace") as f:
            return f.read().count("POST /order-plz")

    def stop(self):
        for proc in reversed(self.procs):
            stop(proc)


# --------------------------------------------------------------------------
# The check: a verified HTTPS answer

def verified_get(port, domain, root, timeout=2.0):
    """True if GET https://domain:port/ (to 127.0.0.1) answers 200 with a chain to `root`."""
    context = ssl.create_default_context(cafile=root)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=domain) as s:
                s.sendall(f"GET / HTTP/1.1\r\nHost: {domain}\r\nConnection: close\r\n\r\n".encode())
                head = s.recv(64)
                return head.startswith(b"HTTP/1.1 200") or head.startswith(b"HTTP/1.0 200")
    except (OSError, ssl.SSLError):
        return False


def wait_served(port, domain, root, started, procs, log, timeout=SERVE_TIMEOUT):
    """Seconds from `started` to the first verified answer; raise if never."""
    deadline = started + timeout
    while time.monotonic() < deadline:
        if verified_get(port, domain, root):
            return time.monotonic() - started
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{os.path.basename(proc.args[0])} exited with code "
                                   f"{proc.returncode}\n{tail(log)}")
        time.sleep(0.05)
    raise RuntimeError(f"no verified HTTPS answer within {timeout:.0f} s\n{tail(log)}")


# --------------------------------------------------------------------------
# The servers

NGINX_CONF = """\
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/cb; proxy_temp_path {d}/p; fastcgi_temp_path {d}/f;
    uwsgi_temp_path {d}/u; scgi_temp_path {d}/s;
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name {domain};
        ssl_certificate {live}/fullchain.pem;
        ssl_certificate_key {live}/privkey.pem;
        location / {{ return 200 "ok\\n"; }}
    }}
}}
"""


def run_certbot(pebble, d):
    """certbot certonly --standalone, then nginx on its certificate."""
    env = dict(os.environ, REQUESTS_CA_BUNDLE=pebble.tls_ca)
    cmd = ["certbot", "certonly", "--standalone", "--non-interactive", "--agree-tos",
           "-m", EMAIL, "--server", pebble.directory, "-d", DOMAIN,
           "--http-01-port", str(pebble.http_port), "--http-01-address", "127.0.0.1",
           "--config-dir", f"{d}/config", "--work-dir", f"{d}/work", "--logs-dir", f"{d}/logs"]
    log = os.path.join(d, "certbot.out")
    started = time.monotonic()
    proc = spawn(cmd, log, env=env)
    try:
        code = proc.wait(SERVE_TIMEOUT)
    except subprocess.TimeoutExpired:
        stop(proc)
        raise RuntimeError(f"certbot still running after {SERVE_TIMEOUT:.0f} s\n{tail(log)}")
    if code != 0:
        raise RuntimeError(f"certbot exited with code {code}\n{tail(log)}")
    certbot_s = time.monotonic() - started
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX_CONF.format(d=d, port=pebble.https_port, domain=DOMAIN,
                                  live=f"{d}/config/live/{DOMAIN}"))
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    nlog = os.path.join(d, "nginx.out")
    proc = spawn([nginx, "-p", d + "/", "-e", f"{d}/error.log", "-c", conf, "-g", "daemon off;"], nlog)
    try:
        total = wait_served(pebble.https_port, DOMAIN, pebble.root, started, [proc], nlog)
    finally:
        stop(proc)
    return {"seconds": total, "detail": f"certbot {certbot_s:.2f} s + nginx start"}


CADDYFILE = """\
{{
    acme_ca {directory}
    acme_ca_root {tls_ca}
    email {email}
    http_port {http_port}
    https_port {https_port}
    admin off
    skip_install_trust
    storage file_system {{
        root {d}/data
    }}
}}

{domain} {{
    bind 127.0.0.1
    respond "ok"
}}
"""


def run_caddy(pebble, d):
    conf = os.path.join(d, "Caddyfile")
    with open(conf, "w") as f:
        f.write(CADDYFILE.format(directory=pebble.directory, tls_ca=pebble.tls_ca, email=EMAIL,
                                 http_port=pebble.http_port, https_port=pebble.https_port,
                                 d=d, domain=DOMAIN))
    env = dict(os.environ, HOME=d, XDG_DATA_HOME=f"{d}/xdg-data", XDG_CONFIG_HOME=f"{d}/xdg-config")
    log = os.path.join(d, "caddy.out")
    started = time.monotonic()
    proc = spawn(["caddy", "run", "--config", conf, "--adapter", "caddyfile"], log, env=env, cwd=d)
    try:
        total = wait_served(pebble.https_port, DOMAIN, pebble.root, started, [proc], log)
    finally:
        stop(proc)
    return {"seconds": total, "detail": ""}


def run_ferrogate(pebble, d, exe):
    state = os.path.join(d, "state")
    cmd = ferrogate_command(exe, "raw_json:app", DOMAIN, pebble.directory, pebble.tls_ca,
                            pebble.http_port, pebble.https_port, state, EMAIL)
    env = dict(os.environ, PYTHONPATH=APPS_DIR)
    log = os.path.join(d, "ferrogate.out")
    started = time.monotonic()
    proc = spawn(cmd, log, env=env, cwd=APPS_DIR)
    try:
        total = wait_served(pebble.https_port, DOMAIN, pebble.root, started, [proc], log)
    finally:
        stop(proc)
    return {"seconds": total, "detail": ""}


def missing_reason(name, ferrogate):
    if name == "certbot":
        for cmd in ("certbot", "nginx"):
            if not (shutil.which(cmd) or os.path.exists(f"/usr/sbin/{cmd}")):
                return f"{cmd} is not installed (apt-get install {cmd}, or --install)"
    elif name == "caddy" and not shutil.which("caddy"):
        return "caddy is not installed (apt-get install caddy, or --install)"
    elif name == "ferrogate":
        return ferrogate_missing(ferrogate)
    return None


def install():
    if os.geteuid() != 0:
        say(f"--install needs root: apt-get install {' '.join(APT_PACKAGES)}")
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *APT_PACKAGES], check=True, env=env)
    # Debian's caddy package starts a caddy service where systemd runs: it
    # would hold ports 80/443, not ours, but say so rather than guess.
    if shutil.which("systemctl") and os.path.exists("/run/systemd/system"):
        subprocess.run(["systemctl", "stop", "caddy"], capture_output=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--servers", default=",".join(SERVERS), help=f"comma-separated (default {','.join(SERVERS)})")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--http-port", type=int, default=5002, help="pebble's httpPort (HTTP-01)")
    p.add_argument("--https-port", type=int, default=5001, help="pebble's tlsPort (TLS-ALPN-01), and where HTTPS is checked")
    p.add_argument("--ferrogate", default=None, help="the ferrogate command (default: bench/.venv's, else PATH)")
    p.add_argument("--install", action="store_true", help=f"apt-get install {' '.join(APT_PACKAGES)} first")
    p.add_argument("--json", default=None, help="also write the rounds and medians to this file")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, configs)")
    args = p.parse_args()
    names = [s for s in args.servers.split(",") if s]
    unknown = [s for s in names if s not in SERVERS]
    if unknown:
        p.error(f"unknown server(s) {', '.join(unknown)}; known: {', '.join(SERVERS)}")
    if args.install:
        install()
    ferrogate = ferrogate_exe(args.ferrogate)
    skipped = {}
    for name in names:
        why = missing_reason(name, ferrogate)
        if why:
            skipped[name] = why
            say(f"{name}: skipped — {why}")
    active = [n for n in names if n not in skipped]
    if not active:
        say("nothing to measure")
        return 1
    ports = [args.http_port, args.https_port, PEBBLE_DIR_PORT, PEBBLE_MGMT_PORT]
    wait_ports_free(ports, timeout=2.0)

    work = tempfile.mkdtemp(prefix="acme-time-")
    os.chmod(work, 0o755)
    pebble = Pebble(work, args.http_port, args.https_port)
    results = {n: [] for n in active}
    try:
        pebble.start()
        say(f"pebble up: {pebble.directory}, validating on :{args.http_port} (HTTP-01) "
            f"and :{args.https_port} (TLS-ALPN-01); domain {DOMAIN}")
        for rnd in range(1, args.rounds + 1):
            for name in active:
                d = tempfile.mkdtemp(prefix=f"{name}-r{rnd}-", dir=work)
                os.chmod(d, 0o755)
                wait_ports_free([args.http_port, args.https_port])
                orders0 = pebble.orders()
                try:
                    if name == "certbot":
                        r = run_certbot(pebble, d)
                    elif name == "caddy":
                        r = run_caddy(pebble, d)
                    else:
                        r = run_ferrogate(pebble, d, ferrogate)
                    r["status"] = "ok"
                except RuntimeError as exc:
                    r = {"status": "failed", "error": str(exc)}
                r["orders"] = pebble.orders() - orders0
                r["round"] = rnd
                results[name].append(r)
                if r["status"] == "ok":
                    say(f"r{rnd} {name:10s} {r['seconds']:6.2f} s  ({r['orders']} order(s)"
                        + (f"; {r['detail']}" if r["detail"] else "") + ")")
                else:
                    say(f"r{rnd} {name:10s} FAILED: {r['error']}")
    finally:
        pebble.stop()
        if args.keep:
            say(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    say("\n| server | median s | rounds (s) | rounds ok |\n|---|---:|---|---:|")
    summary = {}
    for name in names:
        if name in skipped:
            say(f"| {name} | skipped | {skipped[name]} | 0/0 |")
            continue
        ok = [r["seconds"] for r in results[name] if r["status"] == "ok"]
        median = statistics.median(ok) if ok else None
        summary[name] = median
        rounds = ", ".join(f"{r['seconds']:.2f}" if r["status"] == "ok" else "failed"
                           for r in results[name])
        say(f"| {name} | {f'{median:.2f}' if median is not None else '–'} | {rounds} "
            f"| {len(ok)}/{len(results[name])} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"domain": DOMAIN, "rounds": results, "median_s": summary,
                       "skipped": skipped}, f, indent=1)
    return 0 if any(r["status"] == "ok" for rs in results.values() for r in rs) else 1


if __name__ == "__main__":
    sys.exit(main())
