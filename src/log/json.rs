//! JSON log lines (--log-format json): string escaping that no client input can break
//! out of, and the server's own lines. The access log's lines are built in
//! `http::access_log` with the same pieces.
//!
//! Escaping is written here rather than through serde_json because what is escaped
//! is often bytes, not text (header values, request targets), and because a line is
//! built in one buffer with no allocation per field.

use std::fmt::{self, Write};

use super::{Level, Timestamp};

/// Appends `s` as the inside of a JSON string: `"` and `\` escaped, control
/// characters (and DEL) as \n, \t, \r or \u00XX; everything else kept as it is.
pub fn push_str(out: &mut String, s: &str) {
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        if needs_escape(b) {
            out.push_str(&s[start..i]);
            push_escape(out, b);
            start = i + 1;
        }
    }
    out.push_str(&s[start..]);
}

/// As `push_str`, for bytes a client sent: what is not UTF-8 becomes \u00XX (the byte
/// read as Latin-1), so the line stays valid JSON and no byte is lost.
pub fn push_bytes(out: &mut String, bytes: &[u8]) {
    for chunk in bytes.utf8_chunks() {
        push_str(out, chunk.valid());
        for &b in chunk.invalid() {
            push_unicode_escape(out, b);
        }
    }
}

/// `,"key":"value"` (or `"key":` first in the object when `out` ends with `{`).
pub fn push_field_str(out: &mut String, key: &str, value: Option<&[u8]>) {
    push_key(out, key);
    match value {
        Some(v) => {
            out.push('"');
            push_bytes(out, v);
            out.push('"');
        }
        None => out.push_str("null"),
    }
}

/// `,"key":value` for a value that is already JSON (a number, `null`).
pub fn push_field_raw(out: &mut String, key: &str, value: impl fmt::Display) {
    push_key(out, key);
    let _ = write!(out, "{value}");
}

fn push_key(out: &mut String, key: &str) {
    if !out.ends_with('{') {
        out.push(',');
    }
    out.push('"');
    out.push_str(key);
    out.push_str("\":");
}

/// One of the server's own lines: `{"time":…,"level":"info","pid":…,"message":…}`.
pub fn server_line(time: &Timestamp, pid: u32, level: Level, message: fmt::Arguments<'_>) -> String {
    let mut out = String::with_capacity(128);
    let _ = write!(out, "{{\"time\":\"{}\",\"level\":\"{}\",\"pid\":{pid},\"message\":\"", time.rfc3339(), level.name());
    // The message is escaped as it is formatted, with no copy of its own.
    let _ = Escaping(&mut out).write_fmt(message);
    out.push_str("\"}\n");
    out
}

/// A `fmt::Write` that escapes what is written through it.
struct Escaping<'a>(&'a mut String);

impl Write for Escaping<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        push_str(self.0, s);
        Ok(())
    }
}

fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\' || b == 0x7f
}

fn push_escape(out: &mut String, b: u8) {
    match b {
        b'"' => out.push_str("\\\""),
        b'\\' => out.push_str("\\\\"),
        b'\n' => out.push_str("\\n"),
        b'\r' => out.push_str("\\r"),
        b'\t' => out.push_str("\\t"),
        _ => push_unicode_escape(out, b),
    }
}

fn push_unicode_escape(out: &mut String, b: u8) {
    let _ = write!(out, "\\u{:04x}", b);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(bytes: &[u8]) -> String {
        let mut out = String::from("\"");
        push_bytes(&mut out, bytes);
        out.push('"');
        out
    }

    #[test]
    fn quotes_backslashes_and_control_bytes_cannot_break_out() {
        let nasty = b"a\"b\\c\nd\re\tf\x00g\x1bh\x7fi";
        let line = escaped(nasty);
        assert!(!line.contains('\n') && !line.contains('\r'), "{line}");
        assert_eq!(line, r#""a\"b\\c\nd\re\tf\u0000g\u001bh\u007fi""#);
        let back: String = serde_json::from_str(&line).unwrap();
        assert_eq!(back.as_bytes(), nasty);
    }

    #[test]
    fn utf8_is_kept_and_invalid_bytes_become_latin1_escapes() {
        assert_eq!(escaped("héllo ✓".as_bytes()), "\"héllo ✓\"");
        let line = escaped(b"caf\xe9 \xff\"");
        assert_eq!(line, r#""caf\u00e9 \u00ff\"""#);
        let back: String = serde_json::from_str(&line).unwrap();
        assert_eq!(back, "café ÿ\"");
    }

    #[test]
    fn fields_are_separated_and_absent_values_are_null() {
        let mut out = String::from("{");
        push_field_str(&mut out, "a", Some(b"x\"y"));
        push_field_raw(&mut out, "n", 42);
        push_field_str(&mut out, "b", None);
        out.push('}');
        assert_eq!(out, r#"{"a":"x\"y","n":42,"b":null}"#);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["a"], "x\"y");
        assert!(v["b"].is_null());
    }

    #[test]
    fn server_lines_are_one_object_per_line() {
        let t = Timestamp::from_unix(1_795_788_000);
        let traceback = "Exception in ASGI application\nTraceback:\n  \"quoted\"\tValueError: boom";
        let line = server_line(&t, 4242, Level::Error, format_args!("{traceback}"));
        assert!(line.ends_with("}\n") && line.matches('\n').count() == 1, "{line}");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["time"], "2026-11-27T14:00:00.000Z");
        assert_eq!(v["level"], "error");
        assert_eq!(v["pid"], 4242);
        assert_eq!(v["message"], traceback);
        assert_eq!(v.as_object().unwrap().len(), 4);
    }
}
