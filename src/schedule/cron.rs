//! Cron schedules: parsing, time zones, DST-correct slot search, `min_gap`.
//!
//! Our own field reader (`fields.rs`) validates and explains; croner finds
//! the slots. Slots are read on the wall clock of the schedule's zone:
//! a fixed-time job whose time falls in a spring-forward gap runs once at the
//! first instant after the gap, and in a repeated fall-back hour it runs once,
//! on the first occurrence. Jobs with a wildcard, list, range or step in the
//! minute or hour run at every real instant whose wall clock matches.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use chrono::{DateTime, NaiveTime, Offset, SubsecRound, TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::{Cron, JobType};

use super::ScheduleError;
use super::fields::{Fields, expand_alias};

/// Days of upcoming slots scanned for `min_gap`.
const SCAN_DAYS: i64 = 400;
/// Slots after which the `min_gap` scan may stop early.
const SCAN_FIRES: usize = 2_000;
/// How far the scan goes to find two slots at all: 29 February can be eight
/// years from the next one.
const SCAN_DAYS_LIMIT: i64 = 366 * 12;

/// A cron schedule; cloning shares the parsed form.
#[derive(Clone, Debug)]
pub struct CronSchedule {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    expression: String,
    tz: Tz,
    cron: Cron,
    min_gap: Duration,
}

/// Most policies put many secrets on a few schedules; this keeps one parsed
/// copy of each for a day, after which `min_gap` is scanned afresh.
type Cache = HashMap<(String, Option<String>), (DateTime<Utc>, CronSchedule)>;
static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
/// Distinct schedules kept before the cache starts over.
const CACHE_LIMIT: usize = 4_096;

impl CronSchedule {
    /// Parses `expr` as of now, sharing the result with earlier parses of
    /// the same expression and zone.
    pub(crate) fn parse_shared(expr: &str, timezone: Option<&str>) -> Result<Self, ScheduleError> {
        let now = Utc::now();
        let key = (expr.trim().to_string(), timezone.map(str::to_string));
        let cache = CACHE.get_or_init(Default::default);
        let fresh = |at: DateTime<Utc>| at <= now && now - at < chrono::TimeDelta::days(1);
        if let Some((at, schedule)) = lock(cache).get(&key)
            && fresh(*at)
        {
            return Ok(schedule.clone());
        }
        let schedule = Self::parse(expr, timezone, now)?;
        let mut cache = lock(cache);
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(key, (now, schedule.clone()));
        Ok(schedule)
    }

