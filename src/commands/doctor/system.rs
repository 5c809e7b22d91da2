//! The host's own upkeep: automatic security updates (tutorial 3.1), the account the
//! service runs as (tutorial 3.2 and gunicorn_start's USER=), and a synchronised clock.

use std::path::{Path, PathBuf};

use super::Server;
use super::host::Host;
use super::report::Finding;

pub const UPDATES: &str = "unattended-upgrades";
pub const SERVICE_USER: &str = "service-user";
pub const TIME: &str = "time-sync";

pub fn updates(host: &Host) -> Result<Finding, String> {
    if host.exists(Path::new("/etc/apt")) || host.exists(Path::new("/etc/debian_version")) {
        return apt(host);
    }
    if host.exists(Path::new("/etc/dnf")) || host.exists(Path::new("/etc/redhat-release")) {
        return dnf(host);
    }
    Ok(Finding::warn(UPDATES, "neither apt nor dnf here: automatic updates not checked", "make sure your distribution installs security updates by itself"))
}

fn apt(host: &Host) -> Result<Finding, String> {
    let dir = Path::new("/etc/apt/apt.conf.d");
    let installed = host.exists(Path::new("/usr/bin/unattended-upgrade")) || host.exists(&dir.join("50unattended-upgrades"));
    if !installed {
        return Ok(Finding::fail(
            UPDATES,
            "unattended-upgrades is not installed: security fixes wait until someone runs apt upgrade",
            "`apt install unattended-upgrades && dpkg-reconfigure -plow unattended-upgrades` (tutorial 3.1)",
        ));
    }
    // apt reads the parts in name order and a later value wins; it skips names with other
    // extensions than .conf (dpkg's .dpkg-old leftovers, editors' backups).
    let parts: Vec<PathBuf> = host
        .list(dir)?
        .into_iter()
        .filter(|n| n.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b)) && (!n.contains('.') || n.ends_with(".conf")))
        .map(|n| dir.join(n))
        .collect();
    let (mut periodic, mut reboot) = (None, None);
    for part in parts {
        let Some(text) = host.read(&part)? else { continue };
        for (key, value) in apt_settings(&text) {
            match key.as_str() {
                "apt::periodic::unattended-upgrade" => periodic = Some((value, part.clone())),
                "unattended-upgrade::automatic-reboot" => reboot = Some(value),
                _ => {}
            }
        }
    }
    let Some((value, file)) = periodic.filter(|(v, _)| !v.is_empty() && !v.starts_with('0')) else {
        return Ok(Finding::fail(
            UPDATES,
            "unattended-upgrades is installed but never runs (APT::Periodic::Unattended-Upgrade is 0 or not set)",
            "`dpkg-reconfigure -plow unattended-upgrades`, or put APT::Periodic::Unattended-Upgrade \"1\"; in /etc/apt/apt.conf.d/20auto-upgrades",
        ));
    };
    let runs = format!("security updates install by themselves (APT::Periodic::Unattended-Upgrade \"{value}\" in {})", file.display());
    if !reboot.is_some_and(|r| r == "true" || r == "1") {
        return Ok(Finding::warn(
            UPDATES,
            format!("{runs}, but Automatic-Reboot is off: a fixed kernel waits for someone to reboot"),
            "set Unattended-Upgrade::Automatic-Reboot \"true\"; (and Automatic-Reboot-Time \"04:00\") in /etc/apt/apt.conf.d/50unattended-upgrades, as tutorial 3.1 does",
        ));
    }
    Ok(Finding::pass(UPDATES, format!("{runs}, rebooting when a kernel needs it")))
}

/// `Key "value";` lines of an apt configuration part, keys lowercased; comments dropped.
fn apt_settings(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let line = line.split("//").next()?.trim();
            if line.starts_with('#') {
                return None;
            }
            let (key, rest) = line.split_once(char::is_whitespace)?;
            let value = rest.trim().trim_end_matches(';').trim().trim_matches('"');
            Some((key.to_ascii_lowercase(), value.to_ascii_lowercase()))
        })
        .collect()
}

fn dnf(host: &Host) -> Result<Finding, String> {
    for timer in ["dnf-automatic-install.timer", "dnf5-automatic-install.timer"] {
        if let Some(link) = host.unit_enabled(timer)? {
            return Ok(Finding::pass(UPDATES, format!("{timer} installs updates by itself ({})", link.display())));
        }
    }
    let fix = "`dnf install dnf-automatic && systemctl enable --now dnf-automatic-install.timer`";
    for timer in ["dnf-automatic.timer", "dnf5-automatic.timer"] {
        if host.unit_enabled(timer)?.is_some() {
            let conf = host.read(Path::new("/etc/dnf/automatic.conf"))?.unwrap_or_default();
            let applies = conf.lines().any(|l| l.split_once('=').is_some_and(|(k, v)| k.trim() == "apply_updates" && matches!(v.trim(), "yes" | "true" | "1")));
            if applies {
                return Ok(Finding::pass(UPDATES, format!("{timer} with apply_updates = yes")));
            }
            return Ok(Finding::warn(UPDATES, format!("{timer} downloads updates but does not install them (apply_updates is not yes in /etc/dnf/automatic.conf)"), "set apply_updates = yes in /etc/dnf/automatic.conf"));
        }
    }
    Ok(Finding::fail(UPDATES, "no dnf-automatic timer is enabled: security fixes wait until someone runs dnf upgrade", fix))
}

