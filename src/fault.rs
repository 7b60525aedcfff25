//! Crash points for the fault-injection tests.
//!
//! `REKEYD_CRASH_AT=<point>` makes the process abort (no unwinding, no flushing: as abrupt
//! as `kill -9`) when it reaches that point. The points sit on every boundary between
//! durable steps, so the tests can prove that a restart finishes or rolls back whatever a
//! crash left. Unset, this costs one cached lookup per point.

use std::sync::OnceLock;

/// Every crash point of a rotation, in the order a rotation passes them.
pub const POINTS: [&str; 6] = [
    "after_started",
    "after_put",
    "after_pending_audited",
    "after_promote",
    "after_promoted_audited",
    "after_retire",
];

/// Crash points that only notifications reach: a rotation of a secret with notify targets
/// (and, for the gate points, with `confirm`), and the delivery worker.
pub const NOTIFY_POINTS: [&str; 10] = [
    // The pending event is in the outbox; the gate has not been waited on.
    "after_pending_notified",
    // Every required target confirmed; the version is not promoted yet.
    "after_confirmed",
    // The failed event is in the outbox; the pending version is not discarded yet.
    "after_failed_notified",
    // The rotated event is in the outbox; `rotation_succeeded` is not audited yet.
    "after_rotated_notified",
    // A receiver answered 2xx; the outbox has not recorded the delivery yet.
    "notify_after_send",
    // An outcome is audited; the outbox has not recorded it yet.
    "notify_after_outcome_audited",
    // Outcomes are audited and recorded in the outbox.
    "notify_after_outcome_recorded",
    // A gated pending event's response is recorded as the target's answer; its message is
    // not closed yet.
    "notify_after_answer_recorded",
    // A consumer's answer is audited; the confirmations store has not recorded it yet.
    "after_confirmation_audited",
    // A batch is in the outbox and its parts are closed into it; `notifications_coalesced`
    // is not audited yet.
    "notify_after_batch_stored",
];

/// Crash points of a rollback, in the order it passes them.
pub const ROLLBACK_POINTS: [&str; 2] = [
    // `rollback_started` is audited; the backend is untouched.
    "rollback_after_started",
    // The previous version is current again; `rolled_back` is not audited yet.
    "rollback_after_promote",
];

/// Crash points inside the Vault KV v1 backend's promote, which takes several writes.
pub(crate) const VAULT_POINTS: [&str; 2] = [
    // `meta.promoting` names the version being promoted; `previous` and the main path are
    // not written yet.
    "vault_promote_after_marked",
    // `previous` holds the current value; the main path does not hold the new one yet.
    "vault_promote_after_previous",
];

/// Crash points inside the file store's writes.
pub(crate) const STORE_POINTS: [&str; 1] = [
    // A record is appended to a secret's file (visible to readers) but not fdatasynced.
    "store_after_append",
];

fn armed() -> Option<&'static str> {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    ARMED
        .get_or_init(|| std::env::var("REKEYD_CRASH_AT").ok())
        .as_deref()
}

/// Aborts the process if `point` is the armed crash point.
pub(crate) fn point(point: &str) {
    debug_assert!(
        [
            &POINTS[..],
            &NOTIFY_POINTS,
            &ROLLBACK_POINTS,
            &VAULT_POINTS,
            &STORE_POINTS,
        ]
        .iter()
        .any(|points| points.contains(&point)),
        "unknown crash point {point}"
    );
    if armed() == Some(point) {
        eprintln!("rekeyd: REKEYD_CRASH_AT={point}: aborting");
        std::process::abort();
    }
}
