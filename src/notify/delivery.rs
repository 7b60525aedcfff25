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

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ring::rand::{SecureRandom, SystemRandom};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::event::{self, EventType};
use super::gate::{Confirmation, Decision};
use super::outbox::{Finished, Loaded, Message};
use super::queue_watch::{Arrivals, QueueWatch};
use super::{Command, Inner, Target};
use crate::audit::AuditEvent;

/// At most this many requests in flight per endpoint while its breaker is closed.
const PER_ENDPOINT: usize = 4;
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

/// What the receiver's answer means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// 2xx.
    Delivered(u16),
    /// Worth another attempt.
    Retry {
        /// What happened, for the audit log.
        error: String,
        /// The server's `Retry-After`, if any.
        retry_after: Option<Duration>,
        /// Whether it counts toward opening the breaker (429 does not: the server is up).
        breaker: bool,
    },
    /// 410 Gone.
    Gone,
    /// Any other status: not retried.
    Final(u16),
}

/// Classifies a status code.
pub(crate) fn classify(status: u16, retry_after: Option<Duration>) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered(status),
        410 => Verdict::Gone,
        429 => Verdict::Retry {
            error: "HTTP 429".into(),
            retry_after,
            breaker: false,
        },
        500..=599 => Verdict::Retry {
            error: format!("HTTP {status}"),
            retry_after,
            breaker: true,
        },
        _ => Verdict::Final(status),
    }
}

/// `Retry-After` as seconds or an HTTP date; `None` when absent or unreadable.
pub(crate) fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

/// The delay before attempt `attempt + 1`: `base * 2^(attempt-1)`, capped, with ±20%
/// jitter so endpoints that failed together are retried apart.
pub(crate) fn backoff(attempt: u32, base: Duration, cap: Duration, rng: &SystemRandom) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let mut byte = [0u8; 1];
    let unit = match rng.fill(&mut byte) {
        Ok(()) => f64::from(byte[0]) / 255.0,
        Err(_) => 0.5,
    };
    exp.min(cap).mul_f64(0.8 + 0.4 * unit)
}

/// A per-endpoint circuit breaker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Breaker {
    /// Sending; counts failures in a row.
    Closed {
        /// Failed attempts in a row.
        failures: u32,
    },
    /// Not sending until `until`.
    Open {
        /// When one probe may go.
        until: DateTime<Utc>,
    },
    /// One probe is in flight; its outcome decides.
    HalfOpen,
}

/// What a breaker transition means for the audit log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    None,
    Opened(u32),
    Closed,
}

impl Breaker {
    /// May a request go now? Moves an expired open breaker to half-open (one probe).
    pub(crate) fn allow(&mut self, now: DateTime<Utc>, in_flight: usize) -> bool {
        match self {
            Breaker::Closed { .. } => in_flight < PER_ENDPOINT,
            Breaker::Open { until } if now >= *until && in_flight == 0 => {
                *self = Breaker::HalfOpen;
                true
            }
            Breaker::Open { .. } | Breaker::HalfOpen => false,
        }
    }

    /// The endpoint answered (2xx, or any status that says it is up).
    pub(crate) fn success(&mut self) -> Change {
        let was_closed = matches!(self, Breaker::Closed { .. });
        *self = Breaker::Closed { failures: 0 };
        if was_closed {
            Change::None
        } else {
            Change::Closed
        }
    }

