//! The policy loader on arbitrary bytes, through `policy::from_bytes`, the function
//! `policy::load` hands a file's bytes to (so invalid UTF-8 takes the daemon's own path).
//!
//! Asserts what `src/policy` promises: it never panics; a refused file gets at least one
//! diagnostic, each naming this file, a line of it (the line after a last newline counts:
//! an unclosed construct ends there) and a column within that line (1 to its length + 1), sorted
//! by position, with a message and a hint. An accepted file keeps the cross-field rules
//! the validator enforces, and `rekeyd check`'s plan of upcoming rotations (computed as the
//! command does) runs forward in time.
#![no_main]

use std::path::Path;

use chrono::{DateTime, TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use rekeyd::policy::{Policy, PolicyErrors};
use rekeyd::rotation::plan;

const FILE: &str = "fuzz/policy.toml";

fuzz_target!(|bytes: &[u8]| {
    match rekeyd::policy::from_bytes(Path::new(FILE), bytes) {
        Ok(policy) => accepted(&policy, bytes),
        Err(errors) => refused(&errors, bytes),
    }
});

fn refused(errors: &PolicyErrors, bytes: &[u8]) {
    assert!(!errors.0.is_empty(), "refused with no diagnostic");
    // Lines as the user's editor shows them; a line is counted in characters when the
    // file is text, in bytes up to the first bad byte otherwise.
    let lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    let mut previous = (0, 0);
    for d in &errors.0 {
        assert_eq!(d.file, FILE, "{d:?}");
        assert!(
            (1..=lines.len()).contains(&d.line),
            "line {} outside the file's {} lines: {d:?}",
            d.line,
            lines.len()
        );
        let line = lines[d.line - 1];
        let width = match std::str::from_utf8(line) {
            Ok(text) => text.chars().count(),
            Err(_) => line.len(),
        };
        assert!(
            (1..=width + 1).contains(&d.column),
            "column {} outside line {} of {width} characters: {d:?}",
            d.column,
            d.line
        );
        assert!(
            (d.line, d.column) >= previous,
            "diagnostics out of order: {:?}",
            errors.0
        );
        previous = (d.line, d.column);
        assert!(!d.message.is_empty() && !d.hint.is_empty(), "{d:?}");
    }
    let report = errors.to_string();
    let count = errors.0.len();
    assert!(
        report.ends_with(&format!(
            "{count} {} in {FILE}",
            if count == 1 { "problem" } else { "problems" }
        )),
        "{report}"
    );
}

fn accepted(policy: &Policy, bytes: &[u8]) {
    assert!(
        std::str::from_utf8(bytes).is_ok(),
        "accepted bytes that are not UTF-8"
    );
    let min_interval = policy.daemon.min_interval;
    let mut names = std::collections::BTreeSet::new();
    // A fixed "now" keeps a crash reproducible; the second one is near the end of the
    // range schedules are computed in.
    let nows = [
        Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap(),
        Utc.with_ymd_and_hms(9999, 1, 1, 0, 0, 0).unwrap(),
    ];
    for s in &policy.secrets {
        assert!(names.insert(s.name.as_str()), "{} twice", s.name.as_str());
        assert!(policy.backends.contains_key(&s.backend), "{s:?}");
        for target in &s.notify {
            assert!(policy.notify.contains_key(target), "{s:?}");
        }
        if let Some(confirm) = &s.confirm {
            assert!(
                confirm.targets.iter().all(|t| s.notify.contains(t)),
                "{s:?}"
            );
        }
        let gap = s.schedule.min_gap();
        assert!(gap >= min_interval, "gap {gap:?} under the floor: {s:?}");
        assert!(s.grace <= gap, "{s:?}");
        assert!(s.window.is_none_or(|w| w < gap), "{s:?}");
        assert!(s.max_age.is_none_or(|m| m >= gap), "{s:?}");
        for now in nows {
            check_plan(s, now);
        }
    }
}

/// What `rekeyd check` computes: the next rotations after `now`, each later than the last.
fn check_plan(secret: &rekeyd::policy::SecretPolicy, now: DateTime<Utc>) {
    let upcoming = plan::upcoming(secret, now, 5);
    let mut last = now;
    for due in upcoming {
        assert!(due > last, "{due} is not after {last}: {secret:?}");
        last = due;
    }
    let _ = plan::plan(secret, None, now);
}
