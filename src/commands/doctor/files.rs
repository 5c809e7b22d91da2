//! The server's own files: private keys no one else may read, a control socket only its
//! owner may use, certificates that have not run out (certbot's job in the tutorial,
//! step 8), and room on the disks that hold its logs and its state.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::Server;
use super::host::{Host, Space};
use super::report::{Finding, Status};
use crate::tls::store;

pub const KEYS: &str = "key-permissions";
pub const SOCKETS: &str = "socket-permissions";
pub const CERTS: &str = "certificates";
pub const DISK: &str = "disk-space";

const DAY: u64 = 86_400;
const CERT_WARN_DAYS: u64 = 14;
const MIB: u64 = 1024 * 1024;
const DISK_FAIL: u64 = 100 * MIB;
const DISK_WARN: u64 = 1024 * MIB;
const DISK_WARN_PERCENT: u64 = 5;

/// `dir/*/name`: the file `name` in each subdirectory (certs/*/key.pem).
fn in_subdirs(host: &Host, dir: &Path, name: &str) -> Result<Vec<PathBuf>, String> {
    Ok(host.list(dir)?.into_iter().map(|sub| dir.join(sub).join(name)).filter(|p| host.exists(p)).collect())
}

pub fn key_permissions(host: &Host, server: &Server) -> Result<Finding, String> {
    let mut keys: Vec<PathBuf> = server.keyfile.iter().cloned().collect();
    keys.extend(in_subdirs(host, &store::certs_dir(&server.state_dir), "key.pem")?);
    // ACME account keys: whoever holds one can revoke the certificates it ordered.
    keys.extend(host.glob(&store::accounts_dir(&server.state_dir), "*.json")?);
    if keys.is_empty() {
        return Ok(Finding::pass(KEYS, format!("no private key configured (--ssl-keyfile) or stored in {}", server.state_dir.display())));
    }
    let mut owners = vec![0];
    for user in server.user.iter().cloned().chain(super::system::unit_users(host)?.into_iter().map(|(_, u)| u)) {
        owners.extend(host.uid_of(&user)?);
    }
    let (mut bad, mut odd, mut fine) = (Vec::new(), Vec::new(), Vec::new());
    for key in &keys {
        let Some(meta) = host.metadata(key)? else {
            odd.push(format!("{} does not exist", key.display()));
            continue;
        };
        let mode = meta.mode() & 0o777;
        let owner = host.user_name(meta.uid());
        let said = format!("{} ({mode:04o} {owner})", key.display());
        if mode & 0o007 != 0 || mode & 0o030 != 0 {
            bad.push(said);
        } else if !owners.contains(&meta.uid()) {
            odd.push(format!("{said} is owned by neither root nor the service user"));
        } else {
            fine.push(said);
        }
    }
    if !bad.is_empty() {
        let first = bad[0].split(" (").next().unwrap_or_default().to_string();
        return Ok(Finding::fail(KEYS, format!("private keys open to other users: {}", bad.join(", ")), format!("`chmod 600 {first}` (0640 with a group that needs it) and renew the certificate if others could read the key")));
    }
    if !odd.is_empty() {
        return Ok(Finding::warn(KEYS, odd.join("; "), "give keys to root or the service user: `chown root:root KEY && chmod 600 KEY`"));
    }
    Ok(Finding::pass(KEYS, format!("no other user can read {}", fine.join(", "))))
}

pub fn socket_permissions(host: &Host, server: &Server) -> Result<Finding, String> {
    let mut notes = Vec::new();
    let control = &server.control_socket;
    match host.metadata(control)? {
        None => notes.push(format!("no control socket at {} (no server running)", control.display())),
        Some(meta) => {
            let mode = meta.mode() & 0o777;
            let owner = host.user_name(meta.uid());
            if mode & 0o077 != 0 {
                return Ok(Finding::fail(
                    SOCKETS,
                    format!("control socket {} is {mode:04o} {owner}: other users can stop, reload or reconfigure the server", control.display()),
                    format!("`chmod 600 {}` (the server makes it 0600: something changed it)", control.display()),
                ));
            }
            let kind = if meta.file_type().is_socket() { "control socket" } else { "control socket path (not a socket)" };
            notes.push(format!("{kind} {} {mode:04o} {owner}", control.display()));
        }
    }
    for path in &server.unix_sockets {
        match host.metadata(path)? {
            Some(meta) => notes.push(format!("unix listener {} {:04o} {}", path.display(), meta.mode() & 0o777, host.user_name(meta.uid()))),
            None => notes.push(format!("unix listener {} not created yet", path.display())),
        }
    }
    Ok(Finding::pass(SOCKETS, notes.join("; ")))
}

