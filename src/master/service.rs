//! What running as a service adds around the master: the account it runs as (--user,
//! --group, --umask), the files it keeps (--pid, --control-socket), and the moment it
//! stops being root.

use std::path::{Path, PathBuf};

use super::control::{self, ControlSocket};
use super::pidfile::PidFile;
use super::privilege::{self, Account};
use crate::config::Config;
use crate::config::tls::CertSource;
use crate::http::listeners::Bound;

pub struct Service {
    /// The account workers are switched to when the master is root; None runs them as the master runs.
    pub account: Option<Account>,
    pub control: Option<ControlSocket>,
    /// Removed on drop (if still ours).
    pid_file: Option<PidFile>,
    /// A successor writes --pid only once it serves (`take_over`).
    pid_file_pending: Option<PathBuf>,
}

/// --user/--group looked up, --umask applied; the warning for root without --user.
pub fn account(config: &Config) -> Result<Option<Account>, String> {
    let s = &config.service;
    if let Some(mask) = s.umask {
        privilege::set_umask(mask);
    }
    let euid = privilege::effective_uid();
    let account = match (&s.user, &s.group) {
        (Some(user), group) => Account::lookup(user, group.as_deref())?,
        // --group alone: this user, that group.
        (None, Some(group)) => Account::lookup(&euid.to_string(), Some(group))?,
        (None, None) => return Ok(None),
    };
    if euid != 0 && euid != account.uid {
        return Err(format!(
            "--user {}: only root can switch to another user, and this server runs as uid {euid}; start it as root (or under systemd with User={}) or leave --user out",
            account.name, account.name
        ));
    }
    if euid != 0 {
        // Already that user: nothing to switch.
        return Ok(None);
    }
    Ok(Some(account))
}

impl Service {
    /// Runs once the listeners are bound and the keys are read: gives the unix sockets to
    /// the account, writes --pid, binds the control socket, and drops root for good when
    /// nothing the master does later needs it.
    pub fn set_up(config: &Config, python: &Path, account: Option<Account>, listeners: &[Bound], take_over: bool) -> Result<Service, String> {
        if let Some(a) = &account {
            reachable(a, python, &config.app.app_dir)?;
            for path in listeners.iter().filter_map(|l| l.created_path.as_ref()) {
                privilege::give(path, a)?;
            }
        }
        if account.is_none() && config.service.user.is_none() && privilege::effective_uid() == 0 {
            crate::warn!("{}", privilege::ROOT_WARNING);
        }
        // A successor's files wait until it serves: if it fails first, the old master's
        // --pid and control socket must still be there.
        let (pid_file, pid_file_pending) = match take_over {
            true => (None, config.service.pid_file.clone()),
            false => (config.service.pid_file.as_deref().map(PidFile::write).transpose()?, None),
        };
        let control = control::bind(&config.service.control_socket, account.as_ref(), take_over)?;
        if let Some(a) = &account {
            let keep = reasons_to_stay_root(config, a);
            if keep.is_empty() {
                privilege::become_user(a)?;
                crate::info!("Running as user {} (uid {}, gid {}): the master and every worker", a.name, a.uid, a.gid);
            } else {
                crate::info!("Workers run as user {} (uid {}); the master stays root: {}", a.name, a.uid, keep.join("; "));
            }
        }
        Ok(Service { account, control, pid_file, pid_file_pending })
    }

    /// A successor serves: --pid and the control socket become its own.
    pub fn take_over(&mut self) {
        if let Some(path) = self.pid_file_pending.take() {
            match PidFile::write(&path) {
                Ok(f) => self.pid_file = Some(f),
                Err(e) => crate::error!("{e}"),
            }
        }
        if let Some(Err(e)) = self.control.as_mut().map(ControlSocket::claim) {
            crate::error!("{e}");
        }
    }
}

/// The workers run the interpreter and import the app as the account: say at once,
/// with the directory in the way, when it cannot (a virtualenv under /root is the usual case).
fn reachable(account: &Account, python: &Path, app_dir: &Path) -> Result<(), String> {
    if let Some(blocked) = account.blocked_at(python, 0o1) {
        return Err(format!(
            "--user {}: that user cannot run the Python interpreter {} ({} is closed to it); put the virtualenv where it can read it, e.g. python3 -m venv /srv/app/venv, or open the directory (chmod o+x)",
            account.name,
            python.display(),
            blocked.display()
        ));
    }
    if let Some(blocked) = account.blocked_at(app_dir, 0o5) {
        return Err(format!(
            "--user {}: that user cannot read the app's directory {} ({} is closed to it); give it read access or move the app (e.g. to /srv/app)",
            account.name,
            app_dir.display(),
            blocked.display()
        ));
    }
    Ok(())
}

/// What the master still does later that the account could not: re-reading key files on
/// SIGHUP, creating new log files on SIGUSR1.
fn reasons_to_stay_root(config: &Config, account: &Account) -> Vec<String> {
    let mut reasons = Vec::new();
    if let Some(CertSource::Files { certfile, keyfile, .. }) = config.tls.as_ref().and_then(|t| t.source.as_ref()) {
        for (file, option) in [(keyfile, "--ssl-keyfile"), (certfile, "--ssl-certfile")] {
            if !account.can_read(file) {
                reasons.push(format!("it re-reads {option} {} on SIGHUP, which {} cannot read", file.display(), account.name));
                break;
            }
        }
    }
    let log_files: Vec<PathBuf> = config.log.file.iter().cloned().chain(config.log.access_file.iter().filter_map(|t| match t {
        crate::config::LogTarget::File(p) => Some(p.clone()),
        crate::config::LogTarget::Stdout => None,
    })).collect();
    for file in log_files {
        let dir = file.parent().map(PathBuf::from).filter(|d| !d.as_os_str().is_empty()).unwrap_or_else(|| PathBuf::from("."));
        if !account.can_write_dir(&dir) {
            reasons.push(format!("it creates the new {} on SIGUSR1 in {}, where {} cannot write", file.display(), dir.display(), account.name));
        }
    }
    reasons
}
