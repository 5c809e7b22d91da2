//! The buckets: one 64-bit word per (client address, rule), updated with one
//! compare-and-swap, in a fixed-size table that every worker maps (`shm`).
//!
//! Each word holds the bucket as GCRA keeps it (the generic cell rate algorithm, which
//! is a token bucket written as one timestamp): the "theoretical arrival time" (TAT),
//! when the bucket will be full again, plus a tag of the key's hash. A request at `now`
//! passes when `TAT - now <= tolerance` (the burst), and moves TAT one interval (one
//! token) on. A word whose TAT is in the past is a full bucket, the same as no bucket,
//! so idle words are free for any key: the table never needs sweeping, and its memory
//! is fixed whatever addresses a flood makes up.
//!
//! The table is split into sets of 8 words (one cache line); a key lives in the set its
//! hash picks. When every word of a set belongs to a live bucket, the one nearest to
//! full is taken over (its client starts with a full bucket again).

use std::sync::atomic::{AtomicU64, Ordering};

/// Words per set: 8 x 8 bytes, one cache line.
pub const WAYS: usize = 8;
const TAT_BITS: u32 = 44;
const TAT_MASK: u64 = (1 << TAT_BITS) - 1;
/// The clock's unit: 125 µs. 44 bits of it last 69 years of uptime (CLOCK_MONOTONIC
/// counts from boot); rates above 8000/s per address round to 8000/s.
pub const TICKS_PER_SEC: u64 = 8000;

/// One rate in the table's units.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rule {
    /// Ticks per token.
    interval: u64,
    /// How far ahead of now TAT may be and still admit: (burst - 1) intervals.
    tolerance: u64,
}

impl Rule {
    pub fn new(per_second: f64, burst: u32) -> Rule {
        let interval = ((TICKS_PER_SEC as f64 / per_second).round() as u64).max(1);
        Rule { interval, tolerance: interval * u64::from(burst.max(1) - 1) }
    }
}

#[derive(Debug, PartialEq)]
pub enum Verdict {
    Pass,
    /// Refused; a token is there after this many ticks.
    Wait(u64),
}

/// Takes a token from the bucket of `hash` (a keyed hash of address and rule) at `now`
/// (ticks). `words.len()` is a power of two, at least WAYS.
pub fn take(words: &[AtomicU64], hash: u64, now: u64, rule: Rule) -> Verdict {
    let base = (hash as usize) & (words.len() - 1) & !(WAYS - 1);
    let set = &words[base..base + WAYS];
    let tag = hash >> TAT_BITS;
    let now = now & TAT_MASK;
    // A failed compare-and-swap means another request's succeeded: lock-free, so the
    // retries end.
    loop {
        // Our word if the set has one, else the word to take: an idle one, else the
        // live one nearest to full (the smallest TAT).
        let mut ours = None;
        let mut spare: Option<(usize, u64)> = None;
        for (i, word) in set.iter().enumerate() {
            let value = word.load(Ordering::Acquire);
            if value >> TAT_BITS == tag {
                ours = Some((i, value));
                break;
            }
            let better = match spare {
                None => true,
                Some((_, s)) => (value & TAT_MASK) < (s & TAT_MASK),
            };
            if better {
                spare = Some((i, value));
            }
        }
        let (i, current, tat) = match (ours, spare) {
            (Some((i, v)), _) => (i, v, v & TAT_MASK),
            // Another key's word: ours starts as a full bucket.
            (None, Some((i, v))) => (i, v, 0),
            (None, None) => unreachable!("a set has WAYS words"),
        };
        let start = tat.max(now);
        if start - now > rule.tolerance {
            return Verdict::Wait(start - now - rule.tolerance);
        }
        let next = (start + rule.interval).min(TAT_MASK);
        if set[i].compare_exchange(current, tag << TAT_BITS | next, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            return Verdict::Pass;
        }
    }
}

/// CLOCK_MONOTONIC in ticks: the same clock in every process of the machine.
pub fn now() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec, which `ts` is.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * TICKS_PER_SEC + ts.tv_nsec as u64 / (1_000_000_000 / TICKS_PER_SEC)
}

