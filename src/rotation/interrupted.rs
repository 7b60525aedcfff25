//! Closing rotations the audit log shows as started but never finished.
//!
//! A crash after `promote` but before its audit entries leaves a rotation that is complete
//! in the backend yet has no outcome in the log; a crash before the value was stored leaves
//! one with nothing in the backend. At start-up, before scheduling, each such rotation gets
//! its outcome recorded, so an auditor sees an end for every start. Only rotations started by
//! a process of this host that no longer runs are touched: a live `rekeyd rotate` sharing
//! the log is left alone. A rotation recorded as succeeded here also gets its `secret.rotated`
//! notification queued, under the id the interrupted process would have used (so it is
//! queued once whether or not that process got as far as queuing it).

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::plan::Due;
use super::{Engine, RotationError, rotated_data};
use crate::audit::{self, AuditEvent, Entry, Trigger};
use crate::notify::{EventType, IdKey};
use crate::policy::{Policy, SecretPolicy};
use crate::secret::{Stage, VersionId};

/// A rotation with a start entry and no end entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Open {
    secret: String,
    version: String,
    host: String,
    pid: u32,
    slot: Option<DateTime<Utc>>,
    trigger: Trigger,
}

/// The latest start per secret that no later entry ended, fed one entry at a time so the
/// log is never held whole. Only open rotations are kept: one per secret at most, and
/// normally none.
#[derive(Default)]
struct OpenRotations {
    latest: HashMap<String, Open>,
}

impl OpenRotations {
    fn see(&mut self, entry: &Entry) {
        match &entry.event {
            AuditEvent::RotationStarted {
                secret,
                version,
                slot,
                trigger,
                ..
            } => {
                self.latest.insert(
                    secret.clone(),
                    Open {
                        secret: secret.clone(),
                        version: version.clone(),
                        host: entry.host.clone(),
                        pid: entry.pid,
                        slot: *slot,
                        trigger: trigger.clone(),
                    },
                );
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
            } if self
                .latest
                .get(secret.as_str())
                .is_some_and(|o| &o.version == version) =>
            {
                self.latest.remove(secret.as_str());
            }
            _ => {}
        }
    }

    fn finish(self) -> Vec<Open> {
        let mut open: Vec<Open> = self.latest.into_values().collect();
        open.sort_by(|a, b| a.secret.cmp(&b.secret));
        open
    }
}

#[cfg(test)]
fn open_rotations(entries: &[Entry]) -> Vec<Open> {
    let mut open = OpenRotations::default();
    for entry in entries {
        open.see(entry);
    }
    open.finish()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

fn is_dead_local_process(open: &Open, host: &str) -> bool {
    open.host == host
        && open.pid != std::process::id()
        && !std::path::Path::new(&format!("/proc/{}", open.pid)).exists()
}

impl Engine {
    /// Records an outcome for every rotation a dead process left open. Returns how many.
    ///
    /// A rotation whose backend cannot be reached now (it may be down at the very moment
    /// rekeyd starts) is not a reason to stay down: it is remembered and closed before
    /// anything else is done to that secret (see [`Engine::close_deferred_interrupted`]).
    pub async fn close_interrupted(&self, policy: &Policy) -> Result<usize, RotationError> {
        let path = self.audit().path().to_owned();
        let open = tokio::task::spawn_blocking(move || {
            let mut open = OpenRotations::default();
            audit::for_each_entry(&path, |entry| open.see(&entry)).map(|()| open.finish())
        })
        .await
        .map_err(|e| RotationError::Refused(format!("reading the audit log: {e}")))?
        .map_err(RotationError::Audit)?;
        let host = hostname();
        let mut closed = 0;
        for open in open {
            let Some(secret) = policy.secret(&open.secret) else {
                continue;
            };
            if !is_dead_local_process(&open, &host) {
                continue;
            }
            match self.close_open(secret, &open).await {
                Ok(true) => closed += 1,
                Ok(false) => {}
                Err(error @ RotationError::Backend { .. }) => {
                    tracing::warn!(secret = %open.secret, version = %open.version, %error, "cannot close an interrupted rotation yet; it is closed before the secret's next rotation");
                    self.deferred_interrupted
                        .lock()
                        .expect("deferred map lock")
                        .insert(open.secret.clone(), open);
                }
                Err(error) => return Err(error),
            }
        }
        Ok(closed)
    }

    /// Closes the rotation start-up had to leave open for `secret`, if any. Called under
    /// the secret's lock before every rotation, so the log shows that start's end before
    /// the next start.
    pub(super) async fn close_deferred_interrupted(
        &self,
        secret: &SecretPolicy,
    ) -> Result<(), RotationError> {
        let open = self
            .deferred_interrupted
            .lock()
            .expect("deferred map lock")
            .get(secret.name.as_str())
            .cloned();
        let Some(open) = open else {
            return Ok(());
        };
        self.close_open(secret, &open).await?;
        self.deferred_interrupted
            .lock()
            .expect("deferred map lock")
            .remove(secret.name.as_str());
        Ok(())
    }

    /// Records the outcome of one open rotation from what the backend holds. `false` when
    /// the version is still pending: the planner's recovery finishes or discards it and
    /// records the outcome then.
    async fn close_open(&self, secret: &SecretPolicy, open: &Open) -> Result<bool, RotationError> {
        let version = VersionId::new(open.version.clone());
        let state = self.describe(secret).await?;
        let stored = state.as_ref().and_then(|s| s.version(&version));
        let event = match stored {
            Some(v) if v.stages.contains(&Stage::Pending) => return Ok(false),
            Some(v) => {
                self.audit()
                    .append(AuditEvent::RecoveryFound {
                        secret: open.secret.clone(),
                        version: open.version.clone(),
                        action: "record_success".to_owned(),
                    })
                    .await?;
                if v.stages.contains(&Stage::Current) {
                    let previous = state
                        .as_ref()
                        .and_then(|s| s.stage(Stage::Previous))
                        .map(|p| p.id.clone());
                    let due = Due {
                        version: version.clone(),
                        slot: open.slot,
                        trigger: open.trigger.clone(),
                    };
                    self.notify(secret, EventType::Rotated, IdKey::Derived(""), || {
                        rotated_data(secret, &due, previous.as_ref())
                    })
                    .await?;
                }
                AuditEvent::RotationSucceeded {
                    secret: open.secret.clone(),
                    version: open.version.clone(),
                    duration_ms: 0,
                }
            }
            None => AuditEvent::RotationFailed {
                secret: open.secret.clone(),
                version: Some(open.version.clone()),
                step: "interrupted".to_owned(),
                error: format!("process {} stopped before the version was stored", open.pid),
                will_retry: true,
            },
        };
        tracing::warn!(secret = %open.secret, version = %open.version, outcome = event.name(), "closing a rotation a stopped process left open");
        self.audit().append(event).await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let open = open_rotations(&entries);
        assert_eq!(open.len(), 1, "{open:?}");
        assert_eq!(
            (open[0].secret.as_str(), open[0].version.as_str()),
            ("b", "b2")
        );
    }

    #[test]
    fn live_or_remote_processes_are_left_alone() {
        let mine = Open {
            secret: "s".into(),
            version: "v".into(),
            host: "here".into(),
            pid: std::process::id(),
            slot: None,
            trigger: Trigger::Initial,
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
            ..mine
        };
        assert!(is_dead_local_process(&dead, "here"));
    }
}
