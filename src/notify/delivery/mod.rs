//! The delivery worker: one task that sends what the outbox holds, retries what may succeed
//! later, gives up on what will not, and keeps a circuit breaker per endpoint.
//!
//! - 2xx: delivered. A 2xx to a gated pending event is that target's confirmation.
//! - Timeouts, connection errors, 429 and 5xx: retried with exponential backoff and jitter,
//!   never sooner than a `Retry-After` asks; given up after `max_attempts` or
//!   `give_up_after`.
//! - 410: the endpoint is disabled (persisted) and nothing more is sent to it.
//! - Any other status: final. For a gated pending event it is that target's refusal.
//! - After `breaker_failures` failed attempts in a row (timeouts, connection errors, 5xx) the
//!   endpoint's breaker opens: nothing is sent for `breaker_cooldown`, then one probe; its
//!   success closes the breaker, its failure opens it again.
//!
//! Every outcome is audited and counted. Message ids never change, so a receiver that
//! deduplicates on `webhook-id` sees each event once.
//!
//! Submodules: `retry` (what an answer means, `Retry-After`, the breaker), `attempt` (one
//! signed POST), `scan` (reading the outbox: what to take over, what to read back).

mod attempt;
mod retry;
mod scan;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ring::rand::SystemRandom;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::event::{self, EventType};
use super::gate::{Confirmation, Decision};
use super::outbox::{Finished, Message};
use super::queue_watch::{Arrivals, QueueWatch};
use super::{Command, Inner, Target};
use crate::audit::AuditEvent;
use crate::backoff::backoff;
use attempt::send;
use retry::{Breaker, Change, Verdict};
use scan::LastScan;

/// How often a daemon looks for messages other processes left behind, while it knows of
/// messages another live process holds (they are taken over once it stops).
const RESCAN: Duration = Duration::from_secs(5);
/// How often it looks otherwise, where the queue directory cannot be watched (then it only
/// stats the directory unless it changed). A watched queue is looked at only when a message
/// arrives that the worker does not hold. Also the longest a queued message's timer runs.
const RESCAN_IDLE: Duration = Duration::from_secs(60);
/// After an arrival the look waits this long, and at least [`RESCAN`] after the last one:
/// a process queueing many messages makes one listing, not one per file.
const RESCAN_AFTER_ARRIVAL: Duration = Duration::from_millis(200);
/// A directory stamp younger than this may not show a change made right after it.
const TIMESTAMP_GRANULARITY: Duration = Duration::from_secs(2);
/// Most messages a worker holds in memory (queued or in flight). Past it, newly queued
/// messages stay only in the outbox and are read back, oldest first, once the worker holds
/// half as many: a receiver down for a day must not grow the daemon by every message of
/// the day (about 1 KiB each). Gated pending events are always held: a rotation waits on
/// their answer.
const HOLD_LIMIT: usize = 10_000;
/// Reading messages back after a spill waits at least this long after the last look.
const REFILL_GAP: Duration = Duration::from_secs(1);
/// How long a stopping worker lets in-flight requests finish and be recorded.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Waits for the watch's next arrivals; forever when the queue is not watched.
async fn next_arrivals(watch: &mut Option<QueueWatch>) -> std::io::Result<Arrivals> {
    match watch {
        Some(watch) => watch.arrivals().await,
        None => std::future::pending().await,
    }
}

/// Which queued messages a worker delivers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Its own, and those of processes that stopped (the daemon, `run --once`).
    Daemon,
    /// Only the ones its own process queued (a CLI `rotate`).
    OwnOnly,
}

/// One attempt's result.
struct Attempted {
    message: Message,
    verdict: Verdict,
}

