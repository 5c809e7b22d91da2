//! `ferrogate install`: runs the app as a systemd service, supervisor's and the tutorial's
//! gunicorn_start in one command. It writes /etc/systemd/system/NAME.service (Type=notify,
//! sandboxed, as its own user), creates that user, and enables and starts the unit when
//! systemd runs. Run twice, it changes nothing and says so; `ferrogate uninstall` undoes it.

pub mod host;
pub mod uninstall;
pub mod unit;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{BindSpec, Config, LogTarget};
use crate::config::tls::CertSource;
use host::{Account, Report};
use unit::UnitSpec;

const USAGE: &str = "usage: ferrogate install [--dry-run] [--config FILE] [--user NAME] [--group NAME]
                         [--unit NAME] [APP] [SERVER OPTIONS...]

Runs the app as a systemd service: writes /etc/systemd/system/NAME.service, creates
its user, and enables and starts it when systemd runs. Run it as root, from the app's
directory (the service's working directory), with the console script of the app's
virtualenv: sudo .venv/bin/ferrogate install main:app --port 80

  --dry-run        print the unit and the steps; change nothing
  --config FILE    the service reads this configuration file (default: ./ferrogate.toml
                   when it exists)
  --user NAME      the account the service runs as, created if missing (default ferrogate)
  --group NAME     its group (default: the user's own)
  --unit NAME      the unit's name (default ferrogate); its directories are
                   /var/lib/NAME, /var/log/NAME, /var/cache/NAME and /run/NAME
  APP, SERVER OPTIONS
                   what the service runs, as on `ferrogate`'s command line

`ferrogate uninstall [--unit NAME] [--purge]` stops and removes it.";

const DEFAULT_NAME: &str = "ferrogate";
const UNIT_DIR: &str = "/etc/systemd/system";

#[derive(Debug, PartialEq)]
struct Args {
    dry_run: bool,
    unit: String,
    user: String,
    /// --user was given (else the configuration's `user`, else the default).
    user_given: bool,
    group: Option<String>,
    config: Option<PathBuf>,
    /// APP and the server's options, as given: they become the service's command line.
    server: Vec<String>,
}

enum Parsed {
    Run(Args),
    Help,
}

/// Takes install's own options out of `args`; the rest are the server's.
fn parse_args(args: &[String]) -> Result<Parsed, String> {
    let mut out = Args { dry_run: false, unit: DEFAULT_NAME.into(), user: DEFAULT_NAME.into(), user_given: false, group: None, config: None, server: Vec::new() };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = |name: &str| inline.clone().or_else(|| it.next().cloned()).ok_or_else(|| format!("{name} needs a value"));
        match flag {
            "-h" | "--help" => return Ok(Parsed::Help),
            "--dry-run" => out.dry_run = true,
            "--unit" => out.unit = value("--unit")?,
            "--user" | "-u" => {
                out.user = value("--user")?;
                out.user_given = true;
            }
            "--group" | "-g" => out.group = Some(value("--group")?),
            "--config" | "-c" => out.config = Some(value("--config")?.into()),
            _ => out.server.push(arg.clone()),
        }
    }
    out.unit = unit_name(&out.unit)?;
    check_account_name(&out.user, "--user")?;
    if let Some(g) = &out.group {
        check_account_name(g, "--group")?;
    }
    if out.user == "root" {
        return Err("--user root: the service would run with every privilege the sandbox takes away; \
                    leave --user out (a `ferrogate` account is created) or name an unprivileged one"
            .into());
    }
    Ok(Parsed::Run(out))
}

/// The unit runs the server as its User= from the start (systemd binds nothing for it, the
/// capability does), so the configuration's `user` must be that account: taken from it
/// when --user is not given, and a disagreement is an error rather than a unit that
/// fails at every start.
fn agree_on_account(args: &mut Args, service: &Service) -> Result<(), String> {
    if let Some(user) = &service.user {
        if args.user_given && *user != args.user {
            return Err(format!("--user {} but the configuration says user = {user:?}: give the same account to both, or leave --user out", args.user));
        }
        check_account_name(user, "user")?;
        args.user = user.clone();
    }
    if let Some(group) = &service.group {
        if args.group.as_ref().is_some_and(|g| g != group) {
            return Err(format!("--group {} but the configuration says group = {group:?}: give the same group to both, or leave --group out", args.group.as_deref().unwrap_or_default()));
        }
        args.group = Some(group.clone());
    }
    if args.user == "root" {
        return Err("user root: the service would run with every privilege the sandbox takes away; name an unprivileged account".into());
    }
    Ok(())
}

/// The unit's name without `.service`, checked: it also names directories.
fn unit_name(given: &str) -> Result<String, String> {
    let name = given.strip_suffix(".service").unwrap_or(given);
    let ok = !name.is_empty()
        && name.len() <= 200
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "_-.:".contains(c))
        && !name.starts_with(['.', '-']);
    if ok { Ok(name.to_string()) } else { Err(format!("--unit {given:?}: use letters, digits, '_', '-', '.' and ':' (e.g. --unit shop)")) }
}

