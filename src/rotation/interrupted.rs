//! Closing rotations and rollbacks the audit log shows as started but never finished.
//!
//! A crash after `promote` but before its audit entries leaves a rotation that is complete
//! in the backend yet has no outcome in the log; a crash before the value was stored leaves
//! one with nothing in the backend. At start-up, before scheduling, each such rotation gets
//! its outcome recorded, so an auditor sees an end for every start. Only work started by
//! a process of this host that no longer runs is touched: a live `rekeyd rotate` sharing
//! the log is left alone. A rotation recorded as succeeded here also gets its `secret.rotated`
//! notification queued, under the id the interrupted process would have used (so it is
//! queued once whether or not that process got as far as queuing it).
//!
//! A rollback is closed the same way, from which version is current now: `rolled_back` when
//! the version it was to restore is current, `rollback_failed` when the one it started from
//! still is. Its `secret.rolled_back` notification (never queued by a process that stopped
//! before auditing the rollback) is queued then, under an id derived from the start entry.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::plan::Due;
use super::{Engine, RotationError, rolled_back_data, rotated_data};
use crate::audit::{self, AuditEvent, Entry, Trigger};
use crate::backend::SecretDescription;
use crate::notify::{EventType, IdKey};
use crate::policy::{Policy, SecretPolicy};
use crate::secret::{Stage, VersionId};

/// Work with a start entry and no end entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Open {
    secret: String,
    host: String,
    pid: u32,
    /// When it started (the start entry's time).
    at: DateTime<Utc>,
    work: Work,
}

impl Open {
    /// Whether both come from the same start entry (later entries may have added to
    /// what is known of it).
    fn same_start(&self, other: &Open) -> bool {
        (&self.secret, &self.host, self.pid, self.at)
            == (&other.secret, &other.host, other.pid, other.at)
    }
}

impl std::fmt::Display for Open {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.work {
            Work::Rotation { version, .. } => write!(f, "rotation to {version}")?,
            Work::Rollback { from, to, by, .. } => {
                write!(f, "rollback from {from} to {to} by {by}")?
            }
        }
        write!(f, ", process {} at {}", self.pid, self.at.to_rfc3339())
    }
}

/// What an open start began.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Work {
    Rotation {
        version: String,
        slot: Option<DateTime<Utc>>,
        trigger: Trigger,
    },
    Rollback {
        from: String,
        to: String,
        by: String,
        /// The version current right after the rollback stopped, as the secret's first
        /// later `promoted` entry shows: the version it replaced, or `to` itself when it
        /// is a recovery finishing the rollback's own promote (a backend whose promote
        /// takes several writes, such as Vault's, can stop half way). It tells whether
        /// the rollback took effect even once rotations have moved both versions out.
        then_current: Option<String>,
    },
}

/// How closing an open start ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Closed {
    /// The rotation's version is still pending: the planner's recovery finishes or
    /// discards it and records the outcome then.
    LeftToRecovery,
    /// A rotation's outcome is recorded.
    Rotation,
    /// The rollback had taken effect; `rolled_back` is recorded. `still_current`: the
    /// version it restored is current now (no rotation has replaced it since).
    RolledBack { still_current: bool },
    /// The rollback had not taken effect; `rollback_failed` is recorded.
    NotRolledBack,
}

/// The latest start per secret that no later entry ended, fed one entry at a time so the
/// log is never held whole. Only open work is kept: one rotation and one rollback per
/// secret at most, and normally none.
#[derive(Default)]
struct OpenWork {
    rotations: HashMap<String, (u64, Open)>,
    rollbacks: HashMap<String, (u64, Open)>,
    /// Entries seen, to close one secret's work in log order.
    seen: u64,
}