/// What the worker holds.
pub(crate) struct Worker {
    inner: Arc<Inner>,
    mode: Mode,
    client: reqwest::Client,
    /// Queued messages not in flight, by id.
    queue: HashMap<String, Message>,
    /// Messages being attempted, by id.
    in_flight: HashMap<String, Message>,
    /// In-flight ids whose rotation was abandoned meanwhile.
    cancelled: HashSet<String>,
    breakers: HashMap<String, Breaker>,
    attempts: JoinSet<Attempted>,
    /// Outcomes to record, in order; consecutive closes are written as one batch.
    effects: Vec<Effect>,
    rng: SystemRandom,
    /// Commands handled so far (drain waits until it has seen what was sent before it).
    seen: u64,
    /// What the last look at the queue directory found.
    last_scan: LastScan,
    /// See [`HOLD_LIMIT`] (smaller in tests).
    hold_limit: usize,
    /// Messages of this worker's that are in the outbox but not held (over the limit). A
    /// count, recounted by every look at the outbox: one left there by a look and again
    /// by its command is counted twice until the next look.
    spilled: usize,
}

/// An outcome the worker records after handling a batch of results or commands.
enum Effect {
    /// The message leaves the queue (done record, audit entry).
    Close(Message, Finished),
    /// A response to a gated pending event is that target's answer.
    Answer(Message, super::outbox::GateRef, Decision, u16),
}

