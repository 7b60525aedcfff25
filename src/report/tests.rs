//! The report's judgements on synthetic histories with fixed times.

use std::path::Path;

use chrono::{TimeZone, Utc};

use super::*;
use crate::audit::{AuditEvent, Entry, Trigger};
use crate::policy::{self, Policy};
use crate::secret::{SecretName, VersionId};

const POLICY: &str = r#"
[backends.local]
type = "file"

[[secrets]]
name = "app/db"
backend = "local"
owner = "team-db"
schedule = { cron = "30 2 * * *" }
generator = { type = "password" }
"#;

fn policy() -> Policy {
    policy::parse(Path::new("/srv/policy.toml"), POLICY).expect("valid")
}

fn at(d: u32, h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, d, h, m, 0).unwrap()
}

fn entry(ts: DateTime<Utc>, event: AuditEvent) -> Entry {
    Entry {
        seq: 0,
        ts,
        host: "h".into(),
        pid: 1,
        hash: String::new(),
        event,
        source: "audit.jsonl".into(),
        line: 0,
    }
}

fn name() -> SecretName {
    SecretName::new("app/db").unwrap()
}

/// A rotation started at `started` and finished at `done`, for `version`.
fn rotation(version: &VersionId, trigger: Trigger, done: DateTime<Utc>) -> Vec<Entry> {
    vec![
        entry(
            done - chrono::Duration::seconds(1),
            AuditEvent::RotationStarted {
                secret: "app/db".into(),
                backend: "local".into(),
                version: version.to_string(),
                slot: version.slot(),
                trigger,
            },
        ),
        entry(
            done,
            AuditEvent::RotationSucceeded {
                secret: "app/db".into(),
                version: version.to_string(),
                duration_ms: 5,
            },
        ),
    ]
}

fn slot(d: u32) -> VersionId {
    VersionId::for_slot(&name(), at(d, 2, 30))
}

#[test]
fn on_time_late_missed_and_manual_are_told_apart() {
    let mut entries = Vec::new();
    entries.extend(rotation(&slot(20), Trigger::Initial, at(20, 9, 0)));
    entries.extend(rotation(&slot(21), Trigger::Schedule, at(21, 2, 31)));
    // Down on the 22nd and 23rd: the 24th's slot is caught up late, 22 and 23 are missed.
    entries.extend(rotation(&slot(24), Trigger::CatchUp, at(24, 11, 0)));
    let manual = VersionId::for_manual(&name(), at(24, 15, 0));
    entries.extend(rotation(
        &manual,
        Trigger::Manual {
            by: "alice@host".into(),
        },
        at(24, 15, 0),
    ));
    entries.extend(rotation(&slot(25), Trigger::Schedule, at(25, 2, 30)));
    let report = build(&policy(), &entries, Vec::new(), at(20, 0, 0), at(25, 12, 0));
    let s = &report.secrets[0];
    assert_eq!(s.rotations.len(), 5);
    assert_eq!((s.on_time(), s.late(), s.manual()), (2, 1, 1));
    assert_eq!(s.missed, vec![at(22, 2, 30), at(23, 2, 30)]);
    assert_eq!(s.expected, 5, "slots of the 21st to the 25th");
    assert!(!s.compliant);
    let manual_row = s.rotations.iter().find(|r| r.by.is_some()).unwrap();
    assert_eq!(manual_row.by.as_deref(), Some("alice@host"));
    assert_eq!(manual_row.timeliness, Timeliness::Unscheduled);

    let csv = render_csv(&report);
    assert_eq!(
        csv.lines().filter(|l| l.contains(",missed_slot,")).count(),
        2
    );
    assert_eq!(csv.lines().filter(|l| l.contains(",rotation,")).count(), 5);
    let html = render_html(&report);
    assert!(
        html.contains("0 of 1 secrets rotated within policy"),
        "summary"
    );
    assert!(html.contains("alice@host"));
}

#[test]
fn a_history_on_schedule_is_compliant_and_replicas_count_once() {
    let mut entries = Vec::new();
    for d in 20..=25 {
        let v = slot(d);
        entries.extend(rotation(&v, Trigger::Schedule, at(d, 2, 31)));
        // The second replica logged the same version finishing too.
        entries.extend(rotation(&v, Trigger::Schedule, at(d, 2, 32)));
    }
    entries.sort_by_key(|e| e.ts);
    let report = build(&policy(), &entries, Vec::new(), at(20, 0, 0), at(26, 0, 0));
    let s = &report.secrets[0];
    assert_eq!(s.rotations.len(), 6);
    assert_eq!(s.on_time(), 6);
    assert!(s.missed.is_empty() && s.compliant, "{s:#?}");
}

#[test]
fn a_failure_counts_only_until_a_later_success_recovers_it() {
    let failure = |ts| {
        entry(
            ts,
            AuditEvent::RotationFailed {
                secret: "app/db".into(),
                version: Some(slot(21).to_string()),
                step: "put_pending".into(),
                error: "backend local: timed out".into(),
                will_retry: true,
            },
        )
    };
    let mut entries = rotation(&slot(20), Trigger::Initial, at(20, 9, 0));
    entries.push(failure(at(21, 2, 30)));
    entries.extend(rotation(&slot(21), Trigger::Schedule, at(21, 2, 33)));
    let report = build(&policy(), &entries, Vec::new(), at(20, 0, 0), at(21, 12, 0));
    assert!(report.secrets[0].compliant, "recovered within tolerance");
    assert_eq!(report.secrets[0].failures.len(), 1, "still reported");

    entries.push(failure(at(21, 11, 0)));
    let report = build(&policy(), &entries, Vec::new(), at(20, 0, 0), at(21, 12, 0));
    assert!(!report.secrets[0].compliant, "an unrecovered failure");
}

#[test]
fn a_failed_rollback_is_listed_but_is_not_a_missed_rotation() {
    let mut entries = rotation(&slot(20), Trigger::Initial, at(20, 9, 0));
    entries.extend(rotation(&slot(21), Trigger::Schedule, at(21, 2, 31)));
    entries.push(entry(
        at(21, 11, 0),
        AuditEvent::RollbackFailed {
            secret: "app/db".into(),
            from: slot(21).to_string(),
            to: slot(20).to_string(),
            error: "current version changed".into(),
        },
    ));
    let report = build(&policy(), &entries, Vec::new(), at(20, 0, 0), at(21, 12, 0));
    let failures = &report.secrets[0].failures;
    assert_eq!(failures.len(), 1);
    assert_eq!(
        (failures[0].step.as_str(), failures[0].error.as_str()),
        ("rollback", "current version changed")
    );
    assert!(report.secrets[0].compliant, "its rotations were on time");
}

#[test]
fn a_broken_chain_is_reported() {
    let logs = vec![LogCheck {
        path: "a.jsonl".into(),
        entries: 3,
        head: Some("3:ab".into()),
        problems: vec!["line 2: edited".into()],
    }];
    let report = build(&policy(), &[], logs, at(20, 0, 0), at(21, 0, 0));
    assert!(!report.chains_verified());
    let html = render_html(&report);
    assert!(html.contains("hash chain BROKEN") && html.contains("line 2: edited"));
}
