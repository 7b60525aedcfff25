//! The rotation state machine: stage a pending version → notify (and, for a gated secret,
//! wait for its consumers to confirm) → promote → notify → retire, with an audit entry or an
//! outbox message made durable before each step counts as done.
//!
//! A crash between any two steps leaves the backend in a state [`plan::plan`] recognises
//! (a pending version that is not current), and [`Engine::recover`] finishes it. Version ids
//! come from the secret and its slot, so a retry or a second replica repeats the same
//! idempotent calls instead of making a second version.

mod interrupted;
pub mod plan;
pub mod status;

pub use crate::fault::NOTIFY_POINTS as NOTIFY_CRASH_POINTS;
pub use crate::fault::POINTS as CRASH_POINTS;
pub use crate::fault::ROLLBACK_POINTS as ROLLBACK_CRASH_POINTS;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use ring::rand::SystemRandom;

use crate::audit::{AuditError, AuditEvent, AuditLog, Fingerprinter, Trigger};
use crate::backend::{self, Backend, PutOutcome, SecretDescription, Selector, VersionInfo};
use crate::generate::{self, GenerateError, GeneratorSpec};
use crate::notify::{EventType, GateOutcome, IdKey, Notifier, NotifyError, SecretEvent};
use crate::policy::SecretPolicy;
use crate::secret::{Stage, VersionId};
use plan::{Due, Plan};

/// Which try of a secret's reconcile this is. Failure entries say whether it will be
/// retried, and a secret whose backend cannot even be asked about it is audited once per
/// run of failures, not at every retry of a long outage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// The one try (`run --once`): a failure is not retried.
    Only,
    /// The first try, or the first since the last success: retried if it fails.
    First,
    /// A retry after a failure that is already on record.
    Retry,
}

impl Attempt {
    fn will_retry(self) -> bool {
        self != Attempt::Only
    }
}

/// Why a rotation step failed. Messages never contain values.
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    /// A backend call failed.
    #[error("{step}: {source}")]
    Backend {
        /// The step.
        step: &'static str,
        /// The backend's error.
        #[source]
        source: backend::Error,
    },
    /// Generating the value failed.
    #[error("generate: {0}")]
    Generate(#[from] GenerateError),
    /// The audit log could not record a step, so the step is not considered done.
    #[error("audit: {0}")]
    Audit(#[from] AuditError),
    /// The policy names a backend that is not open.
    #[error("backend {0:?} is not configured")]
    UnknownBackend(String),
    /// A request the engine refuses (e.g. rollback with no previous version).
    #[error("{0}")]
    Refused(String),
    /// A notification could not be made durable, so the step that triggers it is not done.
    #[error("notify: {0}")]
    Notify(#[from] NotifyError),
    /// A gated promotion was not confirmed: the pending version was discarded and the
    /// current one left untouched.
    #[error("not promoted: {0}")]
    NotConfirmed(String),
}

impl RotationError {
    /// The step that failed, for audit entries and metrics.
    pub fn step(&self) -> &'static str {
        match self {
            RotationError::Backend { step, .. } => step,
            RotationError::Generate(_) => "generate",
            RotationError::Audit(_) => "audit",
            RotationError::UnknownBackend(_) => "backend",
            RotationError::Refused(_) => "refused",
            RotationError::Notify(_) => "notify",
            RotationError::NotConfirmed(_) => "confirm",
        }
    }

    /// True when the backend said the secret or version does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, RotationError::Backend { source, .. } if source.is_not_found())
    }
}

fn step(step: &'static str) -> impl FnOnce(backend::Error) -> RotationError {
    move |source| RotationError::Backend { step, source }
}

/// How a rotation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A new version is current.
    Rotated {
        /// The new current version.
        version: VersionId,
        /// The version that became previous.
        previous: Option<VersionId>,
    },
    /// The slot's version was current already (a replica or an earlier run did it).
    AlreadyDone {
        /// The current version.
        version: VersionId,
    },
    /// A pending version left by someone else was discarded.
    Discarded {
        /// The discarded version.
        version: VersionId,
    },
}

