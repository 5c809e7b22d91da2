//! The configuration file: its values, every kind of error it can have, and its place
//! among the sources (file < environment < command line). Files are parsed from strings
//! where the disk does not matter, and written to a temporary directory where it does.

use super::file_values::Options;
use super::*;
use std::path::{Path, PathBuf};

const DIR: &str = "/srv/app";

fn parsed(text: &str) -> Result<FileLayer, Vec<FileError>> {
    FileLayer::parse(Path::new("ferrogate.toml"), text, Path::new(DIR))
}

fn layer(text: &str) -> Layer {
    parsed(text).unwrap_or_else(|e| panic!("the file parses: {e:?}")).layer
}

/// The file's errors, as they are printed.
fn errors(text: &str) -> Vec<String> {
    parsed(text).expect_err("the file is refused").iter().map(ToString::to_string).collect()
}

fn one_error(text: &str) -> String {
    let errors = errors(text);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    errors.into_iter().next().unwrap()
}

/// A directory of its own for one test, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("fg-file-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn sources(args: &[&str], env: &[(&str, &str)]) -> Result<Sources, clap::Error> {
    let argv = std::iter::once("ferrogate").chain(args.iter().copied()).map(Into::into).collect();
    let env = env.iter().map(|(k, v)| (k.into(), v.into())).collect();
    gather_sources(argv, env, 4242, true)
}

#[test]
fn every_kind_of_value_reads_as_the_command_line_would() {
    let l = layer(
        r#"
app = "main:app"
workers = 4
log-level = "debug"
access-log = false
reload = true
reload-delay = 1
ws-ping-interval = 2.5
max_header_size = 16_384
graceful-timeout = 10
header = ["x-frame-options:DENY", "x-a:1"]
loop = "asyncio"
io-mode = "thread"
"#,
    );
    assert_eq!(l.app.as_deref(), Some("main:app"));
    assert_eq!(l.workers, Some(4));
    assert_eq!(l.log_level, Some(crate::config::LogLevel::Debug));
    assert_eq!(l.access_log, Some(false));
    assert_eq!(l.reload, Some(true));
    assert_eq!(l.reload_delay, Some(1.0), "an integer is a number of seconds too");
    assert_eq!(l.ws_ping_interval, Some(2.5));
    assert_eq!(l.max_header_size, Some(16384), "max_header_size is max-header-size; 16_384 is TOML's 16384");
    assert_eq!(l.timeout_graceful_shutdown, Some(10), "gunicorn's alias is a key too");
    assert_eq!(l.header, Some(vec!["x-frame-options:DENY".into(), "x-a:1".into()]));
    assert_eq!(l.event_loop, Some(LoopChoice::Asyncio));
    assert_eq!(l.io_mode, Some(crate::config::IoMode::Thread));
}

#[test]
fn entries_say_where_each_option_is_set() {
    let f = parsed("# comment\napp = \"m:a\"\n\n  workers = 3\n").unwrap();
    let w = f.entry("workers").unwrap();
    assert_eq!((w.line, w.column, w.key.as_str(), w.written.as_str()), (4, 3, "workers", "3"));
    assert_eq!(f.entry("app").unwrap().line, 2);
    assert!(f.entry("port").is_none());
}

#[test]
fn a_flag_set_to_false_says_nothing_or_its_no_twin() {
    let l = layer("reload = false\nuse-colors = false\nserver-header = false\nws-per-message-deflate = false\n");
    assert_eq!(l.reload, None, "--reload off is the default: nothing to set");
    assert_eq!(l.use_colors, Some(false), "--no-use-colors");
    assert_eq!(l.server_header, Some(false));
    assert_eq!(l.ws_per_message_deflate, Some(false));
}

#[test]
fn an_unknown_key_gets_its_line_and_the_closest_option() {
    assert_eq!(
        one_error("app = \"m:a\"\n\nwokers = 4\n"),
        "ferrogate.toml:3:1: unknown key `wokers`; did you mean `workers`?"
    );
    assert!(one_error("max_header_sise = 1\n").contains("did you mean `max-header-size`?"));
    // gunicorn's names, where the closest spelling would mislead.
    assert!(one_error("accesslog = \"-\"\n").contains("did you mean `access-log-file`?"));
    assert!(one_error("keepalive = 5\n").contains("did you mean `timeout-keep-alive`?"));
    let far = one_error("colour = \"blue\"\n");
    assert!(far.contains("unknown key `colour`") && far.contains("long options of `ferrogate --help`"), "{far}");
}

