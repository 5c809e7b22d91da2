//! --pid FILE: the master's PID for scripts and logrotate (`kill -USR1 $(cat FILE)`).
//!
//! Written once the listeners are bound, removed on exit, but only if it still holds our
//! PID: after a self-upgrade the new master has written its own there.

use std::path::{Path, PathBuf};

pub struct PidFile {
    path: PathBuf,
    pid: u32,
}

impl PidFile {
    /// Writes our PID, replacing what a previous run left (its process is gone or is
    /// the master we are upgrading from: either way the file should now name us).
    pub fn write(path: &Path) -> Result<PidFile, String> {
        let pid = std::process::id();
        let tmp = path.with_extension(format!("tmp.{pid}"));
        std::fs::write(&tmp, format!("{pid}\n"))
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                format!("cannot write --pid {}: {e}; create its directory or choose a path the server can write", path.display())
            })?;
        Ok(PidFile { path: path.to_path_buf(), pid })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let ours = std::fs::read_to_string(&self.path).is_ok_and(|s| s.trim() == self.pid.to_string());
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removed_on_drop_only_while_it_names_us() {
        let path = std::env::temp_dir().join(format!("fg-pid-{}", std::process::id()));
        let f = PidFile::write(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{}\n", std::process::id()));
        drop(f);
        assert!(!path.exists());
        let f = PidFile::write(&path).unwrap();
        std::fs::write(&path, "1\n").unwrap(); // a successor took it over
        drop(f);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "1\n");
        std::fs::remove_file(&path).unwrap();
        let err = PidFile::write(Path::new("/nonexistent-dir-fg/x.pid")).err().unwrap();
        assert!(err.contains("--pid /nonexistent-dir-fg/x.pid"), "{err}");
    }
}
