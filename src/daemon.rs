//! Task wiring: the scheduler loop, signals, reload and shutdown.
//!
//! One timer for all secrets: a [`DueQueue`] ordered by due time, and a loop that sleeps
//! until the earliest entry, a finished rotation or a control event. Rotations run as
//! tasks, at most `daemon.concurrency` at once and never two for one secret; each one
//! reports the plan that remains, which is how the next due time is found. Beside it runs
//! the webhook delivery worker, which resumes the outbox at start and stops (leaving what
//! is undelivered in the outbox) at shutdown.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ring::rand::SystemRandom;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiState, Live, RateLimiter};
use crate::audit::{AuditEvent, AuditLog, Fingerprinter};
use crate::backend;
use crate::backoff::backoff;
use crate::metrics::Metrics;
use crate::notify::{self, Notifier};
use crate::policy::{self, Policy, PolicyErrors, SecretPolicy};
use crate::rotation::plan::Plan;
use crate::rotation::{Attempt, Engine, RotationError};
use crate::schedule::queue::DueQueue;

/// The longest the loop sleeps without looking at the wall clock again (so a clock
/// step or a suspended machine delays a rotation by at most this much).
const MAX_SLEEP: Duration = Duration::from_secs(15 * 60);
/// How long shutdown waits for in-flight rotations.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(60);
/// First retry delay after a failure; doubles per attempt up to `max_retry_backoff`.
const FIRST_RETRY: Duration = Duration::from_secs(2);
/// How long a run that exits (`run --once`, `rotate`) keeps delivering webhooks before it
/// leaves the rest in the outbox for the daemon.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(15);
/// Delivery and confirmation records older than this are pruned at start (they only
/// prevent resending, and gates wait minutes).
const DONE_RETENTION: Duration = Duration::from_secs(7 * 86_400);

