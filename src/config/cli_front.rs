//! The command line of the front (config/front.rs): body limits, compression, server
//! names, the PROXY protocol, rate limits, bans, error pages. Flattened into `Cli`, so
//! these are ordinary options: in ferrogate.toml under the same names, in FERROGATE_*
//! variables, in `ferrogate config`.

use super::Layer;
use super::front::{CompressLevel, Encoding, UnknownHost, WwwRedirect, parse_duration, parse_rate, parse_size};

#[derive(clap::Args, Debug, Default)]
pub struct FrontArgs {
    /// Largest request body, e.g. 10M, 1G, 512k; 0 for no limit (nginx's client_max_body_size).
    /// A larger Content-Length gets 413 before a byte is read; a chunked body is cut off the
    /// moment it passes the limit (the app's receive() gets http.disconnect). [default: 100M]
    #[arg(long, value_name = "SIZE", value_parser = size, help_heading = "Limits")]
    pub limit_request_body: Option<String>,
    /// The body limit for one URL path prefix, e.g. /upload=2G (repeatable; the longest
    /// matching prefix wins; 0 for no limit). In ferrogate.toml: [limit-request-body-path].
    #[arg(long, value_name = "PREFIX=SIZE", value_delimiter = ',', help_heading = "Limits")]
    pub limit_request_body_path: Option<Vec<String>>,

    /// Compress responses (zstd, brotli, gzip, as the client accepts) of the types in
    /// --compress-types: the app's and static files'. --no-compress turns it off. [default: on]
    #[arg(long, overrides_with = "no_compress", help_heading = "Compression", action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub compress: Option<bool>,
    #[arg(long, help_heading = "Compression", hide = true)]
    pub no_compress: bool,
    /// fast (gzip 1, brotli 1, zstd 1), balanced (gzip 5, brotli 4, zstd 3) or best (9, 9, 12).
    #[arg(long, value_enum, help_heading = "Compression")]
    pub compress_level: Option<CompressLevel>,
    /// Responses shorter than this many bytes are sent as they are.
    #[arg(long, value_name = "BYTES", help_heading = "Compression")]
    pub compress_min_size: Option<u64>,
    /// Comma-separated media types compressed; text/* and application/*+json patterns work.
    /// [default: text/*, application/json, application/*+json, application/javascript,
    /// application/xml, application/*+xml, application/wasm, image/svg+xml]
    #[arg(long, value_name = "TYPES", value_delimiter = ',', help_heading = "Compression")]
    pub compress_types: Option<Vec<String>>,
    /// The codings offered, preferred first when the client likes several equally.
    #[arg(long, value_name = "CODINGS", value_enum, value_delimiter = ',', help_heading = "Compression")]
    pub compress_encodings: Option<Vec<Encoding>>,

    /// Serve only requests for this host name (repeatable; *.example.com for subdomains).
    /// Others get --unknown-host, so scanners hitting the IP never reach the app.
    /// [default: the --domain names; without --domain, any host]
    #[arg(long, value_name = "NAME", value_delimiter = ',', help_heading = "Server names")]
    pub server_name: Option<Vec<String>>,
    /// What a request for another host gets: 421 (Misdirected Request) or close (the
    /// connection is closed without an answer, as nginx's `return 444`).
    #[arg(long, value_enum, help_heading = "Server names")]
    pub unknown_host: Option<UnknownHost>,
    /// Redirect (301) www.NAME to NAME (to-bare), or NAME to www.NAME (to-www).
    #[arg(long, value_enum, help_heading = "Server names")]
    pub www_redirect: Option<WwwRedirect>,

    /// Every listener expects a PROXY protocol header (v1 or v2, as HAProxy and cloud load
    /// balancers send it) from --forwarded-allow-ips peers; its address is the client's.
    #[arg(long, help_heading = "Proxy", action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", require_equals = true, value_name = "BOOL")]
    pub proxy_protocol: Option<bool>,

