"""`ferrogate install` and `ferrogate uninstall`, for real: the account, the unit file, and
systemd's own verdicts on it (`systemd-analyze verify` and `security`, from Debian's systemd).

Each test uses a unit and an account of its own, removed at the end. systemd is not the
init system here (a container), so nothing is enabled or started: install says what to run.
"""

import os
import pwd
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from conftest import APPS_DIR, FERROGATE

UNIT_DIR = Path("/etc/systemd/system")
SYSTEMD_RUNS = Path("/run/systemd/system").is_dir()

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="install writes /etc/systemd/system and creates an account: needs root")
needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze is missing: apt-get install systemd (.ci/run does)")
no_init = pytest.mark.skipif(SYSTEMD_RUNS, reason="systemd runs here: a real install would enable and start the service")


def ferrogate(*args: str, cwd=APPS_DIR) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERROGATE_")}
    return subprocess.run([FERROGATE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


@pytest.fixture
def names():
    """A unit name and an account name no one else uses; both gone after the test."""
    tag = uuid.uuid4().hex[:8]
    unit, user = f"fgtest-{tag}", f"fgt{tag}"
    yield unit, user
    if os.geteuid() == 0:
        ferrogate("uninstall", "--unit", unit, "--purge")
        (UNIT_DIR / f"{unit}.service").unlink(missing_ok=True)
        if user_exists(user):
            subprocess.run(["userdel", user], check=False)


def test_dry_run_prints_the_unit_and_changes_nothing(names):
    unit, user = names
    r = ferrogate("install", "--dry-run", "basic:app", "--port", "80", "--header", "x-note: two words",
                  "--unit", unit, "--user", user)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for directive in [
        "Type=notify",
        "NotifyAccess=all",
        f"ExecStart={FERROGATE} basic:app --port 80 --header \"x-note: two words\"",
        f"WorkingDirectory={APPS_DIR}",
        f"User={user}",
        f"Group={user}",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "KillMode=mixed",
        "Restart=on-failure",
        "RestartSec=",
        "TimeoutStopSec=",
        "LimitNOFILE=65536",
        f"StateDirectory={unit}",
        f"LogsDirectory={unit}",
        f"RuntimeDirectory={unit}",
        f"Environment=FERROGATE_STATE_DIR=/var/lib/{unit}",
        "ProtectSystem=strict",
        "ProtectHome=",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "WantedBy=multi-user.target",
    ]:
        assert any(line.startswith(directive) for line in out.splitlines()), f"no {directive!r} in\n{out}"
    assert "MemoryDenyWriteExecute=" in out and not re.search(r"(?m)^MemoryDenyWriteExecute=", out), \
        "the unit says why it leaves MemoryDenyWriteExecute out, and leaves it out"
    assert f"user {user}: would be created (useradd --system --no-create-home" in out
    assert "would be written" in out
    assert not (UNIT_DIR / f"{unit}.service").exists()
    assert not user_exists(user)


def test_the_tls_state_directory_named_by_the_configuration_is_writable(names, tmp_path):
    unit, user = names
    state = "/srv/" + unit + "-state"
    r = ferrogate("install", "--dry-run", "basic:app", "--state-dir", state, "--unit", unit, "--user", user)
    assert r.returncode == 0, r.stderr
    assert "FERROGATE_STATE_DIR" not in r.stdout, "the configuration names its own state directory"
    assert re.search(rf"(?m)^ReadWritePaths=.*{re.escape(state)}", r.stdout), r.stdout


def test_the_configurations_user_is_the_units(names, tmp_path):
    """The unit starts the server as User=: it must be the account the file names."""
    unit, user = names
    (tmp_path / "ferrogate.toml").write_text(f'app = "basic:app"\nuser = "{user}"\n')
    shutil.copy(APPS_DIR / "basic.py", tmp_path / "basic.py")
    r = ferrogate("install", "--dry-run", "--unit", unit, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert re.search(rf"(?m)^User={user}$", r.stdout), r.stdout
    r = ferrogate("install", "--dry-run", "--unit", unit, "--user", "someoneelse", cwd=tmp_path)
    assert r.returncode == 2 and f'the configuration says user = "{user}"' in r.stderr, r.stderr


def test_a_bad_option_is_refused_before_anything_changes(names):
    unit, user = names
    r = ferrogate("install", "basic:app", "--workers", "many", "--unit", unit, "--user", user)
    assert r.returncode == 2
    assert "--workers" in r.stderr
    assert not user_exists(user)
    r = ferrogate("install", "--unit", unit, "--user", user)
    assert r.returncode == 2 and "no app to serve" in r.stderr, r.stderr


@needs_root
@needs_analyze
@no_init
def test_install_twice_then_uninstall_twice(names, tmp_path):
    unit, user = names
    unit_file = UNIT_DIR / f"{unit}.service"
    config = tmp_path / "ferrogate.toml"
    config.write_text("")
    args = ["install", "basic:app", "--config", str(config), "--workers", "2", "--unit", unit, "--user", user]

    r = ferrogate(*args)
    assert r.returncode == 0, r.stdout + r.stderr
    assert user_exists(user)
    assert f" + user {user}: created" in r.stdout
    assert f" + {unit_file}: written" in r.stdout
    assert "systemd is not running on this machine" in r.stdout
    assert f"systemctl daemon-reload && systemctl enable --now {unit}.service" in r.stdout
    assert "PrivateTmp" in r.stdout, "a configuration under /tmp is out of the service's sight: said so"
    text = unit_file.read_text()
    assert re.search(rf"(?m)^ExecStart={re.escape(FERROGATE)} --config {re.escape(str(config))} basic:app --workers 2$", text), text
    assert f"User={user}" in text

    verify = subprocess.run(["systemd-analyze", "verify", str(unit_file)], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert str(unit_file) not in verify.stdout + verify.stderr, f"systemd-analyze warns:\n{verify.stderr}"

    security = subprocess.run(["systemd-analyze", "security", "--offline=true", str(unit_file)], capture_output=True, text=True)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d) (\w+)", security.stdout)
    assert m, security.stdout + security.stderr
    # systemd 252's scale: PERFECT 0, SAFE below 1, OK below 5, then MEDIUM, EXPOSED, UNSAFE.
    assert m.group(2) in ("OK", "SAFE", "PERFECT") and float(m.group(1)) < 5.0, m.group(0)

    again = ferrogate(*args)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f" = user {user}: unchanged" in again.stdout
    assert f" = {unit_file}: unchanged" in again.stdout
    assert not re.search(r"(?m)^ \+ ", again.stdout), f"a second install changed something:\n{again.stdout}"
    assert unit_file.read_text() == text

    r = ferrogate("uninstall", "--unit", unit, "--purge")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f" + user {user}: deleted" in r.stdout
    assert not unit_file.exists()
    assert not user_exists(user)
    again = ferrogate("uninstall", "--unit", unit, "--purge")
    assert again.returncode == 0, again.stdout + again.stderr
    assert not re.search(r"(?m)^ \+ ", again.stdout), f"a second uninstall changed something:\n{again.stdout}"
    assert f" = {unit_file}: unchanged (absent)" in again.stdout


@needs_root
@no_init
def test_an_account_install_did_not_create_survives_purge(names):
    unit, user = names
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user], check=True)
    r = ferrogate("install", "basic:app", "--unit", unit, "--user", user)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f" = user {user}: unchanged (exists)" in r.stdout
    r = ferrogate("uninstall", "--unit", unit, "--purge")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"user {user} is kept" in r.stdout
    assert user_exists(user)


@needs_root
def test_a_unit_file_ferrogate_did_not_write_is_left_alone(names):
    unit, user = names
    foreign = UNIT_DIR / f"{unit}.service"
    foreign.write_text("[Service]\nExecStart=/bin/true\n")
    try:
        r = ferrogate("install", "basic:app", "--unit", unit, "--user", user)
        assert r.returncode == 2 and "not written by ferrogate install" in r.stderr, r.stderr
        assert not user_exists(user)
        r = ferrogate("uninstall", "--unit", unit)
        assert r.returncode == 1 and "not written by ferrogate install" in r.stderr, r.stderr
        assert foreign.read_text() == "[Service]\nExecStart=/bin/true\n"
    finally:
        foreign.unlink()
