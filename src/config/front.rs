//! The front's settings: what nginx and fail2ban did in front of the app in the
//! tutorial's stack. Request body limits, response compression, server names, the
//! PROXY protocol, rate limits, bans, the pages ferrogate answers itself and the
//! security headers. The types only: each is applied by its own module under `http/`
//! (and `master/bans` for the ban list); `resolve` builds them from the layer.

use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything in front of the app. Sent to every worker with the rest of `Config`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FrontConfig {
    pub body: BodyLimits,
    pub compress: CompressConfig,
    pub hosts: HostConfig,
    /// Every listener expects a PROXY protocol v1 or v2 header (HAProxy, AWS NLB, ...)
    /// before anything else, from peers in --forwarded-allow-ips only.
    pub proxy_protocol: bool,
    pub rate: RateConfig,
    pub bans: BanConfig,
    /// --error-page: bodies for the responses ferrogate writes itself, by status.
    pub error_pages: Vec<ErrorPage>,
    /// --security-headers: X-Content-Type-Options, Referrer-Policy, X-Frame-Options,
    /// added to responses that do not set them.
    pub security_headers: bool,
}

/// The request body limit (nginx's client_max_body_size).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BodyLimits {
    /// Bytes a request body may have; None: unlimited.
    pub default: Option<u64>,
    /// Limits for URL path prefixes, longest prefix first (the first match wins).
    pub paths: Vec<PathLimit>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PathLimit {
    /// "/upload": matches /upload and /upload/..., not /uploads.
    pub prefix: String,
    pub limit: Option<u64>,
}

/// The default --limit-request-body: room for ordinary uploads, not for filling a disk.
pub const DEFAULT_BODY_LIMIT: u64 = 100 * 1024 * 1024;

impl Default for BodyLimits {
    fn default() -> Self {
        BodyLimits { default: Some(DEFAULT_BODY_LIMIT), paths: Vec::new() }
    }
}

impl BodyLimits {
    /// The limit for a request to `path`.
    pub fn for_path(&self, path: &str) -> Option<u64> {
        self.paths.iter().find(|p| prefix_matches(&p.prefix, path)).map_or(self.default, |p| p.limit)
    }
}

/// Whether `path` is `prefix` or below it ("/a" matches "/a", "/a/b", "/a?x", not "/ab").
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with(['/', '?']),
        None => false,
    }
}

/// Response compression.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CompressConfig {
    pub enabled: bool,
    pub level: CompressLevel,
    /// Responses smaller than this (by Content-Length) are sent as they are.
    pub min_size: u64,
    /// Media types compressed: "text/html", or patterns "text/*", "application/*+json".
    pub types: Vec<String>,
    /// The codings offered, the server's preference first when the client's q-values tie.
    pub encodings: Vec<Encoding>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    Zstd,
    #[value(name = "br")]
    Br,
    Gzip,
}

impl Encoding {
    /// The token in Accept-Encoding and Content-Encoding.
    pub fn token(self) -> &'static str {
        match self {
            Encoding::Zstd => "zstd",
            Encoding::Br => "br",
            Encoding::Gzip => "gzip",
        }
    }

    /// The suffix of a precompressed sibling of a static file (app.js.br).
    pub fn file_suffix(self) -> &'static str {
        match self {
            Encoding::Zstd => ".zst",
            Encoding::Br => ".br",
            Encoding::Gzip => ".gz",
        }
    }
}

/// How hard to compress: one scale for the three codings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CompressLevel {
    /// gzip 1, brotli 1, zstd 1: the least CPU.
    Fast,
    /// gzip 5, brotli 4, zstd 3: most of the gain for little CPU.
    #[default]
    Balanced,
    /// gzip 9, brotli 9, zstd 12: smallest responses, for CPU to spare.
    Best,
}

impl CompressLevel {
    pub fn gzip(self) -> u32 {
        match self {
            CompressLevel::Fast => 1,
            CompressLevel::Balanced => 5,
            CompressLevel::Best => 9,
        }
    }

    pub fn brotli(self) -> u32 {
        match self {
            CompressLevel::Fast => 1,
            CompressLevel::Balanced => 4,
            CompressLevel::Best => 9,
        }
    }

