//! What a check answers, and the two ways the report is printed: one line per check
//! for a person (the fix indented under it), or one JSON list for a program.

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

/// One check's answer: what was found, and for a warning or a failure, the one line that fixes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub check: &'static str,
    pub status: Status,
    pub finding: String,
    pub fix: Option<String>,
}

impl Finding {
    pub fn pass(check: &'static str, finding: impl Into<String>) -> Self {
        Finding { check, status: Status::Pass, finding: finding.into(), fix: None }
    }

    pub fn warn(check: &'static str, finding: impl Into<String>, fix: impl Into<String>) -> Self {
        Finding { check, status: Status::Warn, finding: finding.into(), fix: Some(fix.into()) }
    }

    pub fn fail(check: &'static str, finding: impl Into<String>, fix: impl Into<String>) -> Self {
        Finding { check, status: Status::Fail, finding: finding.into(), fix: Some(fix.into()) }
    }

    /// `status` with a fix, for checks whose severity is decided elsewhere.
    pub fn with(check: &'static str, status: Status, finding: impl Into<String>, fix: impl Into<String>) -> Self {
        match status {
            Status::Pass => Finding::pass(check, finding),
            _ => Finding { check, status, finding: finding.into(), fix: Some(fix.into()) },
        }
    }

    /// A check that could not look (a file it may not read): a warning, never a pass.
    pub fn from_result(check: &'static str, result: Result<Finding, String>) -> Self {
        result.unwrap_or_else(|e| Finding::warn(check, format!("could not check: {e}"), "run the doctor as root (`sudo ferrogate doctor`), or check by hand"))
    }
}

/// 0 when all pass, 1 when the worst is a warning, 2 when something fails.
pub fn exit_code(findings: &[Finding]) -> i32 {
    match findings.iter().map(|f| f.status).max() {
        Some(Status::Fail) => 2,
        Some(Status::Warn) => 1,
        _ => 0,
    }
}

pub fn text(findings: &[Finding]) -> String {
    let width = findings.iter().map(|f| f.check.len()).max().unwrap_or(0);
    let mut out = String::new();
    for f in findings {
        out.push_str(&format!("{}  {:<width$}  {}\n", f.status.label(), f.check, f.finding));
        if let Some(fix) = &f.fix {
            out.push_str(&format!("      {:<width$}  fix: {fix}\n", ""));
        }
    }
    let count = |s: Status| findings.iter().filter(|f| f.status == s).count();
    out.push_str(&format!(
        "{} checks: {} passed, {} warning{}, {} failed\n",
        findings.len(),
        count(Status::Pass),
        count(Status::Warn),
        if count(Status::Warn) == 1 { "" } else { "s" },
        count(Status::Fail)
    ));
    out
}

pub fn json(findings: &[Finding]) -> String {
    serde_json::to_string_pretty(findings).expect("findings are plain strings")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_status_is_the_exit_code_and_fixes_are_indented() {
        let mut all = vec![Finding::pass("a", "fine")];
        assert_eq!(exit_code(&all), 0);
        all.push(Finding::warn("bb", "hmm", "do x"));
        assert_eq!(exit_code(&all), 1);
        all.push(Finding::fail("c", "bad", "do y"));
        assert_eq!(exit_code(&all), 2);
        let t = text(&all);
        assert!(t.contains("PASS  a   fine\n"), "{t}");
        assert!(t.contains("WARN  bb  hmm\n          fix: do x\n"), "{t}");
        assert!(t.ends_with("3 checks: 1 passed, 1 warning, 1 failed\n"), "{t}");
        let j: serde_json::Value = serde_json::from_str(&json(&all)).unwrap();
        assert_eq!(j[0]["status"], "pass");
        assert_eq!(j[0]["fix"], serde_json::Value::Null);
        assert_eq!(j[2]["fix"], "do y");
    }
}
