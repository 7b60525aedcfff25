//! Webhook notifications: signed per Standard Webhooks, persisted in a durable outbox before
//! the rotation step that triggers them completes, delivered at least once by a worker
//! task, and able to gate a promotion on consumers' confirmations.
//!
//! Knows secret names, version ids and stages, never values, and never talks to a backend:
//! a consumer reads the value itself. The pieces:
//!
//! - `signature`: `whsec_` keys and `v1,` signatures (two keys during a rollover);
//! - `event`: event types, the `{type, timestamp, data}` envelope, message ids;
//! - `outbox`: one file per message, queued → done, crash-safe;
//! - `delivery`: the worker (retries, backoff, `Retry-After`, 410, circuit breaker,
//!   coalescing);
//! - `gate`: confirmation records and the bounded wait for them.

pub mod answer;
pub mod delivery;
pub mod event;
pub mod gate;
pub mod outbox;
mod queue_watch;
pub mod signature;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use ring::rand::SystemRandom;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::audit::{AuditEvent, AuditLog};
use crate::policy::{NotifyTarget, Policy, SecretPolicy};
pub use delivery::Mode;
pub use event::{EventType, SecretEvent};
pub use gate::{Confirmation, Confirmations, Decision, GateOutcome};
pub use outbox::{Message, Outbox};
pub use signature::{KeyError, Signer, SigningKey};

/// Why notifications could not be set up or persisted. Never contains a key or a value.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// A signing key is missing or malformed.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The outbox or the confirmation store could not be written.
    #[error("notification store {path}: {source}; check that the state directory is writable")]
    Store {
        /// The directory.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP client could not be built.
    #[error("cannot set up the webhook HTTP client: {0}")]
    Client(String),
    /// The audit log could not record an answer.
    #[error("audit: {0}")]
    Audit(#[from] crate::audit::AuditError),
    /// The worker was started twice.
    #[error("the delivery worker is already running")]
    AlreadyStarted,
}

/// A target ready to send to: its settings and loaded keys.
#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) config: NotifyTarget,
    pub(crate) signer: Signer,
}

/// Sent to the worker.
pub(crate) enum Command {
    /// A message was persisted: deliver it. Boxed: a message is several times the size
    /// of the other command.
    Queued(Box<Message>),
    /// A rotation was abandoned: stop its pending deliveries.
    Cancel {
        secret: String,
        version: String,
        reason: String,
        done: oneshot::Sender<()>,
    },
}

/// What the delivery worker has left ([`Notifier::drain`], the queue-depth metric).
#[derive(Clone, Debug, Default)]
pub struct WorkerStatus {
    /// Messages waiting for an attempt.
    pub queued: usize,
    /// Messages being attempted.
    pub in_flight: usize,
    /// When the next attempt may be made.
    pub next_attempt: Option<DateTime<Utc>>,
    pub(crate) seen: u64,
}

impl WorkerStatus {
    /// Messages not delivered yet.
    pub fn left(&self) -> usize {
        self.queued + self.in_flight
    }
}

/// Delivery counters of one target, for `/metrics` (issue 7) and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TargetCounters {
    /// Messages persisted for it.
    pub queued: u64,
    /// Requests sent.
    pub attempts: u64,
    /// Messages delivered (2xx).
    pub delivered: u64,
    /// Attempts that failed and will be retried.
    pub failed_attempts: u64,
    /// Messages given up.
    pub given_up: u64,
    /// Messages sent inside a batch.
    pub coalesced: u64,
    /// Times the endpoint was disabled by a 410.
    pub disabled: u64,
    /// Times its circuit breaker opened.
    pub breaker_opened: u64,
    /// Confirmations it gave.
    pub confirmed: u64,
    /// Refusals it gave.
    pub refused: u64,
}

/// Counters since start.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MetricsSnapshot {
    /// Per target.
    pub targets: BTreeMap<String, TargetCounters>,
    /// Gated promotions that were confirmed.
    pub gates_passed: u64,
    /// Gated promotions refused or timed out.
    pub gates_failed: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Metrics {
    targets: Mutex<BTreeMap<String, TargetCounters>>,
    gates_passed: AtomicU64,
    gates_failed: AtomicU64,
}

