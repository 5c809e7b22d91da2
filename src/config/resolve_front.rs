//! The front's options (cli_front.rs) become `FrontConfig` (front.rs): lists of pairs
//! parsed, defaults filled, the --error-page files read by the master (so a worker never
//! opens them, and a missing one stops the start with its name).

use std::path::{Path, PathBuf};

use super::front::*;
use super::{ConfigError, Layer};

/// The front's part of a configuration. `domains`: the names of --domain's certificates,
/// the default --server-name; `state_dir`: where the ban list is kept.
pub(super) fn resolve(layer: &mut Layer, domains: &[String], state_dir: &Path) -> Result<FrontConfig, ConfigError> {
    let d = FrontConfig::default();
    Ok(FrontConfig {
        body: body_limits(layer)?,
        compress: compression(layer, d.compress)?,
        hosts: HostConfig {
            names: server_names(layer.server_name.take(), domains)?,
            unknown: layer.unknown_host.take().unwrap_or(d.hosts.unknown),
            www: layer.www_redirect.take().unwrap_or(d.hosts.www),
        },
        proxy_protocol: layer.proxy_protocol.take().unwrap_or(d.proxy_protocol),
        rate: rates(layer)?,
        bans: bans(layer, d.bans, state_dir)?,
        error_pages: error_pages(layer.error_page.take().unwrap_or_default())?,
        security_headers: layer.security_headers.take().unwrap_or(d.security_headers),
    })
}

fn body_limits(layer: &mut Layer) -> Result<BodyLimits, ConfigError> {
    const FLAG: &str = "--limit-request-body-path";
    let default = match layer.limit_request_body.take() {
        Some(size) => parse_size(&size).map_err(|e| ConfigError::new("--limit-request-body", format!("--limit-request-body {e}")))?,
        None => BodyLimits::default().default,
    };
    let mut paths = Vec::new();
    for spec in layer.limit_request_body_path.take().unwrap_or_default() {
        let (prefix, size) = split_pair(&spec, FLAG, "/upload=2G")?;
        let limit = parse_size(size).map_err(|e| ConfigError::new(FLAG, format!("{FLAG} {spec}: {e}")))?;
        paths.push(PathLimit { prefix, limit });
    }
    paths.sort_by_key(|p| std::cmp::Reverse(p.prefix.len()));
    Ok(BodyLimits { default, paths })
}

fn compression(layer: &mut Layer, d: CompressConfig) -> Result<CompressConfig, ConfigError> {
    let types = match layer.compress_types.take() {
        None => d.types,
        Some(types) => {
            let types: Vec<String> = types.iter().map(|t| t.trim().to_ascii_lowercase()).filter(|t| !t.is_empty()).collect();
            if let Some(bad) = types.iter().find(|t| !t.contains('/') || t.matches('*').count() > 1) {
                return Err(ConfigError::new("--compress-types", format!(
                    "--compress-types: '{bad}' is not a media type; write e.g. text/html, text/* or application/*+json"
                )));
            }
            types
        }
    };
    let mut encodings = layer.compress_encodings.take().unwrap_or(d.encodings);
    let mut seen = Vec::new();
    encodings.retain(|e| !seen.contains(e) && { seen.push(*e); true });
    if encodings.is_empty() {
        return Err(ConfigError::new("--compress-encodings", "--compress-encodings needs at least one of zstd, br, gzip (or use --no-compress)"));
    }
    Ok(CompressConfig {
        enabled: layer.compress.take().unwrap_or(d.enabled),
        level: layer.compress_level.take().unwrap_or(d.level),
        min_size: layer.compress_min_size.take().unwrap_or(d.min_size),
        types,
        encodings,
    })
}

/// --server-name, else the certificates' names in --domain mode, else none (any host).
fn server_names(given: Option<Vec<String>>, domains: &[String]) -> Result<Vec<ServerName>, ConfigError> {
    let (names, flag) = match given {
        Some(names) => (names, "--server-name"),
        None => (domains.to_vec(), "--domain"),
    };
    let mut out = Vec::new();
    for name in names.iter().flat_map(|n| n.split(',')).map(str::trim).filter(|n| !n.is_empty()) {
        let parsed = ServerName::parse(name).map_err(|e| ConfigError::new(if flag == "--domain" { "--domain" } else { "--server-name" }, format!("{flag} {e}")))?;
        if !out.contains(&parsed) {
            out.push(parsed);
        }
    }
    Ok(out)
}