#[test]
fn a_table_of_options_is_shown_where_they_belong() {
    let e = one_error("[server]\nworkers = 4\n");
    assert!(e.starts_with("ferrogate.toml:1:2: unknown table `[server]`") && e.contains("top of the file"), "{e}");
    // Keys below [static] belong to it: the classic TOML mistake.
    let e = one_error("[static]\n\"/s\" = \"static\"\nworkers = 4\n");
    assert!(e.starts_with("ferrogate.toml:3:1:") && e.contains("inside the [static] table") && e.contains("above the first [table]"), "{e}");
}

#[test]
fn keys_that_make_no_sense_in_a_file_are_refused() {
    assert!(one_error("config = \"other.toml\"\n").contains("give --config FILE or FERROGATE_CONFIG"));
    assert!(one_error("help = true\n").contains("not a setting"));
    assert!(one_error("version = true\n").contains("not a setting"));
    assert!(one_error("no-access-log = true\n").contains("write `access-log = false`"));
}

#[test]
fn a_value_of_the_wrong_type_says_what_is_allowed() {
    assert_eq!(
        one_error("app = \"m:a\"\nworkers = \"four\"\n"),
        format!("ferrogate.toml:2:11: `workers` must be a whole number (it is a string: \"four\"); e.g. workers = {}", Config::default().workers.count)
    );
    assert!(one_error("reload = \"yes\"\n").contains("`reload` must be true or false, without quotes (it is a string: \"yes\"); e.g. reload = true"));
    assert!(one_error("timeout = 2.5\n").contains("`timeout` must be a whole number (it is 2.5); e.g. timeout = 30"));
    assert!(one_error("reload-delay = \"soon\"\n").contains("`reload-delay` must be a number (it is a string: \"soon\")"));
    assert!(one_error("host = true\n").contains("`host` must be a string (it is true)"));
    assert!(one_error("workers = [1, 2]\n").contains("`workers` takes one value, not a list"));
    assert!(one_error("[workers]\nx = 1\n").contains("`workers` cannot be a table"));
    assert!(one_error("port = -1\n").contains("`port` = -1 is out of range"));
}

#[test]
fn a_bad_value_is_refused_with_the_options_own_words() {
    assert_eq!(
        one_error("log-level = \"loud\"\n"),
        "ferrogate.toml:1:13: `log-level` = \"loud\" is not one of trace, debug, info, warning, error, critical"
    );
    assert!(one_error("uds-mode = 999\n").contains("is not an octal file mode"));
    // In a list, the element that is wrong.
    assert!(one_error("reload-dir = [\"a\"]\nheader = [\"a:1\", true]\n").starts_with("ferrogate.toml:2:18: `header` must be a string (it is true)"));
}

#[test]
fn a_syntax_error_has_the_toml_parsers_line_and_column() {
    let e = one_error("app = \"m:a\"\nworkers = \n");
    assert!(e.starts_with("ferrogate.toml:2:") && e.contains("not valid TOML"), "{e}");
    let e = one_error("app = main:app\n");
    assert!(e.starts_with("ferrogate.toml:1:7:") && e.contains("not valid TOML"), "{e}");
    assert!(one_error("umask = 027\n").contains("write a file mode as 0o027"));
}

#[test]
fn every_problem_is_reported_at_once_in_file_order() {
    let e = errors("wokers = 1\nlog-level = \"loud\"\nport = \"http\"\n");
    assert_eq!(e.len(), 3, "{e:#?}");
    assert!(e[0].starts_with("ferrogate.toml:1:") && e[1].starts_with("ferrogate.toml:2:") && e[2].starts_with("ferrogate.toml:3:"));
}

#[test]
fn one_option_set_twice_is_an_error() {
    let e = one_error("max_header_size = 9000\nmax-header-size = 9000\n");
    assert!(e.starts_with("ferrogate.toml:2:1:") && e.contains("set twice") && e.contains("line 1"), "{e}");
    assert!(one_error("timeout-graceful-shutdown = 1\ngraceful-timeout = 2\n").contains("set twice"));
}

