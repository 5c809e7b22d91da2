//! What can go wrong while talking to a CA, worded for the person who has to fix it.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The challenge types ferrogate can answer itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChallengeKind {
    Http01,
    TlsAlpn01,
}

impl ChallengeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChallengeKind::Http01 => "http-01",
            ChallengeKind::TlsAlpn01 => "tls-alpn-01",
        }
    }

    /// What must be true for the CA to validate `domain` this way.
    fn fix(self, domain: &str) -> String {
        match self {
            ChallengeKind::Http01 => format!(
                "DNS for {domain} must point to this server and port 80 must be reachable from the internet"
            ),
            ChallengeKind::TlsAlpn01 => format!(
                "DNS for {domain} must point to this server and port 443 must be reachable from the internet, \
                 with no proxy terminating TLS in front of ferrogate"
            ),
        }
    }
}

impl fmt::Display for ChallengeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A CA's problem document (RFC 8555 §6.7), kept as plain strings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CaProblem {
    pub kind: Option<String>,
    pub detail: Option<String>,
    /// (identifier, type, detail) per identifier the CA complained about.
    pub subproblems: Vec<(Option<String>, Option<String>, Option<String>)>,
}

impl CaProblem {
    pub fn from_acme(p: &instant_acme::Problem) -> CaProblem {
        let ident = |i: &instant_acme::Identifier| match i {
            instant_acme::Identifier::Dns(d) => d.clone(),
            other => format!("{other:?}"),
        };
        CaProblem {
            kind: p.r#type.clone(),
            detail: p.detail.clone(),
            subproblems: p.subproblems.iter()
                .map(|s| (s.identifier.as_ref().map(ident), s.r#type.clone(), s.detail.clone()))
                .collect(),
        }
    }

    /// `rateLimited` for `urn:ietf:params:acme:error:rateLimited`.
    pub fn short_kind(&self) -> &str {
        let kind = self.kind.as_deref().unwrap_or("");
        kind.strip_prefix("urn:ietf:params:acme:error:").unwrap_or(kind)
    }
}

impl fmt::Display for CaProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.detail.as_deref().unwrap_or("no detail given"))?;
        if let Some(kind) = &self.kind {
            write!(f, " ({kind})")?;
        }
        for (ident, kind, detail) in &self.subproblems {
            write!(f, "; {}: {}", ident.as_deref().unwrap_or("?"), detail.as_deref().unwrap_or("no detail"))?;
            if let Some(kind) = kind {
                write!(f, " ({kind})")?;
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug)]
pub enum AcmeError {
    /// Bad input: a name, a token, an EAB key, a CA root file.
    Invalid(String),
    /// The state directory could not be read or written.
    State(String),
    /// The directory did not answer (DNS, TCP, TLS, HTTP).
    Unreachable { url: String, error: String },
    /// The CA tried to validate `domain` and failed (or the challenge expired).
    ChallengeFailed { domain: String, kind: ChallengeKind, problem: Option<CaProblem> },
    /// The CA did not offer this challenge type for `domain` (wildcards need dns-01).
    ChallengeNotOffered { domain: String, kind: ChallengeKind },
    /// Auto mode: every challenge type was tried, one new order each.
    AllChallengesFailed(Vec<AcmeError>),
    /// The CA's rate limit; the caller must not retry before `retry_after` (when known).
    RateLimited { problem: CaProblem, retry_after: Option<Duration> },
    /// Any other problem document from the CA.
    Rejected { during: String, problem: CaProblem },
    /// The CA kept the order pending/processing longer than we wait.
    Timeout { during: String },
    /// The CA answered something we could not use.
    Protocol { during: String, error: String },
}

impl AcmeError {
    /// Maps the crate's error; `url` is the directory, named when it cannot be reached.
    pub fn from_acme(e: instant_acme::Error, during: &str, url: &str) -> AcmeError {
        use instant_acme::Error as E;
        match e {
            E::Api(p) => Self::from_problem(CaProblem::from_acme(&p), during),
            E::Timeout(_) => AcmeError::Timeout { during: during.to_string() },
            E::Json(e) => AcmeError::Protocol { during: during.to_string(), error: format!("unexpected JSON from the CA: {e}") },
            E::Http(_) | E::Hyper(_) | E::InvalidUri(_) | E::Other(_) => {
                AcmeError::Unreachable { url: url.to_string(), error: error_chain(&e) }
            }
            other => AcmeError::Protocol { during: during.to_string(), error: error_chain(&other) },
        }
    }

    pub fn from_problem(problem: CaProblem, during: &str) -> AcmeError {
        if problem.short_kind() == "rateLimited" {
            let retry_after = problem.detail.as_deref().and_then(|d| retry_after_in_detail(d, SystemTime::now()));
            AcmeError::RateLimited { problem, retry_after }
        } else {
            AcmeError::Rejected { during: during.to_string(), problem }
        }
    }

    /// How long the CA asked us to wait, for the caller's retry schedule.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            AcmeError::RateLimited { retry_after, .. } => *retry_after,
            AcmeError::AllChallengesFailed(all) => all.iter().filter_map(|e| e.retry_after()).max(),
            _ => None,
        }
    }

    /// Whether Auto mode should try the other challenge type (with a new order).
    pub fn worth_another_challenge(&self) -> bool {
        matches!(self, AcmeError::ChallengeFailed { .. } | AcmeError::ChallengeNotOffered { .. })
    }
}

