//! The access log's line format, in nginx's `log_format` notation: which variables exist and
//! how a format string parses. It lives in the configuration because the master validates
//! `--access-log-format` before any worker starts; rendering a line for one request is
//! `http::access_log::Entry`'s job.

/// nginx's "combined" format plus $request_time, the one most log tools read.
pub const COMBINED_WITH_TIME: &str =
    r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" $request_time"#;

/// One nginx variable a format may use.
#[derive(Clone, Debug, PartialEq)]
pub enum Var {
    RemoteAddr,
    RemoteUser,
    TimeLocal,
    Request,
    Status,
    BodyBytesSent,
    RequestTime,
    RequestMethod,
    Uri,
    ServerProtocol,
    Pid,
    /// $http_NAME: a request header, with _ for -.
    Header(String),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Part {
    Text(String),
    Var(Var),
}

/// A parsed format: literal text and variables, in order.
#[derive(Clone, Debug)]
pub struct Format {
    parts: Vec<Part>,
}

impl Format {
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut chars = spec.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c != '$' {
                text.push(c);
                continue;
            }
            let mut end = i + 1;
            while let Some(&(j, n)) = chars.peek() {
                if n.is_ascii_alphanumeric() || n == '_' {
                    end = j + n.len_utf8();
                    chars.next();
                } else {
                    break;
                }
            }
            let name = &spec[i + 1..end];
            let var = match name {
                "remote_addr" => Var::RemoteAddr,
                "remote_user" => Var::RemoteUser,
                "time_local" => Var::TimeLocal,
                "request" => Var::Request,
                "status" => Var::Status,
                "body_bytes_sent" | "bytes_sent" => Var::BodyBytesSent,
                "request_time" => Var::RequestTime,
                "request_method" => Var::RequestMethod,
                "uri" | "request_uri" => Var::Uri,
                "server_protocol" => Var::ServerProtocol,
                "pid" => Var::Pid,
                h if h.starts_with("http_") && h.len() > 5 => Var::Header(h[5..].replace('_', "-")),
                "" => return Err("a '$' must be followed by a variable name, e.g. $status".into()),
                other => {
                    return Err(format!(
                        "unknown variable ${other}; known: $remote_addr $remote_user $time_local $request $status \
                         $body_bytes_sent $request_time $request_method $uri $server_protocol $pid $http_NAME"
                    ));
                }
            };
            if !text.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut text)));
            }
            parts.push(Part::Var(var));
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Format { parts })
    }

    pub fn parts(&self) -> &[Part] {
        &self.parts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_text_variables_and_headers() {
        let f = Format::parse("$request_method $uri!$http_user_agent").unwrap();
        assert_eq!(f.parts(), &[
            Part::Var(Var::RequestMethod),
            Part::Text(" ".into()),
            Part::Var(Var::Uri),
            Part::Text("!".into()),
            Part::Var(Var::Header("user-agent".into())),
        ]);
        assert!(Format::parse(COMBINED_WITH_TIME).is_ok());
    }

    #[test]
    fn unknown_or_missing_names_say_what_exists() {
        assert!(Format::parse("$nope").unwrap_err().contains("unknown variable $nope; known: $remote_addr"));
        assert!(Format::parse("x $").unwrap_err().contains("e.g. $status"));
    }
}