pub fn certificates(host: &Host, server: &Server, now: SystemTime) -> Result<Finding, String> {
    let mut certs: Vec<PathBuf> = server.certfile.iter().cloned().collect();
    certs.extend(in_subdirs(host, &store::certs_dir(&server.state_dir), "cert.pem")?);
    if certs.is_empty() {
        return Ok(Finding::pass(CERTS, format!("no certificate configured (--ssl-certfile, --domain) or stored in {}", server.state_dir.display())));
    }
    let acme_fix = "`ferrogate certs renew` with the server's options (and read the server's log for why renewal failed)";
    let mut worst: Option<(Status, String, String)> = None;
    let mut dates = Vec::new();
    for path in &certs {
        let fix = if server.certfile.as_ref() == Some(path) {
            format!("put a renewed certificate in {} (or use --domain for automatic renewal) and reload the server", path.display())
        } else {
            acme_fix.to_string()
        };
        let (status, said) = match host.read(path)? {
            None => (Status::Fail, format!("{} does not exist", path.display())),
            Some(pem) => match crate::tls::acme::cert::leaf_info(&pem) {
                Err(e) => (Status::Fail, format!("{}: {e}", path.display())),
                Ok(leaf) => {
                    let until = httpdate::fmt_http_date(leaf.not_after);
                    match leaf.not_after.duration_since(now) {
                        Err(_) => (Status::Fail, format!("{} expired on {until}", path.display())),
                        Ok(left) if left < Duration::from_secs(CERT_WARN_DAYS * DAY) => (Status::Warn, format!("{} expires in {} days ({until})", path.display(), left.as_secs() / DAY)),
                        Ok(left) => (Status::Pass, format!("{} valid until {until} ({} days)", path.display(), left.as_secs() / DAY)),
                    }
                }
            },
        };
        if worst.as_ref().is_none_or(|(s, _, _)| status > *s) {
            worst = Some((status, said.clone(), fix));
        }
        dates.push(said);
    }
    let (status, said, fix) = worst.expect("at least one certificate");
    Ok(match status {
        Status::Pass => Finding::pass(CERTS, dates.join("; ")),
        _ => Finding::with(CERTS, status, said, fix),
    })
}

pub fn disk(host: &Host, server: &Server) -> Result<Finding, String> {
    let mut places: Vec<(&str, PathBuf)> = vec![("state", server.state_dir.clone())];
    for log in &server.log_files {
        // `--log-file app.log` is in the working directory.
        places.push(("log", log.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf()));
    }
    // Logs written to stderr end up in the journal, under /var/log.
    places.push(("system logs", PathBuf::from("/var/log")));
    let mut filesystems: Vec<(Space, Vec<String>)> = Vec::new();
    for (what, path) in places {
        let (_, space) = host.space(&path)?;
        let label = format!("{what} {}", path.display());
        match filesystems.iter_mut().find(|(s, _)| s.device == space.device) {
            Some((_, labels)) => labels.push(label),
            None => filesystems.push((space, vec![label])),
        }
    }
    let mut worst = Status::Pass;
    let mut lines = Vec::new();
    for (space, labels) in &filesystems {
        let percent = (space.available * 100).checked_div(space.total).unwrap_or(0);
        let status = disk_status(space.available, percent);
        worst = worst.max(status);
        lines.push(format!("{}: {} free ({percent} %)", labels.join(", "), human(space.available)));
    }
    let finding = lines.join("; ");
    Ok(Finding::with(DISK, worst, finding, "free space (`journalctl --vacuum-size=200M`, `apt clean`, rotate or delete old logs: see the logrotate snippet in the docs) or grow the disk"))
}