impl Metrics {
    pub(crate) fn add(&self, target: &str, change: impl FnOnce(&mut TargetCounters)) {
        let mut targets = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        change(targets.entry(target.to_owned()).or_default());
    }
}

/// State shared by the handle, the engine and the worker.
pub(crate) struct Inner {
    pub(crate) outbox: Outbox,
    pub(crate) confirmations: Confirmations,
    pub(crate) audit: AuditLog,
    pub(crate) metrics: Metrics,
    targets: RwLock<Arc<HashMap<String, Arc<Target>>>>,
    disabled: Mutex<HashMap<String, String>>,
    commands: mpsc::UnboundedSender<Command>,
    sent: AtomicU64,
    pub(crate) status: watch::Sender<WorkerStatus>,
    pub(crate) pid: u32,
    pub(crate) host: String,
    rng: SystemRandom,
    /// Ids this process is adding to the queue and has not yet handed to the worker, so
    /// the worker's queue watch does not take its own arrivals for another process's.
    pub(crate) announced: Mutex<HashSet<String>>,
}

impl Inner {
    pub(crate) fn targets(&self) -> Arc<HashMap<String, Arc<Target>>> {
        Arc::clone(&self.targets.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub(crate) fn is_disabled(&self, target: &str, url: &str) -> bool {
        let disabled = self.disabled.lock().unwrap_or_else(|e| e.into_inner());
        disabled.get(target).is_some_and(|u| u == url)
    }

    pub(crate) fn disable(&self, target: &str, url: &str) {
        let mut disabled = self.disabled.lock().unwrap_or_else(|e| e.into_inner());
        disabled.insert(target.to_owned(), url.to_owned());
    }

    /// Notes ids about to be written into the queue by this process (see `announced`).
    pub(crate) fn announce<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        let mut announced = self.announced.lock().unwrap_or_else(|e| e.into_inner());
        announced.extend(ids.into_iter().map(str::to_owned));
    }

    /// Forgets announced ids: handed to the worker, or not written after all.
    pub(crate) fn unannounce<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        let mut announced = self.announced.lock().unwrap_or_else(|e| e.into_inner());
        for id in ids {
            announced.remove(id);
        }
    }

    /// Whether this process announced the id.
    pub(crate) fn announced(&self, id: &str) -> bool {
        let announced = self.announced.lock().unwrap_or_else(|e| e.into_inner());
        announced.contains(id)
    }

    fn send(&self, command: Command) {
        self.sent.fetch_add(1, Ordering::SeqCst);
        // No worker (a command that only records): the outbox keeps the message.
        let _ = self.commands.send(command);
    }

    /// Records a consumer's answer durably, then audits and counts it.
    pub(crate) async fn record_confirmation(
        &self,
        confirmation: &Confirmation,
    ) -> Result<(), NotifyError> {
        record_confirmation(&self.confirmations, &self.audit, confirmation).await?;
        self.metrics
            .add(&confirmation.target, |c| match confirmation.decision {
                Decision::Confirmed => c.confirmed += 1,
                Decision::Refused => c.refused += 1,
            });
        Ok(())
    }
}

/// Audits a consumer's answer, then records it durably (a waiting gate in any process sees
/// it). Audited first, so a gate never acts on an answer the audit log lacks: a crash in
/// between leaves an audited answer that no gate saw (a waiting rotation goes on waiting;
/// `rekeyd confirm` can be run again). The one path for every way an answer arrives: a
/// webhook response, `rekeyd confirm`, the HTTP API.
pub async fn record_confirmation(
    store: &Confirmations,
    audit: &AuditLog,
    confirmation: &Confirmation,
) -> Result<(), NotifyError> {
    audit
        .append(AuditEvent::ConfirmationRecorded {
            secret: confirmation.secret.clone(),
            version: confirmation.version.clone(),
            target: confirmation.target.clone(),
            decision: confirmation.decision.as_str().to_owned(),
            via: confirmation.via.clone(),
            by: confirmation.by.clone(),
        })
        .await
        .map_err(NotifyError::Audit)?;
    crate::fault::point("after_confirmation_audited");
    store
        .record(confirmation)
        .map_err(|source| NotifyError::Store {
            path: store.dir().display().to_string(),
            source,
        })?;
    tracing::info!(secret = %confirmation.secret, version = %confirmation.version, notify_target = %confirmation.target, decision = confirmation.decision.as_str(), via = %confirmation.via, "confirmation recorded");
    Ok(())
}