fn check_account_name(name: &str, option: &str) -> Result<(), String> {
    let ok = name.len() <= 32
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok { Ok(()) } else { Err(format!("{option} {name:?}: an account name is lowercase letters, digits, '_' and '-', starting with a letter, at most 32 characters")) }
}

pub fn run(argv0: &str, args: &[String], env: Vec<(OsString, OsString)>) -> i32 {
    let args = match parse_args(args) {
        Ok(Parsed::Run(a)) => a,
        Ok(Parsed::Help) => {
            println!("{USAGE}");
            return 0;
        }
        Err(e) => {
            eprintln!("error: {e}\n\n{USAGE}");
            return 2;
        }
    };
    if !args.dry_run && !host::is_root() {
        eprintln!(
            "error: ferrogate install writes {UNIT_DIR} and creates an account: run it as root \
             (sudo {argv0} install ...), or add --dry-run to see what it would do"
        );
        return 1;
    }
    match install(argv0, args, &env) {
        Ok(()) => 0,
        Err(Failure::Usage(e)) => {
            eprintln!("error: {e}");
            2
        }
        Err(Failure::Step(e)) => {
            eprintln!("error: {e}");
            1
        }
    }
}

enum Failure {
    /// The command line or the configuration: nothing was changed.
    Usage(String),
    /// A step failed; those before it were done.
    Step(String),
}

fn install(argv0: &str, mut args: Args, env: &[(OsString, OsString)]) -> Result<(), Failure> {
    let cwd = std::env::current_dir().map_err(|e| Failure::Usage(format!("cannot tell the current directory: {e}")))?;
    let exe = console_script(argv0, &cwd, env).map_err(Failure::Usage)?;
    let config_file = config_file(args.config.as_deref(), &cwd, env).map_err(Failure::Usage)?;
    let name = args.unit.clone();
    let mut service = Service::resolve(&args, &name, &cwd, config_file.as_deref()).map_err(Failure::Usage)?;
    agree_on_account(&mut args, &service).map_err(Failure::Usage)?;
    // The interpreter too: a virtualenv's python is often a link into /root or /home.
    service.reads.push(exe.clone());
    service.reads.extend(interpreter(&exe).and_then(|i| std::fs::canonicalize(i).ok()));
    let unit_path = Path::new(UNIT_DIR).join(format!("{name}.service"));
    let existing = std::fs::read_to_string(&unit_path).ok();
    if existing.as_deref().is_some_and(|text| !text.starts_with(unit::HEADER)) {
        return Err(Failure::Usage(format!(
            "{} exists and was not written by ferrogate install: choose another --unit, or move that file away",
            unit_path.display()
        )));
    }
    if let Some(g) = args.group.as_deref().filter(|g| !host::group_exists(g)) {
        return Err(Failure::Usage(format!("--group {g}: no such group; create it (groupadd --system {g}) or leave --group out")));
    }
    let account = host::account(&args.user);
    let state_dir = Path::new("/var/lib").join(&name);
    let spec = UnitSpec {
        name: name.clone(),
        description: format!("ferrogate: {} in {}", service.app, cwd.display()),
        exec_start: std::iter::once(exe.to_string_lossy().into_owned())
            .chain(config_file.iter().flat_map(|c| ["--config".to_string(), c.to_string_lossy().into_owned()]))
            .chain(args.server.iter().cloned())
            .collect(),
        working_directory: cwd.clone(),
        user: args.user.clone(),
        // useradd gives a new system account a group of its own name (or --group).
        group: args.group.clone().or_else(|| account.as_ref().map(|a| a.group.clone())).unwrap_or_else(|| args.user.clone()),
        user_created: account.is_none() || existing.as_deref().is_some_and(|t| t.contains(&unit::created_user_marker(&args.user))),
        stop_timeout: service.stop_timeout,
        state_dir_env: (!service.names_state_dir).then(|| state_dir.clone()),
        home_read_only: service.reads.iter().chain(&service.writes).any(|p| under_home(p)),
        read_write_paths: service.writes.clone(),
    };
    let text = unit::render(&spec);

    let report = Report { dry_run: args.dry_run };
    if args.dry_run {
        println!("# {} (not written: --dry-run)\n{text}", unit_path.display());
    }
    println!("{} {name}.service: {} as {} in {}", if args.dry_run { "Would install" } else { "Installing" }, service.app, args.user, cwd.display());
    let account = ensure_account(&report, &args, &state_dir, account)?;
    let changed = existing.as_deref() != Some(text.as_str());
    let unit_shown = unit_path.display().to_string();
    if changed {
        if !args.dry_run {
            host::write_file(&unit_path, &text, 0o644).map_err(Failure::Step)?;
        }
        report.done(&unit_shown, "written");
    } else {
        report.unchanged(&unit_shown, "");
    }
    ensure_dirs(&report, &spec.read_write_paths, &args.user, account.as_ref())?;
    warn_unreadable(&report, &service.reads, &args.user, account.as_ref());
    for warning in &service.warnings {
        report.note(warning);
    }
    systemd_steps(&report, &name, changed)
}

