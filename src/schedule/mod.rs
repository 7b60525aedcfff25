//! When rotations are due: cron and interval schedules, jitter windows, durations.
//!
//! Decides *when*; never calls a backend.

use std::time::Duration;

use chrono::{DateTime, Utc};

mod cron;
mod duration;
mod every;
mod fields;
mod jitter;
#[cfg(test)]
mod props;
pub mod queue;
mod stamp;

pub use cron::CronSchedule;
pub use every::EverySchedule;
pub use queue::DueQueue;
pub use stamp::Stamp;

/// A rotation schedule.
#[derive(Clone, Debug)]
pub enum Schedule {
    /// A five-field cron expression in a time zone.
    Cron(CronSchedule),
    /// A fixed interval with a per-secret phase.
    Every(EverySchedule),
}

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
    ///
    /// Five fields (minute hour day-of-month month day-of-week) or one of
    /// `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`. When both day
    /// fields are restricted, a day matches if either does. A time that a
    /// spring-forward gap skips runs at the first instant after the gap; a
    /// time that a fall-back repeats runs once, on its first occurrence.
    pub fn cron(expr: &str, timezone: Option<&str>) -> Result<Self, ScheduleError> {
        CronSchedule::parse_shared(expr, timezone).map(Schedule::Cron)
    }

    /// An interval schedule for `secret`: slots every `period` (at least one
    /// second), offset from the Unix epoch by a phase hashed from the name.
    pub fn every(period: Duration, secret: &str) -> Self {
        Schedule::Every(EverySchedule::new(period, secret))
    }

    /// The first slot strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Cron(c) => c.next_after(after),
            Schedule::Every(e) => e.next_after(after),
        }
    }

    /// The latest slot at or before `at`.
    pub fn latest_at_or_before(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Cron(c) => c.latest_at_or_before(at),
            Schedule::Every(e) => e.latest_at_or_before(at),
        }
    }

    /// The shortest gap between two consecutive slots.
    ///
    /// For cron, measured once at parse time over the next 400 days or
    /// 2,000 slots, whichever comes first, in real (UTC) time, so DST days
    /// count.
    pub fn min_gap(&self) -> Duration {
        match self {
            Schedule::Cron(c) => c.min_gap(),
            Schedule::Every(e) => e.period(),
        }
    }
}

/// A stable offset in `[0, window)` for this secret and slot.
///
/// From SHA-256 over the secret and the slot, so every replica computes the
/// same offset. Whole seconds when the window is at least a second. A zero
/// window gives zero.
pub fn jitter(secret: &str, slot: DateTime<Utc>, window: Duration) -> Duration {
    jitter::jitter(secret, slot, window)
}

/// Parses `30d`, `12h`, `90m`, `45s`, `2w`.
///
/// Units combine largest first, each once: `1d12h`. Errors are sentences
/// saying what to write instead.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    duration::parse_duration(text)
}

/// Formats a duration the way [`parse_duration`] reads it.
///
/// Uses the largest exact units (`36h` prints as `1d12h`) and drops any
/// sub-second part.
pub fn format_duration(duration: Duration) -> String {
    duration::format_duration(duration)
}
