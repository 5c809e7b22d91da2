//! How one key of the configuration file becomes its option's arguments.
//!
//! Nothing here lists the options: a key is looked up among the command line's own
//! arguments (`cli::env_command`), its TOML value is turned into the argument strings the
//! command line would take, and clap's own value parser reads them (`env::parse_argv`).
//! So an option added to `Cli` works in the file at once, a bad value is refused with the
//! same rules as on the command line, and what the file accepts is decided by:
//! - the option's value type: booleans for flags and `--x[=BOOL]` options, numbers for
//!   numeric options (a string holding one is read as the command line reads it, which is
//!   what a file mode such as "0660" needs), strings (or numbers) for the rest;
//! - whether it repeats (`--header`, `--bind`, ...): then a list, or one value;
//! - whether its value is a pair (`--static URL_PATH=DIR`, `--header NAME:VALUE`): then a
//!   table too, `[static]` with `"/static" = "static"`;
//! - its value name: the right side of a pair named DIR, FILE or PATH, a `PathBuf` value
//!   and a `unix:PATH` address are paths, taken from the file's directory when relative.

use std::any::TypeId;
use std::ffi::OsString;
use std::ops::Range;
use std::path::{Path, PathBuf};

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Arg, ArgAction, Command};
use toml::Spanned;
use toml::de::DeValue;

use super::file::resolve;
use super::{Layer, cli, env::parse_argv, sources::default_value};

/// What an option's value is, as the file must write it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A flag without a value (--reload): true or false.
    Flag,
    /// An option whose value is a boolean (--access-log[=BOOL]).
    Bool,
    Integer,
    Float,
    Text,
}

pub fn kind(arg: &Arg) -> Kind {
    if !arg.get_action().takes_values() {
        return Kind::Flag;
    }
    let t = arg.get_value_parser().type_id();
    let integers = [
        TypeId::of::<u8>(),
        TypeId::of::<u16>(),
        TypeId::of::<u32>(),
        TypeId::of::<u64>(),
        TypeId::of::<usize>(),
        TypeId::of::<i8>(),
        TypeId::of::<i16>(),
        TypeId::of::<i32>(),
        TypeId::of::<i64>(),
        TypeId::of::<isize>(),
    ];
    if t == TypeId::of::<bool>() {
        Kind::Bool
    } else if integers.into_iter().any(|i| t == i) {
        Kind::Integer
    } else if t == TypeId::of::<f64>() || t == TypeId::of::<f32>() {
        Kind::Float
    } else {
        Kind::Text
    }
}

/// Whether the option may be given several times (a list in the file).
pub fn repeatable(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::Append)
}

/// The key that names `arg` in the file: its long name, `app` for APP.
pub fn key_of(arg: &Arg) -> String {
    arg.get_long().map_or_else(|| arg.get_id().to_string(), str::to_string)
}

/// An option whose value is a pair, by its value name (URL_PATH=DIR, NAME:VALUE): the
/// separator, and whether the right side is a path.
fn pair(arg: &Arg) -> Option<(char, bool)> {
    let name = arg.get_value_names()?.first()?.as_str();
    let sep = ['=', ':'].into_iter().find(|c| name.contains(*c))?;
    let right = name.rsplit(sep).next().unwrap_or("");
    Some((sep, matches!(right, "DIR" | "FILE" | "PATH")))
}

/// gunicorn's configuration names whose closest spelling here is another option.
const GUNICORN_NAMES: &[(&str, &str)] = &[
    ("accesslog", "access-log-file"),
    ("errorlog", "log-file"),
    ("keepalive", "timeout-keep-alive"),
    ("listen", "bind"),
    ("loglevel", "log-level"),
];

/// A problem with a value: where in the file, and the message.
pub type Problem = (Range<usize>, String);

/// The command line's arguments, to look keys up in and parse values with.
pub struct Options {
    cmd: Command,
}

impl Options {
    pub fn new() -> Self {
        Options { cmd: cli::env_command() }
    }

