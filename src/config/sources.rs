//! The sources of the configuration, kept apart until they are stacked: the command
//! line, the environment and the file, so that `ferrogate config` can say where each
//! value came from and an error about a value can point at the line that set it.
//!
//! The file's path comes from the command line or the environment (--config,
//! FERROGATE_CONFIG), so those are read first, then the file; `layer` stacks them as
//! command line > environment > file > defaults.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::ArgMatches;
use clap::parser::ValueSource;

use super::file::{FileError, FileLayer, NamedBy};
use super::file_values::{Kind, kind};
use super::{Config, ConfigError, DEFAULT_FORWARDED_ALLOW_IPS, DEFAULT_UDS_MODE, ENV_VARS, EnvLayer, Layer, cli};

/// uvicorn's variable for --forwarded-allow-ips, read below FERROGATE_FORWARDED_ALLOW_IPS.
const UVICORN_FORWARDED_ALLOW_IPS: &str = "FORWARDED_ALLOW_IPS";

/// What each source says.
#[derive(Debug)]
pub struct Sources {
    pub cli: Layer,
    pub env: Layer,
    pub file: Option<FileLayer>,
    /// The command line parsed for its raw values (what `config` shows).
    cli_matches: Option<ArgMatches>,
    /// FERROGATE_* and FORWARDED_ALLOW_IPS as found.
    env_values: Vec<(String, String)>,
}

/// Where an option's value comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    CommandLine,
    /// The variable that set it.
    Environment(String),
    File { path: PathBuf, line: usize, column: usize },
    Default,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::CommandLine => f.write_str("command line"),
            Origin::Environment(var) => write!(f, "environment {var}"),
            Origin::File { path, line, .. } => write!(f, "file {}:{line}", path.display()),
            Origin::Default => f.write_str("default"),
        }
    }
}

/// Reads the command line, the environment and the file. `needs_app`: whether a missing
/// APP is an error (serving, `check`) or not (`certs`, `config`). Errors are clap's (usage,
/// --help and --version, bad FERROGATE_* values) or, for the file, every problem found,
/// one per line, as a clap error of kind ValueValidation (exit code 2).
pub fn gather_sources(argv: Vec<OsString>, env: Vec<(OsString, OsString)>, pid: u32, needs_app: bool) -> Result<Sources, clap::Error> {
    let env_values = env
        .iter()
        .filter_map(|(name, value)| {
            let name = name.to_str()?;
            let known = ENV_VARS.iter().any(|(var, _)| *var == name) || name == UVICORN_FORWARDED_ALLOW_IPS;
            known.then(|| (name.to_string(), value.to_string_lossy().into_owned()))
        })
        .collect();
    let env = EnvLayer::read(env, pid);
    let cli = Layer::from(cli::parse(argv.clone(), false)?);
    let named = match (&cli.config, &env.layer.config) {
        (Some(path), _) => Some((path.as_path(), NamedBy::CommandLine)),
        (None, Some(path)) => Some((path.as_path(), NamedBy::Environment)),
        (None, None) => None,
    };
    let file = FileLayer::find(named).map_err(file_error)?;
    // APP may come from a lower layer; only when none gives it is it required.
    let app_given = cli.sets("app")
        || env.layer.sets("app")
        || env.errors.iter().any(|(id, _)| *id == "app")
        || file.as_ref().is_some_and(|f| f.layer.sets("app"));
    if needs_app && !app_given {
        // clap's own words for a missing APP.
        cli::parse(argv.clone(), true)?;
    }
    // A variable that does not parse matters only if the command line leaves its option to it.
    if let Some((_, e)) = env.errors.into_iter().find(|(id, _)| !cli.sets(id)) {
        return Err(e);
    }
    let cli_matches = cli::env_command().try_get_matches_from(&argv).ok();
    Ok(Sources { cli, env: env.layer, file, cli_matches, env_values })
}

/// The file's problems as one error, one `error:` line each.
fn file_error(errors: Vec<FileError>) -> clap::Error {
    let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    clap::Error::raw(clap::error::ErrorKind::ValueValidation, format!("{}\n", lines.join("\nerror: ")))
}

impl Sources {
    /// The layers stacked: command line > environment > file.
    pub fn layer(&self) -> Layer {
        let file = self.file.as_ref().map(|f| f.layer.clone()).unwrap_or_default();
        let mut layer = self.cli.clone().over(self.env.clone().over(file));
        // The file read, however it was found (ServiceConfig::config_file).
        if let Some(f) = &self.file {
            layer.config = Some(std::path::absolute(&f.path).unwrap_or_else(|_| f.path.clone()));
        }
        layer
    }