/// Runs rotations against the configured backends and records them in the audit log.
#[derive(Debug)]
pub struct Engine {
    backends: BTreeMap<String, Arc<dyn Backend>>,
    audit: AuditLog,
    fingerprinter: Fingerprinter,
    rng: SystemRandom,
    notifier: Option<Arc<Notifier>>,
    /// Secrets with rotations or rollbacks a dead process left open that start-up could
    /// not close (their backend was unreachable): closed before anything else is done to
    /// that secret.
    deferred_interrupted: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Engine {
    /// An engine over these backends (by policy name) and this audit log.
    pub fn new(
        backends: BTreeMap<String, Arc<dyn Backend>>,
        audit: AuditLog,
        fingerprinter: Fingerprinter,
    ) -> Self {
        Self {
            backends,
            audit,
            fingerprinter,
            rng: SystemRandom::new(),
            notifier: None,
            deferred_interrupted: std::sync::Mutex::default(),
        }
    }

    /// The same engine, notifying (and gating) through `notifier`.
    pub fn with_notifier(mut self, notifier: Arc<Notifier>) -> Self {
        self.notifier = Some(notifier);
        self
    }

    /// The notifier, if notifications are on.
    pub fn notifier(&self) -> Option<&Arc<Notifier>> {
        self.notifier.as_ref()
    }

    /// The backends by policy name.
    pub fn backends(&self) -> &BTreeMap<String, Arc<dyn Backend>> {
        &self.backends
    }

    /// The audit log the engine writes to.
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// The backend a secret lives in.
    pub fn backend(&self, name: &str) -> Result<&Arc<dyn Backend>, RotationError> {
        self.backends
            .get(name)
            .ok_or_else(|| RotationError::UnknownBackend(name.to_owned()))
    }

    /// Describes a secret; `None` when it does not exist yet.
    pub async fn describe(
        &self,
        secret: &SecretPolicy,
    ) -> Result<Option<backend::SecretDescription>, RotationError> {
        match self.backend(&secret.backend)?.describe(&secret.name).await {
            Ok(d) => Ok(Some(d)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(RotationError::Backend {
                step: "describe",
                source: e,
            }),
        }
    }

    /// Brings one secret up to date: recovers a leftover, then rotates if due. Returns the
    /// plan that remains (normally `Wait`). `attempt` labels failure entries.
    ///
    /// Describes the secret once; after each action the description is updated from what
    /// the action did, so a scheduled rotation costs describe + put + promote and nothing
    /// more (issue 4 measures this against the protocol minimum).
    pub async fn reconcile(
        &self,
        secret: &SecretPolicy,
        attempt: Attempt,
    ) -> Result<Plan, RotationError> {
        let will_retry = attempt.will_retry();
        let _serial = serialize(&secret.name).await;
        let looked = match self.close_deferred_interrupted(secret).await {
            Ok(()) => self.describe(secret).await,
            Err(error) => Err(error),
        };
        let mut state = match looked {
            Ok(state) => state,
            // Closing deferred work describes the secret first: an outage there is the
            // same outage, and must be on record too.
            Err(error) if error.step() == "describe" => {
                return Err(self.describe_failed(secret, error, attempt).await);
            }
            Err(error) => return Err(error),
        };
        // Recover, then rotate, then report the wait: three passes at most.
        for _ in 0..3 {
            let outcome = match plan::plan(secret, state.as_ref(), Utc::now()) {
                Plan::Recover { version, resume } => {
                    self.recover(secret, state.as_ref(), &version, resume, will_retry)
                        .await?
                }
                Plan::Rotate(due) => {
                    self.rotate(secret, &due, state.as_ref(), will_retry)
                        .await?
                }
                other => return Ok(other),
            };
            state = Some(after(secret, state, &outcome));
        }
        Ok(plan::plan(secret, state.as_ref(), Utc::now()))
    }

    /// Audits a secret the backend could not be asked about: no rotation can start, due
    /// or not, and without the entry an outage would leave nothing on record but late
    /// rotations. A retry's failure is the same outage, already on record.
    async fn describe_failed(
        &self,
        secret: &SecretPolicy,
        error: RotationError,
        attempt: Attempt,
    ) -> RotationError {
        if attempt != Attempt::Retry {
            // Best effort, as for a failed rotation: the caller sees the backend's error.
            let _ = self
                .audit
                .append(AuditEvent::RotationFailed {
                    secret: secret.name.to_string(),
                    version: None,
                    step: error.step().to_owned(),
                    error: error.to_string(),
                    will_retry: attempt.will_retry(),
                })
                .await;
        }
        error
    }

    /// Finishes (`resume`) or discards a pending version left by an interrupted rotation.
    pub async fn recover(
        &self,
        secret: &SecretPolicy,
        state: Option<&SecretDescription>,
        version: &VersionId,
        resume: bool,
        will_retry: bool,
    ) -> Result<Outcome, RotationError> {
        let action = if resume { "resume" } else { "discard" };
        tracing::warn!(secret = %secret.name, %version, action, "found an interrupted rotation");
        self.audit
            .append(AuditEvent::RecoveryFound {
                secret: secret.name.to_string(),
                version: version.to_string(),
                action: action.to_owned(),
            })
            .await?;
        if resume {
            let due = Due {
                version: version.clone(),
                slot: version.slot(),
                trigger: Trigger::Recovery,
            };
            return self.rotate(secret, &due, state, will_retry).await;
        }
        let backend = self.backend(&secret.backend)?;
        backend
            .discard_pending(&secret.name, version)
            .await
            .map_err(step("discard_pending"))?;
        self.audit
            .append(AuditEvent::PendingDiscarded {
                secret: secret.name.to_string(),
                version: version.to_string(),
                reason: "pending version not made by rekeyd, left by an interrupted writer"
                    .to_owned(),
            })
            .await?;
        Ok(Outcome::Discarded {
            version: version.clone(),
        })
    }

    /// Runs one rotation to the end from `state` (the secret as last described; `None` when
    /// it does not exist), auditing each step; failures are audited too.
    pub async fn rotate(
        &self,
        secret: &SecretPolicy,
        due: &Due,
        state: Option<&SecretDescription>,
        will_retry: bool,
    ) -> Result<Outcome, RotationError> {
        let started = Instant::now();
        match self.rotate_steps(secret, due, state, started).await {
            Ok(outcome) => Ok(outcome),
            Err(error) => {
                tracing::error!(secret = %secret.name, version = %due.version, step = error.step(), error = %error, will_retry, "rotation failed");
                // Best effort: if the audit log itself failed, this fails too and the
                // original error is what the caller sees.
                let _ = self
                    .audit
                    .append(AuditEvent::RotationFailed {
                        secret: secret.name.to_string(),
                        version: Some(due.version.to_string()),
                        step: error.step().to_owned(),
                        error: error.to_string(),
                        will_retry,
                    })
                    .await;
                Err(error)
            }
        }
    }

    async fn rotate_steps(
        &self,
        secret: &SecretPolicy,
        due: &Due,
        state: Option<&SecretDescription>,
        started: Instant,
    ) -> Result<Outcome, RotationError> {
        let backend = self.backend(&secret.backend)?;
        let name = &secret.name;
        let current = state.and_then(|s| s.stage(Stage::Current));
        if current.is_some_and(|c| c.id == due.version) {
            self.audit
                .append(AuditEvent::SlotAlreadyDone {
                    secret: name.to_string(),
                    version: due.version.to_string(),
                })
                .await?;
            return Ok(Outcome::AlreadyDone {
                version: due.version.clone(),
            });
        }
        let previous = current.map(|c| c.id.clone());
        let staged = state.and_then(|s| s.version(&due.version)).is_some();

        tracing::info!(secret = %name, version = %due.version, trigger = ?due.trigger, "rotation started");
        self.audit
            .append(AuditEvent::RotationStarted {
                secret: name.to_string(),
                backend: secret.backend.clone(),
                version: due.version.to_string(),
                slot: due.slot,
                trigger: due.trigger.clone(),
            })
            .await?;
        crate::fault::point("after_started");

        // Confirmations older than the pending version are for an earlier attempt.
        let stored_since = state
            .and_then(|s| s.version(&due.version))
            .map(|v| v.created_at)
            .unwrap_or_else(Utc::now);
        // The value whose fingerprint is audited: ours when we stored it, else what the
        // backend holds (a retry, a restart or a replica stored it first).
        let (outcome, ours) = if staged {
            (PutOutcome::AlreadyPresent, None)
        } else {
            // Only a JSON template keeps fields of the current value; nothing else reads it.
            let current_value = match (&secret.generator, &previous) {
                (GeneratorSpec::Json(_), Some(_)) => Some(
                    backend
                        .read(name, &Selector::Stage(Stage::Current))
                        .await
                        .map_err(step("read_current"))?,
                ),
                _ => None,
            };
            let value = generate::generate(&secret.generator, current_value.as_ref(), &self.rng)?;
            match backend.put_pending(name, &due.version, &value).await {
                Ok(PutOutcome::Created) => (PutOutcome::Created, Some(value)),
                Ok(PutOutcome::AlreadyPresent) => (PutOutcome::AlreadyPresent, Some(value)),
                // A replica stored its own value under the same slot id first: use theirs.
                Err(backend::Error::Conflict { .. }) => (PutOutcome::AlreadyPresent, None),
                Err(e) => {
                    return Err(RotationError::Backend {
                        step: "put_pending",
                        source: e,
                    });
                }
            }
        };
        crate::fault::point("after_put");

        let stored = match ours {
            Some(value) => value,
            None => backend
                .read(name, &Selector::Version(due.version.clone()))
                .await
                .map_err(step("read_pending"))?,
        };
        let fingerprint = self.fingerprinter.fingerprint(&stored);
        drop(stored);
        self.audit
            .append(AuditEvent::PendingStored {
                secret: name.to_string(),
                version: due.version.to_string(),
                outcome: match outcome {
                    PutOutcome::Created => "created",
                    PutOutcome::AlreadyPresent => "already_present",
                }
                .to_owned(),
                fingerprint: fingerprint.clone(),
            })
            .await?;
        crate::fault::point("after_pending_audited");

        // Consumers learn of the pending version before it can become current. The id is
        // derived from the stored value's fingerprint: a resume after a crash re-queues
        // nothing, a retry that stores a new value asks again.
        self.notify(
            secret,
            EventType::RotationPending,
            IdKey::Derived(&fingerprint),
            || {
                let mut data = event_data(secret, due, "pending");
                data.current = previous.as_ref().map(ToString::to_string);
                if let Some(confirm) = &secret.confirm {
                    data.confirm = confirm.targets.clone();
                    data.confirm_by = Some(
                        Utc::now()
                            + chrono::Duration::from_std(confirm.timeout)
                                .unwrap_or(chrono::Duration::MAX),
                    );
                }
                data
            },
        )
        .await?;
        if secret.confirm.is_some() {
            self.gate(secret, due, previous.as_ref(), stored_since, &fingerprint)
                .await?;
        }

        backend
            .promote(name, &due.version, previous.as_ref())
            .await
            .map_err(step("promote"))?;
        crate::fault::point("after_promote");
        self.audit
            .append(AuditEvent::Promoted {
                secret: name.to_string(),
                version: due.version.to_string(),
                previous: previous.as_ref().map(ToString::to_string),
            })
            .await?;
        crate::fault::point("after_promoted_audited");

        // Durable before the rotation counts as done, so a crash from here on still
        // notifies (the restart re-queues it under the same id, which is a no-op if it is
        // already there).
        self.notify(secret, EventType::Rotated, IdKey::Derived(""), || {
            rotated_data(secret, due, previous.as_ref())
        })
        .await?;

        // Retiring is housekeeping: a failure here does not undo a finished rotation.
        if let Err(e) = backend.retire(name).await {
            tracing::warn!(secret = %name, error = %e, "could not retire old versions");
        }
        crate::fault::point("after_retire");

        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.audit
            .append(AuditEvent::RotationSucceeded {
                secret: name.to_string(),
                version: due.version.to_string(),
                duration_ms,
            })
            .await?;
        tracing::info!(secret = %name, version = %due.version, previous = ?previous.as_ref().map(VersionId::as_str), duration_ms, "rotation succeeded");
        Ok(Outcome::Rotated {
            version: due.version.clone(),
            previous,
        })
    }

    /// Queues one event for every notify target of `secret` (nothing without a notifier or
    /// targets); returns once it is durable.
    async fn notify(
        &self,
        secret: &SecretPolicy,
        kind: EventType,
        id: IdKey<'_>,
        data: impl FnOnce() -> SecretEvent,
    ) -> Result<(), RotationError> {
        let Some(notifier) = self.notifier.as_ref().filter(|_| !secret.notify.is_empty()) else {
            return Ok(());
        };
        notifier.enqueue(secret, kind, &data(), id).await?;
        match kind {
            EventType::RotationPending => crate::fault::point("after_pending_notified"),
            EventType::Rotated => crate::fault::point("after_rotated_notified"),
            EventType::RotationFailed => crate::fault::point("after_failed_notified"),
            EventType::RolledBack | EventType::Batch => {}
        }
        Ok(())
    }

    /// Waits for every `confirm` target to accept the pending version. Without that, the
    /// version is discarded (the current one untouched), the failure is queued for the
    /// consumers, audited, and returned.
    async fn gate(
        &self,
        secret: &SecretPolicy,
        due: &Due,
        current: Option<&VersionId>,
        since: chrono::DateTime<Utc>,
        fingerprint: &str,
    ) -> Result<(), RotationError> {
        let Some(confirm) = &secret.confirm else {
            return Ok(());
        };
        let Some(notifier) = &self.notifier else {
            return Err(RotationError::Refused(format!(
                "{} must be confirmed by {} before promotion, but notifications are not running",
                secret.name,
                confirm.targets.join(", ")
            )));
        };
        let version = due.version.as_str();
        tracing::info!(secret = %secret.name, %version, targets = ?confirm.targets, timeout = %crate::schedule::format_duration(confirm.timeout), "waiting for confirmation");
        // A crash after this gate was given up but before the discard: the decision stands.
        let decided = notifier.abandoned(secret, version, fingerprint).await;
        let outcome = match decided {
            Some(reason) => GateOutcome::Abandoned(reason),
            None => {
                notifier
                    .await_confirmation(secret, version, since, fingerprint)
                    .await
            }
        };
        let reason = match outcome {
            GateOutcome::Confirmed(_) => {
                tracing::info!(secret = %secret.name, %version, "confirmed by every required target");
                crate::fault::point("after_confirmed");
                return Ok(());
            }
            GateOutcome::Refused(answer) => format!(
                "{} refused version {version} ({} via {})",
                answer.target, answer.by, answer.via
            ),
            GateOutcome::TimedOut { missing } => format!(
                "no confirmation of version {version} from {} within {}",
                missing.join(", "),
                crate::schedule::format_duration(confirm.timeout)
            ),
            GateOutcome::Abandoned(reason) => reason,
        };
        tracing::warn!(secret = %secret.name, %version, reason = %reason, "promotion not confirmed; discarding the pending version");
        notifier
            .abandon(secret, version, fingerprint, &reason)
            .await?;
        // The failure is durable before the discard completes.
        self.notify(secret, EventType::RotationFailed, IdKey::Random, || {
            let mut data = event_data(secret, due, "discarded");
            data.current = current.map(ToString::to_string);
            data.step = Some("confirm".to_owned());
            data.reason = Some(reason.clone());
            data
        })
        .await?;
        self.backend(&secret.backend)?
            .discard_pending(&secret.name, &due.version)
            .await
            .map_err(step("discard_pending"))?;
        self.audit
            .append(AuditEvent::PendingDiscarded {
                secret: secret.name.to_string(),
                version: version.to_owned(),
                reason: format!("not confirmed: {reason}"),
            })
            .await?;
        Err(RotationError::NotConfirmed(reason))
    }

    /// Makes the previous version current again; the rolled-back version becomes previous.
    pub async fn rollback(
        &self,
        secret: &SecretPolicy,
        by: &str,
    ) -> Result<(VersionId, VersionId), RotationError> {
        let _serial = serialize(&secret.name).await;
        let backend = self.backend(&secret.backend)?;
        // A rollback a stopped process left in effect but unrecorded: doing it again would
        // swap straight back, which is not what the operator (re)asked for. Once a rotation
        // has replaced it, a new rollback is a new request.
        for (open, closed) in self.close_interrupted_of(secret).await? {
            if closed
                == (interrupted::Closed::RolledBack {
                    still_current: true,
                })
            {
                return Err(RotationError::Refused(format!(
                    "{}: an interrupted rollback ({open}) had already taken effect and is now recorded; run rollback again to swap back",
                    secret.name
                )));
            }
        }
        let state = backend
            .describe(&secret.name)
            .await
            .map_err(step("describe"))?;
        let (from, to) = rollback_versions(secret, &state)?;
        // On record before the backend changes: a crash after the promote would otherwise
        // leave a rollback no entry mentions (the next start closes it, see `interrupted`).
        self.audit
            .append(AuditEvent::RollbackStarted {
                secret: secret.name.to_string(),
                from: from.to_string(),
                to: to.to_string(),
                by: by.to_owned(),
            })
            .await?;
        crate::fault::point("rollback_after_started");
        if let Err(error) = backend.promote(&secret.name, &to, Some(&from)).await {
            let error = step("promote")(error);
            // Best effort, as for a failed rotation: the caller sees the backend's error.
            let _ = self
                .audit
                .append(AuditEvent::RollbackFailed {
                    secret: secret.name.to_string(),
                    from: from.to_string(),
                    to: to.to_string(),
                    error: error.to_string(),
                })
                .await;
            return Err(error);
        }
        crate::fault::point("rollback_after_promote");
        self.audit
            .append(AuditEvent::RolledBack {
                secret: secret.name.to_string(),
                from: from.to_string(),
                to: to.to_string(),
                by: by.to_owned(),
            })
            .await?;
        tracing::warn!(secret = %secret.name, %from, %to, by, "rolled back to the previous version");
        // After the audit entry: the rollback is done and on record whatever happens to the
        // notification (an operator undoing a bad version must not be stopped by an
        // outbox). A fresh id: rolling back to the same version twice is two events.
        let told = self
            .notify(secret, EventType::RolledBack, IdKey::Random, || {
                rolled_back_data(secret, &from, &to)
            })
            .await;
        if let Err(e) = told {
            tracing::error!(secret = %secret.name, error = %e, "rolled back, but consumers could not be notified");
        }
        Ok((from, to))
    }

    /// A manual rotation requested by `by`, refused inside the grace period unless `force`
    /// (it would drop the previous version that services may still be using).
    pub async fn rotate_manually(
        &self,
        secret: &SecretPolicy,
        by: &str,
        force: bool,
    ) -> Result<Outcome, RotationError> {
        let _serial = serialize(&secret.name).await;
        self.close_deferred_interrupted(secret).await?;
        let now = Utc::now();
        // Finish (or discard) an interrupted rotation first, as a scheduled run would.
        let mut state = self.describe(secret).await?;
        if let Plan::Recover { version, resume } = plan::plan(secret, state.as_ref(), now) {
            let outcome = self
                .recover(secret, state.as_ref(), &version, resume, false)
                .await?;
            state = Some(after(secret, state, &outcome));
        }
        if !force
            && let Some(current) = state.as_ref().and_then(|s| s.stage(Stage::Current))
            && state
                .as_ref()
                .and_then(|s| s.stage(Stage::Previous))
                .is_some()
        {
            let grace_ends = current.created_at
                + chrono::Duration::from_std(secret.grace).unwrap_or(chrono::Duration::MAX);
            if now < grace_ends {
                return Err(RotationError::Refused(format!(
                    "{} was rotated at {}; its previous version must stay readable until {} (grace {}). Use --force to rotate anyway",
                    secret.name,
                    current.created_at.to_rfc3339(),
                    grace_ends.to_rfc3339(),
                    crate::schedule::format_duration(secret.grace),
                )));
            }
        }
        let due = Due {
            version: VersionId::for_manual(&secret.name, now),
            slot: None,
            trigger: Trigger::Manual { by: by.to_owned() },
        };
        self.rotate(secret, &due, state.as_ref(), false).await
    }
}

/// The secret as it stands after `outcome`, without asking the backend again: what the
/// contract guarantees a successful step did.
fn after(
    secret: &SecretPolicy,
    state: Option<SecretDescription>,
    outcome: &Outcome,
) -> SecretDescription {
    let mut state = state.unwrap_or_else(|| SecretDescription {
        name: secret.name.clone(),
        versions: Vec::new(),
    });
    match outcome {
        Outcome::Rotated { version, previous } => {
            state
                .versions
                .retain(|v| &v.id == version || Some(&v.id) == previous.as_ref());
            for v in &mut state.versions {
                v.stages = if Some(&v.id) == previous.as_ref() {
                    vec![Stage::Previous]
                } else {
                    vec![Stage::Current]
                };
            }
            if !state.versions.iter().any(|v| &v.id == version) {
                state.versions.push(VersionInfo {
                    id: version.clone(),
                    created_at: Utc::now(),
                    stages: vec![Stage::Current],
                });
            }
        }
        Outcome::Discarded { version } => {
            for v in &mut state.versions {
                if &v.id == version {
                    v.stages.retain(|s| *s != Stage::Pending);
                }
            }
        }
        Outcome::AlreadyDone { .. } => {}
    }
    state
}

/// The fields every secret event shares.
fn event_data(secret: &SecretPolicy, due: &Due, stage: &str) -> SecretEvent {
    SecretEvent {
        secret: secret.name.to_string(),
        backend: secret.backend.clone(),
        version: due.version.to_string(),
        stage: stage.to_owned(),
        slot: due.slot,
        trigger: trigger_name(&due.trigger).to_owned(),
        ..SecretEvent::default()
    }
}

/// `data` of a `secret.rotated` event.
pub(crate) fn rotated_data(
    secret: &SecretPolicy,
    due: &Due,
    previous: Option<&VersionId>,
) -> SecretEvent {
    let mut data = event_data(secret, due, "current");
    data.previous = previous.map(ToString::to_string);
    data
}

/// The versions a rollback of `secret` in `state` would swap: (current, previous), or why
/// it is refused (no previous version, or a rotation in progress).
pub fn rollback_versions(
    secret: &SecretPolicy,
    state: &SecretDescription,
) -> Result<(VersionId, VersionId), RotationError> {
    let (Some(current), Some(previous)) =
        (state.stage(Stage::Current), state.stage(Stage::Previous))
    else {
        return Err(RotationError::Refused(format!(
            "{} has no previous version to roll back to",
            secret.name
        )));
    };
    if let Some(pending) = state.stage(Stage::Pending) {
        return Err(RotationError::Refused(format!(
            "{} has a rotation in progress (pending version {}); let it finish first",
            secret.name, pending.id
        )));
    }
    Ok((current.id.clone(), previous.id.clone()))
}

/// What `secret.rolled_back` says: `to` is current again, rolled back from `from`.
pub(crate) fn rolled_back_data(
    secret: &SecretPolicy,
    from: &VersionId,
    to: &VersionId,
) -> SecretEvent {
    SecretEvent {
        secret: secret.name.to_string(),
        backend: secret.backend.clone(),
        version: to.to_string(),
        stage: "current".to_owned(),
        previous: Some(from.to_string()),
        trigger: "manual".to_owned(),
        ..SecretEvent::default()
    }
}

fn trigger_name(trigger: &Trigger) -> &'static str {
    match trigger {
        Trigger::Schedule => "schedule",
        Trigger::CatchUp => "catch_up",
        Trigger::MaxAge => "max_age",
        Trigger::Recovery => "recovery",
        Trigger::Manual { .. } => "manual",
        Trigger::Initial => "initial",
    }
}

/// Runs one operation at a time per secret within this process: a manual rotation from
/// the API and a scheduled one would otherwise interleave, and although compare-and-swap
/// keeps that safe, the loser would fail and rotate a second time. Process-wide rather
/// than per engine, because a reload builds a new engine while old jobs finish. Other
/// processes are kept apart by the backends' idempotency and compare-and-swap.
///
/// A secret's lock lives in the table only while someone holds or waits for it: a table
/// that kept one per secret ever rotated would hold every name of a large policy.
async fn serialize(secret: &crate::secret::SecretName) -> Serialized {
    let lock = {
        let mut locks = lock_table().lock().expect("secret lock table");
        Arc::clone(locks.entry(secret.to_string()).or_default())
    };
    Serialized {
        guard: Some(lock.lock_owned().await),
        name: secret.to_string(),
    }
}

type LockTable = std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>;

fn lock_table() -> &'static LockTable {
    static LOCKS: std::sync::OnceLock<LockTable> = std::sync::OnceLock::new();
    LOCKS.get_or_init(Default::default)
}

/// Holds a secret's lock; on drop, removes the lock from the table if no one else holds
/// or waits for it (they hold a clone of the `Arc`, taken under the table's mutex).
struct Serialized {
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
    name: String,
}

impl Drop for Serialized {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut locks = lock_table().lock().unwrap_or_else(|e| e.into_inner());
        if locks
            .get(&self.name)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
        {
            locks.remove(&self.name);
        }
    }
}

/// Who is asking, for audit entries of manual actions: `$SUDO_USER` or `$USER`, at the host.
pub fn local_actor() -> String {
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".to_owned());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned());
    format!("{user}@{host}")
}

#[cfg(test)]
mod tests;
