//! Prometheus metrics: what rotated, how long it took, what is due, what failed.
//!
//! Recorded by the engine and the daemon through small methods here; rendered on scrape
//! in the Prometheus text format. Labels carry secret names and backend names, never
//! values. Per-secret "seconds until next rotation" and "age of current version" are
//! kept as timestamps and turned into durations at scrape time, so they are never stale.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::policy::Policy;
use crate::schedule::Stamp;

/// A secret is overdue once its due time is this far past (the catch-up tolerance).
const OVERDUE_AFTER: chrono::Duration = crate::rotation::plan::ON_TIME_TOLERANCE;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabel {
    backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendStep {
    backend: String,
    step: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetOutcome {
    target: String,
    outcome: String,
}

/// What the daemon last learnt about a secret.
#[derive(Clone, Copy, Debug, Default)]
struct SecretTimes {
    next_due: Option<DateTime<Utc>>,
    current_since: Option<DateTime<Utc>>,
    failures: u32,
}

/// [`SecretTimes`] of every secret of the policy in force, by its position there, in
/// whole seconds: 8 bytes a secret, and no copy of its name (holding 100,000 secrets, a
/// map by name cost 12 MiB).
#[derive(Debug, Default)]
struct Times {
    /// Secret `i` of the table is `policy.secrets[i]`.
    policy: Option<Arc<Policy>>,
    /// Positions sorted by name, to find a secret an audit event names.
    by_name: Vec<u32>,
    next_due: Vec<Option<Stamp>>,
    current_since: Vec<Option<Stamp>>,
    /// Failed rotations since the last success, by position; empty until the first
    /// failure (most policies never pay for it).
    failures: Vec<u32>,
    /// Secrets outside the policy (the daemon's events only name its own secrets).
    others: HashMap<String, SecretTimes>,
}

impl Times {
    /// The backend the policy gives a secret, if the secret is in it.
    fn backend_of(&self, name: &str) -> Option<String> {
        let position = self.position(name)?;
        Some(self.policy.as_ref()?.secrets[position].backend.clone())
    }

    fn position(&self, name: &str) -> Option<usize> {
        let policy = self.policy.as_ref()?;
        self.by_name
            .binary_search_by(|&i| policy.secrets[i as usize].name.as_str().cmp(name))
            .ok()
            .map(|found| self.by_name[found] as usize)
    }

    fn record(
        &mut self,
        name: &str,
        next_due: Option<DateTime<Utc>>,
        current_since: Option<DateTime<Utc>>,
    ) {
        match self.position(name) {
            Some(i) => {
                if let Some(due) = next_due {
                    self.next_due[i] = Some(Stamp::floor(due));
                }
                if let Some(since) = current_since {
                    self.current_since[i] = Some(Stamp::floor(since));
                }
            }
            None => {
                let entry = self.others.entry(name.to_owned()).or_default();
                if next_due.is_some() {
                    entry.next_due = next_due;
                }
                if current_since.is_some() {
                    entry.current_since = current_since;
                }
            }
        }
    }

    /// A rotation of the secret failed (`true`, one more failure) or succeeded (`false`,
    /// none since).
    fn rotation_ended(&mut self, name: &str, failed: bool) {
        let before = match self.position(name) {
            Some(i) => self.failures.get(i).copied().unwrap_or(0),
            None => self.others.get(name).map_or(0, |t| t.failures),
        };
        let after = if failed { before.saturating_add(1) } else { 0 };
        self.set_failures(name, after);
    }

    fn set_failures(&mut self, name: &str, count: u32) {
        match self.position(name) {
            Some(i) => {
                if self.failures.is_empty() {
                    if count == 0 {
                        return;
                    }
                    self.failures = vec![0; self.next_due.len()];
                }
                self.failures[i] = count;
            }
            None => self.others.entry(name.to_owned()).or_default().failures = count,
        }
    }

    /// Every secret with something known: its name, its times in whole seconds since the
    /// epoch and its failures since the last success. Stops at the first error `visit`
    /// returns.
    fn try_each<E>(&self, mut visit: impl FnMut(&str, Known) -> Result<(), E>) -> Result<(), E> {
        let seconds = |stamp: Option<Stamp>| stamp.map(Stamp::unix_seconds);
        if let Some(policy) = &self.policy {
            for (i, secret) in policy.secrets.iter().enumerate() {
                let known = Known {
                    due: seconds(self.next_due[i]),
                    since: seconds(self.current_since[i]),
                    failures: self.failures.get(i).copied().unwrap_or(0),
                };
                if known.any() {
                    visit(secret.name.as_str(), known)?;
                }
            }
        }
        for (name, times) in &self.others {
            let seconds = |t: Option<DateTime<Utc>>| t.map(|t| t.timestamp());
            let known = Known {
                due: seconds(times.next_due),
                since: seconds(times.current_since),
                failures: times.failures,
            };
            visit(name, known)?;
        }
        Ok(())
    }
}

/// What is known about one secret, as the gauges show it.
#[derive(Clone, Copy, Debug)]
struct Known {
    /// When it is next due, in seconds since the epoch.
    due: Option<i64>,
    /// Since when its current version is current.
    since: Option<i64>,
    /// Rotations failed since the last success.
    failures: u32,
}

impl Known {
    fn any(&self) -> bool {
        self.due.is_some() || self.since.is_some() || self.failures > 0
    }
}

/// The per-secret gauges, written at each scrape straight from [`Times`]. Families of
/// gauges would keep a label and a gauge for every secret from the first scrape on:
/// holding 100,000 secrets, a scrape left the daemon 31 MiB larger.
#[derive(Debug)]
struct SecretGauges {
    times: Arc<Mutex<Times>>,
    /// The scrape's time in seconds, set by [`Metrics::render`] before it encodes.
    now: AtomicI64,
}

/// Name, help and what each per-secret gauge shows, in the order they are written.
type GaugeValue = fn(now: i64, known: Known) -> Option<GaugeNumber>;

enum GaugeNumber {
    Seconds(f64),
    Flag(i64),
}

const SECRET_GAUGES: [(&str, &str, GaugeValue); 4] = [
    (
        "secret_next_rotation_seconds",
        "Seconds until the secret's next rotation is due (negative when overdue)",
        |now, k| k.due.map(|due| GaugeNumber::Seconds((due - now) as f64)),
    ),
    (
        "secret_current_version_age_seconds",
        "Age of the secret's current version",
        |now, k| {
            k.since
                .map(|since| GaugeNumber::Seconds((now - since) as f64))
        },
    ),
    (
        "secret_overdue",
        "1 when the secret's rotation is overdue",
        |now, k| {
            k.due
                .map(|due| GaugeNumber::Flag(i64::from(overdue(now, due))))
        },
    ),
    (
        "secret_rotation_failures",
        "Rotations of the secret that failed since its last success (absent: none)",
        |_, k| (k.failures > 0).then_some(GaugeNumber::Flag(i64::from(k.failures))),
    ),
];

/// Whether a secret due at `due` is overdue at `now` (both in seconds).
fn overdue(now: i64, due: i64) -> bool {
    now - due > OVERDUE_AFTER.num_seconds()
}

impl Collector for SecretGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let now = self.now.load(Ordering::Relaxed);
        let times = self.times.lock().expect("metrics lock");
        for (name, help, value) in SECRET_GAUGES {
            // Like a family, a gauge with no secret to show is not written at all.
            let mut any = false;
            times
                .try_each(|_, known| {
                    any |= value(now, known).is_some();
                    Ok::<_, ()>(())
                })
                .ok();
            if !any {
                continue;
            }
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            times.try_each(|secret, known| {
                let labels = [("secret", secret)];
                match value(now, known) {
                    Some(GaugeNumber::Seconds(v)) => {
                        family.encode_family(&labels)?.encode_gauge(&v)
                    }
                    Some(GaugeNumber::Flag(v)) => family.encode_family(&labels)?.encode_gauge(&v),
                    None => Ok(()),
                }
            })?;
        }
        Ok(())
    }
}