/// The users an installed ferrogate unit runs as: `User=` (or `--user` on ExecStart) in
/// /etc/systemd/system/ferrogate*.service and its drop-ins, the last one winning.
pub fn unit_users(host: &Host) -> Result<Vec<(PathBuf, String)>, String> {
    let system = Path::new("/etc/systemd/system");
    let mut out = Vec::new();
    for unit in host.glob(system, "ferrogate*.service")? {
        let mut files = vec![unit.clone()];
        files.extend(host.glob(&PathBuf::from(format!("{}.d", unit.display())), "*.conf")?);
        let mut user = None;
        for file in files {
            for line in host.read(&file)?.unwrap_or_default().lines().map(str::trim) {
                if let Some(u) = line.strip_prefix("User=") {
                    user = Some(u.trim().to_string());
                } else if let Some(exec) = line.strip_prefix("ExecStart=") {
                    let args: Vec<&str> = exec.split_whitespace().collect();
                    let flag = args.windows(2).find(|w| w[0] == "--user" || w[0] == "-u").map(|w| w[1]);
                    if let Some(u) = flag.or_else(|| args.iter().find_map(|a| a.strip_prefix("--user="))) {
                        user = Some(u.to_string());
                    }
                }
            }
        }
        if let Some(user) = user.filter(|u| !u.is_empty()) {
            out.push((unit, user));
        }
    }
    Ok(out)
}

pub fn service_user(host: &Host, server: &Server) -> Result<Finding, String> {
    let is_root = |user: &str| -> Result<bool, String> { Ok(user == "root" || host.uid_of(user)? == Some(0)) };
    let fix = "create a system user (`adduser --system --group app`) and run the server with --user app, or install it with `sudo ferrogate install --user app`";
    if let Some(user) = &server.user {
        if is_root(user)? {
            return Ok(Finding::warn(SERVICE_USER, format!("--user {user}: the app runs as root, so a bug in it can take the whole host"), fix));
        }
        if host.uid_of(user)?.is_none() {
            return Ok(Finding::warn(SERVICE_USER, format!("--user {user}: no such user in /etc/passwd"), format!("create it: `adduser --system --group {user}`")));
        }
        return Ok(Finding::pass(SERVICE_USER, format!("the app runs as {user} (--user)")));
    }
    let units = unit_users(host)?;
    for (unit, user) in &units {
        if !is_root(user)? {
            return Ok(Finding::pass(SERVICE_USER, format!("{} runs it as {user}", unit.display())));
        }
    }
    let why = match units.first() {
        Some((unit, user)) => format!("{} runs it as {user}", unit.display()),
        None => "neither --user nor an installed unit (/etc/systemd/system/ferrogate*.service) names a non-root user".into(),
    };
    Ok(Finding::warn(SERVICE_USER, format!("{why}: started as root, the app would keep root's rights"), fix))
}

/// Time services: (name, configuration files, units that start it).
const CLOCKS: &[(&str, &[&str], &[&str])] = &[
    ("chrony", &["/etc/chrony/chrony.conf", "/etc/chrony.conf"], &["chrony.service", "chronyd.service"]),
    ("ntpd", &["/etc/ntpsec/ntp.conf", "/etc/ntp.conf"], &["ntpsec.service", "ntp.service", "ntpd.service"]),
    ("openntpd", &["/etc/openntpd/ntpd.conf"], &["openntpd.service"]),
];

