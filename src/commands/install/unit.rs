//! The systemd unit `ferrogate install` writes, as text: pure, so its every line is
//! tested here and the command only decides the values. docs/systemd.md explains it line
//! by line; the comments in the unit say the why to whoever opens the file on the server.

use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The unit's first line: `uninstall` removes only files that start with it, and `install`
/// overwrites no other.
pub const HEADER: &str = "# Written by `ferrogate install`: run it again to change this file (edits here are overwritten).";

/// Marks an account the installer created, so that `uninstall --purge` deletes only those.
pub fn created_user_marker(user: &str) -> String {
    format!("# The account {user} was created by `ferrogate install`: `ferrogate uninstall --purge` deletes it.")
}

pub struct UnitSpec {
    /// The unit's name without `.service`; also the name of its state, cache, log and runtime directories.
    pub name: String,
    pub description: String,
    /// The server's command line, the console script first.
    pub exec_start: Vec<String>,
    pub working_directory: PathBuf,
    pub user: String,
    pub group: String,
    pub user_created: bool,
    /// How long the master may take to stop, from --timeout-graceful-shutdown.
    pub stop_timeout: Duration,
    /// FERROGATE_STATE_DIR, unless the configuration names a state directory itself.
    pub state_dir_env: Option<PathBuf>,
    /// The app, its virtualenv or its interpreter live under /home or /root.
    pub home_read_only: bool,
    /// Where the configuration writes outside the directories systemd manages for the unit.
    pub read_write_paths: Vec<PathBuf>,
}

impl UnitSpec {
    pub fn state_directory(&self) -> PathBuf {
        Path::new("/var/lib").join(&self.name)
    }
}

/// The unit file's text.
pub fn render(u: &UnitSpec) -> String {
    let name = &u.name;
    let mut s = String::new();
    let mut line = |text: &str| {
        s.push_str(text);
        s.push('\n');
    };
    line(HEADER);
    if u.user_created {
        line(&created_user_marker(&u.user));
    }
    line("");
    line("[Unit]");
    line(&format!("Description={}", escape_specifiers(&u.description)));
    line("After=network-online.target");
    line("Wants=network-online.target");
    line("");
    line("[Service]");
    line("# The master tells systemd when every worker serves (READY=1), around reloads and stops;");
    line("# NotifyAccess=all because a self-upgrade re-executes the master as a new process.");
    line("Type=notify");
    line("NotifyAccess=all");
    line(&format!("ExecStart={}", u.exec_start.iter().map(|w| quote_word(w)).collect::<Vec<_>>().join(" ")));
    line("# SIGHUP: a rolling restart, each worker replaced once its successor serves.");
    line("ExecReload=/bin/kill -HUP $MAINPID");
    line(&format!("WorkingDirectory={}", quote_word(&u.working_directory.to_string_lossy())));
    line(&format!("User={}", u.user));
    line(&format!("Group={}", u.group));
    line("# SIGTERM to the master alone: it drains its workers; whatever is left at the timeout is killed.");
    line("KillMode=mixed");
    line(&format!("TimeoutStopSec={}", u.stop_timeout.as_secs()));
    line("Restart=on-failure");
    line("RestartSec=2");
    line("# The master pings from its loop every 15 s: a master that hangs is restarted.");
    line("WatchdogSec=30");
    line("LimitNOFILE=65536");
    line(&format!("SyslogIdentifier={name}"));
    line("");
    line(&format!("# /var/lib/{name}, /var/cache/{name}, /var/log/{name} and /run/{name}, owned by the user;"));
    line(&format!("# the control socket defaults to $RUNTIME_DIRECTORY/control.sock, /run/{name}/control.sock."));
    line(&format!("StateDirectory={name}"));
    line(&format!("CacheDirectory={name}"));
    line(&format!("LogsDirectory={name}"));
    line(&format!("RuntimeDirectory={name}"));
    if let Some(dir) = &u.state_dir_env {
        line(&format!("Environment={}", quote_word(&format!("FERROGATE_STATE_DIR={}", dir.display()))));
    }
    line("# The app's directory is read-only here: Python keeps its bytecode cache in the cache directory.");
    line(&format!("Environment=PYTHONPYCACHEPREFIX=/var/cache/{name}/pycache"));
    line("Environment=PYTHONUNBUFFERED=1");
    line("");
    line("# Sandboxing: the service runs as its user from the start and may bind ports below 1024,");
    line("# and nothing else a web server does not need.");
    line("AmbientCapabilities=CAP_NET_BIND_SERVICE");
    line("CapabilityBoundingSet=CAP_NET_BIND_SERVICE");
    line("NoNewPrivileges=yes");
    line("ProtectSystem=strict");
    if u.home_read_only {
        line("# The app or its Python lives under /home or /root: readable, never writable.");
        line("ProtectHome=read-only");
    } else {
        line("ProtectHome=yes");
    }
    if !u.read_write_paths.is_empty() {
        line("# Files the configuration names (state, logs, sockets) outside the directories above.");
        let paths: Vec<String> = u.read_write_paths.iter().map(|p| quote_word(&p.to_string_lossy())).collect();
        line(&format!("ReadWritePaths={}", paths.join(" ")));
    }
    for setting in [
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "PrivateMounts=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "ProtectClock=yes",
        "ProtectHostname=yes",
        "ProtectProc=invisible",
        "ProcSubset=pid",
        "RestrictNamespaces=yes",
        "RestrictRealtime=yes",
        "RestrictSUIDSGID=yes",
        "# AF_UNIX: the workers' channels, unix listeners, systemd's notify socket.",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "LockPersonality=yes",
        "RemoveIPC=yes",
        "KeyringMode=private",
        "UMask=0077",
        "SystemCallArchitectures=native",
        "# A denied system call fails with EPERM instead of killing the process.",
        "SystemCallFilter=@system-service",
        "SystemCallFilter=~@privileged @resources",
        "SystemCallErrorNumber=EPERM",
        "# Not MemoryDenyWriteExecute=: cffi and ctypes callbacks (cryptography, many C",
        "# extensions) need pages both writable and executable, and would crash.",
    ] {
        line(setting);
    }
    line("");
    line("[Install]");
    line("WantedBy=multi-user.target");
    s
}

