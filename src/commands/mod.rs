//! The `ferrogate` command's subcommands besides serving (`ferrogate APP ...`): the
//! certificates (`certs`), the configuration (`check`, `config`), the running server
//! through its control socket (`status`, `reload`, `stop`, `workers`, `upgrade`, `bans`), the
//! host (`doctor`) and the service (`install`, `uninstall`).

pub mod bans;
pub mod certs;
pub mod check;
pub mod control;
pub mod doctor;
pub mod install;

/// The server's options as a command other than serving takes them (APP optional: read
/// from the same ferrogate.toml and FERROGATE_* variables); on error, clap has printed
/// why (or the help) and this is the exit status.
fn server_options(argv: Vec<String>, env: Vec<(std::ffi::OsString, std::ffi::OsString)>) -> Result<crate::config::Layer, i32> {
    crate::config::gather_without_app(argv, env, std::process::id()).map_err(|e| {
        let _ = e.print();
        e.exit_code()
    })
}

/// Runs a subcommand if `argv` names one; None means "serve".
pub fn run(argv: &[String], env: Vec<(std::ffi::OsString, std::ffi::OsString)>) -> Option<i32> {
    match argv.get(1).map(String::as_str) {
        Some("bans") => Some(bans::run(&argv[2..], env)),
        Some("certs") => Some(certs::run(&argv[2..], env)),
        Some("check") => Some(check::check(&argv[2..], env)),
        Some("config") => Some(check::config(&argv[2..], env)),
        Some(verb @ ("status" | "reload" | "stop" | "workers" | "upgrade")) => Some(control::run(verb, &argv[2..], env)),
        Some("doctor") => Some(doctor::run(&argv[2..], env)),
        Some("install") => Some(install::run(&argv[0], &argv[2..], env)),
        Some("uninstall") => Some(install::uninstall::run(&argv[2..])),
        _ => None,
    }
}
