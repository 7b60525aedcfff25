//! The auditor's report: per secret, every rotation against its policy — on time, late,
//! missed slots, failures, manual rotations and who asked — plus each log's chain check.
//!
//! [`build`] is pure (entries + policy + period in, [`Report`] out) so every judgement is
//! unit-tested; `html` and `csv` only render it. Reads audit logs, never a backend.

mod csv;
mod html;

pub use csv::render as render_csv;
pub use html::render as render_html;

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::audit::{AuditEvent, Entry, Trigger, VerifyReport};
use crate::policy::{Policy, SecretPolicy};
use crate::rotation::plan::{ON_TIME_TOLERANCE, due_at};
use crate::secret::VersionId;

/// Expected slots are listed up to this many per secret; a denser schedule is summarised.
const MAX_SLOTS: usize = 5_000;

/// One audit log's chain check.
#[derive(Clone, Debug, Serialize)]
pub struct LogCheck {
    /// The file.
    pub path: String,
    /// Entries read.
    pub entries: u64,
    /// The head (`seq:hash`) to compare with one recorded elsewhere.
    pub head: Option<String>,
    /// Problems found, each `line N: …`.
    pub problems: Vec<String>,
}

impl LogCheck {
    /// From a verifier report.
    pub fn new(path: &str, report: &VerifyReport) -> Self {
        Self {
            path: path.to_owned(),
            entries: report.entries,
            head: report
                .head
                .as_ref()
                .map(|(seq, hash)| format!("{seq}:{hash}")),
            problems: report.problems.iter().map(|p| p.to_string()).collect(),
        }
    }
}

/// How a successful rotation relates to the schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Timeliness {
    /// Its slot's rotation, done within the tolerance after the slot's due time.
    OnTime,
    /// Its slot's rotation, done later than that.
    Late,
    /// Not tied to a slot (manual, max age, first creation).
    Unscheduled,
}

/// A successful rotation.
#[derive(Clone, Debug, Serialize)]
pub struct Rotation {
    /// When it finished.
    pub at: DateTime<Utc>,
    /// The version that became current.
    pub version: String,
    /// The schedule slot it served, if any.
    pub slot: Option<DateTime<Utc>>,
    /// Why it ran (`schedule`, `catch_up`, `manual`, …).
    pub trigger: String,
    /// Who asked, for manual rotations.
    pub by: Option<String>,
    /// Against the schedule.
    pub timeliness: Timeliness,
}

/// A failed step.
#[derive(Clone, Debug, Serialize)]
pub struct Failure {
    /// When.
    pub at: DateTime<Utc>,
    /// The step.
    pub step: String,
    /// The error as logged (never a value).
    pub error: String,
}

/// The `step` of a failure that was a rollback's, not a rotation's.
const ROLLBACK_STEP: &str = "rollback";

/// A rollback.
#[derive(Clone, Debug, Serialize)]
pub struct Rollback {
    /// When.
    pub at: DateTime<Utc>,
    /// From which version.
    pub from: String,
    /// To which version.
    pub to: String,
    /// Who asked.
    pub by: String,
}

/// One secret's history in the period.
#[derive(Clone, Debug, Serialize)]
pub struct SecretReport {
    /// The secret.
    pub name: String,
    /// Its owner.
    pub owner: Option<String>,
    /// Its schedule as written.
    pub schedule: String,
    /// Whether the policy enables it.
    pub enabled: bool,
    /// Successful rotations, oldest first.
    pub rotations: Vec<Rotation>,
    /// Failed steps.
    pub failures: Vec<Failure>,
    /// Rollbacks.
    pub rollbacks: Vec<Rollback>,
    /// Slots that came due in the period and were never rotated.
    pub missed: Vec<DateTime<Utc>>,
    /// Slots that came due in the period.
    pub expected: usize,
    /// True when more slots came due than [`MAX_SLOTS`] and only the first were checked.
    pub slots_truncated: bool,
    /// Every due slot rotated on time, and nothing failed for good.
    pub compliant: bool,
}

impl SecretReport {
    /// Rotations that served their slot on time.
    pub fn on_time(&self) -> usize {
        self.count(Timeliness::OnTime)
    }

    /// Rotations that served their slot late.
    pub fn late(&self) -> usize {
        self.count(Timeliness::Late)
    }

    /// Manual rotations.
    pub fn manual(&self) -> usize {
        self.rotations.iter().filter(|r| r.by.is_some()).count()
    }

    fn count(&self, t: Timeliness) -> usize {
        self.rotations.iter().filter(|r| r.timeliness == t).count()
    }
}

/// The whole report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// When it was made.
    pub generated_at: DateTime<Utc>,
    /// Start of the period.
    pub since: DateTime<Utc>,
    /// End of the period.
    pub until: DateTime<Utc>,
    /// The policy it judged against.
    pub policy: String,
    /// Each log's chain check.
    pub logs: Vec<LogCheck>,
    /// One entry per secret in the policy.
    pub secrets: Vec<SecretReport>,
}

impl Report {
    /// Every log verified.
    pub fn chains_verified(&self) -> bool {
        self.logs.iter().all(|l| l.problems.is_empty())
    }
}