fn rates(layer: &mut Layer) -> Result<RateConfig, ConfigError> {
    const FLAG: &str = "--rate-limit-path";
    let burst = layer.rate_limit_burst.take();
    if burst == Some(0) {
        return Err(ConfigError::new("--rate-limit-burst", "--rate-limit-burst must be at least 1 (a bucket of 0 would refuse every request)"));
    }
    let default = match layer.rate_limit.take() {
        Some(spec) => {
            let per_second = parse_rate(&spec).map_err(|e| ConfigError::new("--rate-limit", format!("--rate-limit {e}")))?;
            Some(RateRule { per_second, burst: burst.unwrap_or_else(|| default_burst(&spec, per_second)) })
        }
        None if burst.is_some() => {
            return Err(ConfigError::new("--rate-limit-burst", "--rate-limit-burst sizes the bucket of --rate-limit: add --rate-limit RATE, e.g. 20/s"));
        }
        None => None,
    };
    let mut paths = Vec::new();
    for spec in layer.rate_limit_path.take().unwrap_or_default() {
        let (prefix, value) = split_pair(&spec, FLAG, "/login=5/m")?;
        let (rate, burst) = match value.rsplit_once(':') {
            Some((rate, burst)) => {
                let burst: u32 = burst.trim().parse().ok().filter(|b| *b > 0).ok_or_else(|| {
                    ConfigError::new(FLAG, format!("{FLAG} {spec}: the burst after ':' must be a number above 0, e.g. /api=50/s:100"))
                })?;
                (rate, Some(burst))
            }
            None => (value, None),
        };
        let per_second = parse_rate(rate).map_err(|e| ConfigError::new(FLAG, format!("{FLAG} {spec}: {e}")))?;
        let burst = burst.unwrap_or_else(|| default_burst(rate, per_second));
        paths.push(PathRate { prefix, rule: RateRule { per_second, burst } });
    }
    paths.sort_by_key(|p| std::cmp::Reverse(p.prefix.len()));
    Ok(RateConfig { default, paths })
}

fn bans(layer: &mut Layer, d: BanConfig, state_dir: &Path) -> Result<BanConfig, ConfigError> {
    let after = match layer.ban_after.take() {
        Some(0) => return Err(ConfigError::new("--ban-after", "--ban-after must be at least 1, e.g. 20 (leave it out for no bans)")),
        after => after,
    };
    let duration = |v: Option<String>, flag: &'static str, default| match v {
        Some(v) => parse_duration(&v).map_err(|e| ConfigError::new(flag, format!("{flag} {e}"))),
        None => Ok(default),
    };
    let statuses = layer.ban_status.take().unwrap_or(d.statuses);
    if let Some(bad) = statuses.iter().find(|s| !(100..=599).contains(*s)) {
        return Err(ConfigError::new("--ban-status", format!("--ban-status: {bad} is not an HTTP status; write e.g. 400,401,403,404")));
    }
    let mut allow = Vec::new();
    for spec in layer.ban_allow.take().unwrap_or_default().iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        let net = spec.parse::<ipnet::IpNet>().or_else(|_| spec.parse::<std::net::IpAddr>().map(ipnet::IpNet::from)).map_err(|_| {
            ConfigError::new("--ban-allow", format!("--ban-allow: '{spec}' is not an IP address or network; write e.g. 10.0.0.0/8 or 192.0.2.7"))
        })?;
        allow.push(net);
    }
    Ok(BanConfig {
        after,
        within: duration(layer.ban_within.take(), "--ban-within", d.within)?,
        ban_for: duration(layer.ban_for.take(), "--ban-for", d.ban_for)?,
        statuses,
        allow,
        state_file: state_dir.join("bans.json"),
    })
}

fn error_pages(specs: Vec<String>) -> Result<Vec<ErrorPage>, ConfigError> {
    const FLAG: &str = "--error-page";
    let mut pages: Vec<ErrorPage> = Vec::new();
    for spec in specs {
        let (code, file) = spec.split_once('=').ok_or_else(|| ConfigError::new(FLAG, format!("{FLAG} '{spec}' must be CODE=FILE, e.g. 404=errors/404.html")))?;
        let status: u16 = code.trim().parse().ok().filter(|s| (400..=599).contains(s)).ok_or_else(|| {
            ConfigError::new(FLAG, format!("{FLAG} {spec}: '{code}' is not an error status; pages are for 400 to 599, e.g. 404=errors/404.html"))
        })?;
        let path = PathBuf::from(file.trim());
        let body = read_page(&path).map_err(|e| ConfigError::new(FLAG, format!("{FLAG} {spec}: {e}")))?;
        let content_type = match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("html" | "htm") => "text/html; charset=utf-8",
            Some("json") => "application/json",
            Some("xml") => "application/xml",
            _ => "text/plain; charset=utf-8",
        };
        pages.retain(|p| p.status != status);
        pages.push(ErrorPage { status, body, content_type: content_type.into() });
    }
    Ok(pages)
}

fn read_page(path: &Path) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}; fix the path (relative to the working directory, or to ferrogate.toml there)", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a file", path.display()));
    }
    if meta.len() > MAX_ERROR_PAGE {
        return Err(format!("{} has {} bytes; an error page may have at most {} KiB", path.display(), meta.len(), MAX_ERROR_PAGE / 1024));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    String::from_utf8(bytes).map_err(|_| format!("{} is not UTF-8 text", path.display()))
}

