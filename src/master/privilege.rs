//! Running as an unprivileged user (--user, --group, --umask), as gunicorn does: the
//! master starts as root to bind ports and read keys, every worker runs as the user, and
//! the master follows once nothing it still does needs root.
//!
//! Names are looked up once, in the master, before anything is bound: a typo in --user
//! stops the server at start, never at the first respawn.

use std::ffi::{CStr, CString};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The user and groups the processes run as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (the user's, as login would give them): a proxy's group that
    /// owns a socket directory, ssl-cert for keys under /etc/ssl/private.
    pub groups: Vec<u32>,
    pub home: PathBuf,
}

impl Account {
    /// Looks up --user (a name or a uid) and --group (a name or a gid; the user's
    /// primary group when None).
    pub fn lookup(user: &str, group: Option<&str>) -> Result<Account, String> {
        let entry = passwd(user)?.ok_or_else(|| {
            format!("--user {user}: no such user on this machine; create it (useradd --system {user}) or give an existing one")
        })?;
        let gid = match group {
            None => entry.gid,
            Some(g) => group_id(g)?.ok_or_else(|| format!("--group {g}: no such group on this machine; create it (groupadd --system {g}) or give an existing one"))?,
        };
        let mut groups = supplementary_groups(&entry.name, gid);
        if !groups.contains(&gid) {
            groups.insert(0, gid);
        }
        Ok(Account { name: entry.name, uid: entry.uid, gid, groups, home: entry.home })
    }

    /// Whether this account may read `path` by its permission bits.
    pub fn can_read(&self, path: &Path) -> bool {
        self.may(path, 0o4)
    }

    /// Whether this account may create and remove files in directory `dir`.
    pub fn can_write_dir(&self, dir: &Path) -> bool {
        self.may(dir, 0o2)
    }

    /// The first directory on the way to `path` (or `path` itself) this account cannot
    /// enter, or open with `bit` (0o1 execute, 0o4 read) at the end; None when it can.
    pub fn blocked_at(&self, path: &Path, bit: u32) -> Option<PathBuf> {
        let real = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        let mut dirs: Vec<&Path> = real.ancestors().skip(1).collect();
        dirs.reverse();
        dirs.into_iter().find(|d| !self.may(d, 0o1)).map(Path::to_path_buf).or_else(|| (!self.may(&real, bit)).then_some(real.clone()))
    }

    fn may(&self, path: &Path, bit: u32) -> bool {
        let Ok(meta) = std::fs::metadata(path) else { return false };
        let mode = meta.mode();
        if self.uid == 0 {
            return true;
        }
        if meta.uid() == self.uid {
            mode & (bit << 6) != 0
        } else if self.groups.contains(&meta.gid()) {
            mode & (bit << 3) != 0
        } else {
            mode & bit != 0
        }
    }
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: PathBuf,
}

/// getpwnam_r, or getpwuid_r for a number.
fn passwd(user: &str) -> Result<Option<PasswdEntry>, String> {
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: an all-zero passwd is a valid value (null pointers, zero ids); the lookup fills it.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    let rc = match user.parse::<u32>() {
        // SAFETY: every pointer is to a live local of the right type and `buf`'s length is given.
        Ok(uid) => unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr().cast(), buf.len(), &mut result) },
        Err(_) => {
            let c = CString::new(user).map_err(|_| format!("--user {user:?}: a user name cannot hold a NUL byte"))?;
            // SAFETY: as above; `c` outlives the call.
            unsafe { libc::getpwnam_r(c.as_ptr(), &mut pwd, buf.as_mut_ptr().cast(), buf.len(), &mut result) }
        }
    };
    if rc != 0 {
        return Err(format!("--user {user}: cannot look the user up: {}", std::io::Error::from_raw_os_error(rc)));
    }
    if result.is_null() {
        return Ok(None);
    }
    // SAFETY: on success the strings point into `buf`, NUL-terminated, and `buf` is alive.
    let (name, home) = unsafe { (CStr::from_ptr(pwd.pw_name).to_string_lossy().into_owned(), CStr::from_ptr(pwd.pw_dir).to_string_lossy().into_owned()) };
    Ok(Some(PasswdEntry { name, uid: pwd.pw_uid, gid: pwd.pw_gid, home: home.into() }))
}

/// getgrnam_r, or the number itself.
fn group_id(group: &str) -> Result<Option<u32>, String> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(Some(gid));
    }
    let c = CString::new(group).map_err(|_| format!("--group {group:?}: a group name cannot hold a NUL byte"))?;
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: an all-zero group is a valid value; the lookup fills it.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is to a live local of the right type and `buf`'s length is given.
    let rc = unsafe { libc::getgrnam_r(c.as_ptr(), &mut grp, buf.as_mut_ptr().cast(), buf.len(), &mut result) };
    if rc != 0 {
        return Err(format!("--group {group}: cannot look the group up: {}", std::io::Error::from_raw_os_error(rc)));
    }
    Ok((!result.is_null()).then_some(grp.gr_gid))
}