/// Runs each time the daemon settles (see [`when_settled`]).
static WHEN_SETTLED: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Sets what runs each time the daemon has finished the work of a start or a reload (every
/// secret looked at, nothing due) and is about to sit idle: the binary hands freed memory
/// back to the system there, which takes a call this library, free of unsafe code, does
/// not make. Set once; later calls are ignored.
pub fn when_settled(hook: fn()) {
    let _ = WHEN_SETTLED.set(hook);
}

/// What the daemon is told from outside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Re-read the policy (SIGHUP).
    Reload,
    /// Finish in-flight rotations and exit (SIGTERM, SIGINT).
    Shutdown(&'static str),
}

/// Why the daemon could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The policy is invalid.
    #[error("{0}")]
    Policy(#[from] PolicyErrors),
    /// Opening the audit log, a key or a backend failed.
    #[error("{0}")]
    Startup(String),
    /// `--once`: some secrets could not be brought up to date.
    #[error("{failed} of {total} secrets could not be rotated or recovered")]
    Failures {
        /// How many failed.
        failed: usize,
        /// How many were attempted.
        total: usize,
    },
}

/// What one run needs, opened from a policy.
struct Runtime {
    policy: Arc<Policy>,
    engine: Arc<Engine>,
}

/// Where an engine's notifications come from.
pub enum Notifications {
    /// Open a notifier for the policy (loading every target's signing keys).
    Open,
    /// Keep the running one; it adopts the policy's targets (a reload).
    Running(Arc<Notifier>),
    /// None: for commands that notify nobody (a rollback must work without webhook keys).
    Off,
}

/// Opens the audit log, the fingerprint key, the backends and the notifier for `policy`.
/// A reload passes the running audit log and notifier.
pub async fn open_runtime(
    policy: Policy,
    audit: Option<AuditLog>,
    notifications: Notifications,
) -> Result<(Arc<Policy>, Arc<Engine>), DaemonError> {
    let startup =
        |what: &str, e: &dyn std::fmt::Display| DaemonError::Startup(format!("{what}: {e}"));
    let audit = match audit {
        Some(a) => a,
        None => AuditLog::open(&policy.daemon.audit_log)
            .await
            .map_err(|e| startup("cannot open the audit log", &e))?,
    };
    let from_env = policy.daemon.audit_key_env.as_deref().and_then(|var| {
        std::env::var(var)
            .ok()
            .map(|text| (var, zeroize::Zeroizing::new(text)))
    });
    let (fingerprinter, created) = match from_env {
        Some((var, text)) => {
            let key = zeroize::Zeroizing::new(
                crate::hex::decode(text.trim())
                    .filter(|k| k.len() == 32)
                    .ok_or_else(|| {
                        DaemonError::Startup(format!(
                            "{var} must hold the audit fingerprint key as 64 hex digits"
                        ))
                    })?,
            );
            (Fingerprinter::from_key(&key), false)
        }
        None => Fingerprinter::load_or_create(&policy.daemon.audit_key_file)
            .map_err(|e| startup("cannot load the audit fingerprint key", &e))?,
    };
    if created {
        tracing::warn!(key_file = %policy.daemon.audit_key_file.display(), "created a new audit fingerprint key (mode 0600)");
    }
    let backends = backend::open_all(&policy)
        .await
        .map_err(|e| startup("cannot open a backend", &e))?;
    let notifier = match notifications {
        Notifications::Running(running) => {
            running
                .reconfigure(&policy)
                .map_err(|e| startup("cannot load webhook signing keys", &e))?;
            Some(running)
        }
        Notifications::Open => Some(Arc::new(
            Notifier::open(&policy, audit.clone())
                .map_err(|e| startup("cannot set up webhook notifications", &e))?,
        )),
        Notifications::Off => None,
    };
    let mut engine = Engine::new(backends, audit, fingerprinter);
    if let Some(notifier) = notifier {
        engine = engine.with_notifier(notifier);
    }
    Ok((Arc::new(policy), Arc::new(engine)))
}

/// Loads the policy, recording a rejection in the audit log when one is open.
async fn load_policy(path: &Path, audit: Option<&AuditLog>) -> Result<Policy, PolicyErrors> {
    let loaded = policy::load(path);
    if let (Err(errors), Some(audit)) = (&loaded, audit) {
        let _ = audit
            .append(AuditEvent::PolicyRejected {
                path: path.display().to_string(),
                errors: errors.0.len(),
                first_error: errors
                    .0
                    .first()
                    .map(|d| {
                        format!(
                            "{}:{}:{}: {}: {}",
                            d.file, d.line, d.column, d.path, d.message
                        )
                    })
                    .unwrap_or_default(),
            })
            .await;
    }
    loaded
}

async fn audit_policy_loaded(engine: &Engine, policy: &Policy) -> Result<(), DaemonError> {
    engine
        .audit()
        .append(AuditEvent::PolicyLoaded {
            path: policy.source.display().to_string(),
            digest: policy.digest.clone(),
            secrets: policy.secrets.len(),
        })
        .await
        .map_err(|e| DaemonError::Startup(format!("cannot write the audit log: {e}")))?;
    Ok(())
}

/// Runs the daemon until a shutdown control arrives (or, with `once`, until every secret
/// has been brought up to date once).
pub async fn run(
    policy_path: PathBuf,
    once: bool,
    controls: mpsc::Receiver<Control>,
) -> Result<(), DaemonError> {
    let policy = load_policy(&policy_path, None).await?;
    let (policy, engine) = open_runtime(policy, None, Notifications::Open).await?;
    let metrics = Arc::new(Metrics::new());
    let observer = Arc::clone(&metrics);
    engine
        .audit()
        .observe(Arc::new(move |event| observer.observe(event)));
    let notifier = Arc::clone(engine.notifier().expect("open_runtime sets a notifier"));
    let outbox = notifier.outbox().clone();
    let confirmations = notify::Confirmations::new(&policy.daemon.state_dir);
    let pruned = tokio::task::spawn_blocking(move || {
        outbox.prune(DONE_RETENTION).unwrap_or(0) + confirmations.prune(DONE_RETENTION).unwrap_or(0)
    })
    .await
    .unwrap_or(0);
    if pruned > 0 {
        tracing::info!(
            pruned,
            "pruned old webhook delivery and confirmation records"
        );
    }
    // Deliveries resume before anything else, so what a crash left goes out first.
    notifier
        .start(notify::Mode::Daemon)
        .await
        .map_err(|e| DaemonError::Startup(format!("cannot start webhook delivery: {e}")))?;
    let mut delivery = notifier.status();
    let depth = Arc::clone(&metrics);
    tokio::spawn(async move {
        while delivery.changed().await.is_ok() {
            let left = delivery.borrow_and_update().left();
            depth.webhook_queue_depth(left);
        }
    });
    // The API listens before recovery and scheduling: /healthz answers during a long
    // start-up, and a port in use fails start-up here rather than in a background task.
    let shutdown_api = CancellationToken::new();
    let tokens = match &policy.api {
        Some(api) => api::load_tokens(api).map_err(DaemonError::Startup)?,
        None => None,
    };
    let (live, live_view) = watch::channel(Live {
        policy: Arc::clone(&policy),
        engine: Arc::clone(&engine),
        tokens,
    });
    let api_task = match (&policy.api, once) {
        (Some(settings), false) => {
            let listener = api::bind(settings).map_err(|e| {
                DaemonError::Startup(format!("cannot listen on {}: {e}", settings.listen))
            })?;
            let state = ApiState::new(
                live_view,
                Arc::clone(&metrics),
                RateLimiter::new(settings.rotate_burst, settings.rotate_every),
            );
            let (settings, stop) = (settings.clone(), shutdown_api.clone());
            Some(tokio::spawn(async move {
                if let Err(e) = api::serve(listener, &settings, state, stop).await {
                    tracing::error!(error = %e, "the API stopped");
                }
            }))
        }
        _ => None,
    };
    engine
        .audit()
        .append(AuditEvent::DaemonStarted {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
        })
        .await
        .map_err(|e| DaemonError::Startup(format!("cannot write the audit log: {e}")))?;
    audit_policy_loaded(&engine, &policy).await?;
    engine
        .close_interrupted(&policy)
        .await
        .map_err(|e| DaemonError::Startup(format!("cannot close interrupted rotations: {e}")))?;
    let runtime = Runtime { policy, engine };
    let result = if once {
        run_once(runtime).await
    } else {
        let result = Scheduler::new(policy_path, runtime, live, metrics)
            .run(controls)
            .await;
        shutdown_api.cancel();
        if let Some(task) = api_task {
            let _ = task.await;
        }
        result
    };
    notifier.stop().await;
    result
}

/// Delivers what is queued, for at most [`DRAIN_LIMIT`]; says what is left.
pub async fn drain_notifications(engine: &Engine) {
    let Some(notifier) = engine.notifier() else {
        return;
    };
    let left = notifier.drain(DRAIN_LIMIT).await;
    if left > 0 {
        tracing::warn!(
            left,
            outbox = %notifier.outbox().dir().display(),
            "webhooks not delivered yet stay in the outbox; the daemon delivers them"
        );
    }
}

/// `run --once`: reconcile every enabled secret, then exit; for cron-driven setups.
async fn run_once(runtime: Runtime) -> Result<(), DaemonError> {
    let limit = Arc::new(tokio::sync::Semaphore::new(
        runtime.policy.daemon.concurrency,
    ));
    let mut tasks = JoinSet::new();
    let enabled: Vec<_> = runtime
        .policy
        .secrets
        .iter()
        .filter(|s| s.enabled)
        .cloned()
        .collect();
    for secret in &enabled {
        let (engine, secret, limit) = (
            Arc::clone(&runtime.engine),
            secret.clone(),
            Arc::clone(&limit),
        );
        tasks.spawn(async move {
            let _permit = limit
                .acquire_owned()
                .await
                .expect("semaphore is never closed");
            let result = engine.reconcile(&secret, Attempt::Only).await;
            if let Err(error) = &result {
                // As the scheduler does: the operator sees why, not only how many.
                tracing::error!(secret = %secret.name, error = %error, "not brought up to date");
            }
            result
        });
    }
    let mut failed = 0;
    while let Some(joined) = tasks.join_next().await {
        if !matches!(joined, Ok(Ok(_))) {
            failed += 1;
        }
    }
    drain_notifications(&runtime.engine).await;
    if let Some(notifier) = runtime.engine.notifier() {
        notifier.stop().await;
    }
    let _ = runtime
        .engine
        .audit()
        .append(AuditEvent::DaemonStopping {
            reason: "once".to_owned(),
            in_flight: 0,
        })
        .await;
    runtime.engine.audit().close().await;
    if failed > 0 {
        return Err(DaemonError::Failures {
            failed,
            total: enabled.len(),
        });
    }
    Ok(())
}

type JobResult = Result<Plan, RotationError>;

/// Secrets are known by their position in the policy in force (`u32`, as the queue keys
/// them): the scheduler holds no copy of any name, so holding 100,000 secrets costs it
/// about 20 bytes each.
struct Scheduler {
    policy_path: PathBuf,
    runtime: Runtime,
    /// What the API serves from; replaced on every accepted reload.
    live: watch::Sender<Live>,
    metrics: Arc<Metrics>,
    /// Bumped by every accepted reload; a job dispatched under an older one re-plans.
    generation: u64,
    /// Enabled secrets of the policy in force.
    enabled: usize,
    queue: DueQueue,
    ready: VecDeque<u32>,
    in_flight: HashSet<u32>,
    /// The secret each task rotates (its position in the policy in force, `None` once a
    /// reload dropped it) and the generation it was dispatched under, so a finished or
    /// panicked task's secret is found.
    task_secrets: HashMap<tokio::task::Id, (Option<u32>, u64)>,
    /// Secrets being retried.
    failures: HashMap<u32, Failing>,
    tasks: JoinSet<JobResult>,
    rng: SystemRandom,
    /// Set when a policy is adopted; cleared (and logged) once every secret has had its
    /// first look and nothing is due, so an operator sees when start-up work has ended.
    settling: bool,
}

/// A secret whose last look failed (or did not settle), being retried with backoff.
#[derive(Clone, Copy, Debug, Default)]
struct Failing {
    /// Failed looks in a row, for the backoff.
    tries: u32,
    /// The last look could not describe the secret, and the engine audited that: the
    /// next look's same failure is the same outage, not audited again. Any other failure
    /// leaves this false, so a describe failure after it is on record.
    outage_on_record: bool,
}

impl Failing {
    /// How the next look at a secret counts: a retry (not audited again) only while the
    /// outage that failed its last look is on record.
    fn next_attempt(failing: Option<&Failing>) -> Attempt {
        if failing.is_some_and(|f| f.outage_on_record) {
            Attempt::Retry
        } else {
            Attempt::First
        }
    }

    /// Counts a failed look; `error` is `None` when the look did not settle or panicked.
    fn failed(&mut self, error: Option<&RotationError>) {
        self.tries += 1;
        self.outage_on_record = error.is_some_and(|e| e.step() == "describe");
    }
}

impl Scheduler {
    fn new(
        policy_path: PathBuf,
        runtime: Runtime,
        live: watch::Sender<Live>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let mut scheduler = Self {
            policy_path,
            runtime,
            live,
            metrics,
            generation: 0,
            enabled: 0,
            queue: DueQueue::new(),
            ready: VecDeque::new(),
            in_flight: HashSet::new(),
            task_secrets: HashMap::new(),
            failures: HashMap::new(),
            tasks: JoinSet::new(),
            rng: SystemRandom::new(),
            settling: true,
        };
        scheduler.adopt_policy(None);
        scheduler
    }

    /// Every enabled secret of the current policy is looked at now: that first look finds
    /// interrupted rotations, missed slots and the next due time. After a reload, what is
    /// known about secrets still in the policy (jobs in flight, failure counts) follows
    /// them to their new positions.
    fn adopt_policy(&mut self, previous: Option<&Policy>) {
        let policy = Arc::clone(&self.runtime.policy);
        if let Some(previous) = previous {
            let positions: HashMap<&str, u32> = policy
                .secrets
                .iter()
                .enumerate()
                .filter(|(_, s)| s.enabled)
                .map(|(i, s)| (s.name.as_str(), i as u32))
                .collect();
            let moved = |old: u32| {
                let secret = previous.secrets.get(old as usize)?;
                positions.get(secret.name.as_str()).copied()
            };
            self.failures = self
                .failures
                .drain()
                .filter_map(|(old, count)| Some((moved(old)?, count)))
                .collect();
            for (position, _) in self.task_secrets.values_mut() {
                *position = position.and_then(moved);
            }
            self.in_flight = self.task_secrets.values().filter_map(|(p, _)| *p).collect();
        }
        // The first look is due now: straight to `ready`, in file order (the queue keeps
        // whole seconds, rounded up, which would put it up to a second away).
        self.queue = DueQueue::with_keys(policy.secrets.len());
        self.ready.clear();
        for (i, secret) in policy.secrets.iter().enumerate() {
            if secret.enabled {
                self.ready.push_back(i as u32);
            }
        }
        self.enabled = self.ready.len();
        self.metrics.adopt(&policy);
        self.settling = true;
        tracing::info!(secrets = self.enabled, "policy adopted");
    }

    fn secret(&self, position: u32) -> &SecretPolicy {
        &self.runtime.policy.secrets[position as usize]
    }

    async fn run(mut self, mut controls: mpsc::Receiver<Control>) -> Result<(), DaemonError> {
        tracing::info!(policy = %self.policy_path.display(), "rekeyd running");
        loop {
            self.dispatch();
            self.note_settled();
            let sleep = self.sleep_duration();
            tokio::select! {
                control = controls.recv() => match control {
                    Some(Control::Reload) => self.reload().await,
                    Some(Control::Shutdown(reason)) => return self.shutdown(reason).await,
                    None => return self.shutdown("control channel closed").await,
                },
                Some(joined) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => {
                    self.finished(joined);
                }
                _ = tokio::time::sleep(sleep) => {
                    let due = self.queue.pop_due(Utc::now());
                    self.ready.extend(due);
                }
            }
        }
    }

    /// Logs, once per adopted policy, that every secret is planned and nothing runs.
    fn note_settled(&mut self) {
        if !self.settling || !self.ready.is_empty() || !self.tasks.is_empty() {
            return;
        }
        let next_due = self.queue.next_due();
        if next_due.is_some_and(|due| due <= Utc::now()) {
            return;
        }
        self.settling = false;
        // The first look at every secret went through `ready`; give its room back.
        self.ready.shrink_to_fit();
        tracing::info!(
            secrets = self.enabled,
            queued = self.queue.len(),
            next_due = %next_due.map_or_else(|| "never".to_owned(), |due| due.to_rfc3339()),
            "every secret planned; idle until the next one is due"
        );
        if let Some(hook) = WHEN_SETTLED.get() {
            hook();
        }
    }

    fn sleep_duration(&self) -> Duration {
        if !self.ready.is_empty() && self.tasks.len() < self.runtime.policy.daemon.concurrency {
            return Duration::ZERO;
        }
        match self.queue.next_due() {
            Some(due) => (due - Utc::now())
                .to_std()
                .unwrap_or(Duration::ZERO)
                .min(MAX_SLEEP),
            None => MAX_SLEEP,
        }
    }

    fn dispatch(&mut self) {
        let limit = self.runtime.policy.daemon.concurrency;
        while self.tasks.len() < limit {
            let Some(position) = self.ready.pop_front() else {
                break;
            };
            if self.in_flight.contains(&position) {
                // It re-plans when its running job ends.
                continue;
            }
            // A cheap copy: the name's text and the settings are shared.
            let secret = self.secret(position).clone();
            let engine = Arc::clone(&self.runtime.engine);
            let attempt = Failing::next_attempt(self.failures.get(&position));
            self.in_flight.insert(position);
            let handle = self
                .tasks
                .spawn(async move { engine.reconcile(&secret, attempt).await });
            self.task_secrets
                .insert(handle.id(), (Some(position), self.generation));
        }
    }

    fn finished(&mut self, joined: Result<(tokio::task::Id, JobResult), tokio::task::JoinError>) {
        let id = match &joined {
            Ok((id, _)) => *id,
            Err(e) => e.id(),
        };
        let Some((position, generation)) = self.task_secrets.remove(&id) else {
            return;
        };
        let Some(position) = position else {
            // A reload dropped the secret (or disabled it).
            return;
        };
        self.in_flight.remove(&position);
        let now = Utc::now();
        let result = match joined {
            Ok((_, result)) => result,
            Err(e) => {
                tracing::error!(secret = %self.secret(position).name, error = %e, "a rotation task panicked; will retry");
                self.retry(position, now, None);
                return;
            }
        };
        if generation != self.generation {
            // Dispatched under the previous policy: look again now, under this one.
            self.queue.cancel(position);
            self.ready.push_back(position);
            return;
        }
        let name = &self.runtime.policy.secrets[position as usize].name;
        match result {
            Ok(Plan::Wait { until }) => {
                self.failures.remove(&position);
                self.metrics.secret_due(position as usize, until);
                tracing::debug!(secret = %name, next_due = %until, "scheduled");
                self.queue.schedule(position, until);
            }
            Ok(Plan::Idle) => {
                self.failures.remove(&position);
                tracing::info!(secret = %name, "schedule never fires again; not rescheduled");
            }
            Ok(other) => {
                tracing::warn!(secret = %name, plan = ?other, "still not settled after a reconcile; retrying");
                self.retry(position, now, None);
            }
            Err(error) => {
                tracing::warn!(secret = %name, error = %error, "will retry");
                self.retry(position, now, Some(&error));
            }
        }
    }

    /// Looks again after a backoff; `error` as for [`Failing::failed`].
    fn retry(&mut self, position: u32, now: DateTime<Utc>, error: Option<&RotationError>) {
        let failing = self.failures.entry(position).or_default();
        failing.failed(error);
        let delay = backoff(
            failing.tries,
            FIRST_RETRY,
            self.runtime.policy.daemon.max_retry_backoff,
            &self.rng,
        );
        self.queue.schedule(
            position,
            now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX),
        );
    }

    async fn reload(&mut self) {
        tracing::info!(signal = "SIGHUP", "reloading the policy");
        let audit = self.runtime.engine.audit().clone();
        let policy = match load_policy(&self.policy_path, Some(&audit)).await {
            Ok(policy) => policy,
            Err(errors) => {
                tracing::error!(
                    problems = errors.0.len(),
                    "policy rejected; the running policy stays in force:\n{errors}"
                );
                return;
            }
        };
        // The token file is part of the configuration: re-read, and a bad one rejects the
        // reload like a bad policy does.
        let tokens = match policy.api.as_ref().map(api::load_tokens).transpose() {
            Ok(tokens) => tokens.flatten(),
            Err(e) => {
                tracing::error!(error = %e, "reload rejected; the running policy stays in force");
                return;
            }
        };
        let notifications = match self.runtime.engine.notifier() {
            Some(running) => Notifications::Running(Arc::clone(running)),
            None => Notifications::Open,
        };
        match open_runtime(policy, Some(audit), notifications).await {
            Ok((policy, engine)) => {
                if let Err(e) = audit_policy_loaded(&engine, &policy).await {
                    tracing::error!(error = %e, "reload not recorded; keeping the running policy");
                    return;
                }
                if policy.api.as_ref().map(|a| (a.listen, &a.tls))
                    != self.runtime.policy.api.as_ref().map(|a| (a.listen, &a.tls))
                {
                    tracing::warn!("[api] listen and TLS changes take effect at the next start");
                }
                self.live.send_replace(Live {
                    policy: Arc::clone(&policy),
                    engine: Arc::clone(&engine),
                    tokens,
                });
                let previous = std::mem::replace(&mut self.runtime, Runtime { policy, engine });
                self.generation += 1;
                self.adopt_policy(Some(&previous.policy));
            }
            Err(e) => {
                tracing::error!(error = %e, "reload failed; the running policy stays in force");
            }
        }
    }

    async fn shutdown(mut self, reason: &'static str) -> Result<(), DaemonError> {
        let in_flight = self.tasks.len();
        tracing::info!(reason, in_flight, "shutting down after in-flight rotations");
        let audit = self.runtime.engine.audit().clone();
        let _ = audit
            .append(AuditEvent::DaemonStopping {
                reason: reason.to_owned(),
                in_flight,
            })
            .await;
        let drain = async {
            while let Some(joined) = self.tasks.join_next_with_id().await {
                if let Ok((id, result)) = joined
                    && let Some((Some(position), _)) = self.task_secrets.get(&id)
                {
                    let name = &self.runtime.policy.secrets[*position as usize].name;
                    tracing::info!(secret = %name, ok = result.is_ok(), "in-flight rotation ended");
                }
            }
        };
        if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
            tracing::error!(
                "in-flight rotations did not finish in time; the next start recovers them"
            );
        }
        // Undelivered webhooks stay in the outbox for the next start.
        if let Some(notifier) = self.runtime.engine.notifier() {
            notifier.stop().await;
        }
        Ok(())
    }
}

