//! Exponential backoff with jitter, shared by the scheduler's rotation retries and the
//! webhook deliveries.

use std::time::Duration;

use ring::rand::{SecureRandom, SystemRandom};

/// The delay before attempt `attempt + 1`: `first * 2^(attempt-1)`, capped at `cap`, with
/// ±20% jitter so that what failed together (replicas, endpoints) is retried apart.
pub(crate) fn backoff(
    attempt: u32,
    first: Duration,
    cap: Duration,
    rng: &SystemRandom,
) -> Duration {
    let exp = first.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let mut byte = [0u8; 1];
    let unit = match rng.fill(&mut byte) {
        Ok(()) => f64::from(byte[0]) / 255.0,
        Err(_) => 0.5,
    };
    exp.min(cap).mul_f64(0.8 + 0.4 * unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_stops_at_the_cap() {
        let rng = SystemRandom::new();
        let first = Duration::from_millis(100);
        let cap = Duration::from_secs(10);
        for (attempt, nominal) in [(1, 100), (2, 200), (3, 400), (6, 3200)] {
            let d = backoff(attempt, first, cap, &rng);
            let n = Duration::from_millis(nominal);
            assert!(
                d >= n.mul_f64(0.8) && d <= n.mul_f64(1.2),
                "{attempt}: {d:?}"
            );
        }
        for attempt in [10, 40, u32::MAX] {
            let d = backoff(attempt, first, cap, &rng);
            assert!(
                d >= cap.mul_f64(0.8) && d <= cap.mul_f64(1.2),
                "{attempt}: {d:?}"
            );
        }
    }
}