#[test]
fn relative_paths_are_taken_from_the_files_directory() {
    let l = layer(
        r#"
app-dir = "."
log-file = "logs/error.log"
access-log-file = "-"
pid = "/run/app.pid"
reload-dir = ["src", "./lib"]
bind = ["127.0.0.1:8000", "unix:run/app.sock"]
[static]
"/static" = "static"
"/media" = "/var/media"
"#,
    );
    assert_eq!(l.app_dir, Some(PathBuf::from("/srv/app")));
    assert_eq!(l.log_file, Some(PathBuf::from("/srv/app/logs/error.log")));
    assert_eq!(l.access_log_file, Some(PathBuf::from("-")), "`-` is stdout, not a file");
    assert_eq!(l.pid_file, Some(PathBuf::from("/run/app.pid")));
    assert_eq!(l.reload_dir, Some(vec![PathBuf::from("/srv/app/src"), PathBuf::from("/srv/app/lib")]));
    assert_eq!(l.bind, Some(vec!["127.0.0.1:8000".into(), "unix:/srv/app/run/app.sock".into()]));
    assert_eq!(l.static_mounts, Some(vec!["/static=/srv/app/static".into(), "/media=/var/media".into()]));
}

#[test]
fn pairs_may_be_tables_and_lists_in_lists_are_one_value() {
    let l = layer("domain = [[\"example.com\", \"www.example.com\"], \"api.example.com\"]\n[header]\nx-frame-options = \"DENY\"\n");
    assert_eq!(l.domain, Some(vec!["example.com,www.example.com".into(), "api.example.com".into()]));
    assert_eq!(l.header, Some(vec!["x-frame-options:DENY".into()]));
    assert_eq!(layer("domain = \"example.com\"\n").domain, Some(vec!["example.com".into()]), "one value for a list option");
}

#[test]
fn file_modes_are_octal_however_written() {
    for text in ["uds-mode = 0o660", "uds-mode = 660", "uds-mode = \"660\"", "uds-mode = \"0660\""] {
        assert_eq!(layer(text).uds_mode, Some(0o660), "{text}");
    }
    assert_eq!(layer("umask = 0o027").umask, Some(0o27));
}

fn file_with(dir: &TempDir, text: &str) -> String {
    dir.write("ferrogate.toml", text).display().to_string()
}

#[test]
fn the_command_line_beats_the_environment_which_beats_the_file() {
    let dir = TempDir::new("precedence");
    let path = file_with(&dir, "app = \"file:app\"\nworkers = 2\nport = 7001\nlog-level = \"debug\"\nheader = [\"a:1\", \"b:2\"]\n");
    let s = sources(&["-c", &path, "--port", "7003", "--header", "d:4"], &[("FERROGATE_PORT", "7002"), ("FERROGATE_WORKERS", "3"), ("FERROGATE_HEADER", "c:3")]).unwrap();
    let l = s.layer();
    assert_eq!(l.app.as_deref(), Some("file:app"), "APP from the file alone");
    assert_eq!(l.log_level, Some(crate::config::LogLevel::Debug));
    assert_eq!(l.workers, Some(3), "environment over file");
    assert_eq!(l.port, Some(7003), "command line over both");
    assert_eq!(l.header, Some(vec!["d:4".into()]), "a list replaces the lower one, never merges");
    assert_eq!(s.origin("app"), Origin::File { path: path.clone().into(), line: 1, column: 1 });
    assert_eq!(s.origin("workers"), Origin::Environment("FERROGATE_WORKERS".into()));
    assert_eq!(s.origin("port"), Origin::CommandLine);
    assert_eq!(s.origin("timeout"), Origin::Default);
    assert_eq!(s.given("port"), Some(vec!["7003".into()]));
    assert_eq!(s.given("workers"), Some(vec!["3".into()]));
    assert_eq!(s.given("header"), Some(vec!["d:4".into()]));
    assert_eq!(s.given("timeout"), None);
    // The environment's list replaces the file's too.
    let s = sources(&["-c", &path], &[("FERROGATE_HEADER", "c:3")]).unwrap();
    assert_eq!(s.layer().header, Some(vec!["c:3".into()]));
    assert_eq!(s.layer().config, Some(PathBuf::from(&path)), "the file read is the configuration's config_file");
}

