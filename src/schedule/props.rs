//! Property tests shared by both schedule kinds, and croner cross-checks.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use proptest::prelude::*;

use super::Schedule;
use super::fields::Fields;

const EXPRESSIONS: &[&str] = &[
    "30 2 * * *",
    "30 1 * * *",
    "0 3 * * *",
    "*/20 * * * *",
    "15 1-3 * * *",
    "0 0 13 * 5",
    "0 12 * * 1-5",
    "0 0 1 * *",
    "0 0 29 2 *",
];
const ZONES: &[&str] = &[
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
];

fn schedule() -> impl Strategy<Value = Schedule> {
    let cron = (0..EXPRESSIONS.len(), 0..ZONES.len())
        .prop_map(|(e, z)| Schedule::cron(EXPRESSIONS[e], Some(ZONES[z])).unwrap());
    let every = (1u64..90 * 86_400, "[a-z/]{1,12}")
        .prop_map(|(secs, name)| Schedule::every(Duration::from_secs(secs), &name));
    prop_oneof![cron, every]
}

/// Instants from 2025 to 2029, with sub-second parts, biased towards the
/// 2026 clock changes in Europe and the US.
fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    let anywhere = (1_735_689_600i64..1_861_920_000, 0u32..1_000_000_000);
    let near_dst = (
        prop::sample::select(vec![
            1_774_746_000i64, // 2026-03-29 01:00Z, Berlin springs forward
            1_792_890_000,    // 2026-10-25 01:00Z, Berlin falls back
            1_772_953_200,    // 2026-03-08 07:00Z, New York springs forward
            1_793_512_800,    // 2026-11-01 06:00Z, New York falls back
        ]),
        -3 * 3600i64..3 * 3600,
        0u32..2,
    )
        .prop_map(|(base, offset, nanos)| (base + offset, nanos * 500_000_000));
    prop_oneof![anywhere, near_dst]
        .prop_map(|(secs, nanos)| DateTime::from_timestamp(secs, nanos).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn next_is_strictly_after(s in schedule(), t in instant()) {
        let next = s.next_after(t).unwrap();
        prop_assert!(next > t);
        // From a slot itself, the next slot is a later one.
        prop_assert!(s.next_after(next).unwrap() > next);
    }

    #[test]
    fn next_slot_is_its_own_latest(s in schedule(), t in instant()) {
        let next = s.next_after(t).unwrap();
        prop_assert_eq!(s.latest_at_or_before(next), Some(next));
    }

    #[test]
    fn no_slot_between_latest_and_next(s in schedule(), t in instant()) {
        let latest = s.latest_at_or_before(t).unwrap();
        let next = s.next_after(t).unwrap();
        prop_assert!(latest <= t);
        // The first slot after `latest` is the first slot after `t`.
        prop_assert_eq!(s.next_after(latest), Some(next));
    }

    #[test]
    fn gaps_are_never_below_min_gap(s in schedule(), t in instant()) {
        // min_gap is scanned from now, so only schedules without DST are
        // comparable at any instant.
        prop_assume!(match &s {
            Schedule::Cron(c) => c.time_zone() == "UTC",
            Schedule::Every(_) => true,
        });
        let next = s.next_after(t).unwrap();
        let after = s.next_after(next).unwrap();
        prop_assert!((after - next).to_std().unwrap() >= s.min_gap());
    }

    #[test]
    fn day_matching_agrees_with_croner(
        dom in prop::sample::select(vec!["*", "13", "1,15", "*/10", "29-31", "31"]),
        month in prop::sample::select(vec!["*", "2", "FEB-APR", "*/3"]),
        dow in prop::sample::select(vec!["*", "5", "0", "7", "MON-FRI", "SAT,SUN"]),
        day in 0i64..4 * 366,
    ) {
        let expr = format!("0 12 {dom} {month} {dow}");
        let Ok(fields) = Fields::parse(&expr) else {
            return Ok(());
        };
        let cron: croner::Cron = expr.parse().unwrap();
        let date = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap() + chrono::TimeDelta::days(day);
        let noon = Utc.from_utc_datetime(&date.and_hms_opt(12, 0, 0).unwrap());
        prop_assert_eq!(fields.date_matches(date), cron.is_time_matching(&noon).unwrap(), "{} on {}", expr, date);
    }
}