    /// A timeout, connection error or 5xx.
    pub(crate) fn failure(
        &mut self,
        now: DateTime<Utc>,
        threshold: u32,
        cooldown: Duration,
    ) -> Change {
        let until = now + chrono::Duration::from_std(cooldown).unwrap_or(chrono::Duration::MAX);
        match self {
            Breaker::Closed { failures } => {
                *failures += 1;
                if *failures >= threshold {
                    let failures = *failures;
                    *self = Breaker::Open { until };
                    Change::Opened(failures)
                } else {
                    Change::None
                }
            }
            Breaker::HalfOpen | Breaker::Open { .. } => {
                *self = Breaker::Open { until };
                Change::Opened(1)
            }
        }
    }
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

/// What a daemon's last rescan saw, so an idle one can skip listing an unchanged queue.
#[derive(Default)]
struct LastScan {
    /// The queue directory's modification time (`Some(None)`: no directory), when it is
    /// old enough to be trusted: a change within the file system's timestamp granularity
    /// of the listing could leave it unchanged. `None`: list again next time.
    stamp: Option<Option<std::time::SystemTime>>,
    /// Another live process held queued messages: list again soon, it may stop.
    foreign_held: bool,
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

    fn mine(&self, message: &Message) -> bool {
        if message.owned_by(self.inner.pid, &self.inner.host) {
            return true;
        }
        self.mode == Mode::Daemon && !message.owner_alive(&self.inner.host)
    }

    /// Watches the outbox queue for messages other processes add; `None`: look on a timer.
    fn start_watch(&self) -> Option<QueueWatch> {
        match self.inner.outbox.watch() {
            Ok(watch) => Some(watch),
            Err(e) => {
                tracing::info!(error = %e, "cannot watch the notification outbox; looking on a timer instead");
                None
            }
        }
    }

    /// When to look at the queue again unprompted: never for a watched queue that holds
    /// nothing of a live process (an arrival prompts the next look), else after
    /// [`Self::rescan_period`]. Only a daemon takes over other processes' messages.
    fn timed_rescan(&self, daemon: bool, watched: bool) -> Option<tokio::time::Instant> {
        if !daemon || (watched && !self.last_scan.foreign_held) {
            return None;
        }
        Some(tokio::time::Instant::now() + self.rescan_period())
    }

    /// Whether the message with this id is the worker's own: queued, in flight, or being
    /// written by this process.
    fn holds(&self, id: &str) -> bool {
        self.queue.contains_key(id) || self.in_flight.contains_key(id) || self.inner.announced(id)
    }

    fn rescan_period(&self) -> Duration {
        if self.last_scan.foreign_held {
            RESCAN
        } else {
            RESCAN_IDLE
        }
    }

    /// False only when the last listing found nothing held by a live process and the queue
    /// directory has not changed since. One `stat`, done in place: cheaper than a trip
    /// through the blocking pool, which would wake a thread as well.
    fn queue_may_have_changed(&self) -> bool {
        match self.last_scan.stamp {
            Some(stamp) if !self.last_scan.foreign_held => {
                self.inner.outbox.queue_modified() != stamp
            }
            _ => true,
        }
    }

    /// Picks up messages on disk that this worker should deliver and does not hold yet.
    async fn rescan(&mut self) {
        if let Some(listed) = self.list().await {
            self.take_listed(listed).await;
        }
    }

    /// Reads the outbox's queue (and the directory's stamp from just before); `None`,
    /// with the last look forgotten, when it cannot be read.
    async fn list(&mut self) -> Option<(Option<std::time::SystemTime>, Loaded)> {
        let outbox = self.inner.outbox.clone();
        let listed = tokio::task::spawn_blocking(move || {
            // Read before listing: a change after this makes the next look list again.
            let stamp = outbox.queue_modified();
            outbox.load().map(|loaded| (stamp, loaded))
        });
        match listed.await {
            Ok(Ok(listed)) => Some(listed),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot read the notification outbox");
                self.last_scan = LastScan::default();
                None
            }
            Err(_) => {
                self.last_scan = LastScan::default();
                None
            }
        }
    }