    /// Requests per client address, e.g. 20/s or 300/m (nginx's limit_req): beyond it, 429
    /// with Retry-After. Shared by all workers. [default: no limit]
    #[arg(long, value_name = "RATE", value_parser = rate, help_heading = "Rate limits and bans")]
    pub rate_limit: Option<String>,
    /// Requests a client may make at once after a quiet spell [default: one second of --rate-limit].
    #[arg(long, value_name = "N", help_heading = "Rate limits and bans")]
    pub rate_limit_burst: Option<u32>,
    /// A rate for one URL path prefix, with its own count, e.g. /login=5/m or /api=50/s:100
    /// (RATE:BURST; repeatable). In ferrogate.toml: [rate-limit-path].
    #[arg(long, value_name = "PREFIX=RATE", value_delimiter = ',', help_heading = "Rate limits and bans")]
    pub rate_limit_path: Option<Vec<String>>,
    /// Ban a client address after this many --ban-status responses within --ban-within:
    /// its connections are closed at once for --ban-for. [default: no bans]
    #[arg(long, value_name = "N", help_heading = "Rate limits and bans")]
    pub ban_after: Option<u32>,
    /// The window --ban-after counts in, e.g. 60s, 10m.
    #[arg(long, value_name = "DURATION", value_parser = duration, help_heading = "Rate limits and bans")]
    pub ban_within: Option<String>,
    /// How long a ban lasts, e.g. 10m, 1h, 1d.
    #[arg(long, value_name = "DURATION", value_parser = duration, help_heading = "Rate limits and bans")]
    pub ban_for: Option<String>,
    /// Comma-separated response statuses that count toward a ban (the front's refusals of
    /// malformed or oversized requests always count).
    #[arg(long, value_name = "STATUSES", value_delimiter = ',', help_heading = "Rate limits and bans")]
    pub ban_status: Option<Vec<u16>>,
    /// Comma-separated addresses or networks never banned, e.g. 10.0.0.0/8,192.0.2.7.
    #[arg(long, value_name = "CIDRS", value_delimiter = ',', help_heading = "Rate limits and bans")]
    pub ban_allow: Option<Vec<String>>,

    /// The body of a response ferrogate answers itself (400, 404 of static files, 413, 421,
    /// 429, 503, ...) with this status, e.g. 404=errors/404.html (repeatable). Without it,
    /// a small page in HTML, JSON or text, as the request's Accept asks.
    #[arg(long, value_name = "CODE=FILE", value_delimiter = ',', help_heading = "Error pages and headers")]
    pub error_page: Option<Vec<String>>,
    /// Add X-Content-Type-Options: nosniff, Referrer-Policy: strict-origin-when-cross-origin
    /// and X-Frame-Options: SAMEORIGIN to responses that do not set them.
    #[arg(long, help_heading = "Error pages and headers", action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", require_equals = true, value_name = "BOOL")]
    pub security_headers: Option<bool>,
}

impl From<FrontArgs> for Layer {
    /// The front's part of the command line's layer; the rest of `Layer` says nothing.
    fn from(f: FrontArgs) -> Layer {
        // --compress / --no-compress: clap clears whichever came first.
        let compress = if f.no_compress { Some(false) } else { f.compress };
        Layer {
            limit_request_body: f.limit_request_body,
            limit_request_body_path: f.limit_request_body_path,
            compress,
            compress_level: f.compress_level,
            compress_min_size: f.compress_min_size,
            compress_types: f.compress_types,
            compress_encodings: f.compress_encodings,
            server_name: f.server_name,
            unknown_host: f.unknown_host,
            www_redirect: f.www_redirect,
            proxy_protocol: f.proxy_protocol,
            rate_limit: f.rate_limit,
            rate_limit_burst: f.rate_limit_burst,
            rate_limit_path: f.rate_limit_path,
            ban_after: f.ban_after,
            ban_within: f.ban_within,
            ban_for: f.ban_for,
            ban_status: f.ban_status,
            ban_allow: f.ban_allow,
            error_page: f.error_page,
            security_headers: f.security_headers,
            ..Layer::default()
        }
    }
}

/// The `[default: ...]` the help shows for the front's options that have one value.
pub(super) fn help_defaults(d: &super::front::FrontConfig) -> Vec<(&'static str, String)> {
    use clap::ValueEnum;
    let name = |v: Option<clap::builder::PossibleValue>| v.expect("no skipped variants").get_name().to_string();
    vec![
        ("compress_level", name(d.compress.level.to_possible_value())),
        ("compress_min_size", d.compress.min_size.to_string()),
        ("compress_encodings", d.compress.encodings.iter().map(|e| e.token()).collect::<Vec<_>>().join(",")),
        ("unknown_host", name(d.hosts.unknown.to_possible_value())),
        ("www_redirect", name(d.hosts.www.to_possible_value())),
        ("proxy_protocol", d.proxy_protocol.to_string()),
        ("ban_within", humantime(d.bans.within)),
        ("ban_for", humantime(d.bans.ban_for)),
        ("ban_status", d.bans.statuses.iter().map(u16::to_string).collect::<Vec<_>>().join(",")),
        ("security_headers", d.security_headers.to_string()),
    ]
}

/// A default duration as the options write them: 60s, 10m, 2h.
fn humantime(d: std::time::Duration) -> String {
    match d.as_secs() {
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

// Values checked as the command line reads them, so a bad one in ferrogate.toml or a
// FERROGATE_* variable is reported with its place; resolve reads them again, infallibly.

fn size(s: &str) -> Result<String, String> {
    parse_size(s).map(|_| s.trim().to_string())
}

fn rate(s: &str) -> Result<String, String> {
    parse_rate(s).map(|_| s.trim().to_string())
}

fn duration(s: &str) -> Result<String, String> {
    parse_duration(s).map(|_| s.trim().to_string())
}
