//! One access log line per request, rendered from the format the master validated
//! (`config::access_log_format`: nginx's `log_format` variables, "combined" by default),
//! or as a JSON object with --log-format json.

use http::{HeaderMap, Method, Uri, Version};
use std::fmt::Write;
use std::net::SocketAddr;
use std::time::Instant;

use crate::config::access_log_format::{Format, Part, Var};
use crate::log::{Timestamp, json};

/// The line a response owes the access log, written when its body is dropped. The entry
/// is boxed: at 264 bytes inline it made every response, and every future that moves
/// one, that much larger whether the log was on or not.
pub type LogLine = (std::sync::Arc<crate::http::ctx::ServerCtx>, Box<Entry>);

/// What the log line needs from the request, taken before the request head is handed to the app.
pub struct Entry {
    pub remote: Option<SocketAddr>,
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
    pub started: Instant,
}

impl Entry {
    /// The line for this request in the configured format, newline included.
    pub fn line(&self, format: &Format, status: u16, bytes: u64) -> String {
        if crate::log::json() { self.render_json(status, bytes) } else { self.render(format, status, bytes) }
    }

    /// nginx-style, from --access-log-format.
    pub fn render(&self, format: &Format, status: u16, bytes: u64) -> String {
        let mut out = String::with_capacity(160);
        let proto = self.protocol();
        let target = self.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        // Writing into a String cannot fail.
        for part in format.parts() {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Var(v) => match v {
                    Var::RemoteAddr => match self.remote {
                        Some(a) => drop(write!(out, "{}", a.ip())),
                        None => out.push_str("unix"),
                    },
                    Var::RemoteUser => out.push('-'),
                    Var::TimeLocal => drop(write!(out, "{}", Timestamp::now().clf())),
                    Var::Request => {
                        out.push_str(self.method.as_str());
                        out.push(' ');
                        push_escaped(&mut out, target.as_bytes());
                        out.push(' ');
                        out.push_str(proto);
                    }
                    Var::Status => drop(write!(out, "{status}")),
                    Var::BodyBytesSent => drop(write!(out, "{bytes}")),
                    Var::RequestTime => drop(write!(out, "{:.3}", self.started.elapsed().as_secs_f64())),
                    Var::RequestMethod => out.push_str(self.method.as_str()),
                    Var::Uri => push_escaped(&mut out, self.uri.path().as_bytes()),
                    Var::ServerProtocol => out.push_str(proto),
                    Var::Pid => drop(write!(out, "{}", std::process::id())),
                    Var::Header(name) => match self.headers.get(name.as_str()) {
                        Some(v) => push_escaped(&mut out, v.as_bytes()),
                        None => out.push('-'),
                    },
                },
            }
        }
        out.push('\n');
        out
    }

    /// --log-format json: one object with fixed keys (docs/logging.md lists them);
    /// absent values (no Referer, a unix-socket peer) are null.
    pub fn render_json(&self, status: u16, bytes: u64) -> String {
        let mut out = String::with_capacity(320);
        let header = |name: http::header::HeaderName| self.headers.get(name).map(|v| v.as_bytes());
        out.push('{');
        json::push_field_raw(&mut out, "time", format_args!("\"{}\"", Timestamp::now().rfc3339()));
        match self.remote {
            Some(a) => json::push_field_raw(&mut out, "remote_addr", format_args!("\"{}\"", a.ip())),
            None => json::push_field_raw(&mut out, "remote_addr", "null"),
        }
        json::push_field_str(&mut out, "method", Some(self.method.as_str().as_bytes()));
        json::push_field_str(&mut out, "path", Some(self.uri.path().as_bytes()));
        json::push_field_str(&mut out, "query", self.uri.query().map(str::as_bytes));
        json::push_field_str(&mut out, "protocol", Some(self.protocol().as_bytes()));
        json::push_field_raw(&mut out, "status", status);
        json::push_field_raw(&mut out, "bytes", bytes);
        json::push_field_str(&mut out, "referer", header(http::header::REFERER));
        json::push_field_str(&mut out, "user_agent", header(http::header::USER_AGENT));
        json::push_field_raw(&mut out, "request_time", format_args!("{:.3}", self.started.elapsed().as_secs_f64()));
        json::push_field_raw(&mut out, "pid", std::process::id());
        // HTTP/2 names the host in :authority, which is the URI's, not a header.
        let host = header(http::header::HOST).or_else(|| self.uri.authority().map(|a| a.as_str().as_bytes()));
        json::push_field_str(&mut out, "host", host);
        out.push_str("}\n");
        out
    }

    fn protocol(&self) -> &'static str {
        match self.version {
            Version::HTTP_10 => "HTTP/1.0",
            Version::HTTP_2 => "HTTP/2.0",
            _ => "HTTP/1.1",
        }
    }
}

