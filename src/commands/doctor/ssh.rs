//! The tutorial's step 3.2, "PermitRootLogin no" and "PasswordAuthentication no", read the
//! way sshd reads them: /etc/ssh/sshd_config with its `Include` files processed in place,
//! the first value of a keyword wins, and `Match` blocks (conditional settings) do not
//! count for the global answer.

use std::path::{Path, PathBuf};

use super::host::Host;
use super::report::{Finding, Status};

pub const ROOT_LOGIN: &str = "ssh-root-login";
pub const PASSWORDS: &str = "ssh-password-auth";
const MAIN: &str = "/etc/ssh/sshd_config";
/// Deeper than any real configuration; stops an Include that includes itself.
const MAX_DEPTH: usize = 16;

/// The global settings of sshd, in the order sshd reads them.
#[derive(Clone, Debug, Default)]
pub struct SshdConfig {
    /// (keyword lowercased, value, file it came from)
    settings: Vec<(String, String, PathBuf)>,
}

impl SshdConfig {
    /// The value sshd uses for the first of `keywords` it meets (aliases share one setting).
    pub fn first(&self, keywords: &[&str]) -> Option<(&str, &Path)> {
        self.settings.iter().find(|(k, _, _)| keywords.contains(&k.as_str())).map(|(_, v, f)| (v.as_str(), f.as_path()))
    }

    /// Whether sshd accepts passwords: PasswordAuthentication is yes unless set to no.
    pub fn passwords_accepted(&self) -> bool {
        !matches!(self.first(&["passwordauthentication"]), Some((v, _)) if v.eq_ignore_ascii_case("no"))
    }
}

/// The sshd configuration, None when the host has no SSH server configured.
pub fn read(host: &Host) -> Result<Option<SshdConfig>, String> {
    let main = Path::new(MAIN);
    let Some(text) = host.read(main)? else { return Ok(None) };
    let mut config = SshdConfig::default();
    load(host, main, &text, &mut config, 0)?;
    Ok(Some(config))
}

fn load(host: &Host, file: &Path, text: &str, out: &mut SshdConfig, depth: usize) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("{}: Include nested more than {MAX_DEPTH} deep (does it include itself?)", file.display()));
    }
    // A Match block runs to the next Match or to the end of the file it is in.
    let mut in_match = false;
    for line in text.lines() {
        let Some((keyword, args)) = split_line(line) else { continue };
        match keyword.as_str() {
            "match" => in_match = true,
            _ if in_match => {}
            "include" => {
                for pattern in &args {
                    for path in expand(host, pattern)? {
                        if let Some(text) = host.read(&path)? {
                            load(host, &path, &text, out, depth + 1)?;
                        }
                    }
                }
            }
            _ => out.settings.push((keyword, args.join(" "), file.to_path_buf())),
        }
    }
    Ok(())
}

/// sshd's line syntax: `Keyword value...` or `Keyword=value`, `#` comments, double quotes.
fn split_line(line: &str) -> Option<(String, Vec<String>)> {
    let line = line.trim_start();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let end = line.find(|c: char| c.is_whitespace() || c == '=').unwrap_or(line.len());
    let keyword = line[..end].to_ascii_lowercase();
    let mut rest = line[end..].trim_start();
    rest = rest.strip_prefix('=').unwrap_or(rest);
    let mut args = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        match chars.peek() {
            None | Some('#') => break,
            Some('"') => {
                chars.next();
                args.push(chars.by_ref().take_while(|c| *c != '"').collect());
            }
            Some(_) => {
                let mut word = String::new();
                while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                    word.push(c);
                }
                args.push(word);
            }
        }
    }
    Some((keyword, args))
}

/// An Include argument: relative to /etc/ssh, a glob in its file name, sorted as glob(3) does.
fn expand(host: &Host, pattern: &str) -> Result<Vec<PathBuf>, String> {
    let path = Path::new("/etc/ssh").join(pattern);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if !name.contains(['*', '?']) {
        return Ok(vec![path]);
    }
    host.glob(path.parent().unwrap_or(Path::new("/")), &name)
}

