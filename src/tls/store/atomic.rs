//! Crash-safe file writes: a reader sees the old file or the new one, never half of
//! either, and after a power loss the rename is on disk too.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Secrets (private keys, account credentials, challenge keys).
pub const SECRET_MODE: u32 = 0o600;
/// Public material (certificates, metadata, HTTP-01 key authorizations); the
/// directories above are 0700 anyway.
pub const PUBLIC_MODE: u32 = 0o644;
pub const DIR_MODE: u32 = 0o700;

/// Creates `dir` and its missing parents with mode 0700 (existing ones are left as they are).
pub fn ensure_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir).map_err(|e| with_path(e, "creating", dir))
}

/// Writes `bytes` to `path` with `mode`: a temporary file in the same directory,
/// fsync, rename over `path`, fsync the directory. The parent is created (0700).
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    write_replacing(path, bytes, mode, true)
}

/// As `write_atomic` without the fsyncs, for files that matter only while this
/// process runs (challenge answers): readers never see half a file, and a crash
/// loses nothing worth keeping. The fsyncs cost tens of milliseconds per order.
pub fn write_transient(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    write_replacing(path, bytes, mode, false)
}

fn write_replacing(path: &Path, bytes: &[u8], mode: u32, durable: bool) -> io::Result<()> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().ok_or_else(|| io::Error::other(format!("{} has no parent directory", path.display())))?;
    ensure_dir(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp.{}.{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed)));
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        // The umask may have removed bits from `mode`; 0644 must stay readable.
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        if durable {
            f.sync_all()?;
        }
        fs::rename(&tmp, path)?;
        if durable {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(|e| with_path(e, "writing", path))
}

/// Removes a file; a file that is already gone is not an error.
pub fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(with_path(e, "removing", path)),
        _ => Ok(()),
    }
}

pub fn with_path(e: io::Error, doing: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{doing} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_files_with_the_mode_asked_and_leaves_no_temporary() {
        let dir = crate::tls::store::tests::tempdir("atomic");
        let p = dir.join("sub/f.pem");
        write_atomic(&p, b"one", SECRET_MODE).unwrap();
        write_atomic(&p, b"two", SECRET_MODE).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(dir.join("sub")).unwrap().permissions().mode() & 0o777, 0o700);
        let names: Vec<_> = fs::read_dir(dir.join("sub")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("f.pem")]);
        remove_if_exists(&p).unwrap();
        remove_if_exists(&p).unwrap();
        let _ = fs::remove_dir_all(&dir);
    }
}
