//! Jitter: a stable per-secret, per-slot delay inside a window.
//!
//! Derived from a hash, not a random number, so every replica agrees on
//! when a secret is due without talking to the others.

use std::time::Duration;

use chrono::{DateTime, Utc};
use ring::digest::{Context, SHA256};

/// A stable offset in `[0, window)` for this secret and slot.
pub(crate) fn jitter(secret: &str, slot: DateTime<Utc>, window: Duration) -> Duration {
    if window.is_zero() {
        return Duration::ZERO;
    }
    let mut ctx = Context::new(&SHA256);
    // Length-prefix the name so ("ab", t) and ("a", t') never hash the same input.
    ctx.update(&(secret.len() as u64).to_be_bytes());
    ctx.update(secret.as_bytes());
    ctx.update(&slot.timestamp().to_be_bytes());
    ctx.update(&slot.timestamp_subsec_nanos().to_be_bytes());
    let hash = ctx.finish();
    let mut first = [0u8; 16];
    first.copy_from_slice(&hash.as_ref()[..16]);
    let draw = u128::from_be_bytes(first);
    if window.as_secs() == 0 {
        // Below a second, spread over nanoseconds.
        return Duration::from_nanos((draw % window.as_nanos()) as u64);
    }
    // Whole seconds read better in logs; every whole second below the window is reachable.
    let seconds = window.as_secs() + u64::from(window.subsec_nanos() > 0);
    Duration::from_secs((draw % u128::from(seconds)) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn same_inputs_same_offset() {
        let w = Duration::from_secs(3600);
        let t = at("2026-05-01T00:00:00Z");
        assert_eq!(jitter("db/pw", t, w), jitter("db/pw", t, w));
    }

    #[test]
    fn zero_window_is_zero() {
        assert_eq!(
            jitter("db/pw", at("2026-05-01T00:00:00Z"), Duration::ZERO),
            Duration::ZERO
        );
    }

    #[test]
    fn offsets_stay_inside_the_window_and_vary() {
        let t = at("2026-05-01T00:00:00Z");
        for window in [
            Duration::from_nanos(7),
            Duration::from_millis(1500),
            Duration::from_secs(1),
            Duration::from_secs(600),
        ] {
            for i in 0..200 {
                assert!(jitter(&format!("s{i}"), t, window) < window, "{window:?}");
            }
        }
        let w = Duration::from_secs(3600);
        let mut offsets: Vec<Duration> = (0..100).map(|i| jitter(&format!("s{i}"), t, w)).collect();
        offsets.sort();
        offsets.dedup();
        assert!(offsets.len() > 90, "offsets cluster: {}", offsets.len());
        // The slot matters too, so a secret is not always late by the same amount.
        let later = at("2026-06-01T00:00:00Z");
        let per_slot: Vec<Duration> = (0..10)
            .map(|i| jitter("s", later + chrono::TimeDelta::days(i), w))
            .collect();
        assert!(per_slot.iter().any(|d| *d != per_slot[0]));
    }
}