    /// Parses `expr` in `timezone` (UTC when `None`), scanning `min_gap` from `now`.
    pub(crate) fn parse(
        expr: &str,
        timezone: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Self, ScheduleError> {
        let tz = match timezone {
            None => Tz::UTC,
            Some(name) => name.parse::<Tz>().map_err(|_| {
                ScheduleError::TimeZone(format!(
                    "unknown time zone \"{name}\": use an IANA name such as Europe/Berlin"
                ))
            })?,
        };
        let invalid = |why: String| {
            ScheduleError::Cron(format!(
                "invalid cron expression \"{}\": {why}",
                expr.trim()
            ))
        };
        let fields_text = expand_alias(expr).map_err(invalid)?;
        let fields = Fields::parse(fields_text).map_err(invalid)?;
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(fields_text)
            .map_err(|e| invalid(e.to_string()))?;
        // croner moves only "fixed-time" jobs out of a DST gap; ask it which this is.
        let fixed_time = cron.determine_job_type() == JobType::FixedTime;
        let min_gap = scan_min_gap(&fields, fixed_time, tz, now);
        Ok(CronSchedule {
            inner: Arc::new(Inner {
                expression: expr.trim().to_string(),
                tz,
                cron,
                min_gap,
            }),
        })
    }

    /// The expression as written.
    pub fn expression(&self) -> &str {
        &self.inner.expression
    }

    /// The IANA name of the schedule's time zone.
    pub fn time_zone(&self) -> &str {
        self.inner.tz.name()
    }

    pub(crate) fn min_gap(&self) -> Duration {
        self.inner.min_gap
    }

    pub(crate) fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Slots are whole seconds, so "after the whole second" is "after".
        let start = after.trunc_subsecs(0).with_timezone(&self.inner.tz);
        self.inner
            .cron
            .find_next_occurrence(&start, false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    pub(crate) fn latest_at_or_before(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let start = at.trunc_subsecs(0).with_timezone(&self.inner.tz);
        self.inner
            .cron
            .find_previous_occurrence(&start, true)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

/// A poisoned cache only means another thread panicked mid-insert; the map
/// itself is still sound.
fn lock(cache: &Mutex<Cache>) -> MutexGuard<'_, Cache> {
    cache
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The shortest gap between consecutive slots from `now` over the next
/// [`SCAN_DAYS`] days or [`SCAN_FIRES`] slots, whichever comes first.
///
/// A croner search per slot costs microseconds (and a walk through any DST
/// gap, second by second), too slow for a policy of many secrets. So the scan
/// works on the wall clock: on a day with one UTC offset throughout, the
/// slots are the day's times minus that offset and only the first and last
/// matter; on a day with a clock change, each time is placed with the same
/// rules croner applies (see the module docs), checked against croner in the
/// tests.
fn scan_min_gap(fields: &Fields, fixed_time: bool, tz: Tz, now: DateTime<Utc>) -> Duration {
    let times = fields.times_of_day();
    let intra_day = times.windows(2).map(|w| i64::from(w[1] - w[0]) * 60).min();
    let (first_time, last_time) = (times[0], times[times.len() - 1]);
    let offset_at = |unix: i64| -> i64 {
        let utc = DateTime::from_timestamp(unix, 0)
            .unwrap_or_default()
            .naive_utc();
        i64::from(tz.offset_from_utc_datetime(&utc).fix().local_minus_utc())
    };

    let mut gaps = Gaps::default();
    let mut steady = Steady::default();
    let start = now.with_timezone(&tz).date_naive();
    let mut date = start;
    loop {
        let day = (date - start).num_days();
        if day > SCAN_DAYS_LIMIT
            || ((day >= SCAN_DAYS || gaps.fires >= SCAN_FIRES) && gaps.fires >= 2)
        {
            break;
        }
        if fields.date_matches(date) {
            let midnight = date.and_time(NaiveTime::MIN).and_utc().timestamp();
            // Every instant of this local day lies in this window, whatever the offset.
            let (low, high) = (midnight - DAY_WINDOW_BEFORE, midnight + DAY_WINDOW_AFTER);
            let (before, after) = steady.offsets(low, high, offset_at);
            if before == after {
                gaps.day(
                    midnight - before + i64::from(first_time) * 60,
                    midnight - before + i64::from(last_time) * 60,
                    times.len(),
                    intra_day,
                );
            } else {
                // Real zones change their clock at most once in two days.
                let change = first_instant_with(low, high, after, offset_at);
                let mut slots: Vec<i64> = Vec::with_capacity(times.len() + 1);
                for &time in &times {
                    let wall = midnight + i64::from(time) * 60;
                    let (early, late) = (wall - before, wall - after);
                    let (early_ok, late_ok) = (early < change, late >= change);
                    match (early_ok, late_ok) {
                        (true, true) if fixed_time => slots.push(early.min(late)),
                        (true, true) => slots.extend([early, late]),
                        (true, false) => slots.push(early),
                        (false, true) => slots.push(late),
                        // Skipped by a gap: a fixed-time job runs when the gap
                        // ends, if that day still matches.
                        (false, false) if fixed_time => {
                            let ends_on = DateTime::from_timestamp(change + after, 0)
                                .unwrap_or_default()
                                .date_naive();
                            if fields.date_matches(ends_on) {
                                slots.push(change);
                            }
                        }
                        (false, false) => {}
                    }
                }
                slots.sort_unstable();
                slots.dedup();
                for slot in slots {
                    gaps.day(slot, slot, 1, None);
                }
            }
        }
        // Months the pattern never runs in are skipped whole.
        let Some(next) = fields.next_candidate_date(date) else {
            break;
        };
        date = next;
    }
    // Only a schedule with a single slot in twelve years gets here; a year
    // is a safe floor for any interval check.
    Duration::from_secs(gaps.best.map_or(366 * 86_400, |b| b.max(0) as u64))
}

/// How far before local midnight, in UTC, a local day can start (UTC+14).
const DAY_WINDOW_BEFORE: i64 = 15 * 3600;
/// How far after local midnight, in UTC, a local day can end (UTC-12).
const DAY_WINDOW_AFTER: i64 = 37 * 3600;

/// A stretch of UTC seconds known to have one offset, so that consecutive
/// days cost one offset lookup each instead of two.
#[derive(Default)]
struct Steady {
    /// `(from, to, offset)`, inclusive.
    known: Option<(i64, i64, i64)>,
}

impl Steady {
    /// The offsets at `low` and at `high`; equal means one offset throughout,
    /// since no real zone changes its clock twice within two days.
    fn offsets(&mut self, low: i64, high: i64, offset_at: impl Fn(i64) -> i64) -> (i64, i64) {
        let at_high = offset_at(high);
        if let Some((from, to, offset)) = self.known
            && from <= low
            && to <= high
            && high - to <= 2 * 86_400
            && at_high == offset
        {
            self.known = Some((from, high, offset));
            return (offset, offset);
        }
        let at_low = offset_at(low);
        self.known = (at_low == at_high).then_some((low, high, at_low));
        (at_low, at_high)
    }
}

/// The first second in `(low, high]` whose offset is `target`.
fn first_instant_with(
    mut low: i64,
    mut high: i64,
    target: i64,
    offset_at: impl Fn(i64) -> i64,
) -> i64 {
    while high - low > 1 {
        let middle = low + (high - low) / 2;
        if offset_at(middle) == target {
            high = middle;
        } else {
            low = middle;
        }
    }
    high
}

/// Running minimum of the gaps between consecutive slots, fed in time order.
#[derive(Default)]
struct Gaps {
    previous: Option<i64>,
    best: Option<i64>,
    fires: usize,
}

impl Gaps {
    /// Adds `count` slots from `first` to `last`, at least `inner` apart.
    fn day(&mut self, first: i64, last: i64, count: usize, inner: Option<i64>) {
        if let Some(previous) = self.previous {
            self.note(first - previous);
        }
        if let Some(inner) = inner {
            self.note(inner);
        }
        self.previous = Some(last);
        self.fires += count;
    }

    fn note(&mut self, gap: i64) {
        self.best = Some(self.best.map_or(gap, |b| b.min(gap)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn cron(expr: &str, tz: &str) -> CronSchedule {
        CronSchedule::parse(expr, Some(tz), at("2026-01-01T00:00:00Z")).unwrap()
    }

    /// Every slot in `[from, to)`.
    fn slots(s: &CronSchedule, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut t = from - chrono::TimeDelta::seconds(1);
        while let Some(next) = s.next_after(t) {
            if next >= to {
                break;
            }
            out.push(next);
            t = next;
        }
        out
    }

    /// Slots during the local calendar day `date` in the schedule's zone.
    fn slots_on_local_day(s: &CronSchedule, date: &str) -> Vec<String> {
        let tz = s.inner.tz;
        let day = NaiveDate::parse_from_str(date, "%Y-%m-%d").unwrap();
        let start = tz
            .from_local_datetime(&day.and_time(NaiveTime::MIN))
            .earliest()
            .unwrap();
        let end = tz
            .from_local_datetime(&day.succ_opt().unwrap().and_time(NaiveTime::MIN))
            .earliest()
            .unwrap();
        slots(s, start.with_timezone(&Utc), end.with_timezone(&Utc))
            .into_iter()
            .map(|t| t.with_timezone(&tz).to_rfc3339())
            .collect()
    }

    #[test]
    fn berlin_spring_forward_runs_once_at_three() {
        // 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist.
        let s = cron("30 2 * * *", "Europe/Berlin");
        assert_eq!(
            slots_on_local_day(&s, "2026-03-29"),
            ["2026-03-29T03:00:00+02:00"]
        );
        // The days either side are untouched.
        assert_eq!(
            slots_on_local_day(&s, "2026-03-28"),
            ["2026-03-28T02:30:00+01:00"]
        );
        assert_eq!(
            slots_on_local_day(&s, "2026-03-30"),
            ["2026-03-30T02:30:00+02:00"]
        );
    }

    #[test]
    fn new_york_spring_forward_runs_once_at_three() {
        // 2026-03-08: 02:00 EST jumps to 03:00 EDT.
        let s = cron("30 2 * * *", "America/New_York");
        assert_eq!(
            slots_on_local_day(&s, "2026-03-08"),
            ["2026-03-08T03:00:00-04:00"]
        );
    }

    #[test]
    fn berlin_fall_back_runs_once_on_the_first_occurrence() {
        // 2026-10-25: 03:00 CEST goes back to 02:00 CET; 02:30 happens twice.
        let s = cron("30 2 * * *", "Europe/Berlin");
        assert_eq!(
            slots_on_local_day(&s, "2026-10-25"),
            ["2026-10-25T02:30:00+02:00"]
        );
    }

    #[test]
    fn new_york_fall_back_runs_once_on_the_first_occurrence() {
        // 2026-11-01: 02:00 EDT goes back to 01:00 EST; 01:30 happens twice.
        let s = cron("30 1 * * *", "America/New_York");
        assert_eq!(
            slots_on_local_day(&s, "2026-11-01"),
            ["2026-11-01T01:30:00-04:00"]
        );
        // 02:30 happens once that day and is unaffected.
        let s = cron("30 2 * * *", "America/New_York");
        assert_eq!(
            slots_on_local_day(&s, "2026-11-01"),
            ["2026-11-01T02:30:00-05:00"]
        );
    }

    #[test]
    fn latest_at_or_before_agrees_on_dst_days() {
        for (expr, tz, from, to) in [
            (
                "30 2 * * *",
                "Europe/Berlin",
                "2026-03-27T00:00:00Z",
                "2026-03-31T00:00:00Z",
            ),
            (
                "30 2 * * *",
                "Europe/Berlin",
                "2026-10-23T00:00:00Z",
                "2026-10-27T00:00:00Z",
            ),
            (
                "30 1 * * *",
                "America/New_York",
                "2026-10-30T00:00:00Z",
                "2026-11-03T00:00:00Z",
            ),
            (
                "30 2 * * *",
                "America/New_York",
                "2026-03-06T00:00:00Z",
                "2026-03-10T00:00:00Z",
            ),
            (
                "*/20 * * * *",
                "America/New_York",
                "2026-11-01T04:00:00Z",
                "2026-11-01T08:00:00Z",
            ),
        ] {
            let s = cron(expr, tz);
            for slot in slots(&s, at(from), at(to)) {
                assert_eq!(
                    s.latest_at_or_before(slot),
                    Some(slot),
                    "{expr} {tz} {slot}"
                );
                let just_before = slot - chrono::TimeDelta::seconds(1);
                assert!(s.latest_at_or_before(just_before) < Some(slot));
                assert_eq!(s.next_after(just_before), Some(slot));
            }
        }
    }

    #[test]
    fn interval_jobs_run_in_both_halves_of_a_repeated_hour() {
        // Every 30 minutes keeps a 30-minute rhythm in real time through the
        // New York fall-back: 01:00 and 01:30 run in EDT and again in EST.
        let s = cron("*/30 1 * * *", "America/New_York");
        assert_eq!(
            slots_on_local_day(&s, "2026-11-01"),
            [
                "2026-11-01T01:00:00-04:00",
                "2026-11-01T01:30:00-04:00",
                "2026-11-01T01:00:00-05:00",
                "2026-11-01T01:30:00-05:00",
            ]
        );
    }

    #[test]
    fn dom_or_dow_when_both_are_restricted() {
        let s = cron("0 0 13 * 5", "UTC");
        let got: Vec<String> = slots(&s, at("2026-02-01T00:00:00Z"), at("2026-04-01T00:00:00Z"))
            .iter()
            .map(|t| t.format("%m-%d %a").to_string())
            .collect();
        // Every Friday, and every 13th (13 February and 13 March 2026 are Fridays).
        assert_eq!(
            got,
            [
                "02-06 Fri",
                "02-13 Fri",
                "02-20 Fri",
                "02-27 Fri",
                "03-06 Fri",
                "03-13 Fri",
                "03-20 Fri",
                "03-27 Fri",
            ]
        );
        // A 13th that is not a Friday: 13 April 2026 is a Monday.
        let april = slots(&s, at("2026-04-01T00:00:00Z"), at("2026-05-01T00:00:00Z"));
        assert!(april.contains(&at("2026-04-13T00:00:00Z")));
        assert!(april.contains(&at("2026-04-17T00:00:00Z")));
        assert_eq!(april.len(), 5); // 3, 10, 13, 17, 24
    }

    #[test]
    fn a_single_restricted_day_field_decides_alone() {
        let fridays = cron("0 0 * * 5", "UTC");
        let got = slots(
            &fridays,
            at("2026-04-01T00:00:00Z"),
            at("2026-05-01T00:00:00Z"),
        );
        assert_eq!(got.len(), 4);
        assert!(!got.contains(&at("2026-04-13T00:00:00Z")));
        let thirteenth = cron("0 0 13 * *", "UTC");
        let got = slots(
            &thirteenth,
            at("2026-04-01T00:00:00Z"),
            at("2026-05-01T00:00:00Z"),
        );
        assert_eq!(got, [at("2026-04-13T00:00:00Z")]);
    }

    #[test]
    fn step_in_day_of_month_counts_as_restricted() {
        // `*/10` is not a bare `*`, so with a weekday it takes the OR rule.
        let s = cron("0 0 */10 * 1", "UTC");
        let got = slots(&s, at("2026-04-01T00:00:00Z"), at("2026-05-01T00:00:00Z"));
        // 1, 11, 21 and the Mondays 6, 13, 20, 27.
        assert_eq!(got.len(), 7);
    }

    #[test]
    fn aliases_expand() {
        let now = at("2026-04-15T10:20:00Z");
        let next = |e: &str| cron(e, "UTC").next_after(now).unwrap();
        assert_eq!(next("@hourly"), at("2026-04-15T11:00:00Z"));
        assert_eq!(next("@daily"), at("2026-04-16T00:00:00Z"));
        assert_eq!(next("@weekly"), at("2026-04-19T00:00:00Z")); // Sunday
        assert_eq!(next("@monthly"), at("2026-05-01T00:00:00Z"));
        assert_eq!(next("@yearly"), at("2027-01-01T00:00:00Z"));
        assert!(CronSchedule::parse("@often", None, now).is_err());
    }

    #[test]
    fn time_zone_shifts_slots() {
        let s = cron("0 9 * * *", "Europe/Berlin");
        assert_eq!(
            s.next_after(at("2026-07-01T00:00:00Z")),
            Some(at("2026-07-01T07:00:00Z"))
        );
        assert_eq!(
            s.next_after(at("2026-01-05T00:00:00Z")),
            Some(at("2026-01-05T08:00:00Z"))
        );
    }

    #[test]
    fn min_gap_sees_the_short_day() {
        let now = at("2026-03-01T00:00:00Z");
        // Daily at 02:30 in Berlin: 28 March 02:30 CET to 29 March 03:00 CEST
        // is 23.5 hours of real time.
        let s = CronSchedule::parse("30 2 * * *", Some("Europe/Berlin"), now).unwrap();
        assert_eq!(s.min_gap(), Duration::from_secs(23 * 3600 + 1800));
        // Daily at noon loses a whole hour on the short day.
        let s = CronSchedule::parse("0 12 * * *", Some("Europe/Berlin"), now).unwrap();
        assert_eq!(s.min_gap(), Duration::from_secs(23 * 3600));
        let s = CronSchedule::parse("0 12 * * *", None, now).unwrap();
        assert_eq!(s.min_gap(), Duration::from_secs(24 * 3600));
    }

    #[test]
    fn min_gap_of_sparse_and_dense_schedules() {
        let now = at("2026-01-01T00:00:00Z");
        let gap = |e: &str| CronSchedule::parse(e, None, now).unwrap().min_gap();
        assert_eq!(gap("*/5 * * * *"), Duration::from_secs(300));
        assert_eq!(gap("0,10 3 * * *"), Duration::from_secs(600));
        assert_eq!(gap("55 23 * * *"), Duration::from_secs(86_400));
        assert_eq!(gap("@weekly"), Duration::from_secs(7 * 86_400));
        // February 2026 is the shortest month in the window.
        assert_eq!(gap("@monthly"), Duration::from_secs(28 * 86_400));
        // 29 February: 2028 to 2032.
        assert_eq!(
            gap("0 0 29 2 *"),
            Duration::from_secs((366 + 365 * 3) * 86_400)
        );
        // The 13th or a Friday: a Thursday 13th is followed by Friday the 14th.
        assert_eq!(gap("0 0 13 * 5"), Duration::from_secs(86_400));
    }

    #[test]
    fn min_gap_matches_a_full_search_across_dst() {
        let now = at("2026-02-15T00:00:00Z");
        for (expr, tz) in [
            ("30 2 * * *", "Europe/Berlin"),
            ("30 2 * * *", "America/New_York"),
            ("30 1 * * *", "America/New_York"),
            ("0 */7 * * *", "America/New_York"),
            ("15 1,2,3 * * *", "Europe/Berlin"),
            ("*/20 2 * * *", "Europe/Berlin"),
            ("0 2-3 * * *", "America/New_York"),
            ("45 1 * * *", "Australia/Lord_Howe"),
            ("0 2 * * *", "Australia/Lord_Howe"),
            ("0 0 * * 1", "Australia/Lord_Howe"),
            ("30 2 * * *", "Australia/Sydney"),
            // Cuba changes its clock at midnight: a daily midnight job meets the gap.
            ("0 0 * * *", "America/Havana"),
            ("0 1 * * *", "America/Havana"),
            ("59 23 * * *", "America/Santiago"),
            ("0 0 * * *", "America/Santiago"),
        ] {
            let s = CronSchedule::parse(expr, Some(tz), now).unwrap();
            let all = slots(
                &s,
                now - chrono::TimeDelta::days(1),
                now + chrono::TimeDelta::days(400),
            );
            let expected = all.windows(2).map(|w| w[1] - w[0]).min().unwrap();
            assert_eq!(s.min_gap(), expected.to_std().unwrap(), "{expr} in {tz}");
        }
    }

    #[test]
    fn errors_name_the_problem_and_the_fix() {
        let err = |e: &str, tz: Option<&str>| {
            CronSchedule::parse(e, tz, Utc::now())
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err("0 0 *", None),
            "invalid cron expression \"0 0 *\": expected 5 fields: minute hour day-of-month month day-of-week; got 3"
        );
        assert_eq!(
            err("0 0 * * *", Some("Europe/Berln")),
            "unknown time zone \"Europe/Berln\": use an IANA name such as Europe/Berlin"
        );
        assert!(err("0 0 30 2 *", None).contains("never fires"));
        assert!(err("0 0 31 4 *", None).contains("never fires"));
        assert!(err("0 25 * * *", None).contains("hour value 25 is out of range: use 0-23"));
    }

    #[test]
    fn repeated_parses_share_one_copy() {
        let a = CronSchedule::parse_shared("17 4 * * *", Some("Asia/Tokyo")).unwrap();
        let b = CronSchedule::parse_shared(" 17 4 * * * ", Some("Asia/Tokyo")).unwrap();
        assert!(Arc::ptr_eq(&a.inner, &b.inner));
        let c = CronSchedule::parse_shared("17 4 * * *", None).unwrap();
        assert!(!Arc::ptr_eq(&a.inner, &c.inner));
        assert_eq!(c.time_zone(), "UTC");
    }

    #[test]
    fn clones_share_the_parsed_expression() {
        let s = cron("0 0 * * *", "UTC");
        let t = s.clone();
        assert!(Arc::ptr_eq(&s.inner, &t.inner));
    }
}