fn supplementary_groups(user: &str, gid: u32) -> Vec<u32> {
    let Ok(c) = CString::new(user) else { return vec![gid] };
    let mut n: libc::c_int = 64;
    loop {
        let mut groups = vec![0 as libc::gid_t; n as usize];
        let asked = n;
        // SAFETY: `groups` holds `n` entries; getgrouplist writes at most that many and sets n.
        let rc = unsafe { libc::getgrouplist(c.as_ptr(), gid, groups.as_mut_ptr(), &mut n) };
        if rc >= 0 {
            groups.truncate(n as usize);
            return groups;
        }
        if n <= asked {
            return vec![gid];
        }
    }
}

/// The name of `uid`, or the number when it has none.
pub fn user_name(uid: u32) -> String {
    passwd(&uid.to_string()).ok().flatten().map_or_else(|| uid.to_string(), |e| e.name)
}

/// What the current process is.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid cannot fail and has no preconditions.
    unsafe { libc::geteuid() }
}

/// Becomes `account` for good: groups first, then the group, then the user (after
/// setuid there is no right left to change groups). glibc applies each call to every
/// thread of the process.
pub fn become_user(account: &Account) -> Result<(), String> {
    let fail = |what: &str| Err(format!("cannot switch to user {} ({what}): {}", account.name, std::io::Error::last_os_error()));
    // SAFETY: the slice outlives the call and its length is given.
    if unsafe { libc::setgroups(account.groups.len(), account.groups.as_ptr()) } != 0 {
        return fail("setgroups");
    }
    // SAFETY: setgid and setuid take plain numbers.
    if unsafe { libc::setgid(account.gid) } != 0 {
        return fail("setgid");
    }
    // SAFETY: as above.
    if unsafe { libc::setuid(account.uid) } != 0 {
        return fail("setuid");
    }
    Ok(())
}

/// The same switch in a child between fork and exec: only async-signal-safe system
/// calls, no allocation, errors as the raw errno.
///
/// # Safety
/// Call only in a `pre_exec` closure; `groups` must have been allocated before the fork.
pub unsafe fn become_user_in_child(uid: u32, gid: u32, groups: &[u32]) -> std::io::Result<()> {
    // SAFETY: plain system calls on numbers and a slice the caller keeps alive.
    unsafe {
        if libc::geteuid() != 0 {
            // Already unprivileged (the master dropped root, or never had it): nothing to switch.
            return Ok(());
        }
        if libc::setgroups(groups.len(), groups.as_ptr()) != 0 || libc::setgid(gid) != 0 || libc::setuid(uid) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Gives a file or directory the service account, so the workers and a master that
/// dropped root can use it. Not following symlinks: a link planted in a directory we
/// own must not make root chown its target.
pub fn give(path: &Path, account: &Account) -> Result<(), String> {
    std::os::unix::fs::lchown(path, Some(account.uid), Some(account.gid))
        .map_err(|e| format!("cannot give {} to user {}: {e}", path.display(), account.name))
}

/// The same for a directory and everything under it (the ACME state directory).
pub fn give_tree(dir: &Path, account: &Account) -> Result<(), String> {
    give(dir, account)?;
    let entries = std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => give_tree(&path, account)?,
            _ => give(&path, account)?,
        }
    }
    Ok(())
}

/// Sets the file-mode creation mask; returns the previous one.
pub fn set_umask(mask: u32) -> u32 {
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(mask as libc::mode_t) as u32 }
}

/// What the app risks when it runs as root, said once at start.
pub const ROOT_WARNING: &str = "Running the app as root: a bug in the app or in any of its dependencies then gives an attacker the whole machine (every file, every port, every other service). Give --user NAME (e.g. --user www-data, or a user of its own: useradd --system app) to run the workers unprivileged; ferrogate still binds ports 80 and 443 as root first.";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_up_users_and_groups_by_name_and_number() {
        let root = Account::lookup("root", None).unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert_eq!(Account::lookup("0", None).unwrap().name, "root");
        assert_eq!(Account::lookup("root", Some("0")).unwrap().gid, 0);
        let err = Account::lookup("no-such-user-fg", None).unwrap_err();
        assert!(err.contains("--user no-such-user-fg") && err.contains("useradd"), "{err}");
        let err = Account::lookup("root", Some("no-such-group-fg")).unwrap_err();
        assert!(err.contains("--group no-such-group-fg") && err.contains("groupadd"), "{err}");
    }

    #[test]
    fn permission_bits_decide_for_another_user() {
        let dir = std::env::temp_dir().join(format!("fg-priv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("key.pem");
        std::fs::write(&file, "k").unwrap();
        let someone = Account { name: "x".into(), uid: 4242, gid: 4242, groups: vec![4242], home: "/".into() };
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(!someone.can_read(&file) || effective_uid() == 4242);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(someone.can_read(&file));
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(!someone.can_write_dir(&dir) || effective_uid() == 4242);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
