//! When to renew and when to retry: pure functions of times, tested without a CA.

use std::time::{Duration, SystemTime};

/// The first retry after a failed order waits this long, doubling per failure...
pub const FIRST_RETRY_DELAY: Duration = Duration::from_secs(60);
/// ...up to this: a CA outage costs at most one attempt per 6 hours, and a
/// 90-day certificate renewed at 30 days left still gets ~120 attempts.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(6 * 3600);
/// Below this much validity left, every check warns.
pub const WARN_BEFORE_EXPIRY: Duration = Duration::from_secs(7 * 86_400);
const DAY: Duration = Duration::from_secs(86_400);

/// A number in [0, 1) from `seed` (splitmix64): the same certificate gets the same
/// point on every restart, different certificates (or instances) spread out.
fn unit(seed: u64) -> f64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// When to renew. With an ARI window (RFC 9773 §4.2) a seeded point inside it;
/// otherwise when one third of the lifetime remains, minus up to 1% of the lifetime
/// of jitter so that certificates issued together do not all renew in the same second.
pub fn renew_at(not_before: SystemTime, not_after: SystemTime, ari: Option<(SystemTime, SystemTime)>, jitter_seed: u64) -> SystemTime {
    if let Some((start, end)) = ari {
        let span = end.duration_since(start).unwrap_or(Duration::ZERO);
        return start + span.mul_f64(unit(jitter_seed));
    }
    let lifetime = not_after.duration_since(not_before).unwrap_or(Duration::ZERO);
    let third_left = not_after - lifetime / 3;
    third_left - (lifetime / 100).mul_f64(unit(jitter_seed))
}

/// How long to wait after the `failures`-th consecutive failure (1 = the first):
/// 1 min, 2 min, 4 min, ... capped at `MAX_RETRY_DELAY`. A CA's Retry-After wins
/// when it is longer, cap or not: ignoring it gets an account blocked.
pub fn retry_delay(failures: u32, retry_after: Option<Duration>) -> Duration {
    let doublings = failures.saturating_sub(1).min(20);
    let ours = FIRST_RETRY_DELAY.saturating_mul(1 << doublings).min(MAX_RETRY_DELAY);
    retry_after.map_or(ours, |theirs| ours.max(theirs))
}

/// A warning to log when less than 7 days of validity remain (renewal has been
/// failing for weeks by then); stronger under a day and once expired.
pub fn expiry_warning(not_after: SystemTime, now: SystemTime) -> Option<String> {
    let left = match not_after.duration_since(now) {
        Ok(left) => left,
        Err(past) => {
            return Some(format!(
                "the certificate EXPIRED {} ago: browsers and clients refuse it; renewal keeps being attempted",
                human(past.duration())
            ));
        }
    };
    if left >= WARN_BEFORE_EXPIRY {
        None
    } else if left < DAY {
        Some(format!(
            "the certificate expires in {}: clients will refuse the site after that; fix the renewal errors logged above now",
            human(left)
        ))
    } else {
        Some(format!("the certificate expires in {} and has not been renewed yet: see the renewal errors logged above", human(left)))
    }
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..120 => format!("{s} seconds"),
        120..7200 => format!("{} minutes", s / 60),
        7200..172_800 => format!("{} hours", s / 3600),
        _ => format!("{} days", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn t(days: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000) + DAY * days as u32
    }

    #[test]
    fn without_ari_renewal_comes_when_a_third_of_the_lifetime_remains() {
        let (nb, na) = (t(0), t(90));
        for seed in 0..200 {
            let at = renew_at(nb, na, None, seed);
            assert!(at <= t(60) && at >= t(60) - Duration::from_secs(90 * 86_400 / 100), "seed {seed}");
        }
        assert_eq!(renew_at(nb, na, None, 7), renew_at(nb, na, None, 7));
        assert_ne!(renew_at(nb, na, None, 7), renew_at(nb, na, None, 8));
        // Short-lived certificates (6 days) scale the same way.
        let at = renew_at(t(0), t(6), None, 1);
        assert!(at <= t(4) && at > t(3));
    }

    #[test]
    fn with_ari_renewal_is_inside_the_window() {
        let window = Some((t(50), t(52)));
        let points: Vec<_> = (0..100).map(|seed| renew_at(t(0), t(90), window, seed)).collect();
        assert!(points.iter().all(|p| *p >= t(50) && *p < t(52)));
        assert!(points.iter().any(|p| *p < t(51)) && points.iter().any(|p| *p >= t(51)));
        assert_eq!(renew_at(t(0), t(90), Some((t(5), t(5))), 3), t(5));
        assert_eq!(renew_at(t(0), t(90), Some((t(6), t(5))), 3), t(6));
    }

    #[test]
    fn retries_double_from_a_minute_up_to_the_cap_unless_the_ca_asks_for_more() {
        assert_eq!(retry_delay(0, None), Duration::from_secs(60));
        assert_eq!(retry_delay(1, None), Duration::from_secs(60));
        assert_eq!(retry_delay(2, None), Duration::from_secs(120));
        assert_eq!(retry_delay(4, None), Duration::from_secs(480));
        assert_eq!(retry_delay(30, None), MAX_RETRY_DELAY);
        assert_eq!(retry_delay(u32::MAX, None), MAX_RETRY_DELAY);
        assert_eq!(retry_delay(1, Some(Duration::from_secs(10))), Duration::from_secs(60));
        assert_eq!(retry_delay(1, Some(Duration::from_secs(86_400))), Duration::from_secs(86_400));
    }

    #[test]
    fn expiry_warnings_grow_stronger() {
        assert_eq!(expiry_warning(t(30), t(0)), None);
        assert_eq!(expiry_warning(t(7), t(0)), None);
        let week = expiry_warning(t(5), t(0)).unwrap();
        assert!(week.contains("5 days"), "{week}");
        let day = expiry_warning(t(0) + Duration::from_secs(5 * 3600), t(0)).unwrap();
        assert!(day.contains("5 hours") && day.contains("now"), "{day}");
        let gone = expiry_warning(t(0), t(2)).unwrap();
        assert!(gone.contains("EXPIRED 2 days ago"), "{gone}");
    }
}
