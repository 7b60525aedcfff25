//! Per-client rate limiting for the mutating endpoint: a token bucket per caller, so one
//! misbehaving script cannot rotate a secret in a loop.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Token buckets keyed by client.
#[derive(Debug)]
pub struct RateLimiter {
    capacity: f64,
    refill_every: Duration,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// `capacity` requests at once, one more every `refill_every`.
    pub fn new(capacity: u32, refill_every: Duration) -> Self {
        Self {
            capacity: f64::from(capacity),
            refill_every,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request for `client` at `now`; `Err(seconds)` to wait when it is empty.
    pub fn check(&self, client: &str, now: Instant) -> Result<(), u64> {
        let mut buckets = self.buckets.lock().expect("rate limiter lock");
        let (tokens, last) = buckets
            .entry(client.to_owned())
            .or_insert((self.capacity, now));
        let refilled =
            now.saturating_duration_since(*last).as_secs_f64() / self.refill_every.as_secs_f64();
        *tokens = (*tokens + refilled).min(self.capacity);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - *tokens) * self.refill_every.as_secs_f64();
            Err(wait.ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_one_per_period_per_client() {
        let limiter = RateLimiter::new(2, Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(limiter.check("a", t0).is_ok());
        assert!(limiter.check("a", t0).is_ok());
        assert_eq!(limiter.check("a", t0), Err(10));
        assert!(limiter.check("b", t0).is_ok(), "clients are apart");
        assert_eq!(limiter.check("a", t0 + Duration::from_secs(4)), Err(6));
        assert!(limiter.check("a", t0 + Duration::from_secs(10)).is_ok());
    }
}