fn load_targets(policy: &Policy) -> Result<HashMap<String, Arc<Target>>, NotifyError> {
    policy
        .notify
        .iter()
        .map(|(name, config)| {
            let signer = Signer::load(name, &config.keys)?;
            Ok((
                name.clone(),
                Arc::new(Target {
                    config: config.clone(),
                    signer,
                }),
            ))
        })
        .collect()
}

/// How a message id is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdKey<'a> {
    /// Fresh: the event may happen more than once (a failure).
    Random,
    /// Derived from (type, secret, version, target) and this text: enqueueing the same
    /// event again, after a crash, is a no-op (see [`event::derived_id`]).
    Derived(&'a str),
}

/// One event about to be queued for each target.
#[derive(Clone, Copy)]
struct Draft<'a> {
    id: IdKey<'a>,
    kind: EventType,
    body: &'a str,
    version: &'a str,
    now: DateTime<Utc>,
}

/// The notification service of one process: enqueue, confirm, deliver, drain.
pub struct Notifier {
    inner: Arc<Inner>,
    commands: Mutex<Option<mpsc::UnboundedReceiver<Command>>>,
    worker: tokio::sync::Mutex<Option<(tokio::task::JoinHandle<()>, CancellationToken)>>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("outbox", &self.inner.outbox.dir())
            .finish_non_exhaustive()
    }
}

impl Notifier {
    /// Loads every target's signing keys (failing if one is missing or malformed) and
    /// opens the outbox and confirmation store under the policy's state directory.
    pub fn open(policy: &Policy, audit: AuditLog) -> Result<Self, NotifyError> {
        let targets = load_targets(policy)?;
        let state_dir = &policy.daemon.state_dir;
        let outbox = Outbox::new(state_dir);
        let disabled = outbox.disabled();
        let (commands, receiver) = mpsc::unbounded_channel();
        let inner = Inner {
            outbox,
            confirmations: Confirmations::new(state_dir),
            audit,
            metrics: Metrics::default(),
            targets: RwLock::new(Arc::new(targets)),
            disabled: Mutex::new(disabled),
            commands,
            sent: AtomicU64::new(0),
            status: watch::Sender::new(WorkerStatus::default()),
            pid: std::process::id(),
            host: crate::process::hostname(),
            rng: SystemRandom::new(),
            announced: Mutex::default(),
        };
        Ok(Self {
            inner: Arc::new(inner),
            commands: Mutex::new(Some(receiver)),
            worker: tokio::sync::Mutex::new(None),
        })
    }

    /// Adopts a reloaded policy's targets (re-reading their keys, so a rollover needs only
    /// a SIGHUP). On error the old targets stay.
    pub fn reconfigure(&self, policy: &Policy) -> Result<(), NotifyError> {
        let targets = load_targets(policy)?;
        *self
            .inner
            .targets
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(targets);
        Ok(())
    }

    /// The confirmation records (shared with `rekeyd confirm` and the API).
    pub fn confirmations(&self) -> &Confirmations {
        &self.inner.confirmations
    }

    /// The outbox.
    pub fn outbox(&self) -> &Outbox {
        &self.inner.outbox
    }