    pub fn zstd(self) -> i32 {
        match self {
            CompressLevel::Fast => 1,
            CompressLevel::Balanced => 3,
            CompressLevel::Best => 12,
        }
    }
}

/// The media types compressed by default: text, and the text formats of the web.
pub const DEFAULT_COMPRESS_TYPES: &[&str] = &[
    "text/*",
    "application/json",
    "application/*+json",
    "application/javascript",
    "application/xml",
    "application/*+xml",
    "application/wasm",
    "image/svg+xml",
];

/// Below this a compressed body is rarely smaller by more than its headers.
pub const DEFAULT_COMPRESS_MIN_SIZE: u64 = 1024;

impl Default for CompressConfig {
    fn default() -> Self {
        CompressConfig {
            enabled: true,
            level: CompressLevel::Balanced,
            min_size: DEFAULT_COMPRESS_MIN_SIZE,
            types: DEFAULT_COMPRESS_TYPES.iter().map(|t| t.to_string()).collect(),
            encodings: vec![Encoding::Zstd, Encoding::Br, Encoding::Gzip],
        }
    }
}

impl CompressConfig {
    /// Whether a response of this Content-Type (parameters allowed) is compressed.
    pub fn compresses_type(&self, content_type: &str) -> bool {
        let essence = content_type.split(';').next().unwrap_or("").trim();
        self.types.iter().any(|pattern| MediaPattern::new(pattern).matches(essence.as_bytes()))
    }
}

/// A `compress_types` pattern, split at its `*` once rather than for every response:
/// "text/*" matches any text type, "application/*+json" any JSON-based one.
#[derive(Clone, Debug)]
pub enum MediaPattern {
    Exact(Box<str>),
    Wildcard { before: Box<str>, after: Box<str> },
}

impl MediaPattern {
    pub fn new(pattern: &str) -> Self {
        match pattern.split_once('*') {
            None => MediaPattern::Exact(pattern.into()),
            Some((before, after)) => MediaPattern::Wildcard { before: before.into(), after: after.into() },
        }
    }

    /// Whether a media type's essence (no parameters) matches, ASCII case aside. Bytes,
    /// not text: a header value may hold any byte, and slicing text there could split a character.
    pub fn matches(&self, essence: &[u8]) -> bool {
        match self {
            MediaPattern::Exact(pattern) => pattern.as_bytes().eq_ignore_ascii_case(essence),
            MediaPattern::Wildcard { before, after } => {
                essence.len() >= before.len() + after.len()
                    && essence[..before.len()].eq_ignore_ascii_case(before.as_bytes())
                    && essence[essence.len() - after.len()..].eq_ignore_ascii_case(after.as_bytes())
            }
        }
    }
}

/// Which Host names the server answers (nginx's server_name).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct HostConfig {
    /// Empty: any Host is served.
    pub names: Vec<ServerName>,
    pub unknown: UnknownHost,
    pub www: WwwRedirect,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerName {
    /// "example.com", lowercase, no port.
    Exact(String),
    /// "*.example.com": any name ending in ".example.com" (not example.com itself).
    Wildcard(String),
}

impl ServerName {
    pub fn parse(spec: &str) -> Result<Self, String> {
        let name = spec.trim().trim_end_matches('.').to_ascii_lowercase();
        let valid = |s: &str| !s.is_empty() && s.split('.').all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
        if let Some(suffix) = name.strip_prefix("*.") {
            if valid(suffix) {
                return Ok(ServerName::Wildcard(format!(".{suffix}")));
            }
        } else if valid(&name) || name.parse::<IpAddr>().is_ok() || name.trim_matches(['[', ']']).parse::<IpAddr>().is_ok() {
            return Ok(ServerName::Exact(name.trim_matches(['[', ']']).to_string()));
        }
        Err(format!("'{spec}' is not a server name; write e.g. example.com, *.example.com or 203.0.113.9"))
    }

    /// `host` lowercase, without its port.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            ServerName::Exact(name) => name == host,
            ServerName::Wildcard(suffix) => host.len() > suffix.len() && host.ends_with(suffix.as_str()),
        }
    }
}