/// As nginx does: quotes, backslashes and bytes outside printable ASCII become \xHH,
/// so a client cannot forge log lines.
fn push_escaped(out: &mut String, bytes: &[u8]) {
    for &b in bytes {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            let _ = write!(out, "\\x{b:02X}");
        } else {
            out.push(b as char);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::access_log_format::COMBINED_WITH_TIME;

    fn entry() -> Entry {
        let mut headers = HeaderMap::new();
        headers.insert("user-agent", "curl/8.0 \"evil\"".parse().unwrap());
        Entry {
            remote: Some("10.1.2.3:5555".parse().unwrap()),
            method: Method::GET,
            uri: "/a?b=1".parse().unwrap(),
            version: Version::HTTP_11,
            headers,
            started: Instant::now(),
        }
    }

    #[test]
    fn combined_format_matches_nginx() {
        let line = entry().render(&Format::parse(COMBINED_WITH_TIME).unwrap(), 200, 25);
        assert!(line.starts_with("10.1.2.3 - - ["), "{line}");
        assert!(line.contains("] \"GET /a?b=1 HTTP/1.1\" 200 25 \"-\" \"curl/8.0 \\x22evil\\x22\" 0.0"), "{line}");
        assert!(line.ends_with('\n'));
    }

    fn json_of(e: &Entry) -> serde_json::Value {
        let line = e.render_json(200, 25);
        assert!(line.ends_with("}\n") && line.matches('\n').count() == 1, "{line}");
        serde_json::from_str(&line).unwrap_or_else(|err| panic!("{err}: {line}"))
    }

    #[test]
    fn json_lines_have_the_documented_keys() {
        let mut e = entry();
        e.headers.insert("host", "example.com".parse().unwrap());
        e.headers.insert("referer", "http://r.example/".parse().unwrap());
        let v = json_of(&e);
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut documented =
            ["time", "remote_addr", "method", "path", "query", "protocol", "status", "bytes", "referer", "user_agent", "request_time", "pid", "host"];
        keys.sort();
        documented.sort();
        assert_eq!(keys, documented);
        assert_eq!(v["remote_addr"], "10.1.2.3");
        assert_eq!((v["method"].as_str(), v["path"].as_str(), v["query"].as_str()), (Some("GET"), Some("/a"), Some("b=1")));
        assert_eq!((v["protocol"].as_str(), v["status"].as_u64(), v["bytes"].as_u64()), (Some("HTTP/1.1"), Some(200), Some(25)));
        assert_eq!(v["user_agent"], "curl/8.0 \"evil\"");
        assert_eq!(v["referer"], "http://r.example/");
        assert_eq!(v["host"], "example.com");
        assert_eq!(v["pid"], std::process::id());
        assert!(v["request_time"].as_f64().is_some_and(|t| t >= 0.0));
        assert!(v["time"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn json_lines_survive_hostile_bytes_and_say_null_for_what_is_absent() {
        let mut e = entry();
        e.remote = None;
        e.uri = "/q%22".parse().unwrap();
        e.headers.clear();
        // What a header value may hold that a line must not be broken by: quotes,
        // backslashes, tabs, obs-text (JSON escaping of other control bytes: log::json).
        e.headers.insert("user-agent", http::HeaderValue::from_bytes(b"a\"b\\c\td\xe9}").unwrap());
        let v = json_of(&e);
        assert!(v["remote_addr"].is_null() && v["query"].is_null() && v["referer"].is_null() && v["host"].is_null());
        assert_eq!(v["path"], "/q%22");
        assert_eq!(v["user_agent"], "a\"b\\c\td\u{e9}}");
    }

    #[test]
    fn http2_host_comes_from_the_authority() {
        let mut e = entry();
        e.version = Version::HTTP_2;
        e.uri = "https://h2.example/p".parse().unwrap();
        let v = json_of(&e);
        assert_eq!((v["host"].as_str(), v["protocol"].as_str(), v["path"].as_str()), (Some("h2.example"), Some("HTTP/2.0"), Some("/p")));
    }

    #[test]
    fn custom_formats() {
        let f = Format::parse("$request_method $uri $status $http_user_agent!").unwrap();
        assert!(entry().render(&f, 404, 0).starts_with("GET /a 404 curl/8.0"));
    }
}
