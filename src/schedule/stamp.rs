//! [`Stamp`]: a time in whole seconds in 32 bits, for what is kept per secret. Holding
//! 100,000 secrets, the scheduler and the metrics keep a due time or two for each, and
//! the twelve bytes of a `DateTime` (sixteen as an `Option`) would be most of their size.

use std::num::NonZeroU32;

use chrono::{DateTime, Utc};

/// 2020-01-01T00:00:00Z: stamps count from here and reach into 2156.
const EPOCH: i64 = 1_577_836_800;

/// A time in whole seconds from 2020 to 2156 (earlier and later times saturate). Never
/// zero, so an `Option<Stamp>` is four bytes too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp(NonZeroU32);

impl Stamp {
    fn from_seconds(unix: i64) -> Self {
        let offset = (unix - EPOCH).clamp(0, i64::from(u32::MAX) - 1) as u32;
        Stamp(NonZeroU32::MIN.saturating_add(offset))
    }

    /// The first whole second at or after `time`: a due time kept as a stamp never
    /// comes early.
    pub fn ceil(time: DateTime<Utc>) -> Self {
        let up = i64::from(time.timestamp_subsec_nanos() > 0);
        Self::from_seconds(time.timestamp() + up)
    }

    /// The whole second `time` falls in.
    pub fn floor(time: DateTime<Utc>) -> Self {
        Self::from_seconds(time.timestamp())
    }

    /// Seconds since the Unix epoch.
    pub fn unix_seconds(self) -> i64 {
        EPOCH + i64::from(self.0.get() - 1)
    }

    /// The stamp as a time.
    pub fn time(self) -> DateTime<Utc> {
        DateTime::from_timestamp(self.unix_seconds(), 0).expect("2020 to 2156 is in range")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn stamps_round_to_whole_seconds_and_saturate() {
        let t = at("2026-11-25T02:30:00Z");
        assert_eq!(Stamp::ceil(t).time(), t);
        assert_eq!(Stamp::floor(t).time(), t);
        let later = at("2026-11-25T02:30:00.001Z");
        assert_eq!(Stamp::ceil(later).time(), at("2026-11-25T02:30:01Z"));
        assert_eq!(Stamp::floor(later).time(), t);
        assert!(Stamp::ceil(later) > Stamp::floor(later));
        assert_eq!(
            Stamp::floor(at("1999-01-01T00:00:00Z")).time(),
            at("2020-01-01T00:00:00Z")
        );
        let end = Stamp::ceil(DateTime::<Utc>::MAX_UTC);
        assert_eq!(end.time().format("%Y").to_string(), "2156");
        assert_eq!(std::mem::size_of::<Option<Stamp>>(), 4);
    }
}
