//! Reading the outbox: which queued messages this worker delivers (its own, and those of
//! processes that stopped), how often an idle daemon looks, and the messages held back
//! in the outbox for want of room.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{Mode, RESCAN, RESCAN_IDLE, TIMESTAMP_GRANULARITY, Worker};
use crate::notify::gate::{Confirmations, Decision};
use crate::notify::outbox::{Finished, Loaded, Message};
use crate::notify::queue_watch::QueueWatch;

/// What a daemon's last rescan saw, so an idle one can skip listing an unchanged queue.
#[derive(Default)]
pub(super) struct LastScan {
    /// The queue directory's modification time (`Some(None)`: no directory), when it is
    /// old enough to be trusted: a change within the file system's timestamp granularity
    /// of the listing could leave it unchanged. `None`: list again next time.
    stamp: Option<Option<std::time::SystemTime>>,
    /// Another live process held queued messages: list again soon, it may stop.
    foreign_held: bool,
}

impl Worker {
    fn mine(&self, message: &Message) -> bool {
        if message.owned_by(self.inner.pid, &self.inner.host) {
            return true;
        }
        self.mode == Mode::Daemon && !message.owner_alive(&self.inner.host)
    }

    /// Watches the outbox queue for messages other processes add; `None`: look on a timer.
    pub(super) fn start_watch(&self) -> Option<QueueWatch> {
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
    pub(super) fn timed_rescan(&self, daemon: bool, watched: bool) -> Option<tokio::time::Instant> {
        if !daemon || (watched && !self.last_scan.foreign_held) {
            return None;
        }
        Some(tokio::time::Instant::now() + self.rescan_period())
    }

    /// Whether the message with this id is the worker's own: queued, in flight, or being
    /// written by this process.
    pub(super) fn holds(&self, id: &str) -> bool {
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
    pub(super) fn queue_may_have_changed(&self) -> bool {
        match self.last_scan.stamp {
            Some(stamp) if !self.last_scan.foreign_held => {
                self.inner.outbox.queue_modified() != stamp
            }
            _ => true,
        }
    }

    /// Picks up messages on disk that this worker should deliver and does not hold yet.
    pub(super) async fn rescan(&mut self) {
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

    /// Of messages whose process was found stopped, those still queued, read again from
    /// disk (see [`Outbox::still_queued`](crate::notify::outbox::Outbox::still_queued)).
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
    pub(super) async fn spilled_matching(
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
    pub(in crate::notify) fn with_hold_limit(mut self, limit: usize) -> Self {
        self.hold_limit = limit;
        self
    }

    /// Whether one more message fits in memory (gated pending events always do).
    pub(super) fn may_hold(&self, message: &Message) -> bool {
        self.may_hold_besides(message, 0)
    }

    /// [`Self::may_hold`] with `more` messages about to be held as well.
    fn may_hold_besides(&self, message: &Message, more: usize) -> bool {
        message.gate.is_some() || self.queue.len() + self.in_flight.len() + more < self.hold_limit
    }

    /// Messages were left in the outbox for want of room, and now there is: half the limit,
    /// so each read of the outbox brings back many.
    pub(super) fn wants_refill(&self) -> bool {
        self.spilled > 0 && self.queue.len() + self.in_flight.len() <= self.hold_limit / 2
    }
}

/// The answer a gated message's own response gave, recorded before its message was closed:
/// the decision and who gave it (`HTTP 200`). Answers given another way (CLI, API), or for
/// another value stored under the same version id, do not count: they say nothing about
/// whether this message was delivered.
fn answered_before(confirmations: &Confirmations, message: &Message) -> Option<(Decision, String)> {
    let gate = message.gate.as_ref()?;
    let answer = confirmations.get(&gate.secret, &gate.version, &message.target)?;
    let same_value = answer.fingerprint.as_deref().unwrap_or("") == gate.fingerprint.as_str();
    (answer.via == "response" && same_value).then_some((answer.decision, answer.by))
}

/// The status code in a response answer's `by` (`HTTP 200`).
fn status_of(by: &str) -> Option<u16> {
    by.strip_prefix("HTTP ")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use ring::rand::SystemRandom;

    use super::*;
    use crate::notify::event::{self, EventType};
    use crate::notify::{Command, Inner};

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
        let notifier = crate::notify::Notifier::open(&policy, audit.clone()).unwrap();
        let inner = Arc::clone(&notifier.inner);
        let worker = Worker::new(Arc::clone(&inner), Mode::Daemon).unwrap();
        (dir, audit, inner, worker)
    }

    /// A message about `app`'s version `v`, due in an hour, queued on this host by
    /// `owner_pid` with no attempt made: tests change the fields they are about.
    fn left_by(inner: &Inner, owner_pid: u32) -> Message {
        Message {
            id: event::random_id(&SystemRandom::new()),
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
            owner_pid,
            owner_host: inner.host.clone(),
            owned_since: None,
        }
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
        let message = |owner_pid| Message {
            attempts: 1,
            ..left_by(&inner, owner_pid)
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
        // Owner pid u32::MAX: no such process, as after the owner exited.
        let message = || Message {
            attempts: 1,
            ..left_by(&inner, u32::MAX)
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
        // Pid 1 runs, and started when this machine (or container) did.
        let held_by_pid_1 = |owned_since| Message {
            owned_since: Some(owned_since),
            ..left_by(&inner, 1)
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
        let start = Utc::now() - chrono::Duration::hours(1);
        // Left by a process that stopped, the oldest first; nothing is due for an hour.
        let message = |age: i64, kind: EventType, version: &str| Message {
            kind,
            created_at: start + chrono::Duration::seconds(age),
            version: Some(version.into()),
            ..left_by(&inner, u32::MAX)
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
        gated.gate = Some(crate::notify::outbox::GateRef {
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
}
