//! Reads the five cron fields into bit sets, with errors a person can act on.
//!
//! croner does the searching; this reader exists so that a bad expression
//! gets a sentence naming the field and the valid range, so that a pattern
//! that can never fire is caught before any search, and so that `min_gap`
//! can be scanned without a full search per fire.

use chrono::{Datelike, NaiveDate};

/// One cron field's rules.
struct FieldSpec {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MINUTE: FieldSpec = FieldSpec {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: FieldSpec = FieldSpec {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DAY_OF_MONTH: FieldSpec = FieldSpec {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: FieldSpec = FieldSpec {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ],
};
// 7 is Sunday as well as 0, as in Vixie cron.
const DAY_OF_WEEK: FieldSpec = FieldSpec {
    name: "day-of-week",
    min: 0,
    max: 7,
    names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
};

/// The longest each month can be, February in a leap year.
const MONTH_MAX_DAYS: [u32; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

/// A parsed five-field expression.
#[derive(Debug, Clone)]
pub(crate) struct Fields {
    minutes: u64,
    hours: u32,
    /// Bit `d` for day `d` of the month (1-31).
    days: u32,
    /// Bit `m` for month `m` (1-12).
    months: u16,
    /// Bit `w` for weekday `w`, Sunday = 0.
    weekdays: u8,
    /// The day-of-month field is a bare `*`.
    any_day: bool,
    /// The day-of-week field is a bare `*`.
    any_weekday: bool,
}

/// Expands an `@alias` to its five fields; other text is returned as is.
pub(crate) fn expand_alias(expr: &str) -> Result<&str, String> {
    let trimmed = expr.trim();
    if !trimmed.starts_with('@') {
        return Ok(trimmed);
    }
    match trimmed.to_ascii_lowercase().as_str() {
        "@hourly" => Ok("0 * * * *"),
        "@daily" | "@midnight" => Ok("0 0 * * *"),
        "@weekly" => Ok("0 0 * * 0"),
        "@monthly" => Ok("0 0 1 * *"),
        "@yearly" | "@annually" => Ok("0 0 1 1 *"),
        _ => Err(format!(
            "unknown alias \"{trimmed}\": use @hourly, @daily, @weekly, @monthly or @yearly"
        )),
    }
}

impl Fields {
    /// Parses five whitespace-separated fields.
    pub(crate) fn parse(expr: &str) -> Result<Self, String> {
        let parts: Vec<&str> = expr.split_whitespace().collect();
        if parts.len() != 5 {
            return Err(format!(
                "expected 5 fields: minute hour day-of-month month day-of-week; got {}",
                parts.len()
            ));
        }
        let minutes = parse_field(parts[0], &MINUTE)?;
        let hours = parse_field(parts[1], &HOUR)?;
        let days = parse_field(parts[2], &DAY_OF_MONTH)?;
        let months = parse_field(parts[3], &MONTH)?;
        let weekdays = parse_field(parts[4], &DAY_OF_WEEK)?;
        // Fold 7 onto Sunday.
        let weekdays = (weekdays | (weekdays >> 7)) & 0x7f;
        let fields = Fields {
            minutes,
            hours: hours as u32,
            days: days as u32,
            months: months as u16,
            weekdays: weekdays as u8,
            any_day: parts[2] == "*",
            any_weekday: parts[4] == "*",
        };
        fields.check_can_fire()?;
        Ok(fields)
    }

    /// Rejects a day-of-month that no listed month has, such as 30 February.
    fn check_can_fire(&self) -> Result<(), String> {
        // A restricted day-of-week matches some day of every month (OR rule),
        // and `*` matches every day, so only a lone day-of-month can fail.
        if !self.any_weekday || self.any_day {
            return Ok(());
        }
        let first_day = self.days.trailing_zeros();
        let possible = (1..=12u32)
            .filter(|m| self.months & (1 << m) != 0)
            .any(|m| first_day <= MONTH_MAX_DAYS[m as usize - 1]);
        if possible {
            Ok(())
        } else {
            Err(
                "never fires: no listed month has that day-of-month (February has at most 29 days; April, June, September and November have 30)"
                    .to_string(),
            )
        }
    }

    /// Whether the pattern runs on this date (Vixie rule: when both day fields
    /// are restricted, either may match).
    pub(crate) fn date_matches(&self, date: NaiveDate) -> bool {
        if self.months & (1 << date.month()) == 0 {
            return false;
        }
        let day = self.days & (1 << date.day()) != 0;
        let weekday = self.weekdays & (1 << date.weekday().num_days_from_sunday()) != 0;
        match (self.any_day, self.any_weekday) {
            (false, false) => day || weekday,
            (true, false) => weekday,
            (false, true) => day,
            (true, true) => true,
        }
    }

    /// The next date after `date` worth testing: the next day, or the first
    /// of the next month when this month never matches.
    pub(crate) fn next_candidate_date(&self, date: NaiveDate) -> Option<NaiveDate> {
        if self.months & (1 << date.month()) != 0 {
            return date.succ_opt();
        }
        let (year, month) = if date.month() == 12 {
            (date.year() + 1, 1)
        } else {
            (date.year(), date.month() + 1)
        };
        NaiveDate::from_ymd_opt(year, month, 1)
    }

    /// The minutes after midnight at which the pattern runs, ascending.
    pub(crate) fn times_of_day(&self) -> Vec<u32> {
        let mut out = Vec::new();
        for hour in 0..24 {
            if self.hours & (1 << hour) == 0 {
                continue;
            }
            for minute in 0..60 {
                if self.minutes & (1 << minute) != 0 {
                    out.push(hour * 60 + minute);
                }
            }
        }
        out
    }
}

/// Parses one field into a bit set.
fn parse_field(text: &str, spec: &FieldSpec) -> Result<u64, String> {
    let mut bits = 0u64;
    for item in text.split(',') {
        bits |= parse_item(item, spec)?;
    }
    Ok(bits)
}

/// Parses `*`, `*/s`, `a`, `a-b` or `a-b/s`.
fn parse_item(item: &str, spec: &FieldSpec) -> Result<u64, String> {
    let name = spec.name;
    if item.is_empty() {
        return Err(format!(
            "{name} field has an empty list item: separate values with single commas, such as 1,15"
        ));
    }
    let (range, step) = match item.split_once('/') {
        Some((range, step)) => {
            let step: u32 = step.parse().map_err(|_| {
                format!("{name} step \"{step}\" is not a number: write */15 or 0-30/5")
            })?;
            if step == 0 {
                return Err(format!("{name} step is 0: use a step of 1 or more"));
            }
            (range, step)
        }
        None => (item, 1),
    };
    let (low, high) = if range == "*" {
        (spec.min, spec.max)
    } else if let Some((low, high)) = range.split_once('-') {
        let (low, high) = (value(low, spec)?, value(high, spec)?);
        if low > high {
            return Err(format!(
                "{name} range {range} runs backwards: write the smaller value first"
            ));
        }
        (low, high)
    } else {
        let single = value(range, spec)?;
        if step != 1 {
            return Err(format!(
                "{name} item \"{item}\" steps from a single value: write {single}-{}/{step} or */{step}",
                spec.max
            ));
        }
        (single, single)
    };
    let mut bits = 0u64;
    let mut v = low;
    while v <= high {
        bits |= 1 << v;
        v += step;
    }
    Ok(bits)
}

/// Reads a number or a name (JAN, MON) and checks it is in range.
fn value(text: &str, spec: &FieldSpec) -> Result<u32, String> {
    let name = spec.name;
    let valid = if spec.names.is_empty() {
        format!("{}-{}", spec.min, spec.max)
    } else {
        format!(
            "{}-{} or {}-{}",
            spec.min,
            spec.max,
            spec.names[0],
            spec.names[spec.names.len() - 1]
        )
    };
    if let Some(pos) = spec.names.iter().position(|n| n.eq_ignore_ascii_case(text)) {
        return Ok(pos as u32 + spec.min);
    }
    let number: u32 = text.parse().map_err(|_| {
        if text.contains(['L', 'W', '#', '?', '+']) {
            format!(
                "{name} value \"{text}\" uses a non-standard cron extension: use numbers, ranges (a-b), lists (a,b) and steps (*/n), {valid}"
            )
        } else {
            format!("{name} value \"{text}\" is not valid: use {valid}")
        }
    })?;
    if number < spec.min || number > spec.max {
        return Err(format!(
            "{name} value {number} is out of range: use {valid}"
        ));
    }
    Ok(number)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(expr: &str) -> String {
        Fields::parse(expr).unwrap_err()
    }

    #[test]
    fn counts_fields() {
        assert_eq!(
            err("0 0 *"),
            "expected 5 fields: minute hour day-of-month month day-of-week; got 3"
        );
        assert!(err("0 0 0 * * * *").ends_with("got 7"));
    }

    #[test]
    fn names_the_field_and_range_when_out_of_range() {
        assert_eq!(
            err("60 * * * *"),
            "minute value 60 is out of range: use 0-59"
        );
        assert_eq!(err("0 24 * * *"), "hour value 24 is out of range: use 0-23");
        assert_eq!(
            err("0 0 0 * *"),
            "day-of-month value 0 is out of range: use 1-31"
        );
        assert_eq!(
            err("0 0 * 13 *"),
            "month value 13 is out of range: use 1-12 or JAN-DEC"
        );
        assert_eq!(
            err("0 0 * * 8"),
            "day-of-week value 8 is out of range: use 0-7 or SUN-SAT"
        );
    }

    #[test]
    fn rejects_malformed_items() {
        assert!(err("*/0 * * * *").contains("step is 0"));
        assert!(err("5-1 * * * *").contains("runs backwards"));
        assert!(err("x * * * *").contains("\"x\" is not valid"));
        assert!(err("0 0 L * *").contains("non-standard"));
        assert!(err("1,,2 * * * *").contains("empty list item"));
        assert!(err("5/10 * * * *").contains("write 5-59/10"));
    }

    #[test]
    fn reads_names_case_insensitively() {
        let f = Fields::parse("0 0 * jan-Mar MON-fri").unwrap();
        assert_eq!(f.months, 0b1110);
        assert_eq!(f.weekdays, 0b0111110);
    }

    #[test]
    fn seven_is_sunday() {
        let f = Fields::parse("0 0 * * 7").unwrap();
        assert_eq!(f.weekdays, 1);
    }

    #[test]
    fn detects_patterns_that_never_fire() {
        assert!(err("0 0 30 2 *").starts_with("never fires"));
        assert!(err("0 0 31 4 *").starts_with("never fires"));
        assert!(err("0 0 31 4,6,9,11 *").starts_with("never fires"));
        // 29 February exists in leap years; the 31st exists in some listed month.
        assert!(Fields::parse("0 0 29 2 *").is_ok());
        assert!(Fields::parse("0 0 31 4,5 *").is_ok());
        // With a weekday restricted too, the OR rule makes it fire on Fridays.
        assert!(Fields::parse("0 0 30 2 5").is_ok());
    }

    #[test]
    fn either_day_field_matches_when_both_are_restricted() {
        let f = Fields::parse("0 0 13 * 5").unwrap();
        // 2026-02-13 is a Friday; 2026-03-13 a Friday too; 2026-04-13 a Monday.
        let d = |m, d| NaiveDate::from_ymd_opt(2026, m, d).unwrap();
        assert!(f.date_matches(d(4, 13)));
        assert!(f.date_matches(d(4, 17))); // a Friday
        assert!(!f.date_matches(d(4, 14)));
        // Only one restricted: that one alone decides.
        let fridays = Fields::parse("0 0 * * 5").unwrap();
        assert!(!fridays.date_matches(d(4, 13)));
        assert!(fridays.date_matches(d(4, 17)));
    }
}