/// Where a setting should go: the file that sets it now, else the main file.
fn put(keyword_value: &str, at: Option<&Path>) -> String {
    match at {
        Some(file) => format!("change it to `{keyword_value}` in {} (sshd uses the first value it reads), then `systemctl reload ssh`", file.display()),
        None => format!("add `{keyword_value}` near the top of {MAIN} (before any Match block), then `systemctl reload ssh`"),
    }
}

pub fn root_login(config: Option<&SshdConfig>) -> Finding {
    let Some(config) = config else { return Finding::pass(ROOT_LOGIN, format!("no SSH server ({MAIN} does not exist)")) };
    let found = config.first(&["permitrootlogin"]);
    let value = found.map(|(v, _)| v.to_ascii_lowercase());
    let at = found.map(|(_, f)| f);
    let fix = || put("PermitRootLogin no", at) + "; log in as your own user and use sudo";
    let said = |v: &str| format!("PermitRootLogin {v} in {}", at.map(|f| f.display().to_string()).unwrap_or_default());
    match value.as_deref() {
        Some("no") => Finding::pass(ROOT_LOGIN, said("no")),
        None => Finding::warn(ROOT_LOGIN, "PermitRootLogin is not set: OpenSSH's default (prohibit-password) lets root log in with a key", fix()),
        Some(v @ ("prohibit-password" | "without-password" | "forced-commands-only")) => Finding::warn(ROOT_LOGIN, format!("{}: root may still log in with a key", said(v)), fix()),
        Some("yes") => Finding::fail(ROOT_LOGIN, format!("{}: root may log in, with a password too unless passwords are off", said("yes")), fix()),
        Some(v) => Finding::warn(ROOT_LOGIN, format!("{}: not a value sshd knows", said(v)), fix()),
    }
}

pub fn password_auth(config: Option<&SshdConfig>) -> Finding {
    let Some(config) = config else { return Finding::pass(PASSWORDS, format!("no SSH server ({MAIN} does not exist)")) };
    let found = config.first(&["passwordauthentication"]);
    let at = found.map(|(_, f)| f);
    let fix = || format!("first check that your key logs you in (tutorial 3.2), then {}", put("PasswordAuthentication no", at));
    match found.map(|(v, _)| v.to_ascii_lowercase()).as_deref() {
        Some("no") => keyboard_interactive(config, at),
        Some("yes") => Finding::fail(PASSWORDS, format!("PasswordAuthentication yes in {}: anyone may guess passwords", at.map(|f| f.display().to_string()).unwrap_or_default()), fix()),
        None => Finding::fail(PASSWORDS, "PasswordAuthentication is not set: OpenSSH's default (yes) lets anyone guess passwords", fix()),
        Some(v) => Finding::fail(PASSWORDS, format!("PasswordAuthentication {v}: not a value sshd knows"), fix()),
    }
}