impl OpenWork {
    fn see(&mut self, entry: &Entry) {
        self.seen += 1;
        let seen = self.seen;
        let open = |secret: &String, work: Work| {
            let open = Open {
                secret: secret.clone(),
                host: entry.host.clone(),
                pid: entry.pid,
                at: entry.ts,
                work,
            };
            (seen, open)
        };
        match &entry.event {
            AuditEvent::RotationStarted {
                secret,
                version,
                slot,
                trigger,
                ..
            } => {
                let work = Work::Rotation {
                    version: version.clone(),
                    slot: *slot,
                    trigger: trigger.clone(),
                };
                self.rotations.insert(secret.clone(), open(secret, work));
            }
            AuditEvent::RollbackStarted {
                secret,
                from,
                to,
                by,
            } => {
                let work = Work::Rollback {
                    from: from.clone(),
                    to: to.clone(),
                    by: by.clone(),
                    then_current: None,
                };
                self.rollbacks.insert(secret.clone(), open(secret, work));
            }
            AuditEvent::RotationSucceeded {
                secret, version, ..
            }
            | AuditEvent::SlotAlreadyDone { secret, version }
            | AuditEvent::PendingDiscarded {
                secret, version, ..
            }
            | AuditEvent::RotationFailed {
                secret,
                version: Some(version),
                ..
            } if self.rotations.get(secret.as_str()).is_some_and(
                |(_, o)| matches!(&o.work, Work::Rotation { version: v, .. } if v == version),
            ) =>
            {
                self.rotations.remove(secret.as_str());
            }
            AuditEvent::Promoted {
                secret,
                version,
                previous,
            } => {
                if let Some((
                    _,
                    Open {
                        work: Work::Rollback {
                            to, then_current, ..
                        },
                        ..
                    },
                )) = self.rollbacks.get_mut(secret.as_str())
                    && then_current.is_none()
                {
                    *then_current = if version == to {
                        Some(to.clone())
                    } else {
                        previous.clone()
                    };
                }
            }
            AuditEvent::RolledBack {
                secret, from, to, ..
            }
            | AuditEvent::RollbackFailed {
                secret, from, to, ..
            } if self.rollbacks.get(secret.as_str()).is_some_and(|(_, o)| {
                matches!(&o.work, Work::Rollback { from: f, to: t, .. } if f == from && t == to)
            }) =>
            {
                self.rollbacks.remove(secret.as_str());
            }
            _ => {}
        }
    }

    /// By secret, and one secret's work in the order it started.
    fn finish(self) -> Vec<Open> {
        let mut open: Vec<(u64, Open)> = self.rotations.into_values().collect();
        open.extend(self.rollbacks.into_values());
        open.sort_by(|(a_seen, a), (b_seen, b)| (&a.secret, a_seen).cmp(&(&b.secret, b_seen)));
        open.into_iter().map(|(_, open)| open).collect()
    }
}

#[cfg(test)]
fn open_work(entries: &[Entry]) -> Vec<Open> {
    let mut open = OpenWork::default();
    for entry in entries {
        open.see(entry);
    }
    open.finish()
}

/// Whether the process that started `open` on this host has stopped (a later process
/// under its pid does not count as it).
fn is_dead_local_process(open: &Open, host: &str) -> bool {
    open.host == host
        && open.pid != std::process::id()
        && !crate::process::running_since(open.pid, open.at)
}

/// Held while open work is read from the log and closed, so that two processes (a
/// starting daemon and a `rekeyd rollback`, say) never both close the same start: the
/// second reads the log after the first has written its ends.
struct ClosingLock {
    /// Locked until dropped.
    _file: std::fs::File,
}

impl ClosingLock {
    /// Waits for the lock of the log at `audit`: a file beside it.
    async fn take(audit: &std::path::Path) -> Result<Self, RotationError> {
        let mut name = audit.file_name().unwrap_or_default().to_owned();
        name.push(".closing.lock");
        let path = audit.with_file_name(name);
        let locked = tokio::task::spawn_blocking(move || {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)?;
            file.lock()?;
            Ok::<_, std::io::Error>(file)
        })
        .await
        .map_err(|e| RotationError::Refused(format!("locking the audit log's recovery: {e}")))?;
        locked
            .map(|file| Self { _file: file })
            .map_err(|e| RotationError::Refused(format!("locking the audit log's recovery: {e}")))
    }
}

/// Events that neither open nor close a rotation or a rollback (nor tell where a rollback
/// led, as `promoted` does): start-up passes over their lines without parsing them. A
/// skip list, not a keep list, so that an event added later is read until it is put here.
const NEVER_OPEN_OR_CLOSE: &[&str] = &[
    "daemon_started",
    "daemon_stopping",
    "pending_stored",
    "recovery_found",
    "notification_delivered",
    "notification_attempt_failed",
    "notification_failed",
    "notifications_coalesced",
    "endpoint_disabled",
    "endpoint_breaker_opened",
    "endpoint_breaker_closed",
    "confirmation_recorded",
    "policy_loaded",
    "policy_rejected",
];