/// What a request for a name the server does not serve gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum UnknownHost {
    /// 421 Misdirected Request.
    #[default]
    #[value(name = "421")]
    Misdirected,
    /// The connection is closed without a response (nginx's `return 444`).
    #[value(name = "close", alias = "444")]
    Close,
}

/// --www-redirect: one canonical name for www.example.com and example.com.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum WwwRedirect {
    #[default]
    Off,
    /// www.example.com -> example.com (301, path and query kept).
    ToBare,
    /// example.com -> www.example.com.
    ToWww,
}

/// Requests per client address (nginx's limit_req).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RateConfig {
    /// Applied to every request, unless a path rule matches first.
    pub default: Option<RateRule>,
    /// Rules for URL path prefixes, longest prefix first; each its own bucket per address.
    pub paths: Vec<PathRate>,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RateRule {
    /// Tokens added per second.
    pub per_second: f64,
    /// The bucket's size: requests allowed at once after a quiet spell.
    pub burst: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PathRate {
    pub prefix: String,
    pub rule: RateRule,
}

impl RateConfig {
    pub fn enabled(&self) -> bool {
        self.default.is_some() || !self.paths.is_empty()
    }
}

/// Bans: fail2ban's job, without parsing logs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BanConfig {
    /// Ban after this many counted responses within `within`; None: bans are off.
    pub after: Option<u32>,
    pub within: Duration,
    pub ban_for: Duration,
    /// Response statuses that count; the front's own refusals of malformed or
    /// oversized requests (400, 413, 414, 431) always count.
    pub statuses: Vec<u16>,
    /// Never banned (the CIDRs of --ban-allow).
    pub allow: Vec<ipnet::IpNet>,
    /// Master-only: where the ban list survives restarts (STATE_DIR/bans.json).
    #[serde(skip)]
    pub state_file: PathBuf,
}

impl Default for BanConfig {
    fn default() -> Self {
        BanConfig {
            after: None,
            within: Duration::from_secs(60),
            ban_for: Duration::from_secs(600),
            statuses: vec![400, 401, 403, 404],
            allow: Vec::new(),
            state_file: PathBuf::new(),
        }
    }
}

impl BanConfig {
    pub fn enabled(&self) -> bool {
        self.after.is_some()
    }

    pub fn allowed(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.allow.iter().any(|net| net.contains(&ip))
    }

    /// Whether a response with this status counts toward a ban.
    pub fn counts(&self, status: u16) -> bool {
        self.statuses.contains(&status)
    }
}

/// A page of --error-page, read by the master when the configuration is built.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorPage {
    pub status: u16,
    pub body: String,
    /// From the file's extension: text/html for .html, application/json for .json, ...
    pub content_type: String,
}

/// The largest --error-page file: a page, not a site.
pub const MAX_ERROR_PAGE: u64 = 256 * 1024;

// Parsers of the values the options take, shared by resolve and the tests.

/// "10M", "4G", "512k", "100" (bytes), "0" or "none" (unlimited: None). k, M, G are
/// powers of 1024, as nginx reads them; "MB", "MiB" and lowercase are the same.
pub fn parse_size(s: &str) -> Result<Option<u64>, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("none") || t.eq_ignore_ascii_case("unlimited") {
        return Ok(None);
    }
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let n: u64 = number.parse().map_err(|_| format!("'{s}' is not a size; write e.g. 10M, 1G, 512k or 0 for no limit"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(format!("'{s}': unknown unit '{unit}'; write e.g. 10M, 1G, 512k or 0 for no limit")),
    };
    let bytes = n.checked_mul(1 << shift).ok_or_else(|| format!("'{s}' is too large"))?;
    Ok((bytes > 0).then_some(bytes))
}