/// Every metric rekeyd exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    rotations: Family<OutcomeLabel, Counter>,
    duration: Family<BackendLabel, Histogram>,
    backend_errors: Family<BackendStep, Counter>,
    overdue: Gauge,
    deliveries: Family<TargetOutcome, Counter>,
    queue_depth: Gauge,
    audit_writes: Counter,
    audit_fsyncs: Counter,
    times: Arc<Mutex<Times>>,
    gauges: Arc<SecretGauges>,
    /// Each rotating secret's backend, learnt from `rotation_started` (and forgotten when
    /// it succeeds), for backend labels.
    backend_of: Mutex<HashMap<String, String>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric registered at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("rekeyd");
        // By outcome only: a counter per secret would grow the daemon by about 170 bytes
        // for every secret ever rotated (17 MiB for 100,000). Per secret, the gauges say
        // how old its version is, whether it is overdue and how often it failed since its
        // last success.
        let rotations = Family::<OutcomeLabel, Counter>::default();
        registry.register("rotations", "Rotations by outcome", rotations.clone());
        let duration = Family::<BackendLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 14))
        });
        registry.register(
            "rotation_duration_seconds",
            "Wall time of successful rotations",
            duration.clone(),
        );
        let backend_errors = Family::<BackendStep, Counter>::default();
        registry.register(
            "backend_errors",
            "Failed backend calls by backend and rotation step",
            backend_errors.clone(),
        );
        let times = Arc::new(Mutex::new(Times::default()));
        let gauges = Arc::new(SecretGauges {
            times: Arc::clone(&times),
            now: AtomicI64::new(0),
        });
        registry.register_collector(Box::new(Arc::clone(&gauges)));
        let overdue = Gauge::default();
        registry.register(
            "secrets_overdue",
            "Secrets whose rotation is overdue",
            overdue.clone(),
        );
        let deliveries = Family::<TargetOutcome, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "Webhook delivery attempts by target and outcome",
            deliveries.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "webhook_queue_depth",
            "Notifications waiting in the outbox",
            queue_depth.clone(),
        );
        let audit_writes = Counter::default();
        registry.register(
            "audit_writes",
            "Audit entries made durable",
            audit_writes.clone(),
        );
        let audit_fsyncs = Counter::default();
        registry.register(
            "audit_fsyncs",
            "fsyncs of the audit log (fewer than writes: group commit)",
            audit_fsyncs.clone(),
        );
        Self {
            registry,
            rotations,
            duration,
            backend_errors,
            overdue,
            deliveries,
            queue_depth,
            audit_writes,
            audit_fsyncs,
            times,
            gauges,
            backend_of: Mutex::new(HashMap::new()),
        }
    }

    /// Counts what the audit log just made durable: every outcome that is audited is
    /// counted, so metrics and the log cannot disagree.
    pub fn observe(&self, event: &crate::audit::AuditEvent) {
        use crate::audit::AuditEvent as E;
        // The backend a rotation started on; else (a failure before any rotation
        // started, such as `describe`) the one the policy names.
        let backend = |secret: &str| {
            let started = self
                .backend_of
                .lock()
                .expect("metrics lock")
                .get(secret)
                .cloned();
            started
                .or_else(|| self.times.lock().expect("metrics lock").backend_of(secret))
                .unwrap_or_else(|| "unknown".to_owned())
        };
        match event {
            E::RotationStarted {
                secret, backend, ..
            } => {
                self.backend_of
                    .lock()
                    .expect("metrics lock")
                    .insert(secret.clone(), backend.clone());
            }
            E::RotationSucceeded {
                secret,
                duration_ms,
                ..
            } => {
                self.rotation(secret, "succeeded");
                self.rotation_duration(&backend(secret), *duration_ms as f64 / 1000.0);
                self.secret_times(secret, None, Some(Utc::now()));
                self.backend_of.lock().expect("metrics lock").remove(secret);
            }
            E::RotationFailed { secret, step, .. } => {
                self.rotation(secret, "failed");
                if !matches!(
                    step.as_str(),
                    "generate" | "audit" | "refused" | "interrupted" | "confirm" | "notify"
                ) {
                    self.backend_error(&backend(secret), step);
                }
            }
            E::SlotAlreadyDone { secret, .. } => self.rotation(secret, "already_done"),
            E::NotificationDelivered { target, .. } => self.webhook_delivery(target, "delivered"),
            E::NotificationAttemptFailed { target, .. } => self.webhook_delivery(target, "retried"),
            E::NotificationFailed { target, .. } => self.webhook_delivery(target, "failed"),
            E::PendingDiscarded { secret, .. } => self.rotation(secret, "discarded"),
            E::RollbackFailed { secret, .. } => self.rotation(secret, "rollback_failed"),
            E::RolledBack { secret, .. } => {
                self.rotation(secret, "rolled_back");
                self.secret_times(secret, None, Some(Utc::now()));
            }
            _ => {}
        }
    }

    /// A rotation ended with `outcome` (`succeeded`, `failed`, `already_done`, `discarded`,
    /// `rolled_back`, `rollback_failed`).
    pub fn rotation(&self, secret: &str, outcome: &str) {
        self.rotations
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_owned(),
            })
            .inc();
        let ended = match outcome {
            "failed" => Some(true),
            "succeeded" | "already_done" => Some(false),
            _ => None,
        };
        if let Some(failed) = ended {
            self.times
                .lock()
                .expect("metrics lock")
                .rotation_ended(secret, failed);
        }
    }

    /// A successful rotation took `seconds`.
    pub fn rotation_duration(&self, backend: &str, seconds: f64) {
        self.duration
            .get_or_create(&BackendLabel {
                backend: backend.to_owned(),
            })
            .observe(seconds);
    }

    /// A backend call failed at `step`.
    pub fn backend_error(&self, backend: &str, step: &str) {
        self.backend_errors
            .get_or_create(&BackendStep {
                backend: backend.to_owned(),
                step: step.to_owned(),
            })
            .inc();
    }

    /// The daemon learnt when the secret is next due and since when its current version is
    /// current (`None` leaves what was known).
    pub fn secret_times(
        &self,
        secret: &str,
        next_due: Option<DateTime<Utc>>,
        current_since: Option<DateTime<Utc>>,
    ) {
        self.times
            .lock()
            .expect("metrics lock")
            .record(secret, next_due, current_since);
    }

    /// The scheduler learnt when the secret at `position` in the adopted policy is next
    /// due.
    pub fn secret_due(&self, position: usize, next_due: DateTime<Utc>) {
        let mut times = self.times.lock().expect("metrics lock");
        if let Some(due) = times.next_due.get_mut(position) {
            *due = Some(Stamp::floor(next_due));
        }
    }

    /// Follows a newly adopted policy: secrets are then known by their position in it.
    /// What was known about a secret still in it is kept; the rest is dropped.
    pub fn adopt(&self, policy: &Arc<Policy>) {
        let mut by_name: Vec<u32> = (0..policy.secrets.len() as u32).collect();
        by_name.sort_unstable_by(|&a, &b| {
            policy.secrets[a as usize]
                .name
                .cmp(&policy.secrets[b as usize].name)
        });
        let mut times = self.times.lock().expect("metrics lock");
        let mut kept = Times {
            policy: Some(Arc::clone(policy)),
            by_name,
            next_due: vec![None; policy.secrets.len()],
            current_since: vec![None; policy.secrets.len()],
            failures: Vec::new(),
            others: HashMap::new(),
        };
        let at = |seconds: Option<i64>| seconds.and_then(|s| DateTime::from_timestamp(s, 0));
        times
            .try_each(|name, known| {
                kept.record(name, at(known.due), at(known.since));
                kept.set_failures(name, known.failures);
                Ok::<_, ()>(())
            })
            .ok();
        kept.others.clear();
        *times = kept;
    }

    /// A webhook delivery attempt ended with `outcome`.
    pub fn webhook_delivery(&self, target: &str, outcome: &str) {
        self.deliveries
            .get_or_create(&TargetOutcome {
                target: target.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// How many notifications wait in the outbox.
    pub fn webhook_queue_depth(&self, depth: usize) {
        self.queue_depth
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    /// Renders everything in the Prometheus text format, with the audit log's counters
    /// (`writes`, `fsyncs`) as of now.
    pub fn render(&self, now: DateTime<Utc>, audit_writes: u64, audit_fsyncs: u64) -> String {
        // Counters only go up: add what happened since the last scrape.
        self.audit_writes
            .inc_by(audit_writes.saturating_sub(self.audit_writes.get()));
        self.audit_fsyncs
            .inc_by(audit_fsyncs.saturating_sub(self.audit_fsyncs.get()));
        let now_s = now.timestamp();
        self.gauges.now.store(now_s, Ordering::Relaxed);
        let (mut late, mut per_secret) = (0, 0);
        self.times
            .lock()
            .expect("metrics lock")
            .try_each(|secret, known| {
                late += i64::from(known.due.is_some_and(|due| overdue(now_s, due)));
                // A line per gauge: name, label, value.
                let lines = 2 * usize::from(known.due.is_some())
                    + usize::from(known.since.is_some())
                    + usize::from(known.failures > 0);
                per_secret += lines * (secret.len() + 64);
                Ok::<_, ()>(())
            })
            .ok();
        self.overdue.set(late);
        // Sized up front: with many secrets the text is megabytes, and a buffer grown by
        // doubling from small would grow inside the heap, where, once freed, glibc keeps it
        // (holding 100,000 secrets, 2 MiB more resident per scrape). Allocated at once, it
        // is mapped on its own and unmapped after the response.
        let mut out = String::with_capacity(16 * 1024 + per_secret);
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A policy of secrets with these names, in this order.
    fn policy_of(names: &[&str]) -> Arc<Policy> {
        let mut text = String::from(
            "[backends.local]\ntype = \"file\"\n[defaults]\nbackend = \"local\"\n\
             schedule = { every = \"30d\" }\ngenerator = { type = \"ed25519\" }\n",
        );
        for name in names {
            text.push_str(&format!("[[secrets]]\nname = \"{name}\"\n"));
        }
        Arc::new(crate::policy::parse(std::path::Path::new("p.toml"), &text).unwrap())
    }

    #[test]
    fn renders_what_was_recorded() {
        let m = Metrics::new();
        let now = Utc::now();
        m.rotation("app/db", "succeeded");
        m.rotation("app/db", "succeeded");
        m.rotation("app/db", "failed");
        m.rotation_duration("local", 0.02);
        m.backend_error("local", "put_pending");
        m.secret_times(
            "app/db",
            Some(now + chrono::Duration::seconds(90)),
            Some(now - chrono::Duration::seconds(30)),
        );
        m.secret_times("app/late", Some(now - chrono::Duration::hours(1)), None);
        m.webhook_delivery("payments", "delivered");
        m.webhook_queue_depth(3);
        let text = m.render(now, 10, 4);
        for line in [
            "rekeyd_rotations_total{outcome=\"succeeded\"} 2",
            "rekeyd_rotations_total{outcome=\"failed\"} 1",
            "rekeyd_secret_rotation_failures{secret=\"app/db\"} 1",
            "rekeyd_backend_errors_total{backend=\"local\",step=\"put_pending\"} 1",
            "rekeyd_secret_next_rotation_seconds{secret=\"app/db\"} 90.0",
            "rekeyd_secret_current_version_age_seconds{secret=\"app/db\"} 30.0",
            "rekeyd_secret_overdue{secret=\"app/late\"} 1",
            "rekeyd_secrets_overdue 1",
            "rekeyd_webhook_deliveries_total{target=\"payments\",outcome=\"delivered\"} 1",
            "rekeyd_webhook_queue_depth 3",
            "rekeyd_audit_writes_total 10",
            "rekeyd_audit_fsyncs_total 4",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
        assert!(text.contains("rekeyd_rotation_duration_seconds_count{backend=\"local\"} 1"));
        // A second scrape does not double the audit counters.
        let again = m.render(now, 12, 5);
        assert!(again.contains("rekeyd_audit_writes_total 12"), "{again}");
    }

    /// In the daemon, secrets are known by their place in the adopted policy; what is known
    /// about one follows it across a reload, and a secret the reload dropped is gone.
    #[test]
    fn per_secret_times_follow_the_policy_by_position() {
        let m = Metrics::new();
        m.adopt(&policy_of(&["a", "b", "c"]));
        let now = Utc::now();
        m.secret_due(1, now + chrono::Duration::seconds(60));
        m.secret_times("c", None, Some(now - chrono::Duration::seconds(30)));
        m.secret_times("a", Some(now + chrono::Duration::seconds(5)), None);
        let text = m.render(now, 0, 0);
        for line in [
            "rekeyd_secret_next_rotation_seconds{secret=\"b\"} 60.0",
            "rekeyd_secret_current_version_age_seconds{secret=\"c\"} 30.0",
            "rekeyd_secret_next_rotation_seconds{secret=\"a\"} 5.0",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
        // A reload drops `a` and moves `b` and `c`.
        m.adopt(&policy_of(&["d", "c", "b"]));
        let text = m.render(now, 0, 0);
        for line in [
            "rekeyd_secret_next_rotation_seconds{secret=\"b\"} 60.0",
            "rekeyd_secret_current_version_age_seconds{secret=\"c\"} 30.0",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
        assert!(!text.contains("secret=\"a\""), "{text}");
        assert!(
            !text.contains("secret=\"d\""),
            "nothing known about d yet: {text}"
        );
        m.secret_due(0, now + chrono::Duration::seconds(7));
        let text = m.render(now, 0, 0);
        assert!(text.contains("rekeyd_secret_next_rotation_seconds{secret=\"d\"} 7.0"));
    }

    #[test]
    fn audit_events_are_counted_once_durable() {
        use crate::audit::{AuditEvent, Trigger};
        let m = Metrics::new();
        m.observe(&AuditEvent::RotationStarted {
            secret: "s".into(),
            backend: "aws-prod".into(),
            version: "v".into(),
            slot: None,
            trigger: Trigger::Schedule,
        });
        m.observe(&AuditEvent::RotationFailed {
            secret: "s".into(),
            version: None,
            step: "put_pending".into(),
            error: "throttled".into(),
            will_retry: true,
        });
        m.observe(&AuditEvent::RotationSucceeded {
            secret: "s".into(),
            version: "v".into(),
            duration_ms: 1500,
        });
        // A failed rollback is not a failed rotation: its own outcome, no failure streak.
        m.observe(&AuditEvent::RollbackFailed {
            secret: "s".into(),
            from: "v".into(),
            to: "u".into(),
            error: "refused".into(),
        });
        let text = m.render(Utc::now(), 0, 0);
        for line in [
            "rekeyd_rotations_total{outcome=\"rollback_failed\"} 1",
            "rekeyd_rotations_total{outcome=\"failed\"} 1",
            "rekeyd_rotations_total{outcome=\"succeeded\"} 1",
            "rekeyd_backend_errors_total{backend=\"aws-prod\",step=\"put_pending\"} 1",
            "rekeyd_rotation_duration_seconds_count{backend=\"aws-prod\"} 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
        assert!(text.contains("rekeyd_secret_current_version_age_seconds{secret=\"s\"}"));
        assert!(
            !text.contains("rekeyd_secret_rotation_failures"),
            "the success cleared the failure: {text}"
        );
    }

    #[test]
    fn a_describe_failure_counts_against_the_backend_the_policy_names() {
        use crate::audit::AuditEvent;
        let m = Metrics::new();
        m.adopt(&policy_of(&["a"]));
        // No rotation started: the backend could not be asked about the secret.
        m.observe(&AuditEvent::RotationFailed {
            secret: "a".into(),
            version: None,
            step: "describe".into(),
            error: "connection refused".into(),
            will_retry: true,
        });
        let text = m.render(Utc::now(), 0, 0);
        for line in [
            "rekeyd_backend_errors_total{backend=\"local\",step=\"describe\"} 1",
            "rekeyd_secret_rotation_failures{secret=\"a\"} 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
    }

    #[test]
    fn webhook_outcomes_are_counted_and_a_refused_gate_is_no_backend_error() {
        use crate::audit::AuditEvent;
        let m = Metrics::new();
        let (id, target, notification) = (
            "msg_1".to_owned(),
            "hooks".to_owned(),
            "secret.rotated".to_owned(),
        );
        m.observe(&AuditEvent::NotificationAttemptFailed {
            id: id.clone(),
            target: target.clone(),
            notification: notification.clone(),
            attempt: 1,
            error: "HTTP 503".into(),
            retry_in_ms: 100,
        });
        m.observe(&AuditEvent::NotificationDelivered {
            id,
            target,
            notification,
            secrets: vec!["s".into()],
            attempts: 2,
            status: 200,
        });
        m.observe(&AuditEvent::RotationFailed {
            secret: "s".into(),
            version: Some("v".into()),
            step: "confirm".into(),
            error: "not promoted: payments refused".into(),
            will_retry: true,
        });
        let text = m.render(Utc::now(), 0, 0);
        for line in [
            "rekeyd_webhook_deliveries_total{target=\"hooks\",outcome=\"retried\"} 1",
            "rekeyd_webhook_deliveries_total{target=\"hooks\",outcome=\"delivered\"} 1",
            "rekeyd_rotations_total{outcome=\"failed\"} 1",
            "rekeyd_secret_rotation_failures{secret=\"s\"} 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
        assert!(!text.contains("step=\"confirm\""), "{text}");
    }

    /// Rotations are counted by outcome; per secret, only the failures since its last
    /// success are kept, by position, and they follow the secret across a reload.
    #[test]
    fn failures_per_secret_count_up_reset_on_success_and_follow_a_reload() {
        let m = Metrics::new();
        m.adopt(&policy_of(&["a", "b"]));
        for _ in 0..3 {
            m.rotation("b", "failed");
        }
        m.rotation("a", "failed");
        m.rotation("a", "succeeded");
        let text = m.render(Utc::now(), 0, 0);
        assert!(
            text.contains("rekeyd_secret_rotation_failures{secret=\"b\"} 3"),
            "{text}"
        );
        assert!(
            !text.contains("rekeyd_secret_rotation_failures{secret=\"a\"}"),
            "{text}"
        );
        assert!(
            text.contains("rekeyd_rotations_total{outcome=\"failed\"} 4"),
            "{text}"
        );
        assert!(!text.contains("rotations_total{secret"), "{text}");
        // `b` moves on reload and keeps its count; a success clears it.
        m.adopt(&policy_of(&["c", "b"]));
        let text = m.render(Utc::now(), 0, 0);
        assert!(
            text.contains("rekeyd_secret_rotation_failures{secret=\"b\"} 3"),
            "{text}"
        );
        m.rotation("b", "already_done");
        let text = m.render(Utc::now(), 0, 0);
        assert!(!text.contains("rekeyd_secret_rotation_failures"), "{text}");
    }
}