    /// The option `key` names (`max_header_size` is `max-header-size`), or why the key is
    /// refused, with a suggestion. `value` helps explain a misplaced table.
    pub fn lookup(&self, key: &str, value: &DeValue) -> Result<Arg, String> {
        let name = key.replace('_', "-");
        match name.as_str() {
            "config" => {
                return Err(format!(
                    "`{key}` cannot be set in the configuration file, it names the file: give --config FILE or FERROGATE_CONFIG instead, or remove the line"
                ));
            }
            "help" | "version" => return Err(format!("`{key}` is an action of the command line, not a setting: remove the line")),
            _ => {}
        }
        match self.find(&name) {
            Some(arg) if arg.is_hide_set() => match name.strip_prefix("no-") {
                Some(base) => Err(format!("unknown key `{key}`: write `{base} = false`")),
                None => Err(format!("unknown key `{key}`")),
            },
            Some(arg) => Ok(arg.clone()),
            None => Err(self.unknown(key, &name, value)),
        }
    }

    fn find(&self, name: &str) -> Option<&Arg> {
        self.cmd.get_arguments().find(|a| match a.get_long() {
            Some(long) => long == name || a.get_all_aliases().is_some_and(|aliases| aliases.contains(&name)),
            None => a.get_id() == name,
        })
    }