impl fmt::Display for AcmeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AcmeError::Invalid(m) => f.write_str(m),
            AcmeError::State(m) => write!(f, "ACME state directory: {m}"),
            AcmeError::Unreachable { url, error } => write!(
                f,
                "cannot reach the ACME directory {url}: {error} (check the URL, this machine's network and DNS, \
                 and for a private CA the root certificate given to trust it)"
            ),
            AcmeError::ChallengeFailed { domain, kind, problem } => {
                write!(f, "the CA could not validate {domain} with {kind}: ")?;
                match problem {
                    Some(p) => write!(f, "{p}")?,
                    None => f.write_str("the authorization became invalid without a reason given")?,
                }
                write!(f, ". {}", kind.fix(domain))
            }
            AcmeError::ChallengeNotOffered { domain, kind } => write!(
                f,
                "the CA offers no {kind} challenge for {domain} (wildcard names need dns-01, which ferrogate does not do)"
            ),
            AcmeError::AllChallengesFailed(all) => {
                f.write_str("every challenge type failed: ")?;
                for (i, e) in all.iter().enumerate() {
                    write!(f, "{}{}) {e}", if i > 0 { "; " } else { "" }, i + 1)?;
                }
                Ok(())
            }
            AcmeError::RateLimited { problem, retry_after } => {
                write!(f, "the CA's rate limit was reached: {problem}; ")?;
                match retry_after {
                    Some(d) => write!(f, "retrying in {} s at the earliest", d.as_secs()),
                    None => f.write_str("retrying later"),
                }
            }
            AcmeError::Rejected { during, problem } => {
                write!(f, "the CA refused {during}: {problem}")?;
                match hint(problem.short_kind()) {
                    Some(h) => write!(f, " ({h})"),
                    None => Ok(()),
                }
            }
            AcmeError::Timeout { during } => {
                write!(f, "the CA did not finish {during} in time; the next attempt will place a new order")
            }
            AcmeError::Protocol { during, error } => write!(f, "{during}: {error}"),
        }
    }
}

impl std::error::Error for AcmeError {}

fn hint(short_kind: &str) -> Option<&'static str> {
    Some(match short_kind {
        "externalAccountRequired" => "this CA requires External Account Binding: set its key id and HMAC key",
        "unauthorized" => "the account is not allowed this; with EAB, check the key id and HMAC key",
        "rejectedIdentifier" => "this CA will not issue for that name",
        "caa" => "a CAA record in DNS forbids this CA for that name",
        "invalidContact" | "unsupportedContact" => "check the email address given for the account",
        "userActionRequired" => "the CA's terms of service changed: visit the CA's site",
        _ => return None,
    })
}

/// The error and its sources, "a: b: c" (hyper's own messages are terse at the top).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// instant-acme does not give us the Retry-After header of a problem response, but
/// Let's Encrypt writes the same instant in the detail: "..., retry after
/// 2025-01-02 03:04:05 UTC: see ...". Returns the wait from `now`.
pub fn retry_after_in_detail(detail: &str, now: SystemTime) -> Option<Duration> {
    let at = detail.find("retry after ")? + "retry after ".len();
    let s = detail.get(at..at + 19)?;
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se;
    let when = UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?);
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(kind: &str, detail: &str) -> CaProblem {
        CaProblem { kind: Some(format!("urn:ietf:params:acme:error:{kind}")), detail: Some(detail.into()), subproblems: vec![] }
    }

    #[test]
    fn a_failed_challenge_names_domain_type_ca_detail_and_fix() {
        let e = AcmeError::ChallengeFailed {
            domain: "app.example.com".into(),
            kind: ChallengeKind::Http01,
            problem: Some(CaProblem {
                subproblems: vec![(Some("app.example.com".into()), Some("urn:ietf:params:acme:error:dns".into()), Some("NXDOMAIN".into()))],
                ..problem("connection", "Connection refused")
            }),
        };
        let m = e.to_string();
        for part in ["app.example.com", "http-01", "Connection refused", "urn:ietf:params:acme:error:connection",
                     "NXDOMAIN", "port 80 must be reachable from the internet"] {
            assert!(m.contains(part), "{part:?} missing in {m}");
        }
        let alpn = AcmeError::ChallengeFailed { domain: "a.example".into(), kind: ChallengeKind::TlsAlpn01, problem: None };
        assert!(alpn.to_string().contains("port 443"));
        assert!(e.worth_another_challenge() && !AcmeError::Timeout { during: "x".into() }.worth_another_challenge());
    }

    #[test]
    fn rate_limits_carry_when_to_retry() {
        let now = UNIX_EPOCH + Duration::from_secs(1_735_787_045 - 3600); // 2025-01-02 02:04:05 UTC
        let d = "too many certificates already issued, retry after 2025-01-02 03:04:05 UTC: see https://x";
        assert_eq!(retry_after_in_detail(d, now), Some(Duration::from_secs(3600)));
        assert_eq!(retry_after_in_detail("no time here", now), None);
        assert_eq!(retry_after_in_detail("retry after 2025-13-02 03:04:05 UTC", now), None);
        let e = AcmeError::from_problem(problem("rateLimited", d), "placing an order");
        assert!(matches!(e, AcmeError::RateLimited { retry_after: Some(_), .. }));
        assert!(e.to_string().contains("rate limit"));
        let all = AcmeError::AllChallengesFailed(vec![AcmeError::Timeout { during: "x".into() }, e]);
        assert!(all.retry_after().is_some());
    }

    #[test]
    fn other_problems_and_unreachable_directories_say_what_to_check() {
        let e = AcmeError::from_problem(problem("externalAccountRequired", "EAB required"), "creating the account");
        assert!(e.to_string().contains("External Account Binding"), "{e}");
        let u = AcmeError::Unreachable { url: "https://ca.example/dir".into(), error: "connection refused".into() };
        assert!(u.to_string().contains("https://ca.example/dir") && u.to_string().contains("connection refused"));
    }
}
