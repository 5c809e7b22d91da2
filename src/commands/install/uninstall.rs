//! `ferrogate uninstall`: stops and disables the unit `install` wrote and removes it; with
//! --purge, also the account `install` created and the unit's state and cache. Logs stay.
//! Run twice, the second run finds everything done and says so.

use std::path::{Path, PathBuf};

use super::host::{self, Report};
use super::{DEFAULT_NAME, UNIT_DIR, unit, unit_name};

const USAGE: &str = "usage: ferrogate uninstall [--unit NAME] [--purge] [--dry-run]

Stops and disables the service `ferrogate install` set up, and removes its unit file.

  --unit NAME   the unit's name (default ferrogate)
  --purge       also delete the account install created, /var/lib/NAME and /var/cache/NAME
                (/var/log/NAME is kept)
  --dry-run     print the steps; change nothing";

pub fn run(args: &[String]) -> i32 {
    let mut name = DEFAULT_NAME.to_string();
    let mut purge = false;
    let mut dry_run = false;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                return 0;
            }
            "--purge" => purge = true,
            "--dry-run" => dry_run = true,
            "--unit" => match it.next() {
                Some(v) => name = v.clone(),
                None => return usage_error("--unit needs a value"),
            },
            other if other.starts_with("--unit=") => name = other["--unit=".len()..].to_string(),
            other => return usage_error(&format!("unknown argument {other:?}")),
        }
    }
    let name = match unit_name(&name) {
        Ok(n) => n,
        Err(e) => return usage_error(&e),
    };
    if !dry_run && !host::is_root() {
        eprintln!("error: ferrogate uninstall changes {UNIT_DIR} and accounts: run it as root (sudo), or add --dry-run");
        return 1;
    }
    match uninstall(&name, purge, &Report { dry_run }) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

fn usage_error(message: &str) -> i32 {
    eprintln!("error: {message}\n\n{USAGE}");
    2
}

fn uninstall(name: &str, purge: bool, report: &Report) -> Result<(), String> {
    let unit = format!("{name}.service");
    let path = Path::new(UNIT_DIR).join(&unit);
    let text = std::fs::read_to_string(&path).ok();
    if text.as_deref().is_some_and(|t| !t.starts_with(unit::HEADER)) {
        return Err(format!("{} was not written by ferrogate install: remove it yourself (systemctl disable --now {unit})", path.display()));
    }
    println!("{} {unit}{}", if report.dry_run { "Would uninstall" } else { "Uninstalling" }, if purge { " (--purge)" } else { "" });
    let act = |what: &str, how: &str, action: &dyn Fn() -> Result<(), String>| -> Result<(), String> {
        if !report.dry_run {
            action()?;
        }
        report.done(what, how);
        Ok(())
    };

    if host::systemd_runs() {
        if host::systemctl_says("is-active", &unit) {
            act(&format!("systemctl stop {unit}"), "run", &|| host::run("systemctl", &["stop", &unit]))?;
        } else {
            report.unchanged(&unit, "not running");
        }
        if host::systemctl_says("is-enabled", &unit) {
            act(&format!("systemctl disable {unit}"), "run", &|| host::run("systemctl", &["disable", &unit]))?;
        } else {
            report.unchanged(&format!("{unit} at boot"), "not enabled");
        }
    } else {
        // Without systemd running, an enabled unit is a link that `systemctl enable` made.
        let wants = Path::new(UNIT_DIR).join("multi-user.target.wants").join(&unit);
        if wants.symlink_metadata().is_ok() {
            act(&wants.display().to_string(), "removed", &|| remove_file(&wants))?;
        } else {
            report.unchanged(&format!("{unit} at boot"), "not enabled");
        }
    }

    // Before the unit file goes: it names the account to delete, so a second run after a
    // failure here still knows it.
    if purge {
        purge_account(text.as_deref(), report, &act)?;
        for dir in [Path::new("/var/lib").join(name), Path::new("/var/cache").join(name)] {
            if dir.exists() {
                act(&format!("directory {}", dir.display()), "deleted", &|| remove_dir(&dir))?;
            } else {
                report.unchanged(&format!("directory {}", dir.display()), "absent");
            }
        }
        let logs = Path::new("/var/log").join(name);
        if logs.exists() {
            report.note(&format!("the logs in {} are kept: delete them yourself when no longer needed", logs.display()));
        }
    }

    if text.is_some() {
        act(&path.display().to_string(), "removed", &|| remove_file(&path))?;
        if host::systemd_runs() {
            act("systemctl daemon-reload", "run", &|| host::run("systemctl", &["daemon-reload"]))?;
        }
    } else {
        report.unchanged(&path.display().to_string(), "absent");
    }
    Ok(())
}

type Act<'a> = dyn Fn(&str, &str, &dyn Fn() -> Result<(), String>) -> Result<(), String> + 'a;

/// Deletes the account the unit runs as, if `install` created it.
fn purge_account(text: Option<&str>, report: &Report, act: &Act<'_>) -> Result<(), String> {
    let Some(text) = text else {
        report.unchanged("user", "no unit file left to name it");
        return Ok(());
    };
    let Some(user) = text.lines().find_map(|l| l.strip_prefix("User=")).map(str::to_string) else {
        return Ok(());
    };
    if !text.contains(&unit::created_user_marker(&user)) {
        report.note(&format!("user {user} is kept: ferrogate install did not create it"));
    } else if host::account(&user).is_some() {
        act(&format!("user {user}"), "deleted (userdel)", &|| host::run("userdel", &[&user]))?;
    } else {
        report.unchanged(&format!("user {user}"), "absent");
    }
    Ok(())
}

fn remove_file(path: &PathBuf) -> Result<(), String> {
    std::fs::remove_file(path).map_err(|e| format!("cannot remove {}: {e}", path.display()))
}

fn remove_dir(path: &PathBuf) -> Result<(), String> {
    std::fs::remove_dir_all(path).map_err(|e| format!("cannot delete {}: {e}", path.display()))
}
