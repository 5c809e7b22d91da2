//! The tutorial's step 3.3: something that bans addresses that keep guessing SSH logins.
//! fail2ban with its sshd jail on (Debian turns it on in jail.d/defaults-debian.conf),
//! sshguard, or crowdsec with a bouncer that actually blocks.

use std::path::{Path, PathBuf};

use super::host::Host;
use super::report::{Finding, Status};
use super::ssh::SshdConfig;

pub const CHECK: &str = "brute-force";
const FAIL2BAN: &str = "/etc/fail2ban";

pub fn check(host: &Host, sshd: Option<&SshdConfig>) -> Result<Finding, String> {
    let Some(sshd) = sshd else { return Ok(Finding::pass(CHECK, "no SSH server to protect")) };
    let mut missing = Vec::new();
    if host.exists(Path::new(FAIL2BAN)) || host.exists(Path::new("/usr/bin/fail2ban-server")) {
        match fail2ban_sshd(host)? {
            Some(file) => return Ok(Finding::pass(CHECK, format!("fail2ban bans SSH password guessers (sshd jail enabled in {})", file.display()))),
            None => missing.push("fail2ban is installed but its sshd jail is off".to_string()),
        }
    }
    for path in ["/usr/sbin/sshguard", "/etc/sshguard/sshguard.conf", "/etc/sshguard.conf"] {
        if host.exists(Path::new(path)) {
            return Ok(Finding::pass(CHECK, format!("sshguard ({path})")));
        }
    }
    if host.exists(Path::new("/etc/crowdsec/config.yaml")) || host.exists(Path::new("/usr/bin/crowdsec")) {
        let bouncers = host.list(Path::new("/etc/crowdsec/bouncers"))?;
        if !bouncers.is_empty() {
            return Ok(Finding::pass(CHECK, format!("crowdsec, blocking through /etc/crowdsec/bouncers/{}", bouncers[0])));
        }
        missing.push("crowdsec detects attacks but no bouncer (/etc/crowdsec/bouncers) blocks them".into());
    }
    let what = if missing.is_empty() { "no fail2ban, sshguard or crowdsec".to_string() } else { missing.join("; ") };
    // With passwords off, guessing cannot succeed: a ban only saves log noise and CPU.
    let (status, why) = if sshd.passwords_accepted() {
        (Status::Fail, "SSH accepts passwords, so nothing stops endless guessing")
    } else {
        (Status::Warn, "SSH takes keys only, so guessing cannot succeed, but nothing bans the guessers")
    };
    let fix = if missing.iter().any(|m| m.starts_with("fail2ban")) {
        "enable the sshd jail: put `[sshd]` and `enabled = true` in /etc/fail2ban/jail.local, then `systemctl restart fail2ban`"
    } else {
        "`apt install fail2ban` (Debian enables its sshd jail), or install sshguard"
    };
    Ok(Finding::with(CHECK, status, format!("{what}: {why}"), fix))
}

/// The file that turns the sshd jail on last, None when it ends up off. fail2ban reads
/// jail.conf, jail.d/*.conf, jail.local, jail.d/*.local, each later value winning; a
/// jail's own `enabled` beats [DEFAULT]'s.
fn fail2ban_sshd(host: &Host) -> Result<Option<PathBuf>, String> {
    let dir = Path::new(FAIL2BAN);
    let mut files = vec![dir.join("jail.conf")];
    files.extend(host.glob(&dir.join("jail.d"), "*.conf")?);
    files.push(dir.join("jail.local"));
    files.extend(host.glob(&dir.join("jail.d"), "*.local")?);
    let (mut jail, mut default): (Option<(bool, PathBuf)>, Option<(bool, PathBuf)>) = (None, None);
    for file in files {
        let Some(text) = host.read(&file)? else { continue };
        for (section, enabled) in enabled_lines(&text) {
            match section.as_str() {
                "sshd" => jail = Some((enabled, file.clone())),
                "DEFAULT" => default = Some((enabled, file.clone())),
                _ => {}
            }
        }
    }
    Ok(jail.or(default).filter(|(on, _)| *on).map(|(_, file)| file))
}

/// Each `enabled = ...` of an INI text, with its section.
fn enabled_lines(text: &str) -> Vec<(String, bool)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with(['#', ';']) || line.starts_with([' ', '\t']) {
            continue;
        }
        if let Some(name) = trimmed.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            section = name.trim().to_string();
        } else if let Some((key, value)) = trimmed.split_once(['=', ':']) {
            if key.trim().eq_ignore_ascii_case("enabled") {
                let value = value.split(['#', ';']).next().unwrap_or("").trim().to_ascii_lowercase();
                out.push((section.clone(), matches!(value.as_str(), "true" | "yes" | "1" | "on")));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::doctor::ssh;
    use crate::commands::doctor::testing::FakeRoot;

    const KEYS_ONLY: (&str, &str) = ("/etc/ssh/sshd_config", "PasswordAuthentication no\n");

    fn status(files: &[(&str, &str)]) -> Status {
        let root = FakeRoot::new(files);
        let host = root.host();
        let sshd = ssh::read(&host).unwrap();
        check(&host, sshd.as_ref()).unwrap().status
    }

    #[test]
    fn debian_enables_the_sshd_jail_and_a_later_file_can_turn_it_off() {
        let debian = ("/etc/fail2ban/jail.d/defaults-debian.conf", "[sshd]\nenabled = true\n");
        assert_eq!(status(&[KEYS_ONLY, debian]), Status::Pass);
        assert_eq!(status(&[KEYS_ONLY, debian, ("/etc/fail2ban/jail.local", "[sshd]\nenabled = false\n")]), Status::Warn);
        assert_eq!(status(&[KEYS_ONLY, ("/etc/fail2ban/jail.local", "[DEFAULT]\nenabled: yes ; all jails\n")]), Status::Pass);
        assert_eq!(status(&[KEYS_ONLY, ("/etc/fail2ban/jail.conf", "[sshd]\nport = ssh\n")]), Status::Warn);
    }

    #[test]
    fn nothing_fails_when_passwords_are_accepted_and_warns_when_keys_only() {
        assert_eq!(status(&[("/etc/ssh/sshd_config", "")]), Status::Fail);
        assert_eq!(status(&[KEYS_ONLY]), Status::Warn);
        assert_eq!(status(&[KEYS_ONLY, ("/etc/sshguard/sshguard.conf", "")]), Status::Pass);
        assert_eq!(status(&[KEYS_ONLY, ("/etc/crowdsec/config.yaml", "")]), Status::Warn, "no bouncer");
        assert_eq!(status(&[KEYS_ONLY, ("/etc/crowdsec/config.yaml", ""), ("/etc/crowdsec/bouncers/crowdsec-firewall-bouncer.yaml", "")]), Status::Pass);
        assert_eq!(status(&[]), Status::Pass, "no SSH server");
    }
}
