//! Arbitrary bytes as an audit log file, read by every path `rekeyd audit` reads one
//! through: `verify` (with and without an anchor), `query` with each filter and both
//! renderings, and the auditor's report over `config/example.toml` (HTML and CSV).
//!
//! Asserts: nothing panics; verify names only lines the file has (an anchor problem may
//! name the line after the last); a log it calls clean is a gapless chain 1..=N whose head
//! is the last entry, and stays clean anchored at that head; anchoring only adds problems;
//! query accounts for every line exactly once, as an entry or as skipped; filters only
//! drop entries, and the streaming query keeps exactly what filtering in memory keeps.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use libfuzzer_sys::fuzz_target;
use rekeyd::audit::{self, Anchor, Filter, Outcome};

/// A scratch file per fuzzing process, rewritten for each input.
fn scratch() -> &'static (tempfile::TempDir, PathBuf, rekeyd::policy::Policy) {
    static SCRATCH: OnceLock<(tempfile::TempDir, PathBuf, rekeyd::policy::Policy)> =
        OnceLock::new();
    SCRATCH.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("audit.jsonl");
        let policy_path = dir.path().join("example.toml");
        let text = include_str!("../../../config/example.toml");
        let policy = rekeyd::policy::parse(&policy_path, text).expect("the example policy");
        (dir, log, policy)
    })
}

fuzz_target!(|bytes: &[u8]| {
    let (_, log, policy) = scratch();
    std::fs::write(log, bytes).expect("write the scratch log");
    let lines = bytes.split_inclusive(|&b| b == b'\n').count();

    let report = audit::verify(log).expect("verify reads a readable file");
    for p in &report.problems {
        assert!((1..=lines).contains(&p.line), "{p} in {lines} lines");
    }
    assert!(report.entries <= lines as u64);
    if report.is_clean() {
        match &report.head {
            None => assert_eq!(report.entries, 0),
            Some((seq, _)) => assert_eq!(*seq, report.entries, "a clean chain is 1..=N"),
        }
        assert_eq!(report.entries as usize, lines, "a clean log is all entries");
    }
    if let Some((seq, hash)) = &report.head {
        let own = Anchor {
            seq: *seq,
            hash: hash.clone(),
        };
        let anchored = audit::verify_anchored(log, Some(&own)).expect("verify");
        for p in &report.problems {
            assert!(anchored.problems.contains(p), "anchoring lost {p}");
        }
        if report.is_clean() {
            assert!(anchored.is_clean(), "clean, yet not at its own head");
        }
        for p in &anchored.problems {
            assert!((1..=lines + 1).contains(&p.line), "{p} in {lines} lines");
        }
    }

    let read = audit::read_logs(&[log]).expect("query reads a readable file");
    let mut seen: Vec<usize> = read
        .entries
        .iter()
        .map(|e| e.line)
        .chain(read.unreadable.iter().map(|u| u.line))
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (1..=lines).collect::<Vec<_>>(), "each line once");
    let _ = audit::render_table(&read.entries);
    let _ = audit::render_json(&read.entries);

    let mut filters = vec![Filter {
        secret: Some("demo/db/password".into()),
        ..Filter::default()
    }];
    filters.extend(Outcome::ALL.map(|o| Filter {
        outcome: Some(o),
        ..Filter::default()
    }));
    if let (Some(first), Some(last)) = (read.entries.first(), read.entries.last()) {
        filters.push(Filter {
            since: Some(first.ts),
            until: Some(last.ts),
            ..Filter::default()
        });
    }
    for filter in &filters {
        let kept = filter.apply(read.entries.clone());
        assert!(kept.iter().all(|e| read.entries.contains(e)));
        // The CLI's query streams the file and passes over lines that cannot match
        // unparsed: it must keep exactly what filtering everything in memory keeps.
        let streamed = audit::query(&[log], filter).expect("query reads a readable file");
        assert_eq!(streamed.entries, kept, "{filter:?}");
        let _ = audit::render_table(&kept);
    }

    report_over(policy, log, &report, &read.entries);
});

/// `rekeyd audit report` over its default span, the 30 days before "now", with "now" just
/// after the latest entry so that fuzzed timestamps fall inside it.
fn report_over(
    policy: &rekeyd::policy::Policy,
    log: &Path,
    verified: &audit::VerifyReport,
    entries: &[audit::Entry],
) {
    let latest = entries.iter().map(|e| e.ts).max();
    let until = latest
        .and_then(|t| t.checked_add_signed(chrono::TimeDelta::seconds(1)))
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
    let since = until
        .checked_sub_signed(chrono::TimeDelta::days(30))
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    let checks = vec![rekeyd::report::LogCheck::new(
        &log.display().to_string(),
        verified,
    )];
    let report = rekeyd::report::build(policy, entries, checks, since, until);
    let _ = rekeyd::report::render_html(&report);
    let _ = rekeyd::report::render_csv(&report);
}