fn trigger_name(trigger: &Trigger) -> (&'static str, Option<String>) {
    match trigger {
        Trigger::Schedule => ("schedule", None),
        Trigger::CatchUp => ("catch_up", None),
        Trigger::MaxAge => ("max_age", None),
        Trigger::Recovery => ("recovery", None),
        Trigger::Initial => ("initial", None),
        Trigger::Manual { by } => ("manual", Some(by.clone())),
    }
}

/// Judges the history in `entries` (all logs merged, oldest first) against `policy` for the
/// period `since..until`.
pub fn build(
    policy: &Policy,
    entries: &[Entry],
    logs: Vec<LogCheck>,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Report {
    let mut by_secret: HashMap<&str, Vec<&Entry>> = HashMap::new();
    for entry in entries.iter().filter(|e| e.ts >= since && e.ts < until) {
        if let Some(secret) = entry.event.secret() {
            by_secret.entry(secret).or_default().push(entry);
        }
    }
    let secrets = policy
        .secrets
        .iter()
        .map(|secret| {
            let history = by_secret.remove(secret.name.as_str()).unwrap_or_default();
            secret_report(secret, &history, since, until)
        })
        .collect();
    Report {
        generated_at: Utc::now(),
        since,
        until,
        policy: policy.source.display().to_string(),
        logs,
        secrets,
    }
}

fn secret_report(
    secret: &SecretPolicy,
    history: &[&Entry],
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> SecretReport {
    // Why each version was started, by version id (a replica's log may hold the start).
    let mut triggers: HashMap<&str, &Trigger> = HashMap::new();
    let mut rotations = Vec::new();
    let mut failures = Vec::new();
    let mut rollbacks = Vec::new();
    for entry in history {
        match &entry.event {
            AuditEvent::RotationStarted {
                version, trigger, ..
            } => {
                // The first start names the real reason; a recovery restart keeps it.
                triggers.entry(version).or_insert(trigger);
            }
            AuditEvent::RotationSucceeded { version, .. } => {
                // Two replicas may both log the same version's success: count it once.
                if rotations.iter().any(|r: &Rotation| &r.version == version) {
                    continue;
                }
                let id = VersionId::new(version.clone());
                let slot = id.slot();
                let (trigger, by) = triggers
                    .get(version.as_str())
                    .map(|t| trigger_name(t))
                    .unwrap_or(("unknown", None));
                // Creation, manual and max-age rotations answer no schedule slot, even when
                // (like a first creation) their id names one.
                let scheduled = !matches!(trigger, "initial" | "manual" | "max_age");
                let timeliness = match slot {
                    Some(slot) if scheduled => {
                        if entry.ts <= due_at(secret, slot) + ON_TIME_TOLERANCE {
                            Timeliness::OnTime
                        } else {
                            Timeliness::Late
                        }
                    }
                    _ => Timeliness::Unscheduled,
                };
                rotations.push(Rotation {
                    at: entry.ts,
                    version: version.clone(),
                    slot,
                    trigger: trigger.to_owned(),
                    by,
                    timeliness,
                });
            }
            AuditEvent::RotationFailed { step, error, .. } => failures.push(Failure {
                at: entry.ts,
                step: step.clone(),
                error: error.clone(),
            }),
            AuditEvent::RollbackFailed { error, .. } => failures.push(Failure {
                at: entry.ts,
                step: ROLLBACK_STEP.to_owned(),
                error: error.clone(),
            }),
            AuditEvent::RolledBack { from, to, by, .. } => rollbacks.push(Rollback {
                at: entry.ts,
                from: from.clone(),
                to: to.clone(),
                by: by.clone(),
            }),
            _ => {}
        }
    }

    // Slots that came due inside the period, from the secret's first rotation on (before
    // it existed nothing could be missed).
    let first = rotations.first().map(|r| r.at);
    let served: std::collections::HashSet<DateTime<Utc>> =
        rotations.iter().filter_map(|r| r.slot).collect();
    let mut expected = 0;
    let mut missed = Vec::new();
    let mut truncated = false;
    if let (Some(first), true) = (first, secret.enabled) {
        let mut cursor = first.max(since);
        while let Some(slot) = secret.schedule.next_after(cursor) {
            // Only slots whose grace to be rotated on time has fully passed are judged.
            if due_at(secret, slot) + ON_TIME_TOLERANCE > until {
                break;
            }
            if expected == MAX_SLOTS {
                truncated = true;
                break;
            }
            expected += 1;
            if !served.contains(&slot) {
                missed.push(slot);
            }
            cursor = slot;
        }
    }
    // A rotation's failure counts against compliance only if no later success recovered
    // from it. A failed rollback is listed but leaves the rotation history as it was.
    let last_success = rotations.last().map(|r| r.at);
    let unrecovered = failures
        .iter()
        .filter(|f| f.step != ROLLBACK_STEP)
        .any(|f| last_success.is_none_or(|s| s < f.at));
    let compliant = missed.is_empty()
        && !unrecovered
        && rotations.iter().all(|r| r.timeliness != Timeliness::Late);
    SecretReport {
        name: secret.name.to_string(),
        owner: secret.owner.clone(),
        schedule: secret.schedule_text.clone(),
        enabled: secret.enabled,
        rotations,
        failures,
        rollbacks,
        missed,
        expected,
        slots_truncated: truncated,
        compliant,
    }
}

#[cfg(test)]
mod tests;