impl Engine {
    /// Open work of dead processes of this host, read from the whole log: of every secret,
    /// or of `only` one. Call with the [`ClosingLock`] held.
    async fn open_work_of_the_dead(&self, only: Option<&str>) -> Result<Vec<Open>, RotationError> {
        let host = crate::process::hostname();
        let stopped: Vec<Open> = self
            .open_work(only)
            .await?
            .into_iter()
            .filter(|o| only.is_none_or(|secret| o.secret == secret))
            .filter(|o| is_dead_local_process(o, &host))
            .collect();
        if stopped.is_empty() {
            return Ok(stopped);
        }
        // A process may have written its own end after the read and then exited before the
        // check. Stopped now, it can write nothing more: what is still open in a second
        // read is really left open.
        Ok(self
            .open_work(only)
            .await?
            .into_iter()
            .filter(|o| stopped.iter().any(|s| s.same_start(o)))
            .collect())
    }

    /// Work the log shows started and not ended, of any process; of every secret, or of
    /// `only` one (whose entries are found without parsing the others).
    async fn open_work(&self, only: Option<&str>) -> Result<Vec<Open>, RotationError> {
        let path = self.audit().path().to_owned();
        let only = only.map(str::to_owned);
        tokio::task::spawn_blocking(move || {
            let mut open = OpenWork::default();
            let see = |entry: audit::Entry| open.see(&entry);
            match &only {
                Some(secret) => audit::for_each_entry_about(&path, secret, see),
                None => audit::for_each_entry_except(&path, NEVER_OPEN_OR_CLOSE, see),
            }
            .map(|()| open.finish())
        })
        .await
        .map_err(|e| RotationError::Refused(format!("reading the audit log: {e}")))?
        .map_err(RotationError::Audit)
    }

    /// Records an outcome for every rotation and rollback a dead process left open.
    /// Returns how many.
    ///
    /// A secret whose backend cannot be reached now (it may be down at the very moment
    /// rekeyd starts) is not a reason to stay down: it is remembered, and its open work is
    /// closed before anything else is done to it (see
    /// [`Engine::close_deferred_interrupted`]).
    pub async fn close_interrupted(&self, policy: &Policy) -> Result<usize, RotationError> {
        let _closing = ClosingLock::take(self.audit().path()).await?;
        let mut closed = 0;
        for open in self.open_work_of_the_dead(None).await? {
            let Some(secret) = policy.secret(&open.secret) else {
                continue;
            };
            if self.is_deferred(&open.secret) {
                // Its earlier work is deferred: this one is closed after it.
                continue;
            }
            match self.close_open(secret, &open).await {
                Ok(Closed::LeftToRecovery) => {}
                Ok(_) => closed += 1,
                Err(error @ RotationError::Backend { .. }) => {
                    tracing::warn!(secret = %open.secret, %error, "cannot close interrupted work yet; it is closed before anything else is done to the secret");
                    self.deferred_interrupted
                        .lock()
                        .expect("deferred set lock")
                        .insert(open.secret.clone());
                }
                Err(error) => return Err(error),
            }
        }
        Ok(closed)
    }

    /// Closes the work stopped processes left open on `secret`, read from the log again
    /// (another process may have closed some since), in log order. Returns how each was
    /// closed. Used by `rekeyd rollback`, which does not run start-up's pass, and for
    /// secrets start-up had to defer.
    pub(super) async fn close_interrupted_of(
        &self,
        secret: &SecretPolicy,
    ) -> Result<Vec<(Open, Closed)>, RotationError> {
        let _closing = ClosingLock::take(self.audit().path()).await?;
        let mut closed = Vec::new();
        for open in self
            .open_work_of_the_dead(Some(secret.name.as_str()))
            .await?
        {
            let how = self.close_open(secret, &open).await?;
            closed.push((open, how));
        }
        self.deferred_interrupted
            .lock()
            .expect("deferred set lock")
            .remove(secret.name.as_str());
        Ok(closed)
    }

    fn is_deferred(&self, secret: &str) -> bool {
        self.deferred_interrupted
            .lock()
            .expect("deferred set lock")
            .contains(secret)
    }

