//! When rotations are due: cron and interval schedules, jitter windows, durations.
//!
//! Decides *when*; never calls a backend.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// A rotation schedule.
#[derive(Clone, Debug)]
pub enum Schedule {
    /// A five-field cron expression in a time zone.
    Cron(CronSchedule),
    /// A fixed interval with a per-secret phase.
    Every(EverySchedule),
}

/// A cron schedule.
#[derive(Clone, Debug)]
pub struct CronSchedule {}

/// An interval schedule.
#[derive(Clone, Debug)]
pub struct EverySchedule {}

/// Why a schedule is invalid.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// The cron expression does not parse or can never fire.
    #[error("{0}")]
    Cron(String),
    /// The time zone is not an IANA name.
    #[error("{0}")]
    TimeZone(String),
}

impl Schedule {
    /// Parses a cron expression in an IANA time zone (UTC when `None`).
    pub fn cron(expr: &str, timezone: Option<&str>) -> Result<Self, ScheduleError> {
        let _ = (expr, timezone);
        todo!()
    }

    /// An interval schedule for `secret`.
    pub fn every(period: Duration, secret: &str) -> Self {
        let _ = (period, secret);
        todo!()
    }

    /// The first slot strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let _ = after;
        todo!()
    }

    /// The latest slot at or before `at`.
    pub fn latest_at_or_before(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let _ = at;
        todo!()
    }

    /// The shortest gap between two consecutive slots.
    pub fn min_gap(&self) -> Duration {
        todo!()
    }
}

/// A stable offset in `[0, window)` for this secret and slot.
pub fn jitter(secret: &str, slot: DateTime<Utc>, window: Duration) -> Duration {
    let _ = (secret, slot, window);
    todo!()
}

/// Parses `30d`, `12h`, `90m`, `45s`, `2w`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let _ = text;
    todo!()
}

/// Formats a duration the way [`parse_duration`] reads it.
pub fn format_duration(duration: Duration) -> String {
    let _ = duration;
    todo!()
}