/// The account, created when missing: a system account with no login and no home of its own
/// but the state directory.
fn ensure_account(report: &Report, args: &Args, home: &Path, found: Option<Account>) -> Result<Option<Account>, Failure> {
    if let Some(a) = found {
        report.unchanged(&format!("user {}", args.user), "exists");
        return Ok(Some(a));
    }
    let home = home.to_string_lossy();
    let mut cmd = vec!["--system", "--no-create-home", "--home-dir", &home, "--shell", "/usr/sbin/nologin"];
    if let Some(g) = &args.group {
        cmd.extend(["--gid", g]);
    }
    cmd.push(&args.user);
    if !args.dry_run {
        host::run("useradd", &cmd).map_err(Failure::Step)?;
    }
    report.done(&format!("user {}", args.user), &format!("created (useradd {})", cmd.join(" ")));
    Ok(host::account(&args.user))
}

/// The directories of ReadWritePaths= must exist when the service starts.
fn ensure_dirs(report: &Report, dirs: &[PathBuf], user: &str, account: Option<&Account>) -> Result<(), Failure> {
    for dir in dirs {
        if dir.exists() {
            report.unchanged(&format!("directory {}", dir.display()), "exists");
            if account.is_some_and(|a| !host::writable_by(dir, a)) {
                report.note(&format!("{} is not writable by {user}: chown {user} {}", dir.display(), dir.display()));
            }
        } else {
            if let (false, Some(a)) = (report.dry_run, account) {
                host::create_dir_for(dir, a).map_err(Failure::Step)?;
            }
            report.done(&format!("directory {}", dir.display()), &format!("created (owner {user})"));
        }
    }
    Ok(())
}

/// Says which of the service's files its user will not be able to read, once per closed directory.
fn warn_unreadable(report: &Report, reads: &[PathBuf], user: &str, account: Option<&Account>) {
    let mut closed = Vec::new();
    for path in reads {
        if path.starts_with("/tmp") || path.starts_with("/var/tmp") {
            report.note(&format!(
                "the service cannot see {} (PrivateTmp=yes gives it a /tmp of its own): keep the app and its files under /srv or /opt",
                path.display()
            ));
        } else if let Some(blocked) = host::blocked_on_the_way(path, account).filter(|b| !closed.contains(b)) {
            report.note(&format!(
                "{user} cannot read {} ({} is closed to it): keep the app and its virtualenv under /srv or /opt, or open {} to the user",
                path.display(),
                blocked.display(),
                blocked.display()
            ));
            closed.push(blocked);
        }
    }
}

/// daemon-reload, enable, start: each only when needed.
fn systemd_steps(report: &Report, name: &str, changed: bool) -> Result<(), Failure> {
    let unit = format!("{name}.service");
    if !host::systemd_runs() {
        report.note(&format!(
            "systemd is not running on this machine (no /run/systemd/system): the service was neither enabled nor started. Where systemd runs:\n       systemctl daemon-reload && systemctl enable --now {unit}"
        ));
        return Ok(());
    }
    let step = |args: &[&str], how: &str| -> Result<(), Failure> {
        if !report.dry_run {
            host::run("systemctl", args).map_err(|e| Failure::Step(format!("{e}: see `systemctl status {unit}` and `journalctl -u {unit}`")))?;
        }
        report.done(&format!("systemctl {}", args.join(" ")), how);
        Ok(())
    };
    if changed {
        step(&["daemon-reload"], "run (systemd reads the new unit)")?;
    } else {
        report.unchanged("systemctl daemon-reload", "the unit did not change");
    }
    if host::systemctl_says("is-enabled", &unit) {
        report.unchanged(&format!("{unit} at boot"), "enabled");
    } else {
        step(&["enable", &unit], "run (the service starts at boot)")?;
    }
    if !host::systemctl_says("is-active", &unit) {
        step(&["start", &unit], "run")?;
    } else if changed {
        // A reload would keep the old command line and sandbox: the new unit needs a new process.
        step(&["restart", &unit], "run (the unit changed)")?;
    } else {
        report.unchanged(&unit, "running; `systemctl reload` restarts its workers on new code");
    }
    Ok(())
}

