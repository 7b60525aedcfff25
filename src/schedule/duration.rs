//! Durations as written in policies: `30d`, `12h`, `1d12h`.
//!
//! Units are `s m h d w`; months and years are refused because they vary in
//! length.

use std::time::Duration;

/// Units from largest to smallest, with their length in seconds.
const UNITS: [(char, u64); 5] = [
    ('w', 7 * 86_400),
    ('d', 86_400),
    ('h', 3_600),
    ('m', 60),
    ('s', 1),
];

/// Parses `30d`, `12h`, `90m`, `45s`, `2w` and compounds such as `1d12h`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("empty duration: write a number and a unit, such as 30d or 12h".to_string());
    }
    if trimmed.starts_with('-') {
        return Err(format!(
            "negative duration \"{trimmed}\": durations count forward, such as 30d"
        ));
    }
    let mut total: u64 = 0;
    // Index into UNITS of the last unit seen, so units must shrink left to right.
    let mut last_unit: Option<usize> = None;
    let mut rest = trimmed;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!(
                "expected a number at \"{rest}\" in \"{trimmed}\": write a number before each unit, such as 1d12h"
            ));
        }
        let (number, after) = rest.split_at(digits);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        if unit.is_empty() {
            return Err(format!(
                "missing unit after {number} in \"{trimmed}\": use s, m, h, d or w, such as {number}s"
            ));
        }
        let Some(index) = UNITS
            .iter()
            .position(|(c, _)| unit.len() == 1 && unit.starts_with(*c))
        else {
            return Err(unknown_unit(unit, trimmed));
        };
        if last_unit.is_some_and(|last| index <= last) {
            return Err(format!(
                "units out of order in \"{trimmed}\": write each unit once, largest first, such as 1d12h"
            ));
        }
        last_unit = Some(index);
        let overflow = || format!("duration \"{trimmed}\" is too long");
        let count: u64 = number.parse().map_err(|_| overflow())?;
        let seconds = count.checked_mul(UNITS[index].1).ok_or_else(overflow)?;
        total = total.checked_add(seconds).ok_or_else(overflow)?;
        rest = after;
    }
    // Keep every duration usable in chrono arithmetic, which stops at i64 milliseconds.
    if total > i64::MAX as u64 / 1000 {
        return Err(format!("duration \"{trimmed}\" is too long"));
    }
    Ok(Duration::from_secs(total))
}

fn unknown_unit(unit: &str, text: &str) -> String {
    let hint = match unit {
        "mo" | "M" | "mon" | "month" | "months" => " (months vary in length: write 30d)",
        "y" | "yr" | "year" | "years" => " (years vary in length: write 365d)",
        "ms" | "us" | "ns" => " (rotation does not need sub-second precision)",
        _ => "",
    };
    format!("unknown unit \"{unit}\" in \"{text}\": use s, m, h, d or w{hint}")
}

/// Formats a duration with the largest exact units: `36h` prints as `1d12h`.
/// Sub-second parts are dropped; [`parse_duration`] never produces them.
pub(crate) fn format_duration(duration: Duration) -> String {
    let mut seconds = duration.as_secs();
    if seconds == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, length) in UNITS {
        if seconds >= length {
            out.push_str(&format!("{}{unit}", seconds / length));
            seconds %= length;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn parses_each_unit_and_compounds() {
        let p = |t| parse_duration(t).unwrap().as_secs();
        assert_eq!(p("45s"), 45);
        assert_eq!(p("90m"), 5_400);
        assert_eq!(p("12h"), 43_200);
        assert_eq!(p("30d"), 2_592_000);
        assert_eq!(p("2w"), 1_209_600);
        assert_eq!(p("1d12h"), 129_600);
        assert_eq!(
            p("1w2d3h4m5s"),
            7 * 86_400 + 2 * 86_400 + 3 * 3600 + 4 * 60 + 5
        );
        assert_eq!(p(" 0s "), 0);
    }

    #[test]
    fn errors_say_what_to_write() {
        let e = |t| parse_duration(t).unwrap_err();
        assert_eq!(
            e("1mo"),
            "unknown unit \"mo\" in \"1mo\": use s, m, h, d or w (months vary in length: write 30d)"
        );
        assert!(e("1y").contains("write 365d"));
        assert!(e("").starts_with("empty duration"));
        assert!(e("-5m").starts_with("negative duration"));
        assert!(e("30").starts_with("missing unit after 30"));
        assert!(e("h").starts_with("expected a number"));
        assert!(e("12h1d").starts_with("units out of order"));
        assert!(e("1h1h").starts_with("units out of order"));
        assert!(e("1.5h").contains("unknown unit \".\""));
        assert!(e("99999999999999999999s").contains("too long"));
        assert!(e("99999999999999w").contains("too long"));
    }

    #[test]
    fn formats_with_the_largest_exact_units() {
        let f = |s| format_duration(Duration::from_secs(s));
        assert_eq!(f(36 * 3600), "1d12h");
        assert_eq!(f(14 * 86_400), "2w");
        assert_eq!(f(90 * 60), "1h30m");
        assert_eq!(f(61), "1m1s");
        assert_eq!(f(0), "0s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1s");
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(seconds in 0u64..10_000_000_000) {
            let d = Duration::from_secs(seconds);
            prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
    }
}
