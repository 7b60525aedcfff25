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
    /// An operator asked to make the previous version current again. Written before the
    /// backend is touched, so a crash in between is found and closed at the next start:
    /// `rolled_back` or `rollback_failed` ends it.
    RollbackStarted {
        /// The secret.
        secret: String,
        /// The version that was current.
        from: String,
        /// The version to make current.
        to: String,
        /// Who asked.
        by: String,
    },
    /// A rollback did not happen: the backend refused it, or the process stopped before
    /// the backend made `to` current. `from` is still current.
    RollbackFailed {
        /// The secret.
        secret: String,
        /// The version that stays current.
        from: String,
        /// The version that was to be made current.
        to: String,
        /// Why, without any value.
        error: String,
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
    /// A webhook was delivered (the receiver answered 2xx).
    NotificationDelivered {
        /// The message id (`webhook-id`).
        id: String,
        /// The notify target.
        target: String,
        /// The event type (`secret.rotated`, …).
        notification: String,
        /// The secrets it was about.
        secrets: Vec<String>,
        /// Attempts it took.
        attempts: u32,
        /// The status code.
        status: u16,
    },
    /// A delivery attempt failed and will be retried.
    NotificationAttemptFailed {
        /// The message id.
        id: String,
        /// The notify target.
        target: String,
        /// The event type.
        notification: String,
        /// Which attempt this was (1-based).
        attempt: u32,
        /// What happened (status, timeout, connection error; never the URL or a body).
        error: String,
        /// How long until the next attempt.
        retry_in_ms: u64,
    },
    /// A webhook will not be delivered: given up, refused with a final status, or cancelled.
    NotificationFailed {
        /// The message id.
        id: String,
        /// The notify target.
        target: String,
        /// The event type.
        notification: String,
        /// The secrets it was about.
        secrets: Vec<String>,
        /// Attempts made.
        attempts: u32,
        /// Why.
        reason: String,
    },
    /// Several queued webhooks for one target were sent as one batch.
    NotificationsCoalesced {
        /// The batch's message id.
        id: String,
        /// The notify target.
        target: String,
        /// The ids of the messages it carries.
        parts: Vec<String>,
    },
    /// A notify target answered 410 Gone and gets nothing more until its URL changes.
    EndpointDisabled {
        /// The notify target.
        target: String,
        /// The status that disabled it.
        status: u16,
    },
    /// A notify target's circuit breaker opened: nothing is sent until the cooldown ends.
    EndpointBreakerOpened {
        /// The notify target.
        target: String,
        /// Failed attempts in a row that opened it.
        failures: u32,
        /// How long it stays open before one probe.
        cooldown_ms: u64,
    },
    /// A probe succeeded: the breaker closed and deliveries resume.
    EndpointBreakerClosed {
        /// The notify target.
        target: String,
    },
    /// A consumer confirmed or refused a pending version of a gated secret.
    ConfirmationRecorded {
        /// The secret.
        secret: String,
        /// The pending version.
        version: String,
        /// The notify target that answered.
        target: String,
        /// `confirmed` or `refused`.
        decision: String,
        /// `response` (to the pending webhook), `cli` or `api`.
        via: String,
        /// The status code for a response, the operator otherwise.
        by: String,
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
            AuditEvent::RollbackStarted { .. } => "rollback_started",
            AuditEvent::RollbackFailed { .. } => "rollback_failed",
            AuditEvent::RolledBack { .. } => "rolled_back",
            AuditEvent::SlotAlreadyDone { .. } => "slot_already_done",
            AuditEvent::NotificationDelivered { .. } => "notification_delivered",
            AuditEvent::NotificationAttemptFailed { .. } => "notification_attempt_failed",
            AuditEvent::NotificationFailed { .. } => "notification_failed",
            AuditEvent::NotificationsCoalesced { .. } => "notifications_coalesced",
            AuditEvent::EndpointDisabled { .. } => "endpoint_disabled",
            AuditEvent::EndpointBreakerOpened { .. } => "endpoint_breaker_opened",
            AuditEvent::EndpointBreakerClosed { .. } => "endpoint_breaker_closed",
            AuditEvent::ConfirmationRecorded { .. } => "confirmation_recorded",
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
            | AuditEvent::RollbackStarted { secret, .. }
            | AuditEvent::RollbackFailed { secret, .. }
            | AuditEvent::RolledBack { secret, .. }
            | AuditEvent::SlotAlreadyDone { secret, .. }
            | AuditEvent::ConfirmationRecorded { secret, .. } => Some(secret),
            AuditEvent::NotificationDelivered { secrets, .. }
            | AuditEvent::NotificationFailed { secrets, .. }
                if secrets.len() == 1 =>
            {
                secrets.first().map(String::as_str)
            }
            _ => None,
        }
    }

    /// True when the event is about `secret` (a batch notification is about several).
    pub fn concerns(&self, secret: &str) -> bool {
        match self {
            AuditEvent::NotificationDelivered { secrets, .. }
            | AuditEvent::NotificationFailed { secrets, .. } => secrets.iter().any(|s| s == secret),
            other => other.secret() == Some(secret),
        }
    }
}