    fn unknown(&self, key: &str, name: &str, value: &DeValue) -> String {
        let holds_options = value.as_table().is_some_and(|t| t.iter().any(|(k, _)| self.find(&k.get_ref().replace('_', "-")).is_some()));
        if holds_options {
            return format!(
                "unknown table `[{key}]`: options are keys at the top of the file, before the first [table]; move them out of [{key}]"
            );
        }
        let known = |a: &&Arg| !a.is_hide_set() && !matches!(a.get_id().as_str(), "help" | "version" | "config");
        let mut names: Vec<String> = Vec::new();
        for arg in self.cmd.get_arguments().filter(known) {
            names.push(key_of(arg));
            names.extend(arg.get_all_aliases().unwrap_or_default().into_iter().map(String::from));
        }
        let closest = names
            .iter()
            .map(|n| (strsim::jaro_winkler(name, n), n))
            .filter(|(score, _)| *score > 0.8)
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, n)| n.as_str());
        let suggestion = GUNICORN_NAMES.iter().find(|(g, _)| *g == name).map(|(_, ours)| *ours).or(closest);
        if let Some(s) = suggestion {
            return format!("unknown key `{key}`; did you mean `{s}`?");
        }
        format!("unknown key `{key}`; the keys are the long options of `ferrogate --help` without the dashes (workers, bind, log-level, ...)")
    }

    /// Reads `value`, the file's value for `arg` (written `key`), into the layer it sets
    /// and the arguments it stands for. `text` is the whole file; relative paths are from `dir`.
    pub fn parse(&mut self, arg: &Arg, key: &str, value: &Spanned<DeValue>, text: &str, dir: &Path) -> Result<(Layer, Vec<(String, Range<usize>)>), Vec<Problem>> {
        let values = self.values(arg, key, value, text)?;
        let values: Vec<(String, Range<usize>)> = values.into_iter().map(|(v, span)| (resolve_paths(arg, v, dir), span)).collect();
        // Each value alone first, so that an error points at the element of a list.
        let mut problems = Vec::new();
        for (v, span) in &values {
            let argv = self.argv(arg, std::slice::from_ref(v));
            if let Err(e) = parse_argv(&mut self.cmd, argv) {
                problems.push((span.clone(), explain(&e, arg, key, &text[span.clone()])));
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let all: Vec<String> = values.iter().map(|(v, _)| v.clone()).collect();
        let argv = self.argv(arg, &all);
        let layer = parse_argv(&mut self.cmd, argv).map_err(|e| vec![(value.span(), explain(&e, arg, key, &text[value.span()]))])?;
        Ok((layer, values))
    }

    /// The command line that gives `values` to `arg`.
    fn argv(&self, arg: &Arg, values: &[String]) -> Vec<OsString> {
        let mut argv = vec![OsString::from("ferrogate")];
        match arg.get_long() {
            None => {
                argv.push("--".into());
                argv.extend(values.iter().map(OsString::from));
            }
            // A flag says yes by being there; no is its --no- twin where it has one (and
            // else its absence, which is the default).
            Some(long) if kind(arg) == Kind::Flag => {
                let no = format!("no-{long}");
                let has_no = self.cmd.get_arguments().any(|a| a.get_long() == Some(no.as_str()));
                for v in values {
                    match v.as_str() {
                        "true" => argv.push(format!("--{long}").into()),
                        _ if has_no => argv.push(format!("--{no}").into()),
                        _ => {}
                    }
                }
            }
            // `--x=VALUE`: taken as it is even when it starts with '-', and the only
            // spelling of the options whose value is optional (--access-log[=BOOL]).
            Some(long) => argv.extend(values.iter().map(|v| OsString::from(format!("--{long}={v}")))),
        }
        argv
    }

    /// The option's values, with where each is written, before paths are resolved.
    fn values(&self, arg: &Arg, key: &str, value: &Spanned<DeValue>, text: &str) -> Result<Vec<(String, Range<usize>)>, Vec<Problem>> {
        match value.get_ref() {
            DeValue::Array(items) if repeatable(arg) => {
                let mut out = Vec::new();
                let mut problems = Vec::new();
                for item in items.iter() {
                    let one = match item.get_ref() {
                        // A list in the list is one value of several names: one certificate
                        // for `domain = [["example.com", "www.example.com"]]`.
                        DeValue::Array(names) => names
                            .iter()
                            .map(|n| scalar(arg, key, n, text).map(|(s, _)| s))
                            .collect::<Result<Vec<_>, _>>()
                            .map(|names| (names.join(","), item.span())),
                        _ => scalar(arg, key, item, text),
                    };
                    match one {
                        Ok(v) => out.push(v),
                        Err(p) => problems.push(p),
                    }
                }
                if problems.is_empty() { Ok(out) } else { Err(problems) }
            }
            DeValue::Array(_) => Err(vec![(value.span(), format!("`{key}` takes one value, not a list{}", example_hint(arg, key)))]),
            DeValue::Table(entries) => {
                let Some((sep, _)) = pair(arg).filter(|_| repeatable(arg)) else {
                    return Err(vec![(value.span(), format!("`{key}` cannot be a table{}", example_hint(arg, key)))]);
                };
                let mut entries: Vec<_> = entries.iter().collect();
                entries.sort_by_key(|(k, _)| k.span().start);
                let mut out = Vec::new();
                let mut problems = Vec::new();
                for (k, v) in entries {
                    let name: &str = k.get_ref();
                    if self.find(&name.replace('_', "-")).is_some() {
                        problems.push((k.span(), format!(
                            "`{name}` is inside the [{key}] table: every key below a [table] line belongs to it; move `{name}` above the first [table]"
                        )));
                        continue;
                    }
                    match scalar_of(Kind::Text, arg, &format!("{key}.\"{name}\""), v, text) {
                        Ok((right, span)) => out.push((format!("{name}{sep}{right}"), span)),
                        Err(p) => problems.push(p),
                    }
                }
                if problems.is_empty() { Ok(out) } else { Err(problems) }
            }
            _ => scalar(arg, key, value, text).map(|v| vec![v]).map_err(|p| vec![p]),
        }
    }
}

/// One value's text, as the command line would take it, if its TOML type fits the option.
fn scalar(arg: &Arg, key: &str, value: &Spanned<DeValue>, text: &str) -> Result<(String, Range<usize>), Problem> {
    scalar_of(kind(arg), arg, key, value, text)
}

fn scalar_of(kind: Kind, arg: &Arg, key: &str, value: &Spanned<DeValue>, text: &str) -> Result<(String, Range<usize>), Problem> {
    let span = value.span();
    let written = &text[span.clone()];
    let refuse = |what: &str| Err((span.clone(), format!("`{key}` must be {what} (it is {}){}", describe(value.get_ref(), written), example_hint(arg, key))));
    let v = match (kind, value.get_ref()) {
        (Kind::Flag | Kind::Bool, DeValue::Boolean(b)) => b.to_string(),
        (Kind::Flag | Kind::Bool, _) => return refuse("true or false, without quotes"),
        (_, DeValue::Boolean(_) | DeValue::Array(_) | DeValue::Table(_)) => return refuse(must(kind)),
        (Kind::Integer, DeValue::Float(_)) => return refuse(must(kind)),
        (_, DeValue::Integer(i)) => match i.radix() {
            10 => i.as_str().to_string(),
            // TOML's octal is the file modes' spelling (uds-mode = 0o660), which their
            // parser takes as it is; 660 is octal there too, as on the command line.
            8 => format!("0o{}", i.as_str()),
            radix => i128::from_str_radix(i.as_str(), radix).map(|n| n.to_string()).unwrap_or_else(|_| written.to_string()),
        },
        (_, DeValue::Float(f)) => f.as_str().to_string(),
        (_, DeValue::String(s)) => s.to_string(),
        (_, DeValue::Datetime(d)) => d.to_string(),
    };
    Ok((v, span))
}

fn must(kind: Kind) -> &'static str {
    match kind {
        Kind::Flag | Kind::Bool => "true or false",
        Kind::Integer => "a whole number",
        Kind::Float => "a number",
        Kind::Text => "a string",
    }
}

