//! `ferrogate check` and `ferrogate config`: the configuration (ferrogate.toml, the
//! FERROGATE_* variables and the options given after the command, as the server reads
//! them) validated without starting anything, or shown option by option with where each
//! value comes from.

use std::ffi::OsString;

use serde_json::{Value, json};

use crate::config::{Origin, Sources, ValueKind, gather_sources, key_of, options, value_kind};

const CHECK_USAGE: &str = "usage: ferrogate check [OPTIONS] [APP]

Validates the configuration exactly as `ferrogate` would read it to serve (ferrogate.toml
or --config FILE, the FERROGATE_* variables, then OPTIONS, which are the server's), without
starting anything. Prints one line and exits 0 when it is usable; prints every error (with
the file, line and a fix) and exits 2 when it is not.";

const CONFIG_USAGE: &str = "usage: ferrogate config [--json] [OPTIONS] [APP]

Prints the effective configuration: every option, its value, and where the value comes
from (default, file PATH:LINE, environment FERROGATE_X, command line). OPTIONS are the
server's; `ferrogate check` validates the values.

  --json    one JSON object: {\"file\": PATH or null, \"options\": [{\"option\", \"value\", \"source\", ...}]}";

type Env = Vec<(OsString, OsString)>;

/// `ferrogate check ARGS...`: 0 when the configuration is usable, 2 when not.
pub fn check(args: &[String], env: Env) -> i32 {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{CHECK_USAGE}");
        return 0;
    }
    let Some(sources) = gather(args, env, true) else { return 2 };
    for warning in sources.layer().warnings() {
        eprintln!("warning: {warning}");
    }
    let set: Vec<String> = options().iter().filter(|a| sources.origin(a.get_id().as_str()) != Origin::Default).map(key_of).collect();
    let subject = match &sources.file {
        Some(file) => format!("{}: configuration OK", file.path.display()),
        None => "configuration OK (no config file)".to_string(),
    };
    match sources.into_config() {
        Ok(_) => {
            println!("{subject} ({} option{} set: {})", set.len(), if set.len() == 1 { "" } else { "s" }, set.join(", "));
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            2
        }
    }
}

/// `ferrogate config [--json] ARGS...`: 0, or 2 when the sources cannot be read.
pub fn config(args: &[String], env: Env) -> i32 {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{CONFIG_USAGE}");
        return 0;
    }
    let json = args.iter().any(|a| a == "--json");
    let rest: Vec<String> = args.iter().filter(|a| *a != "--json").cloned().collect();
    let Some(sources) = gather(&rest, env, false) else { return 2 };
    let rows = rows(&sources);
    if json {
        println!("{}", to_json(&sources, &rows));
    } else {
        print!("{}", table(&sources, &rows));
    }
    0
}

/// The sources, or None once clap's error (or help) is printed.
fn gather(args: &[String], env: Env, needs_app: bool) -> Option<Sources> {
    let argv = std::iter::once("ferrogate".into()).chain(args.iter().map(OsString::from)).collect();
    match gather_sources(argv, env, std::process::id(), needs_app) {
        Ok(sources) => Some(sources),
        Err(e) => {
            let _ = e.print();
            None
        }
    }
}

/// One option as `config` shows it.
struct Row {
    key: String,
    kind: ValueKind,
    list: bool,
    /// As given, or the default; None: not set and no single default.
    values: Option<Vec<String>>,
    origin: Origin,
}

fn rows(sources: &Sources) -> Vec<Row> {
    options()
        .iter()
        .map(|arg| {
            let id = arg.get_id().as_str();
            let default = match (id, &sources.file) {
                // The file read without being named is ./ferrogate.toml, the default.
                ("config", Some(file)) => Some(file.path.display().to_string()),
                _ if value_kind(arg) == ValueKind::Flag => Some("false".into()),
                _ => crate::config::default_value(id),
            };
            let values = sources.given(id).or_else(|| default.map(|d| vec![d]));
            Row {
                key: key_of(arg),
                kind: value_kind(arg),
                list: matches!(arg.get_action(), clap::ArgAction::Append),
                values,
                origin: sources.origin(id),
            }
        })
        .collect()
}

fn table(sources: &Sources, rows: &[Row]) -> String {
    let shown: Vec<(String, String, String)> = rows
        .iter()
        .map(|r| {
            let value = match &r.values {
                None => "-".to_string(),
                Some(v) if v.len() == 1 && v[0].is_empty() => "\"\"".to_string(),
                // A list as TOML writes it, so that a value with a comma stays one value.
                Some(v) if r.list => format!("[{}]", v.iter().map(|x| format!("{x:?}")).collect::<Vec<_>>().join(", ")),
                Some(v) => v.join(" "),
            };
            (r.key.clone(), value, r.origin.to_string())
        })
        .collect();
    let key_width = shown.iter().map(|r| r.0.len()).max().unwrap_or(0).max("OPTION".len());
    // A long value (an access log format) pushes its own source along, not every row's.
    let value_width = shown.iter().map(|r| r.1.chars().count()).filter(|w| *w <= 40).max().unwrap_or(0).max("VALUE".len());
    let mut out = match &sources.file {
        Some(file) => format!("# configuration file: {}\n", file.path.display()),
        None => "# no configuration file (./ferrogate.toml absent, no --config or FERROGATE_CONFIG)\n".to_string(),
    };
    out.push_str(&format!("{:key_width$}  {:value_width$}  SOURCE\n", "OPTION", "VALUE"));
    for (key, value, origin) in shown {
        out.push_str(&format!("{key:key_width$}  {value:value_width$}  {origin}\n"));
    }
    out
}

fn to_json(sources: &Sources, rows: &[Row]) -> Value {
    let options: Vec<Value> = rows
        .iter()
        .map(|r| {
            let value = match &r.values {
                None => Value::Null,
                Some(v) if r.list || v.len() > 1 => json!(v),
                Some(v) => typed(r.kind, &v[0]),
            };
            let mut row = match &r.origin {
                Origin::CommandLine => json!({ "source": "command line" }),
                Origin::Environment(var) => json!({ "source": "environment", "variable": var }),
                Origin::File { path, line, column } => {
                    json!({ "source": "file", "file": path.display().to_string(), "line": line, "column": column })
                }
                Origin::Default => json!({ "source": "default" }),
            };
            row["option"] = json!(r.key);
            row["value"] = value;
            row
        })
        .collect();
    json!({
        "file": sources.file.as_ref().map(|f| f.path.display().to_string()),
        "options": options,
    })
}

/// A value as JSON of its option's type, where it reads as one.
fn typed(kind: ValueKind, v: &str) -> Value {
    let parsed = match kind {
        ValueKind::Flag | ValueKind::Bool => v.parse::<bool>().ok().map(Value::from),
        ValueKind::Integer => v.parse::<i64>().ok().map(Value::from),
        ValueKind::Float => v.parse::<f64>().ok().map(Value::from),
        ValueKind::Text => None,
    };
    parsed.unwrap_or_else(|| Value::from(v))
}
