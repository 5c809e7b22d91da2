//! Log timestamps: a UTC wall-clock time broken into fields, written in the three
//! layouts the log lines use. Each layout is a `Display` value, so a line is written
//! into its buffer with no string of its own.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// A UTC wall-clock time broken into fields.
pub struct Timestamp {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    millis: u32,
}

const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

impl Timestamp {
    pub fn now() -> Self {
        let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let mut t = Self::from_unix(since.as_secs() as i64);
        t.millis = since.subsec_millis();
        t
    }

    pub fn from_unix(secs: i64) -> Self {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        // Howard Hinnant's days-to-civil conversion (proleptic Gregorian calendar).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        Timestamp {
            year,
            month,
            day,
            hour: (rem / 3600) as u32,
            minute: (rem % 3600 / 60) as u32,
            second: (rem % 60) as u32,
            millis: 0,
        }
    }

    /// gunicorn's: `2026-11-27 19:40:00 +0000`
    pub fn iso(&self) -> impl fmt::Display + '_ {
        Layout(self, |t, f| {
            write!(f, "{:04}-{:02}-{:02} {:02}:{:02}:{:02} +0000", t.year, t.month, t.day, t.hour, t.minute, t.second)
        })
    }

    /// nginx's $time_local: `27/Nov/2026:19:40:00 +0000`
    pub fn clf(&self) -> impl fmt::Display + '_ {
        Layout(self, |t, f| {
            let month = MONTHS[(t.month - 1) as usize];
            write!(f, "{:02}/{}/{:04}:{:02}:{:02}:{:02} +0000", t.day, month, t.year, t.hour, t.minute, t.second)
        })
    }

    /// RFC 3339 in UTC with milliseconds, what log shippers parse: `2026-11-27T19:40:00.123Z`
    pub fn rfc3339(&self) -> impl fmt::Display + '_ {
        Layout(self, |t, f| {
            write!(
                f,
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                t.year, t.month, t.day, t.hour, t.minute, t.second, t.millis
            )
        })
    }
}

struct Layout<'a>(&'a Timestamp, fn(&Timestamp, &mut fmt::Formatter<'_>) -> fmt::Result);

impl fmt::Display for Layout<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (self.1)(self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        let t = Timestamp::from_unix(1_795_788_000); // 2026-11-27 14:00:00 UTC
        assert_eq!(t.iso().to_string(), "2026-11-27 14:00:00 +0000");
        assert_eq!(t.clf().to_string(), "27/Nov/2026:14:00:00 +0000");
        assert_eq!(t.rfc3339().to_string(), "2026-11-27T14:00:00.000Z");
        assert_eq!(Timestamp::from_unix(951_782_400).iso().to_string(), "2000-02-29 00:00:00 +0000");
        assert_eq!(Timestamp::from_unix(0).clf().to_string(), "01/Jan/1970:00:00:00 +0000");
    }

    #[test]
    fn now_carries_milliseconds_in_rfc3339_only() {
        let t = Timestamp::now();
        let rfc = t.rfc3339().to_string();
        assert_eq!(rfc.len(), "2026-11-27T14:00:00.000Z".len(), "{rfc}");
        assert!(rfc.ends_with('Z') && rfc.as_bytes()[19] == b'.', "{rfc}");
        assert!(!t.iso().to_string().contains('.'));
    }
}