fn describe(value: &DeValue, written: &str) -> String {
    match value {
        DeValue::String(_) => format!("a string: {written}"),
        DeValue::Array(_) => "a list".into(),
        DeValue::Table(_) => "a table".into(),
        DeValue::Datetime(_) => format!("a date: {written}"),
        _ => written.to_string(),
    }
}

/// "; e.g. workers = 4": the option's default where it has one, else its value name.
fn example_hint(arg: &Arg, key: &str) -> String {
    example(arg, key).map(|e| format!("; e.g. {e}")).unwrap_or_default()
}

pub fn example(arg: &Arg, key: &str) -> Option<String> {
    let default = default_value(arg.get_id().as_str());
    let placeholder = || arg.get_value_names().and_then(|n| n.first()).map(|n| n.to_string());
    let text = match kind(arg) {
        Kind::Flag | Kind::Bool => "true".to_string(),
        Kind::Integer | Kind::Float => default?,
        Kind::Text => {
            let first_choice = arg.get_possible_values().first().map(|p| p.get_name().to_string());
            format!("{:?}", default.or(first_choice).or_else(placeholder)?)
        }
    };
    Some(if repeatable(arg) { format!("{key} = [{text}]") } else { format!("{key} = {text}") })
}

/// Relative paths in `value` taken from `dir`: the whole of a path option's value
/// (but `-`, stderr or stdout), the path side of a pair, and `unix:PATH` addresses, in
/// each piece of a list the option splits itself (--bind a,b).
fn resolve_paths(arg: &Arg, value: String, dir: &Path) -> String {
    if arg.get_value_parser().type_id() == TypeId::of::<PathBuf>() {
        let pieces: Vec<String> = match arg.get_value_delimiter() {
            Some(d) => value.split(d).map(|p| resolve(dir, p)).collect(),
            None if value == "-" => vec![value],
            None => vec![resolve(dir, &value)],
        };
        return pieces.join(&arg.get_value_delimiter().unwrap_or(',').to_string());
    }
    let one = |piece: &str| -> String {
        if let Some(path) = piece.strip_prefix("unix:") {
            return format!("unix:{}", resolve(dir, path));
        }
        match pair(arg) {
            Some((sep, true)) => match piece.split_once(sep) {
                Some((left, right)) => format!("{left}{sep}{}", resolve(dir, right.trim())),
                None => piece.to_string(),
            },
            _ => piece.to_string(),
        }
    };
    match arg.get_value_delimiter() {
        Some(d) => value.split(d).map(one).collect::<Vec<_>>().join(&d.to_string()),
        None => one(&value),
    }
}

/// clap's refusal of a value, said of the file's key.
fn explain(e: &clap::Error, arg: &Arg, key: &str, written: &str) -> String {
    let hint = example_hint(arg, key);
    match e.kind() {
        ErrorKind::InvalidValue => {
            if let Some(ContextValue::Strings(valid)) = e.get(ContextKind::ValidValue) {
                return format!("`{key}` = {written} is not one of {}", valid.join(", "));
            }
        }
        ErrorKind::ValueValidation => {
            let source = std::error::Error::source(e);
            let cause = source.map(|c| c.to_string()).unwrap_or_default();
            // A number in the file that the option's type cannot hold is out of range;
            // anything else that a number parser refused is not a number at all.
            let is_number = !written.starts_with(['"', '\'']);
            let not_a = |what: &str| format!("`{key}` must be {what} (it is {}){hint}", if is_number { written.to_string() } else { format!("a string: {written}") });
            let int_error = source.is_some_and(|c| c.is::<std::num::ParseIntError>());
            let float_error = source.is_some_and(|c| c.is::<std::num::ParseFloatError>());
            return match kind(arg) {
                Kind::Integer if is_number && (int_error || cause.contains(" is not in ")) => format!("`{key}` = {written} is out of range ({cause})"),
                Kind::Integer if int_error => not_a("a whole number"),
                Kind::Float if float_error => not_a("a number"),
                _ => format!("`{key}` = {written}: {cause}"),
            };
        }
        _ => {}
    }
    // Anything else (an option that conflicts with another, say) in clap's own words.
    let words = e.render().to_string();
    let first = words.lines().next().unwrap_or_default().trim_start_matches("error: ");
    format!("`{key}` = {written}: {first}")
}