impl Worker {
    pub(crate) fn new(inner: Arc<Inner>, mode: Mode) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("rekeyd/", env!("CARGO_PKG_VERSION")))
            // A redirect is a failure (the spec's advice): the policy should name the URL.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            inner,
            mode,
            client,
            queue: HashMap::new(),
            in_flight: HashMap::new(),
            cancelled: HashSet::new(),
            breakers: HashMap::new(),
            attempts: JoinSet::new(),
            effects: Vec::new(),
            rng: SystemRandom::new(),
            seen: 0,
            last_scan: LastScan::default(),
            hold_limit: HOLD_LIMIT,
            spilled: 0,
        })
    }

    /// Runs until `stop` is cancelled; undelivered messages stay in the outbox.
    pub(crate) async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        stop: CancellationToken,
    ) {
        let daemon = self.mode == Mode::Daemon;
        // Watch before the first look, so nothing added in between goes unnoticed.
        let mut watch = if daemon { self.start_watch() } else { None };
        self.rescan().await;
        let mut last_rescan = tokio::time::Instant::now();
        let mut next_rescan = self.timed_rescan(daemon, watch.is_some());
        loop {
            let now = Utc::now();
            self.dispatch(now).await;
            self.publish(now);
            // One timer: the next message's time or the next rescan, whichever is first
            // (capped, so a step of the wall clock delays a retry by at most that much).
            // With nothing queued and the queue watched, no timer at all.
            let mut wake = self.next_wake(now).map(|at| {
                tokio::time::Instant::now()
                    + (at - Utc::now())
                        .to_std()
                        .unwrap_or(Duration::ZERO)
                        .min(RESCAN_IDLE)
            });
            if let Some(rescan) = next_rescan {
                wake = Some(wake.map_or(rescan, |at| at.min(rescan)));
            }
            // New messages first: a backlog of results to record must not hold back the
            // sending of what was just queued. Everything that is ready is taken at once.
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                Some(command) = commands.recv() => {
                    let mut batch = vec![command];
                    while let Ok(more) = commands.try_recv() {
                        batch.push(more);
                    }
                    self.commands(batch).await;
                }
                Some(done) = self.attempts.join_next(), if !self.attempts.is_empty() => {
                    if let Ok(done) = done {
                        self.finished(done).await;
                    }
                    while let Some(more) = self.attempts.try_join_next() {
                        if let Ok(more) = more {
                            self.finished(more).await;
                        }
                    }
                    self.flush().await;
                }
                arrived = next_arrivals(&mut watch) => {
                    let soon = (tokio::time::Instant::now() + RESCAN_AFTER_ARRIVAL)
                        .max(last_rescan + RESCAN);
                    match arrived {
                        Ok(Arrivals::Message(id)) if self.holds(&id) => {}
                        Ok(_) => next_rescan = Some(next_rescan.map_or(soon, |at| at.min(soon))),
                        Err(e) => {
                            tracing::warn!(error = %e, "stopped watching the notification outbox; looking on a timer instead");
                            watch = None;
                            next_rescan = Some(soon);
                        }
                    }
                }
                _ = tokio::time::sleep_until(wake.unwrap_or_else(tokio::time::Instant::now)), if wake.is_some() => {}
            }
            if self.wants_refill() {
                // At most one a second, should reading the outbox fail.
                let at = (last_rescan + REFILL_GAP).max(tokio::time::Instant::now());
                next_rescan = Some(next_rescan.map_or(at, |next| next.min(at)));
            }
            if next_rescan.is_some_and(|at| tokio::time::Instant::now() >= at) {
                if self.wants_refill() || self.queue_may_have_changed() {
                    self.rescan().await;
                    last_rescan = tokio::time::Instant::now();
                }
                next_rescan = self.timed_rescan(daemon, watch.is_some());
            }
        }
        // Let requests already on the wire finish so their outcome is recorded.
        let grace = tokio::time::sleep(STOP_GRACE);
        tokio::pin!(grace);
        while !self.attempts.is_empty() {
            tokio::select! {
                Some(done) = self.attempts.join_next() => {
                    if let Ok(done) = done {
                        self.finished(done).await;
                    }
                    self.flush().await;
                }
                _ = &mut grace => break,
            }
        }
        self.attempts.abort_all();
        self.in_flight.clear();
        self.publish(Utc::now());
    }

    /// Tells waiters (drain) what is left.
    fn publish(&self, now: DateTime<Utc>) {
        let next = self.next_wake(now);
        self.inner.status.send_replace(super::WorkerStatus {
            queued: self.queue.len() + self.spilled,
            in_flight: self.in_flight.len(),
            next_attempt: next,
            seen: self.seen,
        });
    }

    async fn commands(&mut self, commands: Vec<Command>) {
        let mut queued = Vec::new();
        for command in commands {
            self.seen += 1;
            match command {
                Command::Queued(message) => {
                    // Held from here on (queued below), so the watch needs no reminder.
                    self.inner.unannounce([message.id.as_str()]);
                    if !self.in_flight.contains_key(&message.id) {
                        queued.push(*message);
                    }
                }
                Command::Cancel {
                    secret,
                    version,
                    reason,
                    done,
                } => {
                    // Owned, so the outbox can be searched with it off the runtime too.
                    let matches = move |m: &Message| {
                        m.kind == EventType::RotationPending
                            && m.version.as_deref() == Some(version.as_str())
                            && m.secrets.iter().any(|s| s == &secret)
                    };
                    // Messages queued by the commands before this one are cancelled too.
                    self.admit(std::mem::take(&mut queued)).await;
                    let ids: Vec<String> = self
                        .queue
                        .values()
                        .filter(|m| matches(m))
                        .map(|m| m.id.clone())
                        .collect();
                    for id in ids {
                        if let Some(message) = self.queue.remove(&id) {
                            self.close(
                                &message,
                                Finished::Cancelled {
                                    reason: reason.clone(),
                                },
                            );
                        }
                    }
                    // Left in the outbox for want of room: cancelled there.
                    for message in self.spilled_matching(matches.clone()).await {
                        self.spilled = self.spilled.saturating_sub(1);
                        self.close(
                            &message,
                            Finished::Cancelled {
                                reason: reason.clone(),
                            },
                        );
                    }
                    self.flush().await;
                    // In flight: the result is recorded, but never as a confirmation.
                    let flying: Vec<String> = self
                        .in_flight
                        .values()
                        .filter(|m| matches(m))
                        .map(|m| m.id.clone())
                        .collect();
                    self.cancelled.extend(flying);
                    let _ = done.send(());
                }
            }
        }
        self.admit(queued).await;
    }

    /// Queues newly persisted messages, except those the rescan found and finished before
    /// their commands arrived.
    async fn admit(&mut self, messages: Vec<Message>) {
        if messages.is_empty() {
            return;
        }
        let outbox = self.inner.outbox.clone();
        let ids: Vec<String> = messages.iter().map(|m| m.id.clone()).collect();
        let done = tokio::task::spawn_blocking(move || {
            ids.iter()
                .map(|id| outbox.done(id).is_some())
                .collect::<Vec<bool>>()
        })
        .await
        .unwrap_or_default();
        for (i, message) in messages.into_iter().enumerate() {
            if done.get(i).copied().unwrap_or(false) || self.queue.contains_key(&message.id) {
                continue;
            }
            if self.may_hold(&message) {
                self.queue.insert(message.id.clone(), message);
            } else {
                // Durable in the outbox already: read back when there is room.
                self.spilled += 1;
            }
        }
    }

    /// When the loop must look again: the earliest time a queued message may be attempted
    /// or must be given up. A message held only by requests in flight (a half-open probe, a
    /// full endpoint) waits for their results, which wake the loop anyway.
    fn next_wake(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let targets = self.inner.targets();
        let mut flying: HashMap<&str, usize> = HashMap::new();
        for m in self.in_flight.values() {
            *flying.entry(m.target.as_str()).or_default() += 1;
        }
        self.queue
            .values()
            .map(|m| {
                let target = targets.get(&m.target);
                let deadline = target
                    .map(|t| m.created_at + chrono_duration(t.config.give_up_after))
                    .unwrap_or(now);
                let limit = target.map_or(1, |t| t.config.max_in_flight as usize);
                let busy = flying.get(m.target.as_str()).copied().unwrap_or(0);
                let ready = match self.breakers.get(&m.target) {
                    Some(Breaker::HalfOpen) => None,
                    Some(Breaker::Open { .. }) if busy > 0 => None,
                    Some(Breaker::Open { until }) => Some(m.next_attempt_at.max(*until)),
                    _ if busy >= limit => None,
                    _ => Some(m.next_attempt_at),
                };
                ready.map_or(deadline, |at| at.min(deadline))
            })
            .min()
    }

    /// Starts every attempt that is due and allowed; gives up what expired.
    async fn dispatch(&mut self, now: DateTime<Utc>) {
        let targets = self.inner.targets();
        let mut due: Vec<(DateTime<Utc>, String)> = self
            .queue
            .values()
            .filter(|m| m.next_attempt_at <= now)
            .map(|m| (m.next_attempt_at, m.id.clone()))
            .collect();
        due.sort();
        for (_, id) in due {
            let Some(message) = self.queue.get(&id).cloned() else {
                continue;
            };
            let Some(target) = targets.get(&message.target).cloned() else {
                self.give_up(
                    &message,
                    format!(
                        "notify target {} is no longer in the policy",
                        message.target
                    ),
                );
                continue;
            };
            if self.inner.is_disabled(&message.target, &target.config.url) {
                self.give_up(
                    &message,
                    "the endpoint is disabled: it answered 410 Gone".into(),
                );
                continue;
            }
            if now >= message.created_at + chrono_duration(target.config.give_up_after) {
                let reason = format!(
                    "not delivered within give_up_after ({})",
                    crate::schedule::format_duration(target.config.give_up_after)
                );
                self.give_up(&message, reason);
                continue;
            }
            let in_flight = self
                .in_flight
                .values()
                .filter(|m| m.target == message.target)
                .count();
            let breaker = self
                .breakers
                .entry(message.target.clone())
                .or_insert(Breaker::Closed { failures: 0 });
            if !breaker.allow(now, in_flight, target.config.max_in_flight as usize) {
                continue;
            }
            let message =
                if message.coalesce && message.attempts == 0 && target.config.window.is_some() {
                    match self.coalesce(&message.target, now).await {
                        Some(batch) => batch,
                        None => message,
                    }
                } else {
                    message
                };
            self.queue.remove(&message.id);
            self.start(message, target);
        }
        self.flush().await;
    }

    /// Replaces every fresh coalescable message for `target` with one batch (if there are
    /// two or more). The batch is persisted before its parts are marked, so a crash in
    /// between resolves to the batch on the next load.
    async fn coalesce(&mut self, target: &str, now: DateTime<Utc>) -> Option<Message> {
        let mut parts: Vec<Message> = self
            .queue
            .values()
            .filter(|m| m.target == target && m.coalesce && m.attempts == 0)
            .cloned()
            .collect();
        if parts.len() < 2 {
            return None;
        }
        parts.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        let items: Vec<_> = parts
            .iter()
            .filter_map(|m| event::batch_item(&m.id, &m.body))
            .collect();
        let secrets: BTreeSet<String> = parts.iter().flat_map(|m| m.secrets.clone()).collect();
        let batch = Message {
            id: event::random_id(&self.rng),
            target: target.to_owned(),
            kind: EventType::Batch,
            body: event::batch_body(now, &items),
            created_at: parts[0].created_at,
            secrets: secrets.into_iter().collect(),
            version: None,
            gate: None,
            coalesce: false,
            parts: parts.iter().map(|m| m.id.clone()).collect(),
            attempts: 0,
            next_attempt_at: now,
            owner_pid: self.inner.pid,
            owner_host: self.inner.host.clone(),
            owned_since: Some(now),
        };
        let outbox = self.inner.outbox.clone();
        let (written, parts_done) = (batch.clone(), parts.clone());
        let into = batch.id.clone();
        self.inner.announce([into.as_str()]);
        let stored = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            outbox.put(&written)?;
            for part in &parts_done {
                outbox.finish(part, Finished::Coalesced { into: into.clone() })?;
            }
            Ok(())
        })
        .await;
        // Started by the caller right away, so held before the watch is read again.
        self.inner.unannounce([batch.id.as_str()]);
        if !matches!(stored, Ok(Ok(()))) {
            tracing::error!(
                target_name = target,
                "cannot write a batch to the outbox; sending one by one"
            );
            return None;
        }
        crate::fault::point("notify_after_batch_stored");
        for part in &parts {
            self.queue.remove(&part.id);
        }
        self.inner
            .metrics
            .add(target, |c| c.coalesced += parts.len() as u64);
        self.audit_coalesced(&batch).await;
        Some(batch)
    }

    /// Links a batch to the messages it replaced: the parts' own ids are what the audit
    /// log and the receivers saw queued.
    async fn audit_coalesced(&self, batch: &Message) {
        self.audit(AuditEvent::NotificationsCoalesced {
            id: batch.id.clone(),
            target: batch.target.clone(),
            parts: batch.parts.clone(),
        })
        .await;
    }

    fn start(&mut self, message: Message, target: Arc<Target>) {
        self.in_flight.insert(message.id.clone(), message.clone());
        self.inner.metrics.add(&message.target, |c| c.attempts += 1);
        let client = self.client.clone();
        self.attempts.spawn(async move {
            let verdict = send(&client, &target, &message).await;
            Attempted { message, verdict }
        });
    }

    async fn finished(&mut self, done: Attempted) {
        let Attempted {
            mut message,
            verdict,
        } = done;
        self.in_flight.remove(&message.id);
        let cancelled = self.cancelled.remove(&message.id);
        message.attempts += 1;
        let now = Utc::now();
        let targets = self.inner.targets();
        let target = targets.get(&message.target).cloned();
        let breaker = self
            .breakers
            .entry(message.target.clone())
            .or_insert(Breaker::Closed { failures: 0 });
        let change = match (&verdict, &target) {
            (Verdict::Retry { breaker: true, .. }, Some(t)) => {
                breaker.failure(now, t.config.breaker_failures, t.config.breaker_cooldown)
            }
            (Verdict::Retry { breaker: false, .. }, _) => Change::None,
            _ => breaker.success(),
        };
        self.breaker_changed(&message.target, change, target.as_deref())
            .await;

        match verdict {
            Verdict::Delivered(status) => {
                crate::fault::point("notify_after_send");
                // The answer is recorded before the message is closed: a crash in between
                // leaves the message queued with its answer kept, and the restart closes it
                // without asking again (`answered_before`). The other order lost the answer.
                if !cancelled && let Some(gate) = &message.gate {
                    self.answer(&message, gate, Decision::Confirmed, status);
                }
                self.close(&message, Finished::Delivered { status });
            }
            Verdict::Gone => {
                let url = target
                    .as_ref()
                    .map(|t| t.config.url.clone())
                    .unwrap_or_default();
                let outbox = self.inner.outbox.clone();
                let name = message.target.clone();
                let _ = tokio::task::spawn_blocking(move || outbox.disable(&name, &url, 410)).await;
                self.inner.disable(
                    &message.target,
                    target.as_ref().map(|t| t.config.url.as_str()).unwrap_or(""),
                );
                self.inner.metrics.add(&message.target, |c| c.disabled += 1);
                tracing::error!(notify_target = %message.target, "endpoint answered 410 Gone: disabled");
                self.audit(AuditEvent::EndpointDisabled {
                    target: message.target.clone(),
                    status: 410,
                })
                .await;
                if !cancelled && let Some(gate) = &message.gate {
                    self.answer(&message, gate, Decision::Refused, 410);
                }
                self.give_up(&message, "HTTP 410 Gone: the endpoint is disabled".into());
                // Everything else queued for it is given up at once.
                for m in self
                    .queue
                    .values_mut()
                    .filter(|m| m.target == message.target)
                {
                    m.next_attempt_at = now;
                }
            }
            Verdict::Final(status) => {
                if !cancelled && let Some(gate) = &message.gate {
                    self.answer(&message, gate, Decision::Refused, status);
                }
                self.give_up(&message, format!("HTTP {status}: not retried"));
            }
            Verdict::Retry {
                error, retry_after, ..
            } => {
                self.inner
                    .metrics
                    .add(&message.target, |c| c.failed_attempts += 1);
                let Some(target) = target else {
                    self.give_up(
                        &message,
                        format!(
                            "notify target {} is no longer in the policy",
                            message.target
                        ),
                    );
                    return;
                };
                if cancelled {
                    self.close(
                        &message,
                        Finished::Cancelled {
                            reason: "the pending version was discarded".into(),
                        },
                    );
                    return;
                }
                if message.attempts >= target.config.max_attempts {
                    let reason = format!("{error}; gave up after {} attempts", message.attempts);
                    self.give_up(&message, reason);
                    return;
                }
                let delay = backoff(
                    message.attempts,
                    target.config.backoff,
                    target.config.max_backoff,
                    &self.rng,
                )
                .max(retry_after.unwrap_or(Duration::ZERO));
                message.next_attempt_at = now + chrono_duration(delay);
                let outbox = self.inner.outbox.clone();
                let stored = message.clone();
                let _ = tokio::task::spawn_blocking(move || outbox.update(&stored)).await;
                tracing::warn!(notify_target = %message.target, id = %message.id, attempt = message.attempts, error = %error, retry_in_ms = delay.as_millis() as u64, "webhook delivery failed; will retry");
                self.audit(AuditEvent::NotificationAttemptFailed {
                    id: message.id.clone(),
                    target: message.target.clone(),
                    notification: message.kind.as_str().to_owned(),
                    attempt: message.attempts,
                    error,
                    retry_in_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                })
                .await;
                self.queue.insert(message.id.clone(), message);
            }
        }
    }

    async fn breaker_changed(&mut self, target: &str, change: Change, config: Option<&Target>) {
        match change {
            Change::None => {}
            Change::Opened(failures) => {
                let cooldown = config
                    .map(|t| t.config.breaker_cooldown)
                    .unwrap_or_default();
                self.inner.metrics.add(target, |c| c.breaker_opened += 1);
                tracing::warn!(notify_target = target, failures, "circuit breaker opened");
                self.audit(AuditEvent::EndpointBreakerOpened {
                    target: target.to_owned(),
                    failures,
                    cooldown_ms: u64::try_from(cooldown.as_millis()).unwrap_or(u64::MAX),
                })
                .await;
            }
            Change::Closed => {
                tracing::info!(notify_target = target, "circuit breaker closed");
                self.audit(AuditEvent::EndpointBreakerClosed {
                    target: target.to_owned(),
                })
                .await;
            }
        }
    }

    /// Records (at the next [`Worker::flush`]) a response to a gated pending event as the
    /// target's answer.
    fn answer(
        &mut self,
        message: &Message,
        gate: &super::outbox::GateRef,
        decision: Decision,
        status: u16,
    ) {
        self.effects.push(Effect::Answer(
            message.clone(),
            gate.clone(),
            decision,
            status,
        ));
    }

    async fn record_answer(
        &self,
        message: &Message,
        gate: &super::outbox::GateRef,
        decision: Decision,
        status: u16,
    ) {
        let confirmation = Confirmation {
            secret: gate.secret.clone(),
            version: gate.version.clone(),
            target: message.target.clone(),
            decision,
            via: "response".into(),
            by: format!("HTTP {status}"),
            at: Utc::now(),
            fingerprint: Some(gate.fingerprint.clone()).filter(|f| !f.is_empty()),
        };
        if let Err(e) = self.inner.record_confirmation(&confirmation).await {
            tracing::error!(error = %e, secret = %gate.secret, "cannot record a confirmation");
        }
        crate::fault::point("notify_after_answer_recorded");
    }

    fn give_up(&mut self, message: &Message, reason: String) {
        self.queue.remove(&message.id);
        tracing::error!(notify_target = %message.target, id = %message.id, reason = %reason, "webhook given up");
        self.inner.metrics.add(&message.target, |c| c.given_up += 1);
        self.close(message, Finished::GivenUp { reason });
    }

    /// Moves a message out of the queue with its outcome, and audits it, at the next
    /// [`Worker::flush`].
    fn close(&mut self, message: &Message, finished: Finished) {
        self.effects.push(Effect::Close(message.clone(), finished));
    }

    /// Records the outcomes gathered since the last flush, in order. Consecutive closes go
    /// to the outbox as one batch and their audit entries share a commit: 100 targets'
    /// deliveries of one event are then a few fsyncs, not 400 in a row that hold back the
    /// next sends.
    async fn flush(&mut self) {
        let mut batch = Vec::new();
        for effect in std::mem::take(&mut self.effects) {
            match effect {
                Effect::Close(message, finished) => batch.push((message, finished)),
                Effect::Answer(message, gate, decision, status) => {
                    self.close_all(std::mem::take(&mut batch)).await;
                    self.record_answer(&message, &gate, decision, status).await;
                }
            }
        }
        self.close_all(batch).await;
    }

    async fn close_all(&self, batch: Vec<(Message, Finished)>) {
        if batch.is_empty() {
            return;
        }
        // Audited first, then recorded in the outbox: a crash in between leaves the message
        // queued, so the restart sends (or gives up) again and audits it again — the audit
        // log never misses an outcome the outbox has.
        let stored = batch.clone();
        let mut entries = JoinSet::new();
        for (message, finished) in batch {
            let event = match finished {
                Finished::Delivered { status } => {
                    self.inner
                        .metrics
                        .add(&message.target, |c| c.delivered += 1);
                    tracing::info!(notify_target = %message.target, id = %message.id, status, attempts = message.attempts, "webhook delivered");
                    AuditEvent::NotificationDelivered {
                        id: message.id.clone(),
                        target: message.target.clone(),
                        notification: message.kind.as_str().to_owned(),
                        secrets: message.secrets.clone(),
                        attempts: message.attempts,
                        status,
                    }
                }
                Finished::GivenUp { reason } | Finished::Cancelled { reason } => {
                    AuditEvent::NotificationFailed {
                        id: message.id.clone(),
                        target: message.target.clone(),
                        notification: message.kind.as_str().to_owned(),
                        secrets: message.secrets.clone(),
                        attempts: message.attempts,
                        reason,
                    }
                }
                Finished::Coalesced { .. } => continue,
            };
            let audit = self.inner.audit.clone();
            entries.spawn(async move { audit.append(event).await });
        }
        while let Some(appended) = entries.join_next().await {
            if let Ok(Err(e)) = appended {
                tracing::error!(error = %e, "cannot audit a notification outcome");
            }
        }
        crate::fault::point("notify_after_outcome_audited");
        let outbox = self.inner.outbox.clone();
        let messages = stored.len();
        match tokio::task::spawn_blocking(move || outbox.finish_all(&stored)).await {
            Ok(Ok(_)) => crate::fault::point("notify_after_outcome_recorded"),
            Ok(Err(e)) => {
                tracing::error!(messages, error = %e, "cannot record notification outcomes; they may be sent again");
            }
            Err(_) => {}
        }
    }

    async fn audit(&self, event: AuditEvent) {
        if let Err(e) = self.inner.audit.append(event).await {
            tracing::error!(error = %e, "cannot audit a notification outcome");
        }
    }
}

fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}