    /// Takes what a [`Self::list`] found: this process's messages, and those of processes
    /// that stopped, as far as the limit allows.
    async fn take_listed(&mut self, (stamp, loaded): (Option<std::time::SystemTime>, Loaded)) {
        let settled =
            stamp.is_none_or(|at| at.elapsed().is_ok_and(|age| age > TIMESTAMP_GRANULARITY));
        self.last_scan = LastScan {
            stamp: settled.then_some(stamp),
            foreign_held: false,
        };
        for path in loaded.corrupt {
            tracing::error!(file = %path, "unreadable outbox message set aside");
        }
        let now = Utc::now();
        let mut loaded = loaded.messages;
        // Oldest first: when not all of them fit, the rest wait in the outbox.
        loaded.sort_by_key(|m| m.created_at);
        self.spilled = 0;
        let mut orphans = Vec::new();
        for message in loaded {
            // Announced ones are being queued by this process: their command brings them
            // (counting them here as well would count them twice while the queue is full).
            if self.holds(&message.id) {
                continue;
            }
            if !self.mine(&message) {
                self.last_scan.foreign_held = true;
                continue;
            }
            // Orphans are held once confirmed, below: they count against the limit now.
            if !self.may_hold_besides(&message, orphans.len()) {
                self.spilled += 1;
                continue;
            }
            if !message.owned_by(self.inner.pid, &self.inner.host) {
                orphans.push(message);
                continue;
            }
            self.queue.insert(message.id.clone(), message);
        }
        if !orphans.is_empty() {
            self.adopt_orphans(orphans, now).await;
        }
    }

    /// Takes over messages whose process was found stopped after they were listed. Each
    /// is read again first: a process that finished one, then stopped, between the
    /// listing and the liveness check could write nothing after it, so the second read
    /// tells what it left.
    async fn adopt_orphans(&mut self, listed: Vec<Message>, now: DateTime<Utc>) {
        let count = listed.len();
        let confirmed = self.still_queued(listed).await;
        if confirmed.len() < count {
            // Finished meanwhile, or unreadable just now: look again soon, as for a live
            // owner's messages, rather than wait for the queue to change.
            self.last_scan.foreign_held = true;
        }
        let mut answered = Vec::new();
        for mut message in confirmed {
            // Its backoff stopped with its process (as its breaker did), so a restart
            // tries again at once. A coalescing window not yet used is kept.
            if message.attempts > 0 {
                message.next_attempt_at = message.next_attempt_at.min(now);
            }
            if message.gate.is_some() {
                answered.push(message);
                continue;
            }
            if !message.parts.is_empty() && message.attempts == 0 {
                // The stopped process closed the parts into this batch but may have stopped
                // before auditing the link; audit it (again, at worst) before sending.
                self.audit_coalesced(&message).await;
            }
            self.queue.insert(message.id.clone(), message);
        }
        self.close_answered(answered).await;
    }