pub fn time_sync(host: &Host) -> Result<Finding, String> {
    if let Some(link) = host.unit_enabled("systemd-timesyncd.service")? {
        return Ok(Finding::pass(TIME, format!("systemd-timesyncd is enabled ({})", link.display())));
    }
    if host.exists(Path::new("/run/systemd/timesync/synchronized")) {
        return Ok(Finding::pass(TIME, "systemd-timesyncd has synchronised the clock (/run/systemd/timesync/synchronized)"));
    }
    let mut idle = None;
    for (name, confs, units) in CLOCKS {
        let Some(conf) = confs.iter().find(|c| host.exists(Path::new(c))) else { continue };
        for unit in *units {
            if let Some(link) = host.unit_enabled(unit)? {
                return Ok(Finding::pass(TIME, format!("{name} ({conf}, enabled by {})", link.display())));
            }
        }
        idle.get_or_insert((*name, units[0]));
    }
    let why = "certificate validity, log times and ACME orders depend on a correct clock";
    Ok(match idle {
        Some((name, unit)) => Finding::warn(TIME, format!("{name} is configured but not enabled at boot: {why}"), format!("`systemctl enable --now {unit}`")),
        None => Finding::warn(TIME, format!("no time synchronisation (systemd-timesyncd, chrony or ntpd): {why}"), "`apt install systemd-timesyncd` (or chrony)"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::doctor::report::Status;
    use crate::commands::doctor::testing::FakeRoot;

    const AUTO: (&str, &str) = ("/etc/apt/apt.conf.d/20auto-upgrades", "APT::Periodic::Update-Package-Lists \"1\";\nAPT::Periodic::Unattended-Upgrade \"1\"; // daily\n");
    const REBOOT: (&str, &str) = ("/etc/apt/apt.conf.d/50unattended-upgrades", "// Unattended-Upgrade::Automatic-Reboot \"false\";\nUnattended-Upgrade::Automatic-Reboot \"true\";\n");

    fn updates_of(files: &[(&str, &str)]) -> Status {
        updates(&FakeRoot::new(files).host()).unwrap().status
    }

    #[test]
    fn apt_periodic_settings_read_in_order_with_the_last_winning() {
        assert_eq!(updates_of(&[AUTO, REBOOT]), Status::Pass);
        assert_eq!(updates_of(&[AUTO, ("/etc/apt/apt.conf.d/50unattended-upgrades", "")]), Status::Warn, "no automatic reboot");
        assert_eq!(updates_of(&[AUTO, REBOOT, ("/etc/apt/apt.conf.d/99off", "APT::Periodic::Unattended-Upgrade \"0\";\n")]), Status::Fail);
        assert_eq!(updates_of(&[AUTO, REBOOT, ("/etc/apt/apt.conf.d/99off.dpkg-old", "APT::Periodic::Unattended-Upgrade \"0\";\n")]), Status::Pass, "ignored name");
        assert_eq!(updates_of(&[("/etc/apt/apt.conf.d/70debconf", "")]), Status::Fail, "not installed");
    }

    #[test]
    fn dnf_automatic_timers() {
        let root = FakeRoot::new(&[("/etc/redhat-release", "Rocky Linux 9\n")]);
        assert_eq!(updates(&root.host()).unwrap().status, Status::Fail);
        root.symlink("/etc/systemd/system/timers.target.wants/dnf-automatic.timer", "/usr/lib/systemd/system/dnf-automatic.timer");
        assert_eq!(updates(&root.host()).unwrap().status, Status::Warn);
        root.write("/etc/dnf/automatic.conf", "[commands]\napply_updates = yes\n");
        assert_eq!(updates(&root.host()).unwrap().status, Status::Pass);
    }

    #[test]
    fn the_service_user_comes_from_the_options_or_the_unit() {
        let passwd = ("/etc/passwd", "root:x:0:0:root:/root:/bin/bash\napp:x:999:999::/srv/app:/usr/sbin/nologin\n");
        let root = FakeRoot::new(&[passwd]);
        let with = |user: Option<&str>| service_user(&root.host(), &Server { user: user.map(String::from), ..Server::default() }).unwrap().status;
        assert_eq!(with(Some("app")), Status::Pass);
        assert_eq!(with(Some("root")), Status::Warn);
        assert_eq!(with(Some("nobody-here")), Status::Warn);
        assert_eq!(with(None), Status::Warn);
        root.write("/etc/systemd/system/ferrogate.service", "[Service]\nUser=root\nExecStart=/usr/bin/ferrogate main:app\n");
        assert_eq!(with(None), Status::Warn);
        root.write("/etc/systemd/system/ferrogate.service.d/user.conf", "[Service]\nUser=app\n");
        assert_eq!(with(None), Status::Pass);
        assert_eq!(unit_users(&root.host()).unwrap()[0].1, "app");
    }

    #[test]
    fn time_services_count_when_enabled() {
        let root = FakeRoot::new(&[("/etc/chrony/chrony.conf", "pool 2.debian.pool.ntp.org iburst\n")]);
        let f = time_sync(&root.host()).unwrap();
        assert_eq!(f.status, Status::Warn);
        assert!(f.fix.unwrap().contains("enable --now chrony.service"));
        root.symlink("/etc/systemd/system/multi-user.target.wants/chrony.service", "/lib/systemd/system/chrony.service");
        assert_eq!(time_sync(&root.host()).unwrap().status, Status::Pass);
        let root = FakeRoot::new(&[]);
        assert_eq!(time_sync(&root.host()).unwrap().status, Status::Warn);
        root.symlink("/etc/systemd/system/sysinit.target.wants/systemd-timesyncd.service", "/lib/systemd/system/systemd-timesyncd.service");
        assert_eq!(time_sync(&root.host()).unwrap().status, Status::Pass);
    }
}