/// Feeds SIGHUP, SIGTERM and SIGINT into the control channel.
pub fn forward_signals(controls: mpsc::Sender<Control>) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        loop {
            let control = tokio::select! {
                _ = hup.recv() => Control::Reload,
                _ = term.recv() => Control::Shutdown("SIGTERM"),
                _ = int.recv() => Control::Shutdown("SIGINT"),
            };
            if controls.send(control).await.is_err() {
                break;
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_describe_failure_on_record_makes_the_next_look_a_retry() {
        let failed_at = |step| RotationError::Backend {
            step,
            source: crate::backend::Error::Generic {
                backend: "local".into(),
                message: "down".into(),
                status: crate::backend::ErrorStatus::Temporary,
                source: None,
            },
        };
        assert_eq!(Failing::next_attempt(None), Attempt::First);
        let mut failing = Failing::default();
        // A rotation's failure is audited as such; a describe failure after it is news.
        failing.failed(Some(&failed_at("put_pending")));
        assert_eq!(Failing::next_attempt(Some(&failing)), Attempt::First);
        failing.failed(Some(&failed_at("describe")));
        assert_eq!(Failing::next_attempt(Some(&failing)), Attempt::Retry);
        failing.failed(Some(&failed_at("describe")));
        assert_eq!(Failing::next_attempt(Some(&failing)), Attempt::Retry);
        // A look that did not settle (or panicked) ends the outage on record.
        failing.failed(None);
        assert_eq!(Failing::next_attempt(Some(&failing)), Attempt::First);
        assert_eq!(failing.tries, 4, "every failure backs off further");
    }
}