/// Under 100 MiB a log write can fail any minute; under 1 GiB or 5 % it will soon.
pub fn disk_status(available: u64, percent: u64) -> Status {
    if available < DISK_FAIL {
        Status::Fail
    } else if available < DISK_WARN || percent < DISK_WARN_PERCENT {
        Status::Warn
    } else {
        Status::Pass
    }
}

fn human(bytes: u64) -> String {
    if bytes >= 1024 * MIB {
        format!("{:.1} GiB", bytes as f64 / (1024 * MIB) as f64)
    } else {
        format!("{} MiB", bytes / MIB)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::doctor::testing::FakeRoot;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn keys_open_to_others_fail() {
        let root = FakeRoot::new(&[]);
        let key = root.write("/etc/ssl/private/app.key", "k");
        let stored = root.write("/var/lib/fg/certs/example.com/key.pem", "k");
        let server = Server { keyfile: Some("/etc/ssl/private/app.key".into()), state_dir: "/var/lib/fg".into(), user: Some(users::current()), ..Server::default() };
        chmod(&key, 0o600);
        chmod(&stored, 0o640);
        let f = key_permissions(&root.host(), &server).unwrap();
        assert_eq!(f.status, Status::Pass, "{f:?}");
        assert!(f.finding.contains("/var/lib/fg/certs/example.com/key.pem (0640"), "{f:?}");
        chmod(&stored, 0o644);
        let f = key_permissions(&root.host(), &server).unwrap();
        assert_eq!(f.status, Status::Fail);
        assert!(f.fix.unwrap().contains("chmod 600 /var/lib/fg/certs/example.com/key.pem"));
    }

    #[test]
    fn disk_thresholds() {
        assert_eq!(disk_status(50 * MIB, 50), Status::Fail);
        assert_eq!(disk_status(500 * MIB, 50), Status::Warn);
        assert_eq!(disk_status(100 * 1024 * MIB, 4), Status::Warn);
        assert_eq!(disk_status(2 * 1024 * MIB, 50), Status::Pass);
        assert_eq!(human(1536 * MIB), "1.5 GiB");
    }

    #[test]
    fn disk_space_is_measured_where_logs_and_state_go() {
        let root = FakeRoot::new(&[]);
        let server = Server { state_dir: "/var/lib/not-yet".into(), log_files: vec!["app.log".into(), "/var/log/fg/access.log".into()], ..Server::default() };
        let f = disk(&root.host(), &server).unwrap();
        for label in ["state /var/lib/not-yet", "log .", "log /var/log/fg", "system logs /var/log"] {
            assert!(f.finding.contains(label), "{label}: {f:?}");
        }
        assert!(f.finding.contains(" free ("), "{f:?}");
    }

    #[test]
    fn certificates_by_expiry() {
        let root = FakeRoot::new(&[]);
        let (pem, not_after) = self_signed();
        root.write("/etc/ssl/app.pem", &pem);
        let server = Server { certfile: Some("/etc/ssl/app.pem".into()), state_dir: "/var/lib/none".into(), ..Server::default() };
        let at = |days_before: i64| {
            let secs = days_before * DAY as i64;
            if secs >= 0 { not_after - Duration::from_secs(secs as u64) } else { not_after + Duration::from_secs((-secs) as u64) }
        };
        assert_eq!(certificates(&root.host(), &server, at(30)).unwrap().status, Status::Pass);
        assert_eq!(certificates(&root.host(), &server, at(3)).unwrap().status, Status::Warn);
        let f = certificates(&root.host(), &server, at(-1)).unwrap();
        assert_eq!(f.status, Status::Fail);
        assert!(f.finding.contains("expired"), "{f:?}");
        root.write("/etc/ssl/app.pem", "not a certificate");
        assert_eq!(certificates(&root.host(), &server, at(30)).unwrap().status, Status::Fail);
    }

    fn self_signed() -> (String, SystemTime) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["example.com".to_string()]).unwrap();
        let not_after = params.not_after;
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), SystemTime::UNIX_EPOCH + Duration::from_secs(not_after.unix_timestamp() as u64))
    }

    mod users {
        pub fn current() -> String {
            // SAFETY: getuid cannot fail and has no preconditions.
            unsafe { libc::getuid() }.to_string()
        }
    }
}