    /// Of gated messages a stopped process left, closes those whose response it had
    /// recorded as the target's answer before it could close them (it was delivered and
    /// answered: asking again would ask a consumer twice), and queues the rest.
    async fn close_answered(&mut self, messages: Vec<Message>) {
        if messages.is_empty() {
            return;
        }
        let inner = Arc::clone(&self.inner);
        let checked = crate::blocking::run(move || {
            messages
                .into_iter()
                .map(|message| {
                    let answer = answered_before(&inner.confirmations, &message);
                    (message, answer)
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        for (mut message, answer) in checked {
            match answer {
                None => {
                    self.queue.insert(message.id.clone(), message);
                }
                Some((decision, by)) => {
                    // The attempt that was answered was never recorded in the message.
                    message.attempts += 1;
                    tracing::info!(notify_target = %message.target, id = %message.id, answer = decision.as_str(), "pending event answered before a restart; not sent again");
                    let finished = match (decision, status_of(&by)) {
                        (Decision::Confirmed, Some(status)) => Finished::Delivered { status },
                        _ => Finished::GivenUp {
                            reason: format!("{by}: answered before a restart, not sent again"),
                        },
                    };
                    self.close(&message, finished);
                }
            }
        }
        self.flush().await;
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

    /// Of messages whose process was found stopped, those still queued, read again from
    /// disk (see [`Outbox::still_queued`](super::outbox::Outbox::still_queued)).
    async fn still_queued(&self, orphans: Vec<Message>) -> Vec<Message> {
        let outbox = self.inner.outbox.clone();
        tokio::task::spawn_blocking(move || {
            orphans
                .iter()
                .filter_map(|m| outbox.still_queued(&m.id))
                .collect()
        })
        .await
        .unwrap_or_default()
    }

    /// This worker's messages in the outbox that it does not hold and `pick` chooses; none
    /// unless some were left there for want of room.
    async fn spilled_matching(
        &self,
        pick: impl Fn(&Message) -> bool + Send + 'static,
    ) -> Vec<Message> {
        if self.spilled == 0 {
            return Vec::new();
        }
        let outbox = self.inner.outbox.clone();
        let found = tokio::task::spawn_blocking(move || outbox.scan(pick)).await;
        let found = match found {
            Ok(Ok(found)) => found,
            _ => {
                tracing::error!("cannot read the notification outbox to cancel messages in it");
                return Vec::new();
            }
        };
        let (own, orphans): (Vec<Message>, Vec<Message>) = found
            .into_iter()
            .filter(|m| !self.holds(&m.id) && self.mine(m))
            .partition(|m| m.owned_by(self.inner.pid, &self.inner.host));
        if orphans.is_empty() {
            return own;
        }
        // What a stopped process finished is not cancelled over its own record.
        own.into_iter()
            .chain(self.still_queued(orphans).await)
            .collect()
    }

    /// The same worker holding at most `limit` messages (tests reach the limit this way).
    #[cfg(test)]
    pub(super) fn with_hold_limit(mut self, limit: usize) -> Self {
        self.hold_limit = limit;
        self
    }

    /// Whether one more message fits in memory (gated pending events always do).
    fn may_hold(&self, message: &Message) -> bool {
        self.may_hold_besides(message, 0)
    }

    /// [`Self::may_hold`] with `more` messages about to be held as well.
    fn may_hold_besides(&self, message: &Message, more: usize) -> bool {
        message.gate.is_some() || self.queue.len() + self.in_flight.len() + more < self.hold_limit
    }

    /// Messages were left in the outbox for want of room, and now there is: half the limit,
    /// so each read of the outbox brings back many.
    fn wants_refill(&self) -> bool {
        self.spilled > 0 && self.queue.len() + self.in_flight.len() <= self.hold_limit / 2
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
                let deadline = targets
                    .get(&m.target)
                    .map(|t| m.created_at + chrono_duration(t.config.give_up_after))
                    .unwrap_or(now);
                let busy = flying.get(m.target.as_str()).copied().unwrap_or(0);
                let ready = match self.breakers.get(&m.target) {
                    Some(Breaker::HalfOpen) => None,
                    Some(Breaker::Open { .. }) if busy > 0 => None,
                    Some(Breaker::Open { until }) => Some(m.next_attempt_at.max(*until)),
                    _ if busy >= PER_ENDPOINT => None,
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
            if !breaker.allow(now, in_flight) {
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

/// The answer a gated message's own response gave, recorded before its message was closed:
/// the decision and who gave it (`HTTP 200`). Answers given another way (CLI, API), or for
/// another value stored under the same version id, do not count: they say nothing about
/// whether this message was delivered.
fn answered_before(
    confirmations: &super::gate::Confirmations,
    message: &Message,
) -> Option<(Decision, String)> {
    let gate = message.gate.as_ref()?;
    let answer = confirmations.get(&gate.secret, &gate.version, &message.target)?;
    let same_value = answer.fingerprint.as_deref().unwrap_or("") == gate.fingerprint.as_str();
    (answer.via == "response" && same_value).then_some((answer.decision, answer.by))
}

/// The status code in a response answer's `by` (`HTTP 200`).
fn status_of(by: &str) -> Option<u16> {
    by.strip_prefix("HTTP ")?.parse().ok()
}

/// One attempt: sign with the attempt's timestamp, POST, classify.
async fn send(client: &reqwest::Client, target: &Target, message: &Message) -> Verdict {
    let timestamp = Utc::now().timestamp();
    let signature = target
        .signer
        .signature(&message.id, timestamp, message.body.as_bytes());
    let sent = client
        .post(&target.config.url)
        .timeout(target.config.timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("webhook-id", &message.id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(message.body.clone())
        .send()
        .await;
    match sent {
        Ok(response) => {
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, Utc::now()));
            classify(response.status().as_u16(), retry_after)
        }
        Err(e) => Verdict::Retry {
            error: describe(e, target.config.timeout),
            retry_after: None,
            breaker: true,
        },
    }
}

/// The error in words, without the URL (it may carry a token) and never the body.
fn describe(error: reqwest::Error, timeout: Duration) -> String {
    if error.is_timeout() {
        return format!(
            "timed out after {}",
            crate::schedule::format_duration(timeout)
        );
    }
    let error = error.without_url();
    let mut text = if error.is_connect() {
        "connection failed".to_owned()
    } else {
        error.to_string()
    };
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A daemon's worker over a policy without targets, its state in a new directory (kept
    /// alive by the returned guard), not started: tests drive its steps one by one.
    async fn daemon_worker() -> (
        tempfile::TempDir,
        crate::audit::AuditLog,
        Arc<Inner>,
        Worker,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let policy = crate::policy::parse(
            &dir.path().join("p.toml"),
            "[backends.local]\ntype = \"file\"\n\n[[secrets]]\nname = \"app\"\n\
             backend = \"local\"\nschedule = { every = \"30d\" }\n\
             generator = { type = \"ed25519\" }\n",
        )
        .unwrap();
        let audit = crate::audit::AuditLog::open(&dir.path().join("audit.jsonl"))
            .await
            .unwrap();
        let notifier = super::super::Notifier::open(&policy, audit.clone()).unwrap();
        let inner = Arc::clone(&notifier.inner);
        let worker = Worker::new(Arc::clone(&inner), Mode::Daemon).unwrap();
        (dir, audit, inner, worker)
    }

    /// An idle daemon's worker wakes rarely and then only stats an unchanged queue; it
    /// lists the queue when it changed, and looks every few seconds while another live
    /// process holds messages there (to take them over once it stops).
    #[tokio::test]
    async fn an_idle_worker_lists_the_queue_only_when_it_changed() {
        let (_dir, audit, inner, mut worker) = daemon_worker().await;

        // No queue directory yet: nothing to list until one appears.
        worker.rescan().await;
        assert!(!worker.queue_may_have_changed());
        assert_eq!(worker.rescan_period(), RESCAN_IDLE);

        // A message left by a process that stopped: the directory changed, the worker
        // lists it and takes the message over.
        let rng = SystemRandom::new();
        let message = |owner_pid: u32| Message {
            id: event::random_id(&rng),
            target: "hooks".into(),
            kind: EventType::Rotated,
            body: "{}".into(),
            created_at: Utc::now(),
            secrets: vec!["app".into()],
            version: Some("v".into()),
            gate: None,
            coalesce: false,
            parts: Vec::new(),
            attempts: 1,
            next_attempt_at: Utc::now() + chrono::Duration::hours(1),
            owner_pid,
            owner_host: inner.host.clone(),
            owned_since: None,
        };
        let orphan = message(u32::MAX);
        assert!(inner.outbox.put(&orphan).unwrap());
        assert!(worker.queue_may_have_changed());
        worker.rescan().await;
        assert!(worker.queue.contains_key(&orphan.id));
        assert_eq!(worker.rescan_period(), RESCAN_IDLE);
        // Nothing held by a live process: a watched queue needs no timer, an unwatched one
        // is looked at once a minute, and only a daemon looks at all.
        assert_eq!(worker.timed_rescan(true, true), None);
        assert!(worker.timed_rescan(true, false).is_some());
        assert_eq!(worker.timed_rescan(false, false), None);

        // Once the directory's stamp is old enough to trust, an unchanged queue is not
        // listed again.
        let queue = inner.outbox.dir().join("queue");
        let past = std::time::SystemTime::now() - Duration::from_secs(60);
        std::fs::File::open(&queue)
            .unwrap()
            .set_modified(past)
            .unwrap();
        worker.rescan().await;
        assert!(!worker.queue_may_have_changed());

        // A message held by a live process (pid 1): listed again soon, every time.
        let held = message(1);
        assert!(inner.outbox.put(&held).unwrap());
        assert!(worker.queue_may_have_changed());
        worker.rescan().await;
        assert!(!worker.queue.contains_key(&held.id));
        assert_eq!(worker.rescan_period(), RESCAN);
        assert!(
            worker.timed_rescan(true, true).is_some(),
            "a live owner's messages are looked at again on a timer, watched or not"
        );
        std::fs::File::open(&queue)
            .unwrap()
            .set_modified(past)
            .unwrap();
        worker.rescan().await;
        assert!(worker.queue_may_have_changed());
        audit.close().await;
    }

    /// A process that delivers a message and exits between a daemon's listing of the
    /// queue and its liveness check must not have that message sent a second time.
    #[tokio::test]
    async fn a_message_finished_before_its_owner_stopped_is_not_taken_over() {
        let (_dir, audit, inner, mut worker) = daemon_worker().await;
        let rng = SystemRandom::new();
        // Owner pid u32::MAX: no such process, as after the owner exited.
        let message = || Message {
            id: event::random_id(&rng),
            target: "hooks".into(),
            kind: EventType::Rotated,
            body: "{}".into(),
            created_at: Utc::now(),
            secrets: vec!["app".into()],
            version: Some("v".into()),
            gate: None,
            coalesce: false,
            parts: Vec::new(),
            attempts: 1,
            next_attempt_at: Utc::now() + chrono::Duration::hours(1),
            owner_pid: u32::MAX,
            owner_host: inner.host.clone(),
            owned_since: None,
        };
        let (sent, left) = (message(), message());
        for m in [&sent, &left] {
            assert!(inner.outbox.put(m).unwrap());
        }
        let listed = worker.list().await.expect("the queue is readable");
        assert_eq!(listed.1.messages.len(), 2);

        // The owner delivers one of them and exits, after the listing.
        inner
            .outbox
            .finish(&sent, Finished::Delivered { status: 204 })
            .unwrap();
        worker.take_listed(listed).await;

        assert!(
            !worker.queue.contains_key(&sent.id),
            "a delivered message was taken over to be sent again"
        );
        assert!(
            worker.queue.contains_key(&left.id),
            "the one left is taken over"
        );
        assert!(matches!(
            inner.outbox.done(&sent.id).map(|d| d.finished),
            Some(Finished::Delivered { status: 204 })
        ));
        assert!(
            worker.last_scan.foreign_held,
            "a message dropped by the second read makes the worker look again soon"
        );
        audit.close().await;
    }

    /// A pid is handed out again once its process exits: a message whose owner's pid now
    /// belongs to a process that started after it took the message is taken over.
    #[tokio::test]
    async fn a_message_whose_owner_pid_was_handed_out_again_is_taken_over() {
        let (_dir, audit, inner, mut worker) = daemon_worker().await;
        let rng = SystemRandom::new();
        // Pid 1 runs, and started when this machine (or container) did.
        let held_by_pid_1 = |owned_since| Message {
            id: event::random_id(&rng),
            target: "hooks".into(),
            kind: EventType::Rotated,
            body: "{}".into(),
            created_at: Utc::now(),
            secrets: vec!["app".into()],
            version: Some("v".into()),
            gate: None,
            coalesce: false,
            parts: Vec::new(),
            attempts: 0,
            next_attempt_at: Utc::now() + chrono::Duration::hours(1),
            owner_pid: 1,
            owner_host: inner.host.clone(),
            owned_since: Some(owned_since),
        };
        // Taken by a pid 1 long before this boot: another process had that pid then.
        let stale = held_by_pid_1(Utc::now() - chrono::Duration::days(20 * 365));
        // Taken by the pid 1 that runs now.
        let live = held_by_pid_1(Utc::now());
        for m in [&stale, &live] {
            assert!(inner.outbox.put(m).unwrap());
        }
        worker.rescan().await;
        assert!(
            worker.queue.contains_key(&stale.id),
            "the stale owner's message is taken over"
        );
        assert!(
            !worker.queue.contains_key(&live.id),
            "a running owner keeps its message"
        );
        assert!(worker.last_scan.foreign_held);
        audit.close().await;
    }

    #[tokio::test]
    async fn a_worker_holds_at_most_its_limit_and_reads_the_rest_back_oldest_first() {
        let (_dir, audit, inner, mut worker) = daemon_worker().await;
        worker.hold_limit = 4;
        let rng = SystemRandom::new();
        let start = Utc::now() - chrono::Duration::hours(1);
        // Left by a process that stopped, the oldest first; nothing is due for an hour.
        let message = |age: i64, kind: EventType, version: &str| Message {
            id: event::random_id(&rng),
            target: "hooks".into(),
            kind,
            body: "{}".into(),
            created_at: start + chrono::Duration::seconds(age),
            secrets: vec!["app".into()],
            version: Some(version.into()),
            gate: None,
            coalesce: false,
            parts: Vec::new(),
            attempts: 0,
            next_attempt_at: Utc::now() + chrono::Duration::hours(1),
            owner_pid: u32::MAX,
            owner_host: inner.host.clone(),
            owned_since: None,
        };
        let left: Vec<Message> = (0..10)
            .map(|i| message(i, EventType::Rotated, &format!("v{i}")))
            .collect();
        for m in &left {
            assert!(inner.outbox.put(m).unwrap());
        }
        let held = |worker: &Worker| -> Vec<String> {
            let mut ids: Vec<&Message> = worker.queue.values().collect();
            ids.sort_by_key(|m| m.created_at);
            ids.iter().map(|m| m.id.clone()).collect()
        };
        let ids = |range: std::ops::Range<usize>| -> Vec<String> {
            left[range].iter().map(|m| m.id.clone()).collect()
        };

        // Only the limit is held, the oldest; the rest count as queued all the same.
        worker.rescan().await;
        assert_eq!(held(&worker), ids(0..4));
        assert_eq!(worker.spilled, 6);
        worker.publish(Utc::now());
        assert_eq!(inner.status.borrow().queued, 10);
        assert!(!worker.wants_refill());

        // Two leave (delivered, say): half the limit is held, so the next oldest come back.
        for m in &left[..2] {
            worker.queue.remove(&m.id);
            inner
                .outbox
                .finish(
                    m,
                    Finished::Cancelled {
                        reason: "sent".into(),
                    },
                )
                .unwrap();
        }
        assert!(worker.wants_refill());
        worker.rescan().await;
        assert_eq!(held(&worker), ids(2..6));
        assert_eq!(worker.spilled, 4);

        // A new message over the limit stays in the outbox; a gated one is held anyway.
        let late = message(20, EventType::Rotated, "v20");
        let mut gated = message(21, EventType::RotationPending, "v21");
        gated.gate = Some(super::super::outbox::GateRef {
            secret: "app".into(),
            version: "v21".into(),
            fingerprint: "f".into(),
        });
        for m in [&late, &gated] {
            assert!(inner.outbox.put(m).unwrap());
        }
        worker.admit(vec![late.clone(), gated.clone()]).await;
        assert!(!worker.queue.contains_key(&late.id));
        assert!(worker.queue.contains_key(&gated.id));
        assert_eq!(worker.spilled, 5);

        // A message this process is queuing, seen by a look before its command arrives,
        // counts once. Cancelling a rotation then reaches it in the outbox too.
        let pending = message(22, EventType::RotationPending, "v22");
        inner.announce([pending.id.as_str()]);
        assert!(inner.outbox.put(&pending).unwrap());
        worker.rescan().await;
        assert_eq!(worker.spilled, 5, "announced: left to its command");
        worker
            .commands(vec![Command::Queued(Box::new(pending.clone()))])
            .await;
        assert_eq!(worker.spilled, 6);
        let (done, answered) = tokio::sync::oneshot::channel();
        worker
            .commands(vec![Command::Cancel {
                secret: "app".into(),
                version: "v22".into(),
                reason: "rotation abandoned".into(),
                done,
            }])
            .await;
        answered.await.unwrap();
        assert!(matches!(
            inner.outbox.done(&pending.id).map(|d| d.finished),
            Some(Finished::Cancelled { .. })
        ));
        assert_eq!(worker.spilled, 5);
        audit.close().await;
    }

    #[test]
    fn status_codes_map_to_the_documented_outcomes() {
        assert_eq!(classify(200, None), Verdict::Delivered(200));
        assert_eq!(classify(204, None), Verdict::Delivered(204));
        assert_eq!(classify(410, None), Verdict::Gone);
        for status in [301, 400, 401, 404, 409, 422] {
            assert_eq!(classify(status, None), Verdict::Final(status), "{status}");
        }
        let ra = Some(Duration::from_secs(3));
        assert!(
            matches!(classify(429, ra), Verdict::Retry { retry_after, breaker: false, .. } if retry_after == ra)
        );
        for status in [500, 502, 503, 504] {
            assert!(
                matches!(classify(status, None), Verdict::Retry { breaker: true, .. }),
                "{status}"
            );
        }
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Tue, 01 Jan 2030 00:01:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Mon, 31 Dec 2029 23:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn backoff_doubles_with_jitter_and_stops_at_the_cap() {
        let rng = SystemRandom::new();
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(10);
        for (attempt, nominal) in [(1, 100), (2, 200), (3, 400), (6, 3200)] {
            let d = backoff(attempt, base, cap, &rng);
            let n = Duration::from_millis(nominal);
            assert!(
                d >= n.mul_f64(0.8) && d <= n.mul_f64(1.2),
                "{attempt}: {d:?}"
            );
        }
        for attempt in [10, 40, u32::MAX] {
            assert!(backoff(attempt, base, cap, &rng) <= cap.mul_f64(1.2));
        }
    }

    #[test]
    fn the_breaker_opens_after_the_threshold_and_lets_one_probe_through() {
        let t0 = Utc::now();
        let cooldown = Duration::from_secs(10);
        let mut b = Breaker::Closed { failures: 0 };
        assert!(b.allow(t0, 0));
        assert!(!b.allow(t0, PER_ENDPOINT), "per-endpoint limit");
        assert_eq!(b.failure(t0, 3, cooldown), Change::None);
        assert_eq!(b.failure(t0, 3, cooldown), Change::None);
        assert_eq!(b.failure(t0, 3, cooldown), Change::Opened(3));
        assert!(
            !b.allow(t0 + chrono::Duration::seconds(9), 0),
            "open: nothing goes"
        );
        let later = t0 + chrono::Duration::seconds(10);
        assert!(b.allow(later, 0), "one probe after the cooldown");
        assert_eq!(b, Breaker::HalfOpen);
        assert!(!b.allow(later, 1), "only one probe");
        // A failed probe opens it again; a successful one closes it.
        assert_eq!(b.failure(later, 3, cooldown), Change::Opened(1));
        assert_eq!(
            b,
            Breaker::Open {
                until: later + chrono::Duration::seconds(10)
            }
        );
        assert!(b.allow(later + chrono::Duration::seconds(10), 0));
        assert_eq!(b.success(), Change::Closed);
        assert_eq!(b, Breaker::Closed { failures: 0 });
        assert_eq!(b.success(), Change::None);
    }
}