/// One word of a command line as systemd reads it back (systemd.syntax(7), systemd.service(5)
/// "Command lines"): plain when it is only safe characters, else double-quoted with C escapes.
/// `%` (specifiers) and `$` (variables) are doubled either way.
pub fn quote_word(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "/._-+=:,@%$".contains(c);
    let mut out = String::new();
    let plain = !word.is_empty() && word.chars().all(safe);
    if !plain {
        out.push('"');
    }
    for c in word.chars() {
        match c {
            '%' => out.push_str("%%"),
            '$' => out.push_str("$$"),
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    if !plain {
        out.push('"');
    }
    out
}

fn escape_specifiers(text: &str) -> String {
    text.replace('%', "%%")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> UnitSpec {
        UnitSpec {
            name: "shop".into(),
            description: "ferrogate: main:app in /srv/shop".into(),
            exec_start: vec!["/srv/shop/.venv/bin/ferrogate".into(), "--config".into(), "/srv/shop/ferrogate.toml".into()],
            working_directory: "/srv/shop".into(),
            user: "shop".into(),
            group: "shop".into(),
            user_created: true,
            stop_timeout: Duration::from_secs(73),
            state_dir_env: Some("/var/lib/shop".into()),
            home_read_only: false,
            read_write_paths: vec![],
        }
    }

    fn has(unit: &str, line: &str) -> bool {
        unit.lines().any(|l| l == line)
    }

    #[test]
    fn the_unit_says_every_directive_the_service_needs() {
        let unit = render(&spec());
        for line in [
            HEADER,
            "# The account shop was created by `ferrogate install`: `ferrogate uninstall --purge` deletes it.",
            "Type=notify",
            "NotifyAccess=all",
            "ExecStart=/srv/shop/.venv/bin/ferrogate --config /srv/shop/ferrogate.toml",
            "ExecReload=/bin/kill -HUP $MAINPID",
            "WorkingDirectory=/srv/shop",
            "User=shop",
            "Group=shop",
            "KillMode=mixed",
            "TimeoutStopSec=73",
            "Restart=on-failure",
            "LimitNOFILE=65536",
            "StateDirectory=shop",
            "LogsDirectory=shop",
            "RuntimeDirectory=shop",
            "Environment=FERROGATE_STATE_DIR=/var/lib/shop",
            "ProtectSystem=strict",
            "ProtectHome=yes",
            "PrivateTmp=yes",
            "NoNewPrivileges=yes",
            "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
            "AmbientCapabilities=CAP_NET_BIND_SERVICE",
            "WantedBy=multi-user.target",
        ] {
            assert!(has(&unit, line), "missing {line:?} in\n{unit}");
        }
        assert!(!unit.lines().any(|l| l.starts_with("MemoryDenyWriteExecute")), "cffi callbacks need W+X pages");
        assert!(!unit.lines().any(|l| l.starts_with("ReadWritePaths")), "nothing to add: no line");
    }

    #[test]
    fn home_read_only_state_dir_and_write_paths_follow_the_spec() {
        let mut s = spec();
        s.home_read_only = true;
        s.state_dir_env = None;
        s.user_created = false;
        s.read_write_paths = vec!["/var/log/shop app".into(), "/srv/state".into()];
        let unit = render(&s);
        assert!(has(&unit, "ProtectHome=read-only"));
        assert!(has(&unit, "ReadWritePaths=\"/var/log/shop app\" /srv/state"), "{unit}");
        assert!(!unit.contains("FERROGATE_STATE_DIR"));
        assert!(!unit.contains("was created by"));
    }

    #[test]
    fn words_are_quoted_for_systemd() {
        assert_eq!(quote_word("/usr/bin/ferrogate"), "/usr/bin/ferrogate");
        assert_eq!(quote_word("main:app"), "main:app");
        assert_eq!(quote_word("--bind=0.0.0.0:80"), "--bind=0.0.0.0:80");
        assert_eq!(quote_word("a b"), "\"a b\"");
        assert_eq!(quote_word(""), "\"\"");
        assert_eq!(quote_word("x-frame-options: DENY"), "\"x-frame-options: DENY\"");
        assert_eq!(quote_word("say \"hi\"\\"), "\"say \\\"hi\\\"\\\\\"");
        assert_eq!(quote_word("100%"), "100%%", "a specifier would be expanded");
        assert_eq!(quote_word("$HOME"), "$$HOME", "a variable would be expanded");
        assert_eq!(quote_word("a;b"), "\"a;b\"");
        assert_eq!(quote_word("line\nbreak"), "\"line\\nbreak\"");
    }
}
