//! The `ferrogate` command's subcommands besides serving (`ferrogate APP ...`):
//! `certs` for now; the service commands (check, config, status, install) come here too.

pub mod certs;
pub mod install;

/// Runs a subcommand if `argv` names one; None means "serve".
pub fn run(argv: &[String], env: Vec<(std::ffi::OsString, std::ffi::OsString)>) -> Option<i32> {
    match argv.get(1).map(String::as_str) {
        Some("certs") => Some(certs::run(&argv[2..], env)),
        Some("install") => Some(install::run(&argv[0], &argv[2..], env)),
        Some("uninstall") => Some(install::uninstall::run(&argv[2..])),
        _ => None,
    }
}
