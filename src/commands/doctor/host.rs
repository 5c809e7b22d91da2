//! The machine being audited, seen through a root directory: `/` for the real host,
//! or a fake tree (`--root DIR`) whose etc/, proc/ and run/ stand for the real ones, so
//! the checks can be tested without changing a real host. Paths are written as the host
//! names them (`/etc/ssh/sshd_config`) and re-rooted here; messages show the host's name.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

pub struct Host {
    root: PathBuf,
}

/// Free space of the filesystem holding a path, as `df` would show it to a non-root user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Space {
    pub available: u64,
    pub total: u64,
    /// The filesystem's device, so that two directories on one filesystem are reported once.
    pub device: u64,
}

impl Host {
    pub fn new(root: PathBuf) -> Self {
        Host { root }
    }

    /// Where the host's `path` is on this machine. Relative paths stay relative to the
    /// working directory, as the server would read them.
    pub fn path(&self, path: &Path) -> PathBuf {
        if !path.is_absolute() {
            return path.to_path_buf();
        }
        let mut out = self.root.clone();
        // Components, not a string strip, so `/a/../../etc` cannot climb out of the root.
        for c in path.components() {
            match c {
                Component::Normal(part) => out.push(part),
                Component::ParentDir if out != self.root => {
                    out.pop();
                }
                _ => {}
            }
        }
        out
    }

    /// The file's text, None if it does not exist; other errors name the file.
    pub fn read(&self, path: &Path) -> Result<Option<String>, String> {
        match fs::read(self.path(path)) {
            Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
            Err(e) if e.kind() == io::ErrorKind::NotFound || e.kind() == io::ErrorKind::NotADirectory => Ok(None),
            Err(e) => Err(unreadable(path, &e)),
        }
    }

    /// Whether something (a dangling symlink too: systemd's enablement links point to
    /// unit files a fake root does not have) is at `path`.
    pub fn exists(&self, path: &Path) -> bool {
        fs::symlink_metadata(self.path(path)).is_ok()
    }

    /// Metadata of `path` itself (a socket, a key file), None if it does not exist.
    pub fn metadata(&self, path: &Path) -> Result<Option<fs::Metadata>, String> {
        match fs::symlink_metadata(self.path(path)) {
            Ok(m) => Ok(Some(m)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(unreadable(path, &e)),
        }
    }

    /// The names in a directory, sorted (the order sshd, apt and fail2ban read them in);
    /// empty if it does not exist.
    pub fn list(&self, dir: &Path) -> Result<Vec<String>, String> {
        let entries = match fs::read_dir(self.path(dir)) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound || e.kind() == io::ErrorKind::NotADirectory => return Ok(Vec::new()),
            Err(e) => return Err(unreadable(dir, &e)),
        };
        let mut names: Vec<String> = entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        Ok(names)
    }

    /// The files of `dir` whose names match `pattern` (`*` and `?`), sorted.
    pub fn glob(&self, dir: &Path, pattern: &str) -> Result<Vec<PathBuf>, String> {
        Ok(self.list(dir)?.into_iter().filter(|n| crate::master::watch::glob(pattern, n)).map(|n| dir.join(n)).collect())
    }

    pub fn read_link(&self, path: &Path) -> Option<PathBuf> {
        fs::read_link(self.path(path)).ok()
    }

    /// Whether systemd starts `unit` at boot: `systemctl enable` links it into a
    /// `*.wants/` directory under /etc/systemd/system.
    pub fn unit_enabled(&self, unit: &str) -> Result<Option<PathBuf>, String> {
        let system = Path::new("/etc/systemd/system");
        for wants in self.list(system)?.into_iter().filter(|n| n.ends_with(".wants")) {
            let link = system.join(wants).join(unit);
            if self.exists(&link) {
                return Ok(Some(link));
            }
        }
        Ok(None)
    }

    /// The uid of a user name (or a number) in the host's /etc/passwd.
    pub fn uid_of(&self, user: &str) -> Result<Option<u32>, String> {
        if let Ok(uid) = user.parse() {
            return Ok(Some(uid));
        }
        Ok(self.passwd()?.into_iter().find(|(name, _)| name == user).map(|(_, uid)| uid))
    }

    /// The user name of a uid, or the number when /etc/passwd does not have it.
    pub fn user_name(&self, uid: u32) -> String {
        self.passwd().ok().and_then(|users| users.into_iter().find(|(_, u)| *u == uid)).map_or_else(|| uid.to_string(), |(name, _)| name)
    }

    fn passwd(&self) -> Result<Vec<(String, u32)>, String> {
        let text = self.read(Path::new("/etc/passwd"))?.unwrap_or_default();
        Ok(text
            .lines()
            .filter_map(|line| {
                let mut fields = line.split(':');
                let name = fields.next()?;
                let uid = fields.nth(1)?.parse().ok()?;
                Some((name.to_string(), uid))
            })
            .collect())
    }

    /// Free space where `path` is, or would be created: the nearest existing ancestor.
    pub fn space(&self, path: &Path) -> Result<(PathBuf, Space), String> {
        let mut at = self.path(path);
        while !at.exists() && at.pop() {}
        let c = std::ffi::CString::new(at.as_os_str().as_encoded_bytes()).map_err(|_| format!("{}: a path with a NUL byte", path.display()))?;
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: `c` is a NUL-terminated path and `s` a statvfs the call fills.
        if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
            return Err(unreadable(path, &io::Error::last_os_error()));
        }
        let device = fs::metadata(&at).map(|m| m.dev()).unwrap_or(0);
        let frsize = s.f_frsize as u64;
        Ok((at, Space { available: s.f_bavail as u64 * frsize, total: s.f_blocks as u64 * frsize, device }))
    }
}

fn unreadable(path: &Path, e: &io::Error) -> String {
    let hint = if e.kind() == io::ErrorKind::PermissionDenied { " (run `sudo ferrogate doctor`)" } else { "" };
    format!("cannot read {}: {e}{hint}", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_rerooted_and_cannot_climb_out() {
        let h = Host::new(PathBuf::from("/fake"));
        assert_eq!(h.path(Path::new("/etc/ssh/sshd_config")), Path::new("/fake/etc/ssh/sshd_config"));
        assert_eq!(h.path(Path::new("/../../etc/passwd")), Path::new("/fake/etc/passwd"));
        assert_eq!(h.path(Path::new("rel/key.pem")), Path::new("rel/key.pem"));
        assert_eq!(Host::new(PathBuf::from("/")).path(Path::new("/etc/x")), Path::new("/etc/x"));
    }
}
