//! One access log line per request, rendered from the format the master validated
//! (`config::access_log_format`: nginx's `log_format` variables, "combined" by default).

use http::{HeaderMap, Method, Uri, Version};
use std::net::SocketAddr;
use std::time::Instant;

use crate::config::access_log_format::{Format, Part, Var};

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
    pub fn render(&self, format: &Format, status: u16, bytes: u64) -> String {
        let mut out = String::with_capacity(160);
        let proto = match self.version {
            Version::HTTP_10 => "HTTP/1.0",
            Version::HTTP_2 => "HTTP/2.0",
            _ => "HTTP/1.1",
        };
        let target = self.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        for part in format.parts() {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Var(v) => match v {
                    Var::RemoteAddr => match self.remote {
                        Some(a) => out.push_str(&a.ip().to_string()),
                        None => out.push_str("unix"),
                    },
                    Var::RemoteUser => out.push('-'),
                    Var::TimeLocal => out.push_str(&crate::log::Timestamp::now().clf()),
                    Var::Request => {
                        out.push_str(self.method.as_str());
                        out.push(' ');
                        push_escaped(&mut out, target.as_bytes());
                        out.push(' ');
                        out.push_str(proto);
                    }
                    Var::Status => out.push_str(&status.to_string()),
                    Var::BodyBytesSent => out.push_str(&bytes.to_string()),
                    Var::RequestTime => out.push_str(&format!("{:.3}", self.started.elapsed().as_secs_f64())),
                    Var::RequestMethod => out.push_str(self.method.as_str()),
                    Var::Uri => push_escaped(&mut out, self.uri.path().as_bytes()),
                    Var::ServerProtocol => out.push_str(proto),
                    Var::Pid => out.push_str(&std::process::id().to_string()),
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
}

/// As nginx does: quotes, backslashes and bytes outside printable ASCII become \xHH,
/// so a client cannot forge log lines.
fn push_escaped(out: &mut String, bytes: &[u8]) {
    for &b in bytes {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            out.push_str(&format!("\\x{b:02X}"));
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

    #[test]
    fn custom_formats() {
        let f = Format::parse("$request_method $uri $status $http_user_agent!").unwrap();
        assert!(entry().render(&f, 404, 0).starts_with("GET /a 404 curl/8.0"));
    }
}