    /// Where the option whose clap id is `id` gets its value.
    pub fn origin(&self, id: &str) -> Origin {
        if self.cli.sets(id) {
            return Origin::CommandLine;
        }
        if self.env.sets(id) {
            let var = ENV_VARS.iter().find(|(_, i)| *i == id).map_or("FERROGATE_*", |(var, _)| var);
            return Origin::Environment(var.to_string());
        }
        if let Some(e) = self.file.as_ref().and_then(|f| f.entry(id).map(|e| (f, e))) {
            return Origin::File { path: e.0.path.clone(), line: e.1.line, column: e.1.column };
        }
        if id == "forwarded_allow_ips" && self.env.uvicorn_forwarded_allow_ips.is_some() {
            return Origin::Environment(UVICORN_FORWARDED_ALLOW_IPS.into());
        }
        Origin::Default
    }

    /// The option's values as its source gave them (relative paths of the file resolved),
    /// or None where it has its default.
    pub fn given(&self, id: &str) -> Option<Vec<String>> {
        match self.origin(id) {
            Origin::CommandLine => Some(self.cli_values(id)),
            Origin::Environment(var) => self.env_values.iter().find(|(n, _)| *n == var).map(|(_, v)| vec![v.clone()]),
            Origin::File { .. } => self.file.as_ref()?.entry(id).map(|e| e.values.clone()),
            Origin::Default => None,
        }
    }

    fn cli_values(&self, id: &str) -> Vec<String> {
        let Some(m) = &self.cli_matches else { return Vec::new() };
        let has = |id: &str| m.ids().any(|i| i == id) && m.value_source(id) == Some(ValueSource::CommandLine);
        // --no-x came last: clap dropped the --x before it.
        if has(&format!("no_{id}")) {
            return vec!["false".into()];
        }
        let flag = options().into_iter().find(|a| a.get_id() == id).is_some_and(|a| kind(&a) == Kind::Flag);
        match m.get_raw(id) {
            Some(raw) if !flag => raw.map(|v| v.to_string_lossy().into_owned()).collect(),
            _ => vec!["true".into()],
        }
    }

    /// Builds and validates the configuration as `Layer::into_config` does; an error about
    /// an option the file or the environment set says where it was set.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        self.layer().into_config().map_err(|e| self.located(e))
    }

    /// `e`, with the place of the value it is about when that came from the file or a variable.
    pub fn located(&self, e: ConfigError) -> ConfigError {
        let Some(id) = id_of_option(e.option) else { return e };
        let place = match self.origin(&id) {
            Origin::File { .. } => self.file.as_ref().and_then(|f| {
                let entry = f.entry(&id)?;
                let path = f.path.display();
                // The element of a list or table that the message quotes, else the key.
                let quoted = entry.values.iter().zip(&entry.places).find(|(v, _)| e.message.contains(v.as_str()));
                Some(match (quoted, entry.written.as_str()) {
                    (Some((_, (line, column, written))), _) => format!("{path}:{line}:{column}: `{}` = {written}", entry.key),
                    (None, "") => format!("{path}:{}:{}: `{}`", entry.line, entry.column, entry.key),
                    (None, written) => format!("{path}:{}:{}: `{}` = {written}", entry.line, entry.column, entry.key),
                })
            }),
            Origin::Environment(var) => self.env_values.iter().find(|(n, _)| *n == var).map(|(n, v)| format!("{n}={v}")),
            _ => None,
        };
        match place {
            Some(place) => ConfigError { option: e.option, message: format!("{place}: {}", e.message) },
            None => e,
        }
    }
}

/// The clap id of the option a `ConfigError` names ("--static" is static_mounts).
fn id_of_option(option: &str) -> Option<String> {
    if option == "APP" {
        return Some("app".into());
    }
    let long = option.strip_prefix("--")?;
    options().into_iter().find(|a| a.get_long() == Some(long)).map(|a| a.get_id().to_string())
}

/// The options a user sets, in the order of `--help`: every argument but the hidden
/// --no-x twins and --help/--version.
pub fn options() -> Vec<clap::Arg> {
    cli::env_command()
        .get_arguments()
        .filter(|a| !a.is_hide_set() && !matches!(a.get_id().as_str(), "help" | "version"))
        .cloned()
        .collect()
}

/// The default of the option whose clap id is `id`, as its value would be written, where
/// it has one value (`--help` shows the same).
pub fn default_value(id: &str) -> Option<String> {
    match id {
        "workers" => Some(Config::default().workers.count.to_string()),
        "uds_mode" => Some(format!("{DEFAULT_UDS_MODE:o}")),
        "forwarded_allow_ips" => Some(DEFAULT_FORWARDED_ALLOW_IPS.into()),
        "reload_include" => Some("*.py".into()),
        _ => cli::help_defaults().into_iter().find(|(d, _)| *d == id).map(|(_, v)| v),
    }
}
