"""`ferrogate doctor`: the host audit, run for real against fake roots (`--root DIR`)
built here, one hardened host that passes every check and, for each check, the one
broken setting that makes it warn or fail; then once against this machine."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import run_cli

CHECKS = [
    "unattended-upgrades", "service-user", "ssh-root-login", "ssh-password-auth", "firewall", "brute-force",
    "listening-ports", "key-permissions", "socket-permissions", "certificates", "disk-space", "time-sync",
]
# The server the doctor is asked about, as its options would be given to `ferrogate`.
SERVER = [
    "--user", "app", "--state-dir", "/var/lib/ferrogate", "--ssl-certfile", "/etc/ssl/app.pem",
    "--ssl-keyfile", "/etc/ssl/private/app.key", "--control-socket", "/run/ferrogate/control.sock",
    "--log-file", "/var/log/ferrogate/server.log",
]
# The service user: a uid of its own when we are root (so keys owned by root are fine), else
# ours, so that files the test creates belong to it.
APP_UID = os.getuid() or 999

UFW_RULES = """*filter
:ufw-user-input - [0:0]
### tuple ### allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in
-A ufw-user-input -p tcp --dport 22 -j ACCEPT
### tuple ### allow tcp 80,443 0.0.0.0/0 any 0.0.0.0/0 in
-A ufw-user-input -p tcp -m multiport --dports 80,443 -j ACCEPT
{extra}COMMIT
"""
NFTABLES = """#!/usr/sbin/nft -f
flush ruleset
table inet filter {
    chain input {
        type filter hook input priority filter; policy drop;
        ct state established,related accept
        iif lo accept
        tcp dport { ssh, http, https } accept
    }
}
"""
IPTABLES = """*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p tcp -m multiport --dports 22,80,443 -j ACCEPT
COMMIT
"""
PROC_HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"


def certificate(days_left: float) -> tuple[bytes, bytes]:
    """A self-signed certificate for app.example.com that expires in `days_left` days, and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "app.example.com")])
    after = now + datetime.timedelta(days=days_left)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(min(now, after) - datetime.timedelta(days=30)).not_valid_after(after)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("app.example.com")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def listen_line(ip: str, port: int, inode: int) -> str:
    """One LISTEN line of /proc/net/tcp, the address in host byte order as the kernel prints it."""
    word = int.from_bytes(socket.inet_aton(ip), sys.byteorder)
    return (f"   0: {word:08X}:{port:04X} 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 "
            f"{inode} 1 0000000000000000 100 0 0 10 0\n")


def try_mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return r.returncode == 0


