//! The server's log lines, gunicorn-style: `[2026-11-27 19:40:00 +0000] [pid] [INFO] message`,
//! or with --log-format json one object per line: `{"time":…,"level":…,"pid":…,"message":…}`.
//!
//! Each line is written with one write(2) to descriptor 2 (the --log-file, when there
//! is one), so lines from the master and its workers, which share it, never
//! interleave mid-line. Where lines go and how the files are reopened: `files`.

mod files;
pub mod json;
pub mod time;

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use crate::config::{LogConfig, LogFormat};
pub use files::{open_access_log, open_log_files, reopen_in_worker, reopen_log_files, write_access_line};
pub use time::Timestamp;

/// Defined with the configuration that chooses it (--log-level), so that the
/// configuration needs nothing from the logger.
pub use crate::config::LogLevel as Level;

impl Level {
    fn label(self) -> &'static str {
        match self {
            Level::Trace => "TRACE",
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warning => "WARNING",
            Level::Error => "ERROR",
            Level::Critical => "CRITICAL",
        }
    }

    /// As --log-level spells it, for JSON lines.
    fn name(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warning => "warning",
            Level::Error => "error",
            Level::Critical => "critical",
        }
    }
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);
static JSON: AtomicBool = AtomicBool::new(false);

/// The level and the line format; where the lines go is `open_log_files`' (master)
/// and `open_access_log`'s (worker) business.
pub fn init(config: &LogConfig) {
    set_level(config.level);
    JSON.store(config.format == LogFormat::Json, Ordering::Relaxed);
}

/// --log-format json: every line, the server's and the access log's, is a JSON object.
pub fn json() -> bool {
    JSON.load(Ordering::Relaxed)
}

pub fn set_level(level: Level) {
    LEVEL.store(level as u8, Ordering::Relaxed);
}

pub fn enabled(level: Level) -> bool {
    level as u8 >= LEVEL.load(Ordering::Relaxed)
}

pub fn write(level: Level, message: std::fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    let now = Timestamp::now();
    let line = if json() {
        json::server_line(&now, std::process::id(), level, message)
    } else {
        format!("[{}] [{}] [{}] {}\n", now.iso(), std::process::id(), level.label(), message)
    };
    files::write_server_line(line.as_bytes());
}

#[macro_export]
macro_rules! log_at {
    ($level:expr, $($arg:tt)*) => { $crate::log::write($level, format_args!($($arg)*)) };
}
#[macro_export]
macro_rules! debug { ($($arg:tt)*) => { $crate::log_at!($crate::log::Level::Debug, $($arg)*) }; }
#[macro_export]
macro_rules! info { ($($arg:tt)*) => { $crate::log_at!($crate::log::Level::Info, $($arg)*) }; }
#[macro_export]
macro_rules! warn { ($($arg:tt)*) => { $crate::log_at!($crate::log::Level::Warning, $($arg)*) }; }
#[macro_export]
macro_rules! error { ($($arg:tt)*) => { $crate::log_at!($crate::log::Level::Error, $($arg)*) }; }