    /// Delivery counters since start.
    pub fn metrics(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            targets: self
                .inner
                .metrics
                .targets
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            gates_passed: self.inner.metrics.gates_passed.load(Ordering::Relaxed),
            gates_failed: self.inner.metrics.gates_failed.load(Ordering::Relaxed),
        }
    }

    /// Follows what the delivery worker has left.
    pub fn status(&self) -> watch::Receiver<WorkerStatus> {
        self.inner.status.subscribe()
    }

    /// Starts the delivery worker (once per process).
    pub async fn start(&self, mode: Mode) -> Result<(), NotifyError> {
        let receiver = self
            .commands
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or(NotifyError::AlreadyStarted)?;
        let worker = delivery::Worker::new(Arc::clone(&self.inner), mode)
            .map_err(|e| NotifyError::Client(e.to_string()))?;
        let stop = CancellationToken::new();
        let handle = tokio::spawn(worker.run(receiver, stop.clone()));
        *self.worker.lock().await = Some((handle, stop));
        Ok(())
    }

    /// Stops the worker; undelivered messages stay in the outbox for the next start.
    pub async fn stop(&self) {
        if let Some((handle, stop)) = self.worker.lock().await.take() {
            stop.cancel();
            let _ = handle.await;
        }
    }

    /// Waits until the worker has delivered or given up everything it holds, or nothing
    /// can be attempted before `limit` runs out. Returns how many messages are left (they
    /// stay in the outbox for the daemon).
    pub async fn drain(&self, limit: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + limit;
        let wall_deadline =
            Utc::now() + chrono::Duration::from_std(limit).unwrap_or(chrono::Duration::MAX);
        let sent = self.inner.sent.load(Ordering::SeqCst);
        let mut status = self.inner.status.subscribe();
        loop {
            let now = status.borrow_and_update().clone();
            if now.seen >= sent {
                let left = now.queued + now.in_flight;
                if left == 0 {
                    return 0;
                }
                if now.in_flight == 0 && now.next_attempt.is_some_and(|at| at > wall_deadline) {
                    return left;
                }
            }
            match tokio::time::timeout_at(deadline, status.changed()).await {
                Ok(Ok(())) => {}
                _ => {
                    let now = status.borrow().clone();
                    return now.queued + now.in_flight;
                }
            }
        }
    }

    fn message(
        &self,
        secret: &SecretPolicy,
        target: &str,
        gated: bool,
        draft: &Draft<'_>,
    ) -> Message {
        let Draft {
            kind,
            body,
            version,
            now,
            ..
        } = *draft;
        let window = self
            .inner
            .targets()
            .get(target)
            .and_then(|t| t.config.window);
        let coalesce = !gated && window.is_some();
        let id = match draft.id {
            IdKey::Derived(extra) => {
                event::derived_id(kind, secret.name.as_str(), version, target, extra)
            }
            IdKey::Random => event::random_id(&self.inner.rng),
        };
        Message {
            id,
            target: target.to_owned(),
            kind,
            body: body.to_owned(),
            created_at: now,
            secrets: vec![secret.name.to_string()],
            version: Some(version.to_owned()),
            gate: gated.then(|| outbox::GateRef {
                secret: secret.name.to_string(),
                version: version.to_owned(),
                // A pending event's id is derived from the stored value's fingerprint.
                fingerprint: match draft.id {
                    IdKey::Derived(fingerprint) => fingerprint.to_owned(),
                    IdKey::Random => String::new(),
                },
            }),
            coalesce,
            parts: Vec::new(),
            attempts: 0,
            next_attempt_at: match (coalesce, window) {
                (true, Some(w)) => {
                    now + chrono::Duration::from_std(w).unwrap_or(chrono::Duration::MAX)
                }
                _ => now,
            },
            owner_pid: self.inner.pid,
            owner_host: self.inner.host.clone(),
            owned_since: Some(now),
        }
    }

    /// Persists one event for every notify target of `secret` and hands it to the worker.
    /// Returns once every message is durable. With a derived id, an event an earlier run
    /// already queued is not queued twice (and is adopted if that run's process stopped).
    pub async fn enqueue(
        &self,
        secret: &SecretPolicy,
        kind: EventType,
        data: &SecretEvent,
        id: IdKey<'_>,
    ) -> Result<Vec<String>, NotifyError> {
        if secret.notify.is_empty() {
            return Ok(Vec::new());
        }
        let now = Utc::now();
        let body = event::body(kind, now, data);
        let gated: &[String] = match (&secret.confirm, kind) {
            (Some(confirm), EventType::RotationPending) => &confirm.targets,
            _ => &[],
        };
        let messages: Vec<Message> = secret
            .notify
            .iter()
            .map(|target| {
                let draft = Draft {
                    id,
                    kind,
                    body: &body,
                    version: &data.version,
                    now,
                };
                self.message(secret, target, gated.contains(target), &draft)
            })
            .collect();
        let announced: Vec<String> = messages.iter().map(|m| m.id.clone()).collect();
        self.inner.announce(announced.iter().map(String::as_str));
        let inner = Arc::clone(&self.inner);
        let persisted =
            tokio::task::spawn_blocking(move || -> std::io::Result<Vec<(Message, bool)>> {
                let written = inner.outbox.put_all(&messages)?;
                let mut out = Vec::with_capacity(messages.len());
                for (message, written) in messages.into_iter().zip(written) {
                    if written {
                        out.push((message, true));
                        continue;
                    }
                    // Queued or done already under this id: an earlier run of this step. If
                    // its process stopped before delivering it, this one takes it over; a
                    // live owner (the daemon) delivers it, and its answers are seen here.
                    let Some(mut earlier) = inner.outbox.queued(&message.id) else {
                        out.push((message, false));
                        continue;
                    };
                    let mine = earlier.owned_by(inner.pid, &inner.host);
                    let adopt = !mine && !earlier.owner_alive(&inner.host);
                    let adopt = adopt && {
                        earlier.owner_pid = inner.pid;
                        earlier.owner_host = inner.host.clone();
                        earlier.owned_since = Some(Utc::now());
                        inner.outbox.adopt(&earlier)?
                    };
                    out.push((earlier, adopt));
                }
                Ok(out)
            })
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|r| r);
        let persisted = match persisted {
            Ok(persisted) => persisted,
            Err(source) => {
                self.inner.unannounce(announced.iter().map(String::as_str));
                return Err(NotifyError::Store {
                    path: self.inner.outbox.dir().display().to_string(),
                    source,
                });
            }
        };
        let mut ids = Vec::with_capacity(persisted.len());
        for (message, hand_over) in persisted {
            ids.push(message.id.clone());
            if !hand_over {
                self.inner.unannounce([message.id.as_str()]);
            } else {
                self.inner.metrics.add(&message.target, |c| c.queued += 1);
                self.inner.send(Command::Queued(Box::new(message)));
            }
        }
        Ok(ids)
    }

    /// Waits for every target in `secret.confirm` to confirm `version` (answers recorded
    /// before `since`, the version's creation, do not count).
    pub async fn await_confirmation(
        &self,
        secret: &SecretPolicy,
        version: &str,
        since: DateTime<Utc>,
        fingerprint: &str,
    ) -> GateOutcome {
        let Some(confirm) = &secret.confirm else {
            return GateOutcome::Confirmed(Vec::new());
        };
        let outcome = self
            .inner
            .confirmations
            .wait(
                secret.name.as_str(),
                version,
                &confirm.targets,
                since,
                fingerprint,
                confirm.timeout,
            )
            .await;
        let counter = match outcome {
            GateOutcome::Confirmed(_) => &self.inner.metrics.gates_passed,
            _ => &self.inner.metrics.gates_failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        outcome
    }

    /// Why an earlier run gave up the gate for this stored value, if it did; a restart
    /// then finishes the discard instead of asking consumers already told it failed.
    pub async fn abandoned(
        &self,
        secret: &SecretPolicy,
        version: &str,
        fingerprint: &str,
    ) -> Option<String> {
        self.inner
            .confirmations
            .abandoned(secret.name.as_str(), version, fingerprint)
    }

    /// A gated rotation was abandoned: stop delivering its pending events, forget the
    /// answers for it (a retry under the same version id asks again), and remember the
    /// decision for this stored value (a resume after a crash does not ask again).
    pub async fn abandon(
        &self,
        secret: &SecretPolicy,
        version: &str,
        fingerprint: &str,
        reason: &str,
    ) -> Result<(), NotifyError> {
        let (done, finished) = oneshot::channel();
        self.inner.send(Command::Cancel {
            secret: secret.name.to_string(),
            version: version.to_owned(),
            reason: reason.to_owned(),
            done,
        });
        // Without a worker nobody answers; the messages are then cancelled below.
        let _ = tokio::time::timeout(Duration::from_secs(5), finished).await;
        let targets = secret
            .confirm
            .as_ref()
            .map(|c| c.targets.clone())
            .unwrap_or_default();
        let inner = Arc::clone(&self.inner);
        let (name, version, reason, fingerprint) = (
            secret.name.to_string(),
            version.to_owned(),
            reason.to_owned(),
            fingerprint.to_owned(),
        );
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            // Messages another (stopped) process left, or queued with no worker here.
            for message in inner.outbox.scan(|m| {
                m.kind == EventType::RotationPending
                    && m.version.as_deref() == Some(version.as_str())
                    && m.secrets.contains(&name)
                    && (!m.owner_alive(&inner.host) || m.owned_by(inner.pid, &inner.host))
            })? {
                inner.outbox.finish(
                    &message,
                    outbox::Finished::Cancelled {
                        reason: reason.clone(),
                    },
                )?;
            }
            inner.confirmations.clear(&name, &version, &targets)?;
            inner
                .confirmations
                .mark_abandoned(&name, &version, &fingerprint, &reason)
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))
        .and_then(|r| r)
        .map_err(|source| NotifyError::Store {
            path: self.inner.outbox.dir().display().to_string(),
            source,
        })
    }

    /// Records a consumer's answer for a pending version (the CLI and API path).
    pub async fn record_confirmation(
        &self,
        confirmation: &Confirmation,
    ) -> Result<(), NotifyError> {
        self.inner.record_confirmation(confirmation).await
    }
}