class FakeHost:
    """A tree that stands for a host's /: what `ferrogate doctor --root` reads."""

    def __init__(self, root: Path):
        self.root = root
        self.mounts: list[Path] = []

    def at(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def write(self, path: str, text: str | bytes, mode: int | None = None) -> Path:
        p = self.at(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(text.encode() if isinstance(text, str) else text)
        if mode is not None:
            p.chmod(mode)
        return p

    def remove(self, path: str):
        p = self.at(path)
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()

    def link(self, path: str, target: str):
        p = self.at(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.symlink_to(target)

    def mount_tmpfs(self, path: str, size: str):
        p = self.at(path)
        if not try_mount_tmpfs(p, size):
            pytest.skip("needs root and `mount -t tmpfs` (a filesystem of a chosen size)")
        self.mounts.append(p)

    def unmount_all(self):
        for p in reversed(self.mounts):
            subprocess.run(["umount", "-l", str(p)], capture_output=True)

    def harden(self):
        """Every step of the tutorial's checklist done, and a healthy server's files."""
        self.write("/etc/debian_version", "12.5\n")
        self.write("/etc/passwd", f"root:x:0:0:root:/root:/bin/bash\napp:x:{APP_UID}:{APP_UID}::/srv/app:/usr/sbin/nologin\n")
        self.write("/etc/apt/apt.conf.d/20auto-upgrades", 'APT::Periodic::Update-Package-Lists "1";\nAPT::Periodic::Unattended-Upgrade "1";\n')
        self.write("/etc/apt/apt.conf.d/50unattended-upgrades", 'Unattended-Upgrade::Automatic-Reboot "true";\n')
        self.write("/etc/ssh/sshd_config", "Include /etc/ssh/sshd_config.d/*.conf\nKbdInteractiveAuthentication no\nUsePAM yes\nX11Forwarding yes\n")
        self.write("/etc/ssh/sshd_config.d/10-hardening.conf", "PermitRootLogin no\nPasswordAuthentication no\n")
        self.write("/etc/ufw/ufw.conf", "ENABLED=yes\nLOGLEVEL=low\n")
        self.write("/etc/default/ufw", 'IPV6=yes\nDEFAULT_INPUT_POLICY="DROP"\n')
        self.write("/etc/ufw/user.rules", UFW_RULES.format(extra=""))
        self.write("/etc/ufw/user6.rules", UFW_RULES.format(extra=""))
        self.write("/etc/fail2ban/jail.conf", "[DEFAULT]\nbantime = 10m\n[sshd]\nport = ssh\n")
        self.write("/etc/fail2ban/jail.d/defaults-debian.conf", "[sshd]\nenabled = true\n")
        self.write("/proc/net/tcp", PROC_HEADER + listen_line("0.0.0.0", 22, 7001) + listen_line("0.0.0.0", 443, 7002)
                   + listen_line("127.0.0.1", 5432, 7003))
        self.write("/proc/net/tcp6", PROC_HEADER)
        self.write("/proc/310/comm", "sshd\n")
        self.link("/proc/310/fd/3", "socket:[7001]")
        self.write("/proc/4242/comm", "ferrogate\n")
        self.link("/proc/4242/fd/5", "socket:[7002]")
        cert, key = certificate(60)
        self.write("/etc/ssl/app.pem", cert, 0o644)
        self.write("/etc/ssl/private/app.key", key, 0o600)
        stored_cert, stored_key = certificate(80)
        self.write("/var/lib/ferrogate/certs/app.example.com/cert.pem", stored_cert, 0o644)
        self.write("/var/lib/ferrogate/certs/app.example.com/key.pem", stored_key, 0o600)
        self.write("/var/lib/ferrogate/accounts/0123abcd.json", "{}", 0o600)
        self.control_socket(0o600)
        self.at("/var/log/ferrogate").mkdir(parents=True, exist_ok=True)
        self.link("/etc/systemd/system/sysinit.target.wants/systemd-timesyncd.service", "/lib/systemd/system/systemd-timesyncd.service")
        return self

    def control_socket(self, mode: int):
        p = self.at("/run/ferrogate/control.sock")
        p.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
        os.mknod(p, stat.S_IFSOCK | 0o600)
        p.chmod(mode)

    def doctor(self, *args: str, server: list[str] = SERVER) -> tuple[int, dict[str, dict]]:
        r = run_cli("doctor", "--root", str(self.root), "--json", *server, *args)
        assert r.returncode in (0, 1, 2), f"exit {r.returncode}: {r.stderr}"
        report = json.loads(r.stdout)
        assert [f["check"] for f in report] == CHECKS, r.stdout
        for f in report:
            assert f["status"] in ("pass", "warn", "fail") and f["finding"], f
            assert (f["fix"] is None) == (f["status"] == "pass"), f
        return r.returncode, {f["check"]: f for f in report}


@pytest.fixture
def host(tmp_path):
    root = tmp_path / "root"
    h = FakeHost(root)
    # On a tmpfs of its own when we may mount one, so free disk does not depend on this machine's.
    if try_mount_tmpfs(root, "2g"):
        h.mounts.append(root)
    yield h.harden()
    h.unmount_all()


def test_a_hardened_host_passes_every_check(host):
    code, report = host.doctor()
    assert {c: f["status"] for c, f in report.items()} == {c: "pass" for c in CHECKS}, json.dumps(report, indent=1)
    assert code == 0
    assert "PermitRootLogin no in /etc/ssh/sshd_config.d/10-hardening.conf" in report["ssh-root-login"]["finding"]
    assert "ufw drops by default and opens 22/tcp, 80/tcp, 443/tcp" in report["firewall"]["finding"]
    assert "0.0.0.0:22 (sshd pid 310)" in report["listening-ports"]["finding"]
    assert "0.0.0.0:443 (ferrogate pid 4242)" in report["listening-ports"]["finding"]
    assert "5432" not in report["listening-ports"]["finding"], "loopback listeners are not reported"
    assert "/etc/ssl/app.pem valid until" in report["certificates"]["finding"]
    # The person-readable report: one line per check and a summary.
    r = run_cli("doctor", "--root", str(host.root), *SERVER)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert [line.split()[:2] for line in lines[:-1]] == [["PASS", c] for c in CHECKS], r.stdout
    assert lines[-1] == "12 checks: 12 passed, 0 warnings, 0 failed"


def break_reboot(h):
    h.write("/etc/apt/apt.conf.d/50unattended-upgrades", "// Unattended-Upgrade::Automatic-Reboot \"true\";\n")


def add_cloud_init(h):
    # cloud-init's drop-in sorts before most and sshd keeps the first value it reads.
    h.write("/etc/ssh/sshd_config.d/05-cloud-init.conf", "PasswordAuthentication yes\n")


def pam_passwords(h):
    h.write("/etc/ssh/sshd_config", "Include /etc/ssh/sshd_config.d/*.conf\nUsePAM yes\n")


def nftables_only(h):
    h.remove("/etc/ufw")
    h.write("/etc/nftables.conf", NFTABLES)


def iptables_only(h):
    h.remove("/etc/ufw")
    h.write("/etc/iptables/rules.v4", IPTABLES)
    h.write("/etc/iptables/rules.v6", IPTABLES)


def no_firewall(h):
    h.write("/etc/ufw/ufw.conf", "ENABLED=no\n")
    # Debian's default nftables.conf: an input chain that accepts everything.
    h.write("/etc/nftables.conf", "table inet filter {\n  chain input {\n    type filter hook input priority filter;\n  }\n}\n")


def redis_open(h):
    h.write("/etc/ufw/user.rules", UFW_RULES.format(extra="-A ufw-user-input -p tcp --dport 6379 -j ACCEPT\n"))


def redis_listens(h):
    h.write("/proc/net/tcp", h.at("/proc/net/tcp").read_text() + listen_line("0.0.0.0", 6379, 7004))
    h.write("/proc/777/comm", "redis-server\n")
    h.link("/proc/777/fd/6", "socket:[7004]")


def no_fail2ban(h):
    h.remove("/etc/fail2ban")


def chrony_enabled(h):
    h.remove("/etc/systemd/system/sysinit.target.wants")
    h.write("/etc/chrony/chrony.conf", "pool 2.debian.pool.ntp.org iburst\n")
    h.link("/etc/systemd/system/multi-user.target.wants/chrony.service", "/lib/systemd/system/chrony.service")


def cert_days(days):
    def change(h):
        cert, _ = certificate(days)
        h.write("/etc/ssl/app.pem", cert)
    return change


# (case, change to the hardened host, check, expected status, text the finding must contain)
CASES = [
    ("apt-not-installed", lambda h: [h.remove("/etc/apt/apt.conf.d/50unattended-upgrades"), h.remove("/etc/apt/apt.conf.d/20auto-upgrades")],
     "unattended-upgrades", "fail", "not installed"),
    ("apt-never-runs", lambda h: h.write("/etc/apt/apt.conf.d/99local", 'APT::Periodic::Unattended-Upgrade "0";\n'),
     "unattended-upgrades", "fail", "never runs"),
    ("apt-no-reboot", break_reboot, "unattended-upgrades", "warn", "Automatic-Reboot is off"),
    ("dnf-install-timer", lambda h: [h.remove("/etc/apt"), h.remove("/etc/debian_version"), h.write("/etc/redhat-release", "Rocky 9\n"),
                                     h.link("/etc/systemd/system/timers.target.wants/dnf-automatic-install.timer", "/usr/lib/systemd/system/x")],
     "unattended-upgrades", "pass", "dnf-automatic-install.timer"),
    ("dnf-nothing", lambda h: [h.remove("/etc/apt"), h.remove("/etc/debian_version"), h.write("/etc/redhat-release", "Rocky 9\n")],
     "unattended-upgrades", "fail", "dnf-automatic"),
    ("root-login-yes", lambda h: h.write("/etc/ssh/sshd_config.d/00-local.conf", "PermitRootLogin yes\n"),
     "ssh-root-login", "fail", "00-local.conf"),
    ("root-login-key", lambda h: h.write("/etc/ssh/sshd_config.d/00-local.conf", "PermitRootLogin prohibit-password\n"),
     "ssh-root-login", "warn", "with a key"),
    ("root-login-in-match-only", lambda h: h.write("/etc/ssh/sshd_config.d/00-local.conf", "Match User backup\n  PermitRootLogin yes\n"),
     "ssh-root-login", "pass", "PermitRootLogin no"),
    ("passwords-cloud-init", add_cloud_init, "ssh-password-auth", "fail", "05-cloud-init.conf"),
    ("passwords-unset", lambda h: h.write("/etc/ssh/sshd_config.d/10-hardening.conf", "PermitRootLogin no\n"),
     "ssh-password-auth", "fail", "default (yes)"),
    ("passwords-through-pam", pam_passwords, "ssh-password-auth", "warn", "UsePAM yes"),
    ("firewall-none", no_firewall, "firewall", "fail", "ufw: installed but not enabled"),
    ("firewall-extra-port", redis_open, "firewall", "warn", "6379/tcp"),
    ("firewall-nftables", nftables_only, "firewall", "pass", "nftables (chain input) drops by default and opens 22/tcp, 80/tcp, 443/tcp"),
    ("firewall-iptables", iptables_only, "firewall", "pass", "iptables (/etc/iptables/rules.v4)"),
    ("brute-force-keys-only", no_fail2ban, "brute-force", "warn", "no fail2ban"),
    ("brute-force-jail-off", lambda h: h.write("/etc/fail2ban/jail.local", "[sshd]\nenabled = false\n"), "brute-force", "warn", "sshd jail is off"),
    ("brute-force-sshguard", lambda h: [no_fail2ban(h), h.write("/etc/sshguard/sshguard.conf", "")], "brute-force", "pass", "sshguard"),
    ("listener-redis", redis_listens, "listening-ports", "warn", "0.0.0.0:6379 (redis-server pid 777)"),
    ("key-world-readable", lambda h: h.at("/var/lib/ferrogate/certs/app.example.com/key.pem").chmod(0o644),
     "key-permissions", "fail", "key.pem (0644"),
    ("key-group-readable", lambda h: h.at("/etc/ssl/private/app.key").chmod(0o640), "key-permissions", "pass", "app.key (0640"),
    ("key-missing", lambda h: h.remove("/etc/ssl/private/app.key"), "key-permissions", "warn", "does not exist"),
    ("control-socket-open", lambda h: h.control_socket(0o666), "socket-permissions", "fail", "0666"),
    ("control-socket-absent", lambda h: h.remove("/run/ferrogate/control.sock"), "socket-permissions", "pass", "no server running"),
    ("cert-expired", cert_days(-2), "certificates", "fail", "expired on"),
    ("cert-expiring", cert_days(5), "certificates", "warn", "expires in 4 days"),
    ("cert-missing", lambda h: h.remove("/etc/ssl/app.pem"), "certificates", "fail", "does not exist"),
    ("time-none", lambda h: h.remove("/etc/systemd/system/sysinit.target.wants"), "time-sync", "warn", "no time synchronisation"),
    ("time-chrony", chrony_enabled, "time-sync", "pass", "chrony"),
    ("time-synchronized-flag", lambda h: [h.remove("/etc/systemd/system/sysinit.target.wants"), h.write("/run/systemd/timesync/synchronized", "")],
     "time-sync", "pass", "synchronised"),
]


@pytest.mark.parametrize("change,check,status,text", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_one_broken_setting_changes_its_check(host, change, check, status, text):
    change(host)
    code, report = host.doctor()
    finding = report[check]
    assert finding["status"] == status, json.dumps(finding, indent=1)
    assert text in finding["finding"], json.dumps(finding, indent=1)
    others = {c: f["status"] for c, f in report.items() if c != check}
    assert others == {c: "pass" for c in others}, json.dumps(report, indent=1)
    assert code == {"pass": 0, "warn": 1, "fail": 2}[status]


def test_brute_force_fails_when_passwords_are_accepted_too(host):
    no_fail2ban(host)
    add_cloud_init(host)
    code, report = host.doctor()
    assert report["brute-force"]["status"] == "fail"
    assert "accepts passwords" in report["brute-force"]["finding"]
    assert report["ssh-password-auth"]["status"] == "fail"
    assert code == 2


def test_the_service_user_comes_from_the_options_or_an_installed_unit(host):
    server = [a for a in SERVER if a not in ("--user", "app")]
    code, report = host.doctor(server=server + ["--user", "root"])
    assert report["service-user"]["status"] == "warn" and "--user root" in report["service-user"]["finding"]
    assert code == 1
    code, report = host.doctor(server=server)
    assert report["service-user"]["status"] == "warn"
    host.write("/etc/systemd/system/ferrogate.service", "[Unit]\nDescription=app\n[Service]\nUser=app\nExecStart=/usr/bin/ferrogate main:app\n")
    code, report = host.doctor(server=server)
    assert report["service-user"]["status"] == "pass", report["service-user"]
    assert "/etc/systemd/system/ferrogate.service runs it as app" in report["service-user"]["finding"]
    assert code == 0


def test_the_servers_own_port_may_be_open_and_listening(host):
    redis_open(host)
    redis_listens(host)
    code, report = host.doctor(server=SERVER + ["--bind", "0.0.0.0:6379"])
    assert report["firewall"]["status"] == "pass", report["firewall"]
    assert report["listening-ports"]["status"] == "pass", report["listening-ports"]
    assert code == 0


@pytest.mark.parametrize("size,status", [("50m", "fail"), ("600m", "warn")])
def test_little_free_disk_under_the_state_directory(host, size, status):
    host.mount_tmpfs("/var/lib/ferrogate", size)
    code, report = host.doctor()
    assert report["disk-space"]["status"] == status, report["disk-space"]
    assert "state /var/lib/ferrogate:" in report["disk-space"]["finding"]
    assert code == {"warn": 1, "fail": 2}[status]


def test_this_machine_gets_a_complete_report():
    r = run_cli("doctor", "--json")
    assert r.returncode in (0, 1, 2), r.stderr
    report = json.loads(r.stdout)
    assert [f["check"] for f in report] == CHECKS
    worst = max(("pass", "warn", "fail").index(f["status"]) for f in report)
    assert r.returncode == worst
    r = run_cli("doctor")
    assert r.returncode == worst, r.stdout + r.stderr
    assert r.stdout.splitlines()[-1].startswith("12 checks: ")


def test_help_and_bad_arguments():
    r = run_cli("doctor", "--help")
    assert r.returncode == 0
    assert "0 when every check passes, 1 when the worst finding is a warning, 2 when a\ncheck fails" in r.stdout
    assert "--root DIR" in r.stdout and "--json" in r.stdout
    r = run_cli("doctor", "--root", "/no/such/dir")
    assert r.returncode == 2 and "--root /no/such/dir: not a directory" in r.stderr
    r = run_cli("doctor", "--workers", "many")
    assert r.returncode == 2 and "--workers" in r.stderr
