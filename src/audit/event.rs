//! What the audit log records. Ids and fingerprints only: never a value.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Why a rotation ran.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Trigger {
    /// Its schedule slot came due.
    Schedule,
    /// A slot was missed while rekeyd was down and is caught up now.
    CatchUp,
    /// The current version was older than `max_age`.
    MaxAge,
    /// An interrupted rotation found at start-up.
    Recovery,
    /// Someone asked for it.
    Manual {
        /// Who asked (`user@host` on the CLI, the token's name on the API).
        by: String,
    },
    /// The secret did not exist yet.
    Initial,
}

/// One audit event. Serialized flat into the entry with `"event": "<name>"`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum AuditEvent {
    /// The daemon started.
    DaemonStarted {
        /// rekeyd's version.
        version: String,
        /// Process id.
        pid: u32,
    },
    /// The daemon is stopping.
    DaemonStopping {
        /// What asked it to stop (`SIGTERM`, `SIGINT`).
        reason: String,
        /// Rotations still running when it was asked.
        in_flight: usize,
    },
    /// A policy was accepted.
    PolicyLoaded {
        /// The policy file.
        path: String,
        /// SHA-256 of the file's bytes.
        digest: String,
        /// How many secrets it defines.
        secrets: usize,
    },
    /// A policy was refused; the old one (if any) keeps running.
    PolicyRejected {
        /// The policy file.
        path: String,
        /// How many problems were found.
        errors: usize,
        /// The first problem, as printed.
        first_error: String,
    },
    /// A rotation began.
    RotationStarted {
        /// The secret.
        secret: String,
        /// The backend instance.
        backend: String,
        /// The version id it will write.
        version: String,
        /// The schedule slot (absent for manual rotations).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        slot: Option<DateTime<Utc>>,
        /// Why it ran.
        trigger: Trigger,
    },
    /// A pending version was written (or found already written by a retry or a replica).
    PendingStored {
        /// The secret.
        secret: String,
        /// The pending version.
        version: String,
        /// `created` or `already_present`.
        outcome: String,
        /// Keyed HMAC-SHA256 of the value, for correlation without disclosure.
        fingerprint: String,
    },
    /// A version became current.
    Promoted {
        /// The secret.
        secret: String,
        /// The new current version.
        version: String,
        /// The version that became previous, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        previous: Option<String>,
    },
    /// A rotation finished.
    RotationSucceeded {
        /// The secret.
        secret: String,
        /// The new current version.
        version: String,
        /// Wall time from start to finish.
        duration_ms: u64,
    },
    /// A rotation failed at a step.
    RotationFailed {
        /// The secret.
        secret: String,
        /// The version it was writing, if it got that far.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<String>,
        /// The step that failed (`describe`, `generate`, `put_pending`, `promote`, …).
        step: String,
        /// The error, as printed (errors never contain values).
        error: String,
        /// Whether it will be retried.
        will_retry: bool,
    },
    /// A pending version was abandoned and the current one left as it was.
    PendingDiscarded {
        /// The secret.
        secret: String,
        /// The abandoned version.
        version: String,
        /// Why.
        reason: String,
    },
    /// An interrupted rotation was found at start-up.
    RecoveryFound {
        /// The secret.
        secret: String,
        /// The pending version found.
        version: String,
        /// `resume` (finish it) or `discard` (roll it back).
        action: String,
    },
    /// A secret was rolled back: its previous version made current again.
    RolledBack {
        /// The secret.
        secret: String,
        /// The version that was current.
        from: String,
        /// The version that is current now.
        to: String,
        /// Who asked.
        by: String,
    },
    /// A slot was already rotated (by a replica or an earlier run): nothing to do.
    SlotAlreadyDone {
        /// The secret.
        secret: String,
        /// The version that is current for the slot.
        version: String,
    },
}

impl AuditEvent {
    /// The `event` name as serialized (`rotation_succeeded`, …).
    pub fn name(&self) -> &'static str {
        match self {
            AuditEvent::DaemonStarted { .. } => "daemon_started",
            AuditEvent::DaemonStopping { .. } => "daemon_stopping",
            AuditEvent::PolicyLoaded { .. } => "policy_loaded",
            AuditEvent::PolicyRejected { .. } => "policy_rejected",
            AuditEvent::RotationStarted { .. } => "rotation_started",
            AuditEvent::PendingStored { .. } => "pending_stored",
            AuditEvent::Promoted { .. } => "promoted",
            AuditEvent::RotationSucceeded { .. } => "rotation_succeeded",
            AuditEvent::RotationFailed { .. } => "rotation_failed",
            AuditEvent::PendingDiscarded { .. } => "pending_discarded",
            AuditEvent::RecoveryFound { .. } => "recovery_found",
            AuditEvent::RolledBack { .. } => "rolled_back",
            AuditEvent::SlotAlreadyDone { .. } => "slot_already_done",
        }
    }

    /// The secret the event is about, if any.
    pub fn secret(&self) -> Option<&str> {
        match self {
            AuditEvent::RotationStarted { secret, .. }
            | AuditEvent::PendingStored { secret, .. }
            | AuditEvent::Promoted { secret, .. }
            | AuditEvent::RotationSucceeded { secret, .. }
            | AuditEvent::RotationFailed { secret, .. }
            | AuditEvent::PendingDiscarded { secret, .. }
            | AuditEvent::RecoveryFound { secret, .. }
            | AuditEvent::RolledBack { secret, .. }
            | AuditEvent::SlotAlreadyDone { secret, .. } => Some(secret),
            _ => None,
        }
    }
}