/// "PREFIX=VALUE" with PREFIX a URL path: the prefix without a trailing slash, and VALUE.
fn split_pair<'a>(spec: &'a str, flag: &'static str, example: &str) -> Result<(String, &'a str), ConfigError> {
    let (prefix, value) = spec.split_once('=').ok_or_else(|| ConfigError::new(flag, format!("{flag} '{spec}' must be PREFIX=VALUE, e.g. {example}")))?;
    let prefix = prefix.trim();
    if !prefix.starts_with('/') || prefix.contains(['?', '#']) {
        return Err(ConfigError::new(flag, format!("{flag} {spec}: the prefix must be a URL path starting with '/', e.g. {example}")));
    }
    let prefix = if prefix == "/" { prefix } else { prefix.trim_end_matches('/') };
    Ok((prefix.to_string(), value.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer() -> Layer {
        Layer::default()
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let f = resolve(&mut layer(), &[], Path::new("/st")).unwrap();
        assert_eq!(f.body.default, Some(DEFAULT_BODY_LIMIT));
        assert!(f.compress.enabled && f.hosts.names.is_empty() && !f.rate.enabled() && !f.bans.enabled());
        assert_eq!(f.bans.state_file, Path::new("/st/bans.json"));
    }

    #[test]
    fn path_lists_parse_and_sort_longest_first() {
        let mut l = layer();
        l.limit_request_body = Some("1M".into());
        l.limit_request_body_path = Some(vec!["/up=2G".into(), "/up/big/=0".into()]);
        l.rate_limit_path = Some(vec!["/login=5/m".into(), "/api=50/s:100".into()]);
        let f = resolve(&mut l, &[], Path::new("/st")).unwrap();
        assert_eq!(f.body.paths[0], PathLimit { prefix: "/up/big".into(), limit: None });
        assert_eq!(f.body.for_path("/up/x"), Some(2 << 30));
        assert_eq!(f.body.for_path("/other"), Some(1 << 20));
        assert_eq!(f.rate.paths[0].prefix, "/login");
        assert_eq!(f.rate.paths[0].rule.burst, 5);
        assert_eq!(f.rate.paths[1].rule, RateRule { per_second: 50.0, burst: 100 });
    }

    #[test]
    fn bad_values_name_the_option_and_the_fix() {
        let cases: Vec<(fn(&mut Layer), &str, &str)> = vec![
            (|l| l.limit_request_body_path = Some(vec!["upload=1M".into()]), "--limit-request-body-path", "starting with '/'"),
            (|l| l.rate_limit_path = Some(vec!["/a=5/m:0".into()]), "--rate-limit-path", "above 0"),
            (|l| l.rate_limit_burst = Some(5), "--rate-limit-burst", "add --rate-limit"),
            (|l| l.ban_after = Some(0), "--ban-after", "at least 1"),
            (|l| l.ban_status = Some(vec![4040]), "--ban-status", "not an HTTP status"),
            (|l| l.ban_allow = Some(vec!["office".into()]), "--ban-allow", "10.0.0.0/8"),
            (|l| l.error_page = Some(vec!["200=x.html".into()]), "--error-page", "400 to 599"),
            (|l| l.error_page = Some(vec!["404=/no/such/file.html".into()]), "--error-page", "cannot read /no/such/file.html"),
            (|l| l.compress_types = Some(vec!["json".into()]), "--compress-types", "text/*"),
            (|l| l.server_name = Some(vec!["bad name".into()]), "--server-name", "*.example.com"),
        ];
        for (set, option, hint) in cases {
            let mut l = layer();
            set(&mut l);
            let err = resolve(&mut l, &[], Path::new("/st")).unwrap_err();
            assert_eq!(err.option, option, "{}", err.message);
            assert!(err.message.contains(hint), "{}", err.message);
        }
    }

    #[test]
    fn server_names_default_to_the_domains() {
        let f = resolve(&mut layer(), &["example.com".into(), "*.example.org".into()], Path::new("/st")).unwrap();
        assert_eq!(f.hosts.names, vec![ServerName::Exact("example.com".into()), ServerName::Wildcard(".example.org".into())]);
        let mut l = layer();
        l.server_name = Some(vec!["a.test".into()]);
        let f = resolve(&mut l, &["example.com".into()], Path::new("/st")).unwrap();
        assert_eq!(f.hosts.names, vec![ServerName::Exact("a.test".into())]);
    }

    #[test]
    fn error_pages_are_read_with_a_content_type() {
        let dir = std::env::temp_dir().join(format!("ferrogate-error-page-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let page = dir.join("404.html");
        std::fs::write(&page, "<h1>gone</h1>").unwrap();
        let mut l = layer();
        l.error_page = Some(vec![format!("404={}", page.display())]);
        let f = resolve(&mut l, &[], Path::new("/st")).unwrap();
        assert_eq!(f.error_pages, vec![ErrorPage { status: 404, body: "<h1>gone</h1>".into(), content_type: "text/html; charset=utf-8".into() }]);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