    /// Closes the work start-up had to leave open for `secret`, if any. Called under the
    /// secret's lock before every rotation, so the log shows that start's end before the
    /// next start.
    pub(super) async fn close_deferred_interrupted(
        &self,
        secret: &SecretPolicy,
    ) -> Result<(), RotationError> {
        if self.is_deferred(secret.name.as_str()) {
            self.close_interrupted_of(secret).await?;
        }
        Ok(())
    }

    /// Records the outcome of one open start from what the backend holds.
    async fn close_open(
        &self,
        secret: &SecretPolicy,
        open: &Open,
    ) -> Result<Closed, RotationError> {
        let state = self.describe(secret).await?;
        match &open.work {
            Work::Rotation {
                version,
                slot,
                trigger,
            } => {
                let due = Due {
                    version: VersionId::new(version.clone()),
                    slot: *slot,
                    trigger: trigger.clone(),
                };
                self.close_rotation(secret, open, &due, state.as_ref())
                    .await
            }
            Work::Rollback {
                from,
                to,
                by,
                then_current,
            } => {
                let (from, to) = (VersionId::new(from.clone()), VersionId::new(to.clone()));
                let closed = self
                    .rollback_outcome(
                        secret,
                        state.as_ref(),
                        (&from, &to),
                        then_current.as_deref(),
                    )
                    .await?;
                self.close_rollback(secret, open, (&from, &to, by), closed)
                    .await?;
                Ok(closed)
            }
        }
    }

    /// Whether a stopped rollback from `from` to `to` took effect: read from the log when
    /// a rotation has replaced it since (`then_current`), else from the backend now. A
    /// backend showing `to` pending while `from` is still current stopped inside its
    /// promote (Vault's KV v1 promote takes several writes): that promote is finished
    /// here, as the rollback would have, rather than left for the planner to finish as if
    /// it were a rotation.
    async fn rollback_outcome(
        &self,
        secret: &SecretPolicy,
        state: Option<&SecretDescription>,
        (from, to): (&VersionId, &VersionId),
        then_current: Option<&str>,
    ) -> Result<Closed, RotationError> {
        let stage = |stage| state.and_then(|s| s.stage(stage)).map(|v| &v.id);
        let took_effect = match then_current {
            Some(then) => then == to.as_str(),
            None if stage(Stage::Current) == Some(from) && stage(Stage::Pending) == Some(to) => {
                self.backend(&secret.backend)?
                    .promote(&secret.name, to, Some(from))
                    .await
                    .map_err(super::step("promote"))?;
                return Ok(Closed::RolledBack {
                    still_current: true,
                });
            }
            None => stage(Stage::Current) == Some(to),
        };
        Ok(if took_effect {
            Closed::RolledBack {
                still_current: stage(Stage::Current) == Some(to),
            }
        } else {
            Closed::NotRolledBack
        })
    }

    async fn close_rotation(
        &self,
        secret: &SecretPolicy,
        open: &Open,
        due: &Due,
        state: Option<&SecretDescription>,
    ) -> Result<Closed, RotationError> {
        let version = &due.version;
        let stored = state.and_then(|s| s.version(version));
        let event = match stored {
            Some(v) if v.stages.contains(&Stage::Pending) => return Ok(Closed::LeftToRecovery),
            Some(v) => {
                self.audit()
                    .append(AuditEvent::RecoveryFound {
                        secret: open.secret.clone(),
                        version: version.to_string(),
                        action: "record_success".to_owned(),
                    })
                    .await?;
                if v.stages.contains(&Stage::Current) {
                    let previous = state
                        .and_then(|s| s.stage(Stage::Previous))
                        .map(|p| p.id.clone());
                    self.notify(secret, EventType::Rotated, IdKey::Derived(""), || {
                        rotated_data(secret, due, previous.as_ref())
                    })
                    .await?;
                }
                AuditEvent::RotationSucceeded {
                    secret: open.secret.clone(),
                    version: version.to_string(),
                    duration_ms: 0,
                }
            }
            None => AuditEvent::RotationFailed {
                secret: open.secret.clone(),
                version: Some(version.to_string()),
                step: "interrupted".to_owned(),
                error: format!("process {} stopped before the version was stored", open.pid),
                will_retry: true,
            },
        };
        tracing::warn!(secret = %open.secret, %version, outcome = event.name(), "closing a rotation a stopped process left open");
        self.audit().append(event).await?;
        Ok(Closed::Rotation)
    }