/// The table's hash of a key: keyed (the seed is random per table), so a client cannot
/// choose addresses that crowd one set on purpose. Two rounds of a 64-bit finalizer
/// (murmur3's) over the address's 128 bits: no allocation, a few nanoseconds.
pub fn hash(seed: u64, address: u128, rule: u64) -> u64 {
    let mix = |mut x: u64| {
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^ (x >> 33)
    };
    let a = mix(seed ^ (address as u64));
    let b = mix(a ^ (address >> 64) as u64 ^ rule.rotate_left(32));
    mix(b ^ seed.rotate_left(17))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(words: usize) -> Vec<AtomicU64> {
        (0..words).map(|_| AtomicU64::new(0)).collect()
    }

    const S: u64 = TICKS_PER_SEC;

    #[test]
    fn a_burst_passes_then_one_token_per_interval() {
        let t = table(64);
        let rule = Rule::new(5.0, 3); // a token every 200 ms, 3 at once
        let start = 1_000 * S;
        for _ in 0..3 {
            assert_eq!(take(&t, 42, start, rule), Verdict::Pass);
        }
        // The fourth waits for the first token to come back: 200 ms.
        assert_eq!(take(&t, 42, start, rule), Verdict::Wait(S / 5));
        assert_eq!(take(&t, 42, start + S / 10, rule), Verdict::Wait(S / 10));
        assert_eq!(take(&t, 42, start + S / 5, rule), Verdict::Pass);
        assert_eq!(take(&t, 42, start + S / 5, rule), Verdict::Wait(S / 5));
        // After a quiet spell the whole burst is back, and no more than it.
        let later = start + 10 * S;
        for _ in 0..3 {
            assert_eq!(take(&t, 42, later, rule), Verdict::Pass);
        }
        assert!(matches!(take(&t, 42, later, rule), Verdict::Wait(_)));
    }

    #[test]
    fn a_steady_client_gets_the_rate_and_no_more() {
        let t = table(64);
        let rule = Rule::new(20.0, 1);
        let start = 5 * S;
        // 100 requests per second for 10 seconds: 20 per second pass (plus the first).
        let passed = (0..1000).filter(|i| take(&t, 7, start + i * S / 100, rule) == Verdict::Pass).count();
        assert!((200..=201).contains(&passed), "{passed}");
    }

    #[test]
    fn keys_have_their_own_buckets_and_idle_words_are_reused() {
        let t = table(8); // one set
        let rule = Rule::new(1.0, 1);
        let now = 100 * S;
        let keys: Vec<u64> = (1..=8u64).map(|k| k << TAT_BITS).collect();
        for &k in &keys {
            assert_eq!(take(&t, k, now, rule), Verdict::Pass);
            assert!(matches!(take(&t, k, now, rule), Verdict::Wait(_)));
        }
        // A ninth key takes the word nearest to full; after a second every word is idle
        // and the eight are back to full buckets, whatever the ninth took.
        let ninth = 9 << TAT_BITS;
        assert_eq!(take(&t, ninth, now, rule), Verdict::Pass);
        assert!(matches!(take(&t, ninth, now, rule), Verdict::Wait(_)));
        for &k in &keys {
            assert_eq!(take(&t, k, now + 2 * S, rule), Verdict::Pass);
        }
    }

    #[test]
    fn concurrent_takers_never_exceed_the_burst() {
        // Eight threads hammer one bucket at one instant: exactly `burst` pass, as each
        // pass is one successful compare-and-swap on the same word.
        let t = std::sync::Arc::new(table(64));
        let rule = Rule::new(1.0, 50);
        let now = 77 * S;
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let t = t.clone();
                std::thread::spawn(move || (0..100).filter(|_| take(&t, 0xabc, now, rule) == Verdict::Pass).count())
            })
            .collect();
        let passed: usize = threads.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(passed, 50);
    }

    #[test]
    fn the_hash_depends_on_seed_address_and_rule() {
        let h = hash(1, 0x7f00_0001, 0);
        assert_ne!(h, hash(2, 0x7f00_0001, 0));
        assert_ne!(h, hash(1, 0x7f00_0002, 0));
        assert_ne!(h, hash(1, 0x7f00_0001, 1));
        assert_eq!(h, hash(1, 0x7f00_0001, 0));
    }
}