/// "60s", "10m", "1h", "2d", "500ms", or a number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let n: f64 = number.parse().map_err(|_| format!("'{s}' is not a duration; write e.g. 60s, 10m, 1h or 1d"))?;
    let seconds = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => return Err(format!("'{s}': unknown unit '{unit}'; write e.g. 60s, 10m, 1h or 1d")),
    };
    if !(seconds.is_finite() && seconds > 0.0) {
        return Err(format!("'{s}' must be a duration above zero, e.g. 60s"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// "20/s", "600/m", "1000/h" (nginx's "20r/s" too): requests per second.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let err = || format!("'{s}' is not a rate; write requests per unit of time, e.g. 20/s, 300/m or 1000/h");
    let (count, unit) = s.trim().split_once('/').ok_or_else(err)?;
    let count: f64 = count.trim().trim_end_matches('r').parse().map_err(|_| err())?;
    let per = match unit.trim() {
        "s" | "sec" | "second" => 1.0,
        "m" | "min" | "minute" => 60.0,
        "h" | "hour" => 3600.0,
        "d" | "day" => 86400.0,
        _ => return Err(err()),
    };
    if !(count.is_finite() && count > 0.0) {
        return Err(format!("'{s}': the rate must be above zero"));
    }
    Ok(count / per)
}

/// The burst a rate gets when none is given: one second's worth of its requests
/// (at least one), so "20/s" allows 20 at once and "5/m" allows 5.
pub fn default_burst(rate: &str, per_second: f64) -> u32 {
    let count = rate.split('/').next().and_then(|c| c.trim().trim_end_matches('r').parse::<f64>().ok());
    count.unwrap_or(per_second).ceil().max(1.0) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_nginx_reads_them() {
        assert_eq!(parse_size("10M").unwrap(), Some(10 << 20));
        assert_eq!(parse_size("4g").unwrap(), Some(4 << 30));
        assert_eq!(parse_size("512KiB").unwrap(), Some(512 << 10));
        assert_eq!(parse_size("100").unwrap(), Some(100));
        assert_eq!(parse_size("0").unwrap(), None);
        assert_eq!(parse_size("none").unwrap(), None);
        assert!(parse_size("ten").unwrap_err().contains("10M"));
        assert!(parse_size("5X").unwrap_err().contains("unknown unit"));
    }

    #[test]
    fn durations_and_rates() {
        assert_eq!(parse_duration("60s").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("0s").is_err() && parse_duration("1y").is_err());
        assert_eq!(parse_rate("20/s").unwrap(), 20.0);
        assert_eq!(parse_rate("20r/s").unwrap(), 20.0);
        assert_eq!(parse_rate("600/m").unwrap(), 10.0);
        assert!(parse_rate("20").unwrap_err().contains("20/s"));
        assert_eq!(default_burst("5/m", 5.0 / 60.0), 5);
        assert_eq!(default_burst("0.5/s", 0.5), 1);
    }

    #[test]
    fn path_prefixes_match_whole_segments() {
        assert!(prefix_matches("/upload", "/upload"));
        assert!(prefix_matches("/upload", "/upload/big"));
        assert!(prefix_matches("/upload", "/upload?x=1"));
        assert!(!prefix_matches("/upload", "/uploads"));
        let limits = BodyLimits { default: Some(10), paths: vec![PathLimit { prefix: "/upload".into(), limit: None }] };
        assert_eq!(limits.for_path("/upload/a"), None);
        assert_eq!(limits.for_path("/other"), Some(10));
    }

    #[test]
    fn media_types_and_patterns() {
        let c = CompressConfig::default();
        assert!(c.compresses_type("text/html; charset=utf-8"));
        assert!(c.compresses_type("application/problem+json"));
        assert!(c.compresses_type("Application/JSON"));
        assert!(!c.compresses_type("image/png"));
        assert!(!c.compresses_type("application/octet-stream"));
    }

    #[test]
    fn server_names_exact_and_wildcard() {
        let exact = ServerName::parse("Example.COM.").unwrap();
        assert!(exact.matches("example.com") && !exact.matches("www.example.com"));
        let wild = ServerName::parse("*.example.com").unwrap();
        assert!(wild.matches("www.example.com") && wild.matches("a.b.example.com") && !wild.matches("example.com"));
        assert!(ServerName::parse("203.0.113.9").is_ok() && ServerName::parse("[::1]").is_ok());
        assert!(ServerName::parse("exa mple.com").unwrap_err().contains("*.example.com"));
    }
}