/// What the configuration means for the unit: checked the way the service will read it.
struct Service {
    /// For the description: APP, or where the configuration is.
    app: String,
    stop_timeout: Duration,
    /// The configuration names its own state directory (else FERROGATE_STATE_DIR points to the unit's).
    names_state_dir: bool,
    /// Directories the server writes outside the unit's own.
    writes: Vec<PathBuf>,
    /// Files and directories the service must be able to read.
    reads: Vec<PathBuf>,
    warnings: Vec<String>,
    /// The configuration's `user` and `group`, which the unit's User= and Group= must match:
    /// the server started by systemd as another user could not switch to them.
    user: Option<String>,
    group: Option<String>,
}

impl Service {
    fn resolve(args: &Args, name: &str, cwd: &Path, config_file: Option<&Path>) -> Result<Service, String> {
        let mut argv = vec!["ferrogate".to_string()];
        argv.extend(args.server.iter().cloned());
        if let Some(c) = config_file {
            argv.extend(["--config".to_string(), c.to_string_lossy().into_owned()]);
        }
        // The service's environment, not this shell's: FERROGATE_* set here would not be there.
        let env = vec![(OsString::from("RUNTIME_DIRECTORY"), OsString::from(format!("/run/{name}")))];
        let mut layer = crate::config::gather_without_app(argv, env, std::process::id()).map_err(|e| e.to_string().trim_end().to_string())?;
        let named_state_dir = layer.state_dir.clone();
        layer.state_dir.get_or_insert_with(|| Path::new("/var/lib").join(name));
        let app = match (&layer.app, config_file) {
            (Some(app), _) => app.clone(),
            (None, Some(c)) => {
                layer.app = Some("install:from-config".into());
                format!("the app of {}", c.display())
            }
            (None, None) => {
                return Err("no app to serve: give it (ferrogate install main:app ...) or a configuration file that names it (--config FILE, or ./ferrogate.toml)".into());
            }
        };
        let config = layer.into_config().map_err(|e| e.to_string())?;
        let stop_timeout = 2 * Duration::from_secs(config.workers.graceful_timeout) + crate::ipc::CANCEL_GRACE + Duration::from_secs(10);
        let (writes, warnings) = written_dirs(&config, named_state_dir.as_deref(), name, cwd);
        let (user, group) = (config.service.user.clone(), config.service.group.clone());
        Ok(Service { app, stop_timeout, names_state_dir: named_state_dir.is_some(), writes, reads: read_paths(&config, cwd, config_file), warnings, user, group })
    }
}

/// The directories the server writes in (`state_dir` when the configuration names one),
/// outside those systemd gives the unit, and what
/// the person should know about the others.
fn written_dirs(config: &Config, state_dir: Option<&Path>, name: &str, cwd: &Path) -> (Vec<PathBuf>, Vec<String>) {
    let own = ["/var/lib", "/var/cache", "/var/log", "/run"].map(|root| Path::new(root).join(name));
    let mut dirs = Vec::new();
    let mut warnings = Vec::new();
    let parent = |p: &Path| cwd.join(p).parent().map(Path::to_path_buf);
    dirs.extend(state_dir.map(|d| cwd.join(d)));
    dirs.extend(config.log.file.as_deref().and_then(parent));
    if let Some(LogTarget::File(p)) = &config.log.access_file {
        dirs.extend(parent(p));
    }
    dirs.extend(config.service.pid_file.as_deref().and_then(parent));
    dirs.extend(parent(&config.service.control_socket));
    for bind in &config.bind {
        if let BindSpec::Unix { path, .. } = bind {
            let full = cwd.join(path);
            if full.starts_with("/tmp") || full.starts_with("/var/tmp") {
                warnings.push(format!(
                    "the socket {} will be in the service's private /tmp (PrivateTmp=yes), where a proxy such as nginx cannot see it: use /run/{name}/{} instead",
                    full.display(),
                    full.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_else(|| "app.sock".into())
                ));
            }
            dirs.extend(full.parent().map(Path::to_path_buf));
        }
    }
    let mut out: Vec<PathBuf> = dirs
        .into_iter()
        .filter(|d| !own.iter().any(|o| d.starts_with(o)) && !d.starts_with("/tmp") && !d.starts_with("/var/tmp"))
        .collect();
    out.sort();
    out.dedup();
    (out, warnings)
}

