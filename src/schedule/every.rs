//! Interval schedules: slots at `UNIX_EPOCH + phase + k * period`.
//!
//! The phase comes from a hash of the secret's name, so secrets with the same
//! interval spread out, and every replica computes the same slots with no
//! stored history.

use std::time::Duration;

use chrono::{DateTime, Utc};
use ring::digest::{SHA256, digest};

const NANOS_PER_SECOND: i128 = 1_000_000_000;

/// An interval schedule. Every secret on one has its own (the phase is its own), so it
/// is kept small: 24 bytes.
#[derive(Clone, Debug)]
pub struct EverySchedule {
    /// At least one second.
    period: Duration,
    /// The offset of slot 0 from the Unix epoch, in whole seconds below the period.
    phase_seconds: u64,
}

impl EverySchedule {
    /// Slots every `period` for `secret`. A period under one second is
    /// raised to one second: slots finer than that mean nothing for a rotation.
    pub(crate) fn new(period: Duration, secret: &str) -> Self {
        let period = period.max(Duration::from_secs(1));
        let hash = digest(&SHA256, secret.as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&hash.as_ref()[..8]);
        // Whole seconds keep slots readable in logs; `as_secs() - 1` is the
        // largest whole second below the period.
        let phase_seconds = u64::from_be_bytes(first) % period.as_secs();
        EverySchedule {
            period,
            phase_seconds,
        }
    }

    /// The period between slots.
    pub fn period(&self) -> Duration {
        nanos_to_duration(self.period_nanos())
    }

    /// The offset of the slots from the Unix epoch, in `[0, period)`.
    pub fn phase(&self) -> Duration {
        nanos_to_duration(self.phase_nanos())
    }

    fn period_nanos(&self) -> i128 {
        self.period.as_nanos() as i128
    }

    fn phase_nanos(&self) -> i128 {
        i128::from(self.phase_seconds) * NANOS_PER_SECOND
    }

    pub(crate) fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let k = self.index_at_or_before(after)? + 1;
        self.slot(k)
    }

    pub(crate) fn latest_at_or_before(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.slot(self.index_at_or_before(at)?)
    }

    /// The `k` of the latest slot at or before `t`.
    fn index_at_or_before(&self, t: DateTime<Utc>) -> Option<i128> {
        let nanos =
            i128::from(t.timestamp()) * NANOS_PER_SECOND + i128::from(t.timestamp_subsec_nanos());
        Some((nanos - self.phase_nanos()).div_euclid(self.period_nanos()))
    }

    fn slot(&self, k: i128) -> Option<DateTime<Utc>> {
        let nanos = self
            .phase_nanos()
            .checked_add(k.checked_mul(self.period_nanos())?)?;
        let seconds = i64::try_from(nanos.div_euclid(NANOS_PER_SECOND)).ok()?;
        DateTime::from_timestamp(seconds, nanos.rem_euclid(NANOS_PER_SECOND) as u32)
    }
}

fn nanos_to_duration(nanos: i128) -> Duration {
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn slots_are_period_apart_and_on_the_phase() {
        let s = EverySchedule::new(Duration::from_secs(3600), "db/password");
        let t = at("2026-05-01T12:34:56Z");
        let next = s.next_after(t).unwrap();
        let after = s.next_after(next).unwrap();
        assert_eq!((after - next).num_seconds(), 3600);
        assert!(next > t && (next - t).num_seconds() <= 3600);
        assert_eq!(next.timestamp() % 3600, s.phase().as_secs() as i64);
    }

    #[test]
    fn phase_is_stable_and_differs_between_secrets() {
        let day = Duration::from_secs(86_400);
        let a = EverySchedule::new(day, "db/password");
        assert_eq!(a.phase(), EverySchedule::new(day, "db/password").phase());
        assert!(a.phase() < day);
        // Among 50 secrets with the same interval, phases are spread out.
        let mut phases: Vec<Duration> = (0..50)
            .map(|i| EverySchedule::new(day, &format!("app/{i}")).phase())
            .collect();
        phases.sort();
        phases.dedup();
        assert_eq!(phases.len(), 50);
    }

    #[test]
    fn a_slot_is_its_own_latest_and_not_its_own_next() {
        let s = EverySchedule::new(Duration::from_secs(30 * 86_400), "api/key");
        let slot = s.next_after(at("2026-01-01T00:00:00Z")).unwrap();
        assert_eq!(s.latest_at_or_before(slot), Some(slot));
        assert_eq!(s.next_after(slot), Some(slot + chrono::TimeDelta::days(30)));
        let before = slot - chrono::TimeDelta::nanoseconds(1);
        assert_eq!(s.next_after(before), Some(slot));
        assert_eq!(
            s.latest_at_or_before(before),
            Some(slot - chrono::TimeDelta::days(30))
        );
    }

    #[test]
    fn works_before_the_epoch_and_with_tiny_periods() {
        let s = EverySchedule::new(Duration::ZERO, "x");
        assert_eq!(s.period(), Duration::from_secs(1));
        let t = at("1960-06-01T00:00:00.5Z");
        assert_eq!(s.next_after(t), Some(at("1960-06-01T00:00:01Z")));
        assert_eq!(s.latest_at_or_before(t), Some(at("1960-06-01T00:00:00Z")));
    }
}