#[test]
fn the_file_is_named_by_the_command_line_or_the_environment() {
    let dir = TempDir::new("named");
    let a = dir.write("a.toml", "app = \"a:app\"\n").display().to_string();
    let b = dir.write("b.toml", "app = \"b:app\"\n").display().to_string();
    let app = |s: Sources| s.layer().app.unwrap();
    assert_eq!(app(sources(&["--config", &a], &[("FERROGATE_CONFIG", &b)]).unwrap()), "a:app");
    assert_eq!(app(sources(&[], &[("FERROGATE_CONFIG", &b)]).unwrap()), "b:app");
    let missing = dir.0.join("missing.toml").display().to_string();
    let e = sources(&["-c", &missing], &[]).unwrap_err().to_string();
    assert!(e.contains("cannot read the configuration file (--config ") && e.contains("check the path"), "{e}");
    let e = sources(&["m:a"], &[("FERROGATE_CONFIG", &missing)]).unwrap_err().to_string();
    assert!(e.contains("FERROGATE_CONFIG="), "{e}");
}

#[test]
fn without_app_anywhere_the_command_line_still_asks_for_it() {
    let dir = TempDir::new("noapp");
    let path = file_with(&dir, "workers = 2\n");
    let e = sources(&["-c", &path], &[]).unwrap_err();
    assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
}

#[test]
fn the_files_errors_are_one_clap_error_with_exit_code_2() {
    let dir = TempDir::new("errors");
    let path = file_with(&dir, "wokers = 2\nport = \"x\"\n");
    let e = sources(&["-c", &path], &[]).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    let text = e.to_string();
    assert!(text.contains(&format!("{path}:1:1: unknown key")) && text.contains(&format!("error: {path}:2:8: `port`")), "{text}");
}

#[test]
fn a_bad_value_caught_later_names_the_line_that_set_it() {
    let dir = TempDir::new("located");
    let path = file_with(&dir, "app = \"m:a\"\n\nworkers = 0\n");
    let e = sources(&["-c", &path], &[]).unwrap().into_config().unwrap_err();
    assert_eq!(e.message, format!("{path}:3:1: `workers` = 0: --workers must be at least 1"));
    // The same value from the command line is the command line's business.
    let e = sources(&["-c", &path, "--workers", "0"], &[]).unwrap().into_config().unwrap_err();
    assert_eq!(e.message, "--workers must be at least 1");
    let e = sources(&["-c", &path], &[("FERROGATE_STATIC", "nothing")]).unwrap().into_config().unwrap_err();
    assert!(e.message.starts_with("FERROGATE_STATIC=nothing: --static"), "{}", e.message);
}

#[test]
fn the_files_configuration_serves() {
    let dir = TempDir::new("serves");
    std::fs::create_dir(dir.0.join("static")).unwrap();
    let path = file_with(&dir, "app = \"main:app\"\nworkers = 2\nport = 9001\n[static]\n\"/static\" = \"static\"\n");
    let c = sources(&["-c", &path], &[]).unwrap().into_config().unwrap();
    assert_eq!(c.workers.count, 2);
    assert_eq!(c.bind, vec![BindSpec::Tcp { host: DEFAULT_HOST.into(), port: 9001 }]);
    assert_eq!(c.statics.mounts[0].dir, dir.0.join("static").canonicalize().unwrap());
    assert_eq!(c.service.config_file, Some(PathBuf::from(&path)));
}

#[test]
fn every_option_of_the_command_line_is_a_key() {
    // A new option needs nothing here: each one's key is its long name, and a value of
    // its type is accepted. Checked against the options' own list.
    let options_ = Options::new();
    for arg in options() {
        let key = key_of(&arg);
        if key == "config" {
            continue;
        }
        let found = options_.lookup(&key, &toml::de::DeValue::Boolean(true)).unwrap_or_else(|e| panic!("{key}: {e}"));
        assert_eq!(found.get_id(), arg.get_id());
    }
}

#[test]
fn a_bad_element_caught_later_names_its_own_line() {
    let dir = TempDir::new("element");
    std::fs::create_dir(dir.0.join("public")).unwrap();
    let path = file_with(&dir, "app = \"m:a\"\n[static]\n\"/ok\" = \"public\"\n\"/gone\" = \"missing\"\n");
    let e = sources(&["-c", &path], &[]).unwrap().into_config().unwrap_err();
    assert!(e.message.starts_with(&format!("{path}:4:11: `static` = \"missing\": --static '/gone={}", dir.0.join("missing").display())), "{}", e.message);
}