    /// Records a stopped rollback as `closed` says.
    async fn close_rollback(
        &self,
        secret: &SecretPolicy,
        open: &Open,
        (from, to, by): (&VersionId, &VersionId, &str),
        closed: Closed,
    ) -> Result<(), RotationError> {
        if let Closed::RolledBack { still_current } = closed {
            self.audit()
                .append(AuditEvent::RecoveryFound {
                    secret: open.secret.clone(),
                    version: to.to_string(),
                    action: "record_rollback".to_owned(),
                })
                .await?;
            // Only while it holds: once a rotation has replaced it, consumers have been told
            // of that, and "current again" would be false. One id per interrupted start,
            // so a second crash here queues it once.
            if still_current {
                let start = format!(
                    "rollback from {from} by {} at {}",
                    open.pid,
                    open.at.to_rfc3339()
                );
                self.notify(
                    secret,
                    EventType::RolledBack,
                    IdKey::Derived(&start),
                    || rolled_back_data(secret, from, to),
                )
                .await?;
            }
            self.audit()
                .append(AuditEvent::RolledBack {
                    secret: open.secret.clone(),
                    from: from.to_string(),
                    to: to.to_string(),
                    by: by.to_owned(),
                })
                .await?;
        } else {
            self.audit()
                .append(AuditEvent::RollbackFailed {
                    secret: open.secret.clone(),
                    from: from.to_string(),
                    to: to.to_string(),
                    error: format!(
                        "process {} stopped before the backend made {to} current",
                        open.pid
                    ),
                })
                .await?;
        }
        tracing::warn!(secret = %open.secret, %from, %to, ?closed, "closing a rollback a stopped process left open");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every name in the skip list is an event rekeyd writes (a misspelt one would skip
    /// nothing, silently).
    #[test]
    fn the_skip_list_names_real_events() {
        for name in NEVER_OPEN_OR_CLOSE {
            let line = format!(r#"{{"event":"{name}"}}"#);
            let why = serde_json::from_str::<AuditEvent>(&line)
                .unwrap_err()
                .to_string();
            assert!(!why.contains("unknown variant"), "{name}: {why}");
        }
        let misspelt = serde_json::from_str::<AuditEvent>(r#"{"event":"pending_sorted"}"#);
        assert!(
            misspelt
                .unwrap_err()
                .to_string()
                .contains("unknown variant")
        );
    }

    fn entry(event: AuditEvent) -> Entry {
        Entry {
            seq: 0,
            ts: Utc::now(),
            host: "h".into(),
            pid: 7,
            hash: String::new(),
            event,
            source: "log".into(),
            line: 0,
        }
    }

    fn started(secret: &str, version: &str) -> Entry {
        entry(AuditEvent::RotationStarted {
            secret: secret.into(),
            backend: "b".into(),
            version: version.into(),
            slot: None,
            trigger: Trigger::Schedule,
        })
    }

    fn rollback(event: fn(String, String, String) -> AuditEvent, secret: &str, to: &str) -> Entry {
        entry(event(secret.into(), "cur".into(), to.into()))
    }

    fn rollback_started(secret: String, from: String, to: String) -> AuditEvent {
        AuditEvent::RollbackStarted {
            secret,
            from,
            to,
            by: "bob".into(),
        }
    }

    fn rolled_back(secret: String, from: String, to: String) -> AuditEvent {
        AuditEvent::RolledBack {
            secret,
            from,
            to,
            by: "bob".into(),
        }
    }

    fn rollback_failed(secret: String, from: String, to: String) -> AuditEvent {
        AuditEvent::RollbackFailed {
            secret,
            from,
            to,
            error: "x".into(),
        }
    }

    /// (secret, what) of each open start, in the order they would be closed.
    fn summary(open: &[Open]) -> Vec<(&str, String)> {
        open.iter()
            .map(|o| {
                let what = match &o.work {
                    Work::Rotation { version, .. } => format!("rotation {version}"),
                    Work::Rollback { to, .. } => format!("rollback {to}"),
                };
                (o.secret.as_str(), what)
            })
            .collect()
    }

    #[test]
    fn only_the_latest_unfinished_start_per_secret_is_open() {
        let entries = vec![
            started("a", "a1"),
            entry(AuditEvent::RotationSucceeded {
                secret: "a".into(),
                version: "a1".into(),
                duration_ms: 1,
            }),
            started("b", "b1"),
            started("b", "b2"),
            started("c", "c1"),
            entry(AuditEvent::RotationFailed {
                secret: "c".into(),
                version: Some("c1".into()),
                step: "put_pending".into(),
                error: "x".into(),
                will_retry: true,
            }),
        ];
        assert_eq!(
            summary(&open_work(&entries)),
            [("b", "rotation b2".to_owned())]
        );
    }

    #[test]
    fn a_rollback_is_open_until_its_own_end_and_beside_a_rotation() {
        let entries = vec![
            // Ended by its own outcome.
            rollback(rollback_started, "a", "a0"),
            rollback(rolled_back, "a", "a0"),
            rollback(rollback_started, "b", "b0"),
            rollback(rollback_failed, "b", "b0"),
            // A rotation left open, then a rollback left open: both, in that order.
            started("c", "c2"),
            rollback(rollback_started, "c", "c1"),
            // Another rollback's end does not close this one.
            rollback(rollback_started, "d", "d1"),
            rollback(rolled_back, "d", "d9"),
            // A rotation's end does not close a rollback.
            rollback(rollback_started, "e", "e1"),
            entry(AuditEvent::RotationSucceeded {
                secret: "e".into(),
                version: "e1".into(),
                duration_ms: 1,
            }),
        ];
        assert_eq!(
            summary(&open_work(&entries)),
            [
                ("c", "rotation c2".to_owned()),
                ("c", "rollback c1".to_owned()),
                ("d", "rollback d1".to_owned()),
                ("e", "rollback e1".to_owned()),
            ]
        );
    }

    #[test]
    fn the_first_promotion_after_an_open_rollback_says_what_was_current() {
        let promoted = |secret: &str, version: &str, previous: &str| {
            entry(AuditEvent::Promoted {
                secret: secret.into(),
                version: version.into(),
                previous: Some(previous.into()),
            })
        };
        let entries = vec![
            promoted("a", "a1", "a0"),
            rollback(rollback_started, "a", "a0"),
            promoted("b", "b5", "b4"),
            promoted("a", "a2", "a0"),
            promoted("a", "a3", "a2"),
            // A recovery finishing the rollback's own promote makes `to` current.
            rollback(rollback_started, "c", "c0"),
            promoted("c", "c0", "cur"),
            promoted("c", "c1", "c0"),
        ];
        let open = open_work(&entries);
        assert!(
            matches!(&open[..], [
                Open { work: Work::Rollback { then_current: Some(a), .. }, .. },
                Open { work: Work::Rollback { then_current: Some(c), .. }, .. },
            ] if a == "a0" && c == "c0"),
            "{open:?}"
        );
    }

    #[test]
    fn live_or_remote_processes_are_left_alone() {
        let mine = Open {
            secret: "s".into(),
            host: "here".into(),
            pid: std::process::id(),
            at: Utc::now(),
            work: Work::Rotation {
                version: "v".into(),
                slot: None,
                trigger: Trigger::Initial,
            },
        };
        assert!(!is_dead_local_process(&mine, "here"));
        let remote = Open {
            host: "elsewhere".into(),
            pid: u32::MAX,
            ..mine.clone()
        };
        assert!(!is_dead_local_process(&remote, "here"));
        let dead = Open {
            pid: u32::MAX,
            ..mine.clone()
        };
        assert!(is_dead_local_process(&dead, "here"));

        // A process running under the pid now, started after the entry was written, is not
        // the writer: pids are handed out again.
        let mut later = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let reused = Open {
            pid: later.id(),
            at: Utc::now() - chrono::Duration::minutes(10),
            ..mine.clone()
        };
        assert!(is_dead_local_process(&reused, "here"), "a later process");
        let its_own = Open {
            pid: later.id(),
            at: Utc::now(),
            ..mine
        };
        assert!(
            !is_dead_local_process(&its_own, "here"),
            "the writer itself"
        );
        later.kill().unwrap();
        later.wait().unwrap();
    }
}