/// Deletes the files in `dir` last modified more than `age` ago; a missing directory has
/// nothing to prune. Returns how many were removed.
fn prune_older_than(dir: &std::path::Path, age: std::time::Duration) -> std::io::Result<usize> {
    // Start-up cleaning: also the temporary files of writers that were killed.
    crate::temp_file::sweep(dir)?;
    let cutoff = std::time::SystemTime::now()
        .checked_sub(age)
        .unwrap_or(std::time::UNIX_EPOCH);
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t < cutoff);
        if old && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A minimal HTTP server answering each request with the next status of `statuses`
    /// (then 200), counting requests. Enough to drive the worker in-process.
    async fn server(statuses: Vec<u16>) -> (u16, Arc<AtomicU64>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let count = Arc::new(AtomicU64::new(0));
        let seen = Arc::clone(&count);
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                // Headers, then as many body bytes as content-length says.
                loop {
                    let n = socket.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    request.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&request).to_lowercase();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if request.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                let n = seen.fetch_add(1, Ordering::SeqCst) as usize;
                let status = statuses.get(n).copied().unwrap_or(200);
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = socket.write_all(reply.as_bytes()).await;
            }
        });
        (port, count)
    }

    /// One secret notifying target `hooks` at the local `port`, with `extra` lines in the
    /// target's table; its signing key written beside the policy in `dir`.
    fn hooks_policy(dir: &std::path::Path, port: u16, extra: &str) -> Policy {
        std::fs::write(
            dir.join("k.whsec"),
            "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        )
        .unwrap();
        crate::policy::parse(
            &dir.join("p.toml"),
            &format!(
                "[backends.local]\ntype = \"file\"\n\n[notify.hooks]\nurl = \"http://127.0.0.1:{port}/h\"\n\
                 secret_file = \"k.whsec\"\n{extra}\n[[secrets]]\nname = \"app\"\n\
                 backend = \"local\"\nschedule = {{ every = \"30d\" }}\n\
                 generator = {{ type = \"ed25519\" }}\nnotify = [\"hooks\"]\n"
            ),
        )
        .unwrap()
    }

    /// A notifier (not started) for [`hooks_policy`] with `extra`, its audit log, and a
    /// [`server`] answering `statuses`.
    struct Fixture {
        _dir: tempfile::TempDir,
        policy: Policy,
        audit: AuditLog,
        notifier: Notifier,
        requests: Arc<AtomicU64>,
    }

    impl Fixture {
        async fn new(statuses: Vec<u16>, extra: &str) -> Self {
            let (port, requests) = server(statuses).await;
            let dir = tempfile::tempdir().unwrap();
            let policy = hooks_policy(dir.path(), port, extra);
            let audit = AuditLog::open(&dir.path().join("audit.jsonl"))
                .await
                .unwrap();
            let notifier = Notifier::open(&policy, audit.clone()).unwrap();
            Self {
                _dir: dir,
                policy,
                audit,
                notifier,
                requests,
            }
        }
    }

    /// The data of `secret.rotated` for version `version` of `app`.
    fn rotated(version: &str) -> SecretEvent {
        SecretEvent {
            secret: "app".into(),
            backend: "local".into(),
            version: version.into(),
            stage: "current".into(),
            trigger: "manual".into(),
            ..SecretEvent::default()
        }
    }

    #[tokio::test]
    async fn the_worker_delivers_counts_every_outcome_and_drains() {
        let Fixture {
            _dir,
            policy,
            audit,
            notifier,
            requests,
        } = Fixture::new(vec![500], "backoff = \"10ms\"\n").await;
        notifier.start(Mode::OwnOnly).await.unwrap();
        assert!(matches!(
            notifier.start(Mode::OwnOnly).await,
            Err(NotifyError::AlreadyStarted)
        ));
        let secret = policy.secret("app").unwrap();
        let data = rotated("v1");
        let ids = notifier
            .enqueue(secret, EventType::Rotated, &data, IdKey::Derived(""))
            .await
            .unwrap();
        assert_eq!(notifier.drain(Duration::from_secs(20)).await, 0);
        assert_eq!(requests.load(Ordering::SeqCst), 2, "one 500, then a 2xx");
        let counters = notifier.metrics().targets["hooks"];
        assert_eq!(
            (
                counters.queued,
                counters.attempts,
                counters.failed_attempts,
                counters.delivered
            ),
            (1, 2, 1, 1)
        );
        assert_eq!(counters.given_up, 0);
        // The same event again (a restart finishing the rotation): nothing new is sent.
        let again = notifier
            .enqueue(secret, EventType::Rotated, &data, IdKey::Derived(""))
            .await
            .unwrap();
        assert_eq!(again, ids);
        assert_eq!(notifier.drain(Duration::from_secs(5)).await, 0);
        assert_eq!(requests.load(Ordering::SeqCst), 2);
        assert_eq!(notifier.metrics().targets["hooks"].queued, 1);
        notifier.stop().await;
        assert!(
            notifier.outbox().load().unwrap().messages.is_empty(),
            "the outbox is empty once delivered"
        );
        audit.close().await;
    }

    /// Past its hold limit, the worker leaves new messages in the outbox and reads them back
    /// as it delivers: every one still goes out, once, and drain waits for all of them.
    #[tokio::test]
    async fn messages_past_the_hold_limit_wait_in_the_outbox_and_all_go_out() {
        let Fixture {
            _dir,
            policy,
            audit,
            notifier,
            requests,
        } = Fixture::new(Vec::new(), "").await;
        let secret = policy.secret("app").unwrap();
        let mut ids = Vec::new();
        for i in 0..12 {
            let data = rotated(&format!("v{i}"));
            ids.extend(
                notifier
                    .enqueue(secret, EventType::Rotated, &data, IdKey::Derived(""))
                    .await
                    .unwrap(),
            );
        }
        // All twelve wait before the worker starts, so its first look finds more than it
        // may hold. Started by hand to set a small limit; otherwise as `start` does.
        let receiver = notifier.commands.lock().unwrap().take().unwrap();
        let worker = delivery::Worker::new(Arc::clone(&notifier.inner), Mode::Daemon)
            .unwrap()
            .with_hold_limit(3);
        let stop = CancellationToken::new();
        let handle = tokio::spawn(worker.run(receiver, stop.clone()));
        assert_eq!(notifier.drain(Duration::from_secs(20)).await, 0);
        assert_eq!(requests.load(Ordering::SeqCst), 12, "each message once");
        assert_eq!(notifier.metrics().targets["hooks"].delivered, 12);
        for id in &ids {
            assert!(
                notifier.outbox().done(id).is_some(),
                "{id} recorded as done"
            );
        }
        stop.cancel();
        handle.await.unwrap();
        audit.close().await;
    }
}
