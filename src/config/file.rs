//! The configuration file's layer, between the defaults and the environment.
//!
//! `ferrogate.toml` in the working directory when it exists, or the file named by
//! --config / FERROGATE_CONFIG (which must exist). Its keys are the long options' names
//! (`workers = 4`, `log-level = "debug"`, `max_header_size` or `max-header-size`), APP is
//! `app`; what each value may be, and how it becomes the option's arguments, is
//! file_values.rs. Every key is checked, and every problem found is reported at once with
//! the file, line and column, so one `ferrogate check` shows all there is to fix.

use std::ops::Range;
use std::path::{Component, Path, PathBuf};

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::Layer;
use super::file_values::Options;

/// The file read from the working directory when no other is named.
pub const DEFAULT_FILE: &str = "ferrogate.toml";

/// What the file sets, and where.
#[derive(Clone, Debug)]
pub struct FileLayer {
    /// The file, as it was named (or `ferrogate.toml`): errors and `ferrogate config` show it so.
    pub path: PathBuf,
    pub layer: Layer,
    /// One per option the file sets, in file order.
    pub entries: Vec<FileEntry>,
}

/// One option the file sets.
#[derive(Clone, Debug, PartialEq)]
pub struct FileEntry {
    /// The option's clap id (the `Cli` field name, as `Layer::sets` takes it).
    pub id: String,
    /// The key as written in the file.
    pub key: String,
    pub line: usize,
    pub column: usize,
    /// The value as written in the file (for messages); empty for a table.
    pub written: String,
    /// The option's values as the command line would give them, relative paths resolved.
    pub values: Vec<String>,
    /// Where each of `values` is written: line, column, and the TOML text.
    pub places: Vec<(usize, usize, String)>,
}

/// One problem with the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileError {
    pub path: PathBuf,
    /// Line and column (from 1), when the problem has a place.
    pub at: Option<(usize, usize)>,
    pub message: String,
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.at {
            Some((line, column)) => write!(f, "{}:{line}:{column}: {}", self.path.display(), self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

/// Who named the file: the implicit ./ferrogate.toml may be absent, a named one may not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NamedBy {
    Default,
    CommandLine,
    Environment,
}

impl FileLayer {
    /// Reads the file `named` gives (with who named it), or ./ferrogate.toml if it exists.
    pub fn find(named: Option<(&Path, NamedBy)>) -> Result<Option<FileLayer>, Vec<FileError>> {
        let (path, by) = named.unwrap_or((Path::new(DEFAULT_FILE), NamedBy::Default));
        if by == NamedBy::Default && !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read(path).map_err(|e| {
            let named = match by {
                NamedBy::CommandLine => format!("--config {}", path.display()),
                NamedBy::Environment => format!("FERROGATE_CONFIG={}", path.display()),
                NamedBy::Default => path.display().to_string(),
            };
            let fix = match e.kind() {
                std::io::ErrorKind::NotFound => "; check the path (a relative one is from the working directory)",
                std::io::ErrorKind::PermissionDenied => "; make it readable by this user",
                _ => "",
            };
            vec![FileError { path: path.into(), at: None, message: format!("cannot read the configuration file ({named}): {e}{fix}") }]
        })?;
        let text = String::from_utf8(text).map_err(|e| {
            let (line, column) = line_column(&String::from_utf8_lossy(e.as_bytes()), e.utf8_error().valid_up_to());
            vec![FileError { path: path.into(), at: Some((line, column)), message: "the file is not UTF-8 text; TOML files must be".into() }]
        })?;
        let dir = std::path::absolute(path).ok().and_then(|p| p.parent().map(Path::to_path_buf)).unwrap_or_default();
        FileLayer::parse(path, &text, &dir).map(Some)
    }

    /// Parses `text`, the contents of `path`; relative paths in it are taken from `dir`.
    pub fn parse(path: &Path, text: &str, dir: &Path) -> Result<FileLayer, Vec<FileError>> {
        let error = |span: Range<usize>, message: String| {
            FileError { path: path.into(), at: Some(line_column(text, span.start)), message }
        };
        let table = DeTable::parse(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            let what = e.message().trim_end().replace('\n', "; ");
            // The one TOML rule that bites a setting of ours: umask = 027.
            let hint = if what.contains("leading zero") { "; write a file mode as 0o027 or \"027\"" } else { "" };
            vec![error(span, format!("this is not valid TOML: {what}{hint}"))]
        })?;
        let mut keys: Vec<(&Spanned<_>, &Spanned<DeValue>)> = table.get_ref().iter().collect();
        keys.sort_by_key(|(k, _)| k.span().start);

        let mut options = Options::new();
        let mut file = FileLayer { path: path.into(), layer: Layer::default(), entries: Vec::new() };
        let mut errors = Vec::new();
        for (key, value) in keys {
            let name: &str = key.get_ref();
            let arg = match options.lookup(name, value.get_ref()) {
                Ok(arg) => arg,
                Err(message) => {
                    errors.push(error(key.span(), message));
                    continue;
                }
            };
            let id = arg.get_id().to_string();
            if let Some(first) = file.entries.iter().find(|e| e.id == id) {
                let (line, k) = (first.line, &first.key);
                errors.push(error(key.span(), format!("`{name}` is set twice: `{k}` on line {line} is the same option; keep one")));
                continue;
            }
            let written = match value.get_ref() {
                DeValue::Table(_) => String::new(),
                _ => text.get(value.span()).unwrap_or_default().to_string(),
            };
            match options.parse(&arg, name, value, text, dir) {
                Ok((layer, given)) => {
                    let (line, column) = line_column(text, key.span().start);
                    let places = given.iter().map(|(_, span)| {
                        let (line, column) = line_column(text, span.start);
                        (line, column, text[span.clone()].to_string())
                    });
                    let places = places.collect();
                    let values = given.into_iter().map(|(v, _)| v).collect();
                    file.layer = layer.over(std::mem::take(&mut file.layer));
                    file.entries.push(FileEntry { id, key: name.to_string(), line, column, written, values, places });
                }
                Err(problems) => errors.extend(problems.into_iter().map(|(span, message)| error(span, message))),
            }
        }
        if errors.is_empty() { Ok(file) } else { Err(errors) }
    }

    /// Where the file sets the option whose clap id is `id`.
    pub fn entry(&self, id: &str) -> Option<&FileEntry> {
        self.entries.iter().find(|e| e.id == id)
    }
}

/// Line and column (from 1, the column in characters) of a byte offset of `text`.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, column)
}

/// `value` taken from `dir` when it is relative: what a file read by a service needs,
/// whatever the service's working directory. `.` components are dropped, `..` kept.
pub fn resolve(dir: &Path, value: &str) -> String {
    let path = Path::new(value);
    if value.is_empty() || path.is_absolute() {
        return value.to_string();
    }
    let joined: PathBuf = dir.join(path).components().filter(|c| *c != Component::CurDir).collect();
    joined.to_string_lossy().into_owned()
}