/// What the service reads: the app's directory, the configuration, static files, certificates.
fn read_paths(config: &Config, cwd: &Path, config_file: Option<&Path>) -> Vec<PathBuf> {
    let mut reads = vec![cwd.to_path_buf(), cwd.join(&config.app.app_dir)];
    reads.extend(config_file.map(Path::to_path_buf));
    reads.extend(config.statics.mounts.iter().map(|m| m.dir.clone()));
    if let Some(tls) = &config.tls {
        if let Some(CertSource::Files { certfile, keyfile, .. }) = &tls.source {
            reads.extend([cwd.join(certfile), cwd.join(keyfile)]);
        }
        reads.extend(tls.client_ca.as_ref().map(|p| cwd.join(p)));
    }
    reads.dedup();
    reads
}

/// ProtectHome=yes would hide it: /home, /root and /run/user. Symbolic links are followed
/// (a virtualenv's python is often a link into pyenv under /root or /home).
fn under_home(path: &Path) -> bool {
    let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let home = |p: &Path| ["/home", "/root", "/run/user"].iter().any(|h| p.starts_with(h));
    home(path) || home(&real) || interpreter(&real).is_some_and(|i| home(&i) || std::fs::canonicalize(&i).is_ok_and(|r| home(&r)))
}

/// The interpreter a script's `#!` line names.
fn interpreter(script: &Path) -> Option<PathBuf> {
    use std::io::Read;
    let mut head = [0u8; 512];
    let n = std::fs::File::open(script).ok()?.read(&mut head).ok()?;
    let first = std::str::from_utf8(&head[..n]).ok()?.lines().next()?;
    first.strip_prefix("#!").and_then(|rest| rest.split_whitespace().next()).map(PathBuf::from)
}

/// This `ferrogate` command as an absolute path systemd can start. The process is Python,
/// so `current_exe` would name the interpreter: the console script is argv[0], which the
/// kernel gives as the path it ran. `python -m ferrogate` runs the package's __main__.py;
/// the console script is then in the virtualenv's bin.
fn console_script(argv0: &str, cwd: &Path, env: &[(OsString, OsString)]) -> Result<PathBuf, String> {
    let path = Path::new(argv0);
    let found = if path.file_name().is_some_and(|f| f == "__main__.py") {
        // VENV/lib/pythonX.Y/site-packages/ferrogate/__main__.py
        cwd.join(path).ancestors().nth(5).map(|venv| venv.join("bin").join("ferrogate")).filter(|p| p.is_file())
    } else if argv0.contains('/') {
        Some(std::path::absolute(cwd.join(path)).unwrap_or_else(|_| cwd.join(path)))
    } else {
        let search = env.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.clone()).unwrap_or_default();
        std::env::split_paths(&search).map(|dir| dir.join(argv0)).find(|p| p.is_file())
    };
    let script = found.ok_or_else(|| {
        format!("cannot find the `ferrogate` command this runs as ({argv0}): run install through the console script, e.g. sudo /path/to/venv/bin/ferrogate install ...")
    })?;
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(&script) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(script),
        _ => Err(format!("{} is not an executable file: run install through the `ferrogate` console script of the app's virtualenv", script.display())),
    }
}

/// --config FILE, else FERROGATE_CONFIG, else ./ferrogate.toml when it exists: as an
/// absolute path, since the service starts elsewhere than this shell.
fn config_file(given: Option<&Path>, cwd: &Path, env: &[(OsString, OsString)]) -> Result<Option<PathBuf>, String> {
    let from_env = env.iter().find(|(k, _)| k == "FERROGATE_CONFIG").map(|(_, v)| PathBuf::from(v));
    let (path, option) = match (given, from_env) {
        (Some(p), _) => (p.to_path_buf(), "--config"),
        (None, Some(p)) => (p, "FERROGATE_CONFIG"),
        (None, None) => {
            let default = cwd.join("ferrogate.toml");
            return Ok(default.is_file().then_some(default));
        }
    };
    let full = cwd.join(&path);
    if !full.is_file() {
        return Err(format!("{option} {}: no such file", path.display()));
    }
    Ok(Some(std::path::absolute(&full).unwrap_or(full)))
}

#[cfg(test)]
mod tests;
