//! One status model for every surface (`rekeyd status`, the HTTP API), so they never
//! disagree. Versions by id and time only: never values.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::plan::{self, Plan};
use crate::audit::Trigger;
use crate::backend::{Backend, SecretDescription};
use crate::policy::{Policy, SecretPolicy};
use crate::secret::Stage;

/// A version as status shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VersionSummary {
    /// The version id.
    pub id: String,
    /// When the backend stored it.
    pub created_at: DateTime<Utc>,
}

/// Where a secret stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Rotated on schedule; nothing due.
    Ok,
    /// A slot is due now.
    Due,
    /// A slot was missed or the current version is past `max_age`.
    Overdue,
    /// A rotation was interrupted; the next run finishes it.
    Interrupted,
    /// The secret does not exist in its backend yet.
    Missing,
    /// `enabled = false` in the policy.
    Disabled,
    /// The backend could not be asked.
    Error,
}

/// One secret's status.
#[derive(Clone, Debug, Serialize)]
pub struct SecretStatus {
    /// The secret.
    pub name: String,
    /// Its backend instance.
    pub backend: String,
    /// The schedule as written.
    pub schedule: String,
    /// Its owner.
    pub owner: Option<String>,
    /// Summary state.
    pub state: State,
    /// The current version.
    pub current: Option<VersionSummary>,
    /// The previous version.
    pub previous: Option<VersionSummary>,
    /// A pending version.
    pub pending: Option<VersionSummary>,
    /// When the current version was stored.
    pub last_rotated: Option<DateTime<Utc>>,
    /// When the next rotation is due (now, if due or overdue).
    pub next_due: Option<DateTime<Utc>>,
    /// Why the backend could not be asked.
    pub error: Option<String>,
}

fn summary(state: &SecretDescription, stage: Stage) -> Option<VersionSummary> {
    state.stage(stage).map(|v| VersionSummary {
        id: v.id.to_string(),
        created_at: v.created_at,
    })
}

/// The status of one secret from what its backend said.
pub fn status_of(
    secret: &SecretPolicy,
    described: Result<Option<&SecretDescription>, String>,
    now: DateTime<Utc>,
) -> SecretStatus {
    let mut status = SecretStatus {
        name: secret.name.to_string(),
        backend: secret.backend.clone(),
        schedule: secret.schedule_text.clone(),
        owner: secret.owner.clone(),
        state: State::Ok,
        current: None,
        previous: None,
        pending: None,
        last_rotated: None,
        next_due: None,
        error: None,
    };
    let described = match described {
        Ok(d) => d,
        Err(e) => {
            status.state = State::Error;
            status.error = Some(e);
            return status;
        }
    };
    if let Some(d) = described {
        status.current = summary(d, Stage::Current);
        status.previous = summary(d, Stage::Previous);
        status.pending = summary(d, Stage::Pending);
        status.last_rotated = status.current.as_ref().map(|c| c.created_at);
    }
    let (state, next_due) = match plan::plan(secret, described, now) {
        Plan::Recover { .. } => (State::Interrupted, Some(now)),
        Plan::Rotate(due) => match due.trigger {
            Trigger::Initial => (State::Missing, Some(now)),
            Trigger::CatchUp | Trigger::MaxAge => (State::Overdue, Some(now)),
            _ => (State::Due, Some(now)),
        },
        Plan::Wait { until } => (State::Ok, Some(until)),
        Plan::Idle => (State::Ok, None),
    };
    status.state = if secret.enabled {
        state
    } else {
        State::Disabled
    };
    status.next_due = if secret.enabled { next_due } else { None };
    status
}

/// The status of every secret in the policy, asking the backends.
pub async fn collect(
    policy: &Policy,
    backends: &BTreeMap<String, Arc<dyn Backend>>,
    now: DateTime<Utc>,
) -> Vec<SecretStatus> {
    let mut out = Vec::with_capacity(policy.secrets.len());
    for secret in &policy.secrets {
        let described = match backends.get(&secret.backend) {
            None => Err(format!("backend {:?} is not open", secret.backend)),
            Some(b) => match b.describe(&secret.name).await {
                Ok(d) => Ok(Some(d)),
                Err(e) if e.is_not_found() => Ok(None),
                Err(e) => Err(e.to_string()),
            },
        };
        out.push(status_of(
            secret,
            described.as_ref().map(Option::as_ref).map_err(Clone::clone),
            now,
        ));
    }
    out
}
