//! What a receiver's answer means, when to try again, and the per-endpoint circuit
//! breaker: the delivery policy, free of I/O.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// What the receiver's answer means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// 2xx.
    Delivered(u16),
    /// Worth another attempt.
    Retry {
        /// What happened, for the audit log.
        error: String,
        /// The server's `Retry-After`, if any.
        retry_after: Option<Duration>,
        /// Whether it counts toward opening the breaker (429 does not: the server is up).
        breaker: bool,
    },
    /// 410 Gone.
    Gone,
    /// Any other status: not retried.
    Final(u16),
}

/// Classifies a status code.
pub(crate) fn classify(status: u16, retry_after: Option<Duration>) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered(status),
        410 => Verdict::Gone,
        429 => Verdict::Retry {
            error: "HTTP 429".into(),
            retry_after,
            breaker: false,
        },
        500..=599 => Verdict::Retry {
            error: format!("HTTP {status}"),
            retry_after,
            breaker: true,
        },
        _ => Verdict::Final(status),
    }
}

/// `Retry-After` as seconds or an HTTP date; `None` when absent or unreadable.
pub(crate) fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

/// A per-endpoint circuit breaker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Breaker {
    /// Sending; counts failures in a row.
    Closed {
        /// Failed attempts in a row.
        failures: u32,
    },
    /// Not sending until `until`.
    Open {
        /// When one probe may go.
        until: DateTime<Utc>,
    },
    /// One probe is in flight; its outcome decides.
    HalfOpen,
}

/// What a breaker transition means for the audit log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    None,
    Opened(u32),
    Closed,
}

impl Breaker {
    /// May a request go now, with `in_flight` under way and at most `limit` allowed at once
    /// (the target's `max_in_flight`)? Moves an expired open breaker to half-open (one
    /// probe).
    pub(crate) fn allow(&mut self, now: DateTime<Utc>, in_flight: usize, limit: usize) -> bool {
        match self {
            Breaker::Closed { .. } => in_flight < limit,
            Breaker::Open { until } if now >= *until && in_flight == 0 => {
                *self = Breaker::HalfOpen;
                true
            }
            Breaker::Open { .. } | Breaker::HalfOpen => false,
        }
    }

    /// The endpoint answered (2xx, or any status that says it is up).
    pub(crate) fn success(&mut self) -> Change {
        let was_closed = matches!(self, Breaker::Closed { .. });
        *self = Breaker::Closed { failures: 0 };
        if was_closed {
            Change::None
        } else {
            Change::Closed
        }
    }

    /// A timeout, connection error or 5xx.
    pub(crate) fn failure(
        &mut self,
        now: DateTime<Utc>,
        threshold: u32,
        cooldown: Duration,
    ) -> Change {
        let until = now + chrono::Duration::from_std(cooldown).unwrap_or(chrono::Duration::MAX);
        match self {
            Breaker::Closed { failures } => {
                *failures += 1;
                if *failures >= threshold {
                    let failures = *failures;
                    *self = Breaker::Open { until };
                    Change::Opened(failures)
                } else {
                    Change::None
                }
            }
            Breaker::HalfOpen | Breaker::Open { .. } => {
                *self = Breaker::Open { until };
                Change::Opened(1)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_map_to_the_documented_outcomes() {
        assert_eq!(classify(200, None), Verdict::Delivered(200));
        assert_eq!(classify(204, None), Verdict::Delivered(204));
        assert_eq!(classify(410, None), Verdict::Gone);
        for status in [301, 400, 401, 404, 409, 422] {
            assert_eq!(classify(status, None), Verdict::Final(status), "{status}");
        }
        let ra = Some(Duration::from_secs(3));
        assert!(
            matches!(classify(429, ra), Verdict::Retry { retry_after, breaker: false, .. } if retry_after == ra)
        );
        for status in [500, 502, 503, 504] {
            assert!(
                matches!(classify(status, None), Verdict::Retry { breaker: true, .. }),
                "{status}"
            );
        }
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Tue, 01 Jan 2030 00:01:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Mon, 31 Dec 2029 23:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn the_breaker_opens_after_the_threshold_and_lets_one_probe_through() {
        let t0 = Utc::now();
        let cooldown = Duration::from_secs(10);
        let mut b = Breaker::Closed { failures: 0 };
        assert!(b.allow(t0, 0, 4));
        assert!(b.allow(t0, 3, 4));
        assert!(!b.allow(t0, 4, 4), "the target's limit");
        assert!(!b.allow(t0, 1, 1), "one at a time");
        assert_eq!(b.failure(t0, 3, cooldown), Change::None);
        assert_eq!(b.failure(t0, 3, cooldown), Change::None);
        assert_eq!(b.failure(t0, 3, cooldown), Change::Opened(3));
        assert!(
            !b.allow(t0 + chrono::Duration::seconds(9), 0, 4),
            "open: nothing goes"
        );
        let later = t0 + chrono::Duration::seconds(10);
        assert!(b.allow(later, 0, 4), "one probe after the cooldown");
        assert_eq!(b, Breaker::HalfOpen);
        assert!(!b.allow(later, 1, 4), "only one probe");
        // A failed probe opens it again; a successful one closes it.
        assert_eq!(b.failure(later, 3, cooldown), Change::Opened(1));
        assert_eq!(
            b,
            Breaker::Open {
                until: later + chrono::Duration::seconds(10)
            }
        );
        assert!(b.allow(later + chrono::Duration::seconds(10), 0, 4));
        assert_eq!(b.success(), Change::Closed);
        assert_eq!(b, Breaker::Closed { failures: 0 });
        assert_eq!(b.success(), Change::None);
    }
}