/// Passwords off can still mean passwords through PAM: keyboard-interactive defaults to yes.
fn keyboard_interactive(config: &SshdConfig, passwords_at: Option<&Path>) -> Finding {
    let where_ = passwords_at.map(|f| f.display().to_string()).unwrap_or_default();
    let pam = matches!(config.first(&["usepam"]), Some((v, _)) if v.eq_ignore_ascii_case("yes"));
    let kbd = config.first(&["kbdinteractiveauthentication", "challengeresponseauthentication"]);
    let kbd_on = !matches!(kbd, Some((v, _)) if v.eq_ignore_ascii_case("no"));
    if pam && kbd_on {
        let how = match kbd {
            Some((_, f)) => format!("is yes in {}", f.display()),
            None => "is not set (default yes)".into(),
        };
        return Finding::with(
            PASSWORDS,
            Status::Warn,
            format!("PasswordAuthentication no in {where_}, but KbdInteractiveAuthentication {how} with UsePAM yes: PAM still asks for passwords"),
            put("KbdInteractiveAuthentication no", kbd.map(|(_, f)| f)),
        );
    }
    Finding::pass(PASSWORDS, format!("PasswordAuthentication no in {where_}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::doctor::testing::FakeRoot;

    fn fake_root(files: &[(&str, &str)]) -> (FakeRoot, Host) {
        let root = FakeRoot::new(files);
        let host = root.host();
        (root, host)
    }

    #[test]
    fn the_first_value_wins_and_includes_are_read_in_place_in_order() {
        let (_d, host) = fake_root(&[
            ("/etc/ssh/sshd_config", "# comment\nInclude /etc/ssh/sshd_config.d/*.conf\nPermitRootLogin yes\nPasswordAuthentication no\n"),
            ("/etc/ssh/sshd_config.d/50-cloud-init.conf", "PasswordAuthentication yes\n"),
            ("/etc/ssh/sshd_config.d/10-hardening.conf", "permitrootlogin=no\n"),
            ("/etc/ssh/sshd_config.d/README", "PasswordAuthentication no\n"),
        ]);
        let c = read(&host).unwrap().unwrap();
        let (v, f) = c.first(&["permitrootlogin"]).unwrap();
        assert_eq!((v, f), ("no", Path::new("/etc/ssh/sshd_config.d/10-hardening.conf")));
        let (v, f) = c.first(&["passwordauthentication"]).unwrap();
        assert_eq!((v, f), ("yes", Path::new("/etc/ssh/sshd_config.d/50-cloud-init.conf")), "cloud-init's file comes first");
        assert_eq!(root_login(Some(&c)).status, Status::Pass);
        let p = password_auth(Some(&c));
        assert_eq!(p.status, Status::Fail);
        assert!(p.finding.contains("50-cloud-init.conf") && p.fix.unwrap().contains("50-cloud-init.conf"));
    }

    #[test]
    fn match_blocks_do_not_count_and_end_with_their_file() {
        let (_d, host) = fake_root(&[
            ("/etc/ssh/sshd_config", "Include extra.conf\nPasswordAuthentication no\nMatch User admin\n  PermitRootLogin yes\n"),
            ("/etc/ssh/extra.conf", "Match Address 10.0.0.0/8\nPasswordAuthentication yes\n"),
        ]);
        let c = read(&host).unwrap().unwrap();
        assert_eq!(c.first(&["passwordauthentication"]).unwrap().0, "no");
        assert!(c.first(&["permitrootlogin"]).is_none());
        assert!(!c.passwords_accepted());
        assert_eq!(root_login(Some(&c)).status, Status::Warn, "unset: the default lets root in with a key");
    }

    #[test]
    fn defaults_and_values_are_judged_as_openssh_does() {
        let (_d, host) = fake_root(&[("/etc/ssh/sshd_config", "PermitRootLogin prohibit-password\n")]);
        let c = read(&host).unwrap().unwrap();
        assert_eq!(root_login(Some(&c)).status, Status::Warn);
        assert_eq!(password_auth(Some(&c)).status, Status::Fail, "unset means yes");
        assert!(c.passwords_accepted());
        assert_eq!(root_login(None).status, Status::Pass);
        assert!(password_auth(None).finding.contains("no SSH server"));
    }

    #[test]
    fn pam_keyboard_interactive_still_asks_for_passwords() {
        let (_d, host) = fake_root(&[("/etc/ssh/sshd_config", "UsePAM yes\nPasswordAuthentication no\n")]);
        let c = read(&host).unwrap().unwrap();
        assert_eq!(password_auth(Some(&c)).status, Status::Warn);
        let (_d, host) = fake_root(&[("/etc/ssh/sshd_config", "UsePAM yes\nChallengeResponseAuthentication no\nPasswordAuthentication no\n")]);
        assert_eq!(password_auth(Some(&read(&host).unwrap().unwrap())).status, Status::Pass);
    }

    #[test]
    fn lines_split_as_sshd_splits_them() {
        assert_eq!(split_line("  Include \"a b.conf\" c.conf # note"), Some(("include".into(), vec!["a b.conf".into(), "c.conf".into()])));
        assert_eq!(split_line("PermitRootLogin=no"), Some(("permitrootlogin".into(), vec!["no".into()])));
        assert_eq!(split_line("   # PasswordAuthentication yes"), None);
    }

    #[test]
    fn an_include_loop_is_an_error_not_a_hang() {
        let (_d, host) = fake_root(&[("/etc/ssh/sshd_config", "Include sshd_config\n")]);
        assert!(read(&host).unwrap_err().contains("Include nested"));
    }
}
