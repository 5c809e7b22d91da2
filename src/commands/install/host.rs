//! What `install` and `uninstall` do to the machine: accounts, files, systemctl, and the
//! list of steps they print. Each step is said once, as done, unchanged or (--dry-run)
//! to be done, so that running a command twice shows what the first run did.

use std::ffi::{CStr, CString};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The steps as they happen, in uv's manner, one line each: `+` changed, `=` already so,
/// `!` for the person to act on.
pub struct Report {
    pub dry_run: bool,
}

impl Report {
    /// `what` was changed (`how`: "created", "written", "run"), or with --dry-run would be.
    pub fn done(&self, what: &str, how: &str) {
        let how = if self.dry_run { format!("would be {how}") } else { how.to_string() };
        println!(" + {what}: {how}");
    }

    /// `what` is already as it should be; `why` says how, when it helps.
    pub fn unchanged(&self, what: &str, why: &str) {
        if why.is_empty() {
            println!(" = {what}: unchanged");
        } else {
            println!(" = {what}: unchanged ({why})");
        }
    }

    pub fn note(&self, what: &str) {
        println!(" ! {what}");
    }
}

/// A user account, as the unit and the permission checks need it.
#[derive(Clone, Debug)]
pub struct Account {
    pub uid: u32,
    pub gid: u32,
    /// The name of its primary group.
    pub group: String,
}

pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail and has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// sd_booted(3): systemd is the init system when this directory exists.
pub fn systemd_runs() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

pub fn account(name: &str) -> Option<Account> {
    let cname = CString::new(name).ok()?;
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: an all-zero passwd is a valid value (null pointers, zero ids) for getpwnam_r to overwrite.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call: the name is NUL-terminated, `buf` is
    // writable for its whole length, `pwd` and `found` are ours.
    let rc = unsafe { libc::getpwnam_r(cname.as_ptr(), &mut pwd, buf.as_mut_ptr().cast(), buf.len(), &mut found) };
    if rc != 0 || found.is_null() {
        return None;
    }
    let (uid, gid) = (pwd.pw_uid, pwd.pw_gid);
    Some(Account { uid, gid, group: group_name(gid).unwrap_or_else(|| gid.to_string()) })
}

fn group_name(gid: u32) -> Option<String> {
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: as in `account`: zeroed is a valid group to overwrite.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::group = std::ptr::null_mut();
    // SAFETY: as in `account`.
    let rc = unsafe { libc::getgrgid_r(gid, &mut grp, buf.as_mut_ptr().cast(), buf.len(), &mut found) };
    if rc != 0 || found.is_null() {
        return None;
    }
    // SAFETY: on success gr_name points to a NUL-terminated string inside `buf`, alive here.
    Some(unsafe { CStr::from_ptr(grp.gr_name) }.to_string_lossy().into_owned())
}

pub fn group_exists(name: &str) -> bool {
    let Ok(cname) = CString::new(name) else { return false };
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: as in `account`.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::group = std::ptr::null_mut();
    // SAFETY: as in `account`.
    let rc = unsafe { libc::getgrnam_r(cname.as_ptr(), &mut grp, buf.as_mut_ptr().cast(), buf.len(), &mut found) };
    rc == 0 && !found.is_null()
}

/// Runs a program to its end; its own messages go to the terminal, a failure is returned
/// with the command line so the person can run it again by hand.
pub fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let line = std::iter::once(program).chain(args.iter().copied()).collect::<Vec<_>>().join(" ");
    match Command::new(program).args(args).status() {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!("`{line}` failed ({status})")),
        Err(e) => Err(format!("cannot run `{line}`: {e}")),
    }
}

/// `systemctl is-active|is-enabled NAME`, quietly.
pub fn systemctl_says(question: &str, unit: &str) -> bool {
    Command::new("systemctl").args([question, "--quiet", unit]).status().is_ok_and(|s| s.success())
}

/// Replaces `path` with `content` in one rename, so systemd never reads half a unit.
pub fn write_file(path: &Path, content: &str, mode: u32) -> Result<(), String> {
    let tmp = path.with_extension("ferrogate-tmp");
    let write = || -> std::io::Result<()> {
        std::fs::write(&tmp, content)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot write {}: {e}", path.display())
    })
}

/// Creates `dir` and its missing parents; the ones created belong to the account.
pub fn create_dir_for(dir: &Path, account: &Account) -> Result<(), String> {
    let mut missing = Vec::new();
    let mut cur = Some(dir);
    while let Some(d) = cur.filter(|d| !d.exists()) {
        missing.push(d.to_path_buf());
        cur = d.parent();
    }
    for d in missing.iter().rev() {
        std::fs::create_dir(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
        std::os::unix::fs::chown(d, Some(account.uid), Some(account.gid)).map_err(|e| format!("cannot give {} to its user: {e}", d.display()))?;
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o750)).map_err(|e| format!("cannot set the mode of {}: {e}", d.display()))?;
    }
    Ok(())
}

/// Whether the permission bits let the account do `want` (r=4, w=2, x=1) on a file with this metadata.
fn allowed(meta: &std::fs::Metadata, account: Option<&Account>, want: u32) -> bool {
    let mode = meta.mode();
    let bits = match account {
        Some(a) if a.uid == 0 => return true,
        Some(a) if meta.uid() == a.uid => mode >> 6,
        Some(a) if meta.gid() == a.gid => mode >> 3,
        _ => mode,
    };
    bits & want == want
}

/// The first directory on the way to `path` that the account cannot pass (or `path` itself
/// when it cannot read it), following symbolic links. None when it can; an account not
/// created yet is judged as anyone else (its own groups do not exist yet).
pub fn blocked_on_the_way(path: &Path, account: Option<&Account>) -> Option<PathBuf> {
    let real = std::fs::canonicalize(path).ok()?;
    for dir in real.ancestors().skip(1).collect::<Vec<_>>().into_iter().rev() {
        let meta = std::fs::metadata(dir).ok()?;
        if !allowed(&meta, account, 1) {
            return Some(dir.to_path_buf());
        }
    }
    let meta = std::fs::metadata(&real).ok()?;
    let want = if meta.is_dir() { 5 } else { 4 };
    (!allowed(&meta, account, want)).then_some(real)
}

pub fn writable_by(dir: &Path, account: &Account) -> bool {
    std::fs::metadata(dir).is_ok_and(|m| allowed(&m, Some(account), 3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_bits_are_read_for_the_right_class() {
        let dir = std::env::temp_dir().join(format!("fg-host-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750)).unwrap();
        let meta = std::fs::metadata(&dir).unwrap();
        let owner = Account { uid: meta.uid(), gid: 999_999, group: "x".into() };
        let group = Account { uid: 999_998, gid: meta.gid(), group: "x".into() };
        let other = Account { uid: 999_998, gid: 999_999, group: "x".into() };
        assert!(owner.uid == 0 || allowed(&meta, Some(&owner), 7));
        assert!(allowed(&meta, Some(&group), 5) && !allowed(&meta, Some(&group), 2));
        assert!(!allowed(&meta, Some(&other), 1));
        assert!(!allowed(&meta, None, 1), "an account not created yet counts as others");
        let inside = dir.join("f");
        std::fs::write(&inside, "x").unwrap();
        assert_eq!(blocked_on_the_way(&inside, Some(&other)), Some(dir.clone()));
        assert_eq!(blocked_on_the_way(&inside, Some(&group)), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
