//! The `ferrogate` command's subcommands besides serving (`ferrogate APP ...`):
//! `certs` and `doctor` for now; the service commands (check, config, status, install) come here too.

pub mod certs;
pub mod doctor;

/// Runs a subcommand if `argv` names one; None means "serve".
pub fn run(argv: &[String], env: Vec<(std::ffi::OsString, std::ffi::OsString)>) -> Option<i32> {
    match argv.get(1).map(String::as_str) {
        Some("certs") => Some(certs::run(&argv[2..], env)),
        Some("doctor") => Some(doctor::run(&argv[2..], env)),
        _ => None,
    }
}
