//! Engine tests on the memory backend: the calls a rotation makes, racing replicas,
//! rollback and the grace refusal.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use super::*;
use crate::audit::{AuditEvent, AuditLog, Fingerprinter};
use crate::backend::memory::MemoryBackend;
use crate::backend::{Capabilities, PutOutcome, Result as BackendResult, SecretDescription};
use crate::generate::{BytesSpec, Encoding, JsonSpec};
use crate::schedule::Schedule;
use crate::secret::{SecretName, SecretValue};

/// Counts every call before forwarding it, to pin down what a rotation costs.
#[derive(Debug)]
struct Counting {
    inner: Arc<MemoryBackend>,
    describe: AtomicUsize,
    put: AtomicUsize,
    promote: AtomicUsize,
    read: AtomicUsize,
    other: AtomicUsize,
    /// Promotes answer as if another writer had moved the current version.
    promote_races: std::sync::atomic::AtomicBool,
}

impl Counting {
    fn over(inner: Arc<MemoryBackend>) -> Self {
        Self {
            inner,
            describe: AtomicUsize::new(0),
            put: AtomicUsize::new(0),
            promote: AtomicUsize::new(0),
            read: AtomicUsize::new(0),
            other: AtomicUsize::new(0),
            promote_races: std::sync::atomic::AtomicBool::new(false),
        }
    }
    fn counts(&self) -> [usize; 4] {
        [
            self.describe.load(Ordering::SeqCst),
            self.put.load(Ordering::SeqCst),
            self.promote.load(Ordering::SeqCst),
            self.read.load(Ordering::SeqCst),
        ]
    }
}

#[async_trait]
impl Backend for Counting {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn describe(&self, name: &SecretName) -> BackendResult<SecretDescription> {
        self.describe.fetch_add(1, Ordering::SeqCst);
        self.inner.describe(name).await
    }
    async fn put_pending(
        &self,
        name: &SecretName,
        version: &VersionId,
        value: &SecretValue,
    ) -> BackendResult<PutOutcome> {
        self.put.fetch_add(1, Ordering::SeqCst);
        self.inner.put_pending(name, version, value).await
    }
    async fn promote(
        &self,
        name: &SecretName,
        version: &VersionId,
        expected: Option<&VersionId>,
    ) -> BackendResult<()> {
        self.promote.fetch_add(1, Ordering::SeqCst);
        if self.promote_races.load(Ordering::SeqCst) {
            return Err(crate::backend::Error::CurrentChanged {
                backend: self.name().to_owned(),
                secret: name.clone(),
                expected: expected.map_or("none".to_owned(), ToString::to_string),
                found: "elsewhere".to_owned(),
            });
        }
        self.inner.promote(name, version, expected).await
    }
    async fn discard_pending(&self, name: &SecretName, version: &VersionId) -> BackendResult<()> {
        self.other.fetch_add(1, Ordering::SeqCst);
        self.inner.discard_pending(name, version).await
    }
    async fn read(&self, name: &SecretName, selector: &Selector) -> BackendResult<SecretValue> {
        self.read.fetch_add(1, Ordering::SeqCst);
        self.inner.read(name, selector).await
    }
    async fn list(&self) -> BackendResult<Vec<SecretName>> {
        self.inner.list().await
    }
    async fn retire(&self, name: &SecretName) -> BackendResult<usize> {
        self.inner.retire(name).await
    }
}

fn policy(generator: GeneratorSpec) -> SecretPolicy {
    SecretPolicy::example(
        Schedule::every(Duration::from_secs(30 * 86_400), "app/db"),
        generator,
    )
}

fn bytes() -> GeneratorSpec {
    GeneratorSpec::Bytes(BytesSpec {
        length: 32,
        encoding: Encoding::Hex,
    })
}

async fn engine(dir: &std::path::Path, log: &str, backend: Arc<dyn Backend>) -> Engine {
    let audit = AuditLog::open(&dir.join(log)).await.expect("audit");
    let mut backends = BTreeMap::new();
    backends.insert("local".to_owned(), backend);
    Engine::new(backends, audit, Fingerprinter::from_key(&[9; 32]))
}

fn events(dir: &std::path::Path, log: &str) -> Vec<AuditEvent> {
    crate::audit::read_logs(&[dir.join(log)])
        .expect("read")
        .entries
        .into_iter()
        .map(|e| e.event)
        .collect()
}

#[tokio::test]
async fn a_scheduled_rotation_costs_describe_put_promote_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let memory = Arc::new(MemoryBackend::new("local"));
    let counting = Arc::new(Counting::over(Arc::clone(&memory)));
    let engine = engine(dir.path(), "audit.jsonl", counting.clone()).await;
    let secret = policy(bytes());
    // Creating the secret and a later rotation cost the same.
    let plan = engine
        .reconcile(&secret, Attempt::First)
        .await
        .expect("create");
    assert!(matches!(plan, Plan::Wait { .. }), "{plan:?}");
    assert_eq!(
        counting.counts(),
        [1, 1, 1, 0],
        "describe, put, promote; no reads"
    );
    let again = engine
        .reconcile(&secret, Attempt::First)
        .await
        .expect("nothing due");
    assert!(matches!(again, Plan::Wait { .. }));
    assert_eq!(
        counting.counts(),
        [2, 1, 1, 0],
        "a look with nothing due is one describe"
    );
}

#[tokio::test]
async fn a_json_template_reads_the_current_value_once() {
    let dir = tempfile::tempdir().unwrap();
    let memory = Arc::new(MemoryBackend::new("local"));
    let counting = Arc::new(Counting::over(Arc::clone(&memory)));
    let engine = engine(dir.path(), "audit.jsonl", counting.clone()).await;
    let mut template = serde_json::Map::new();
    template.insert("username".into(), "app".into());
    let secret = policy(GeneratorSpec::Json(JsonSpec {
        template,
        field: "password".into(),
        generate: Box::new(bytes()),
    }));
    engine
        .rotate_manually(&secret, "alice", true)
        .await
        .expect("first");
    let before = counting.counts();
    engine
        .rotate_manually(&secret, "alice", true)
        .await
        .expect("second");
    let after = counting.counts();
    let delta: Vec<usize> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    assert_eq!(
        delta,
        vec![1, 1, 1, 1],
        "describe, read current, put, promote"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_rotating_one_slot_make_one_version_and_log_the_same_value() {
    let dir = tempfile::tempdir().unwrap();
    let shared: Arc<MemoryBackend> = Arc::new(MemoryBackend::new("local"));
    let a = Arc::new(engine(dir.path(), "a.jsonl", shared.clone()).await);
    let b = Arc::new(engine(dir.path(), "b.jsonl", shared.clone()).await);
    let secret = Arc::new(policy(bytes()));
    let (ra, rb) = tokio::join!(
        {
            let (a, s) = (a.clone(), secret.clone());
            async move { a.reconcile(&s, Attempt::First).await }
        },
        {
            let (b, s) = (b.clone(), secret.clone());
            async move { b.reconcile(&s, Attempt::First).await }
        }
    );
    ra.expect("replica a");
    rb.expect("replica b");
    let described = shared.describe(&secret.name).await.unwrap();
    assert_eq!(
        described.versions.len(),
        1,
        "one version for the slot: {described:?}"
    );
    let fingerprint = |log: &str| {
        events(dir.path(), log).into_iter().find_map(|e| match e {
            AuditEvent::PendingStored { fingerprint, .. } => Some(fingerprint),
            _ => None,
        })
    };
    // Each replica either rotated or found the slot done; where both logged a pending
    // value, it is the same value.
    if let (Some(fa), Some(fb)) = (fingerprint("a.jsonl"), fingerprint("b.jsonl")) {
        assert_eq!(fa, fb, "both logs fingerprint the stored value");
    }
    for log in ["a.jsonl", "b.jsonl"] {
        let ended = events(dir.path(), log).into_iter().any(|e| {
            matches!(
                e,
                AuditEvent::RotationSucceeded { .. } | AuditEvent::SlotAlreadyDone { .. }
            )
        });
        let idle = !events(dir.path(), log)
            .iter()
            .any(|e| matches!(e, AuditEvent::RotationStarted { .. }));
        assert!(ended || idle, "{log}: every start ends in success");
    }
}

#[tokio::test]
async fn rollback_swaps_current_and_previous_and_refuses_without_history() {
    let dir = tempfile::tempdir().unwrap();
    let memory = Arc::new(MemoryBackend::new("local"));
    let engine = engine(dir.path(), "audit.jsonl", memory.clone()).await;
    let secret = policy(bytes());
    let refused = engine.rollback(&secret, "bob").await;
    assert!(refused.is_err());
    engine
        .rotate_manually(&secret, "alice", true)
        .await
        .unwrap();
    let err = engine
        .rollback(&secret, "bob")
        .await
        .expect_err("no previous");
    assert!(matches!(err, RotationError::Refused(_)), "{err}");
    engine
        .rotate_manually(&secret, "alice", true)
        .await
        .unwrap();
    let (from, to) = engine.rollback(&secret, "bob").await.expect("rollback");
    let described = memory.describe(&secret.name).await.unwrap();
    assert_eq!(described.stage(Stage::Current).map(|v| &v.id), Some(&to));
    assert_eq!(described.stage(Stage::Previous).map(|v| &v.id), Some(&from));
    assert!(
        events(dir.path(), "audit.jsonl")
            .iter()
            .any(|e| matches!(e, AuditEvent::RolledBack { by, .. } if by == "bob"))
    );
}

#[tokio::test]
async fn a_rollback_the_backend_refuses_is_audited_as_started_and_failed() {
    let dir = tempfile::tempdir().unwrap();
    let memory = Arc::new(MemoryBackend::new("local"));
    let counting = Arc::new(Counting::over(memory.clone()));
    let engine = engine(dir.path(), "audit.jsonl", counting.clone()).await;
    let secret = policy(bytes());
    for _ in 0..2 {
        engine
            .rotate_manually(&secret, "alice", true)
            .await
            .unwrap();
    }
    let before = memory.describe(&secret.name).await.unwrap();
    counting.promote_races.store(true, Ordering::SeqCst);

    let err = engine.rollback(&secret, "bob").await.expect_err("refused");
    assert_eq!(err.step(), "promote", "{err}");
    assert_eq!(memory.describe(&secret.name).await.unwrap(), before);
    let rollback: Vec<AuditEvent> = events(dir.path(), "audit.jsonl")
        .into_iter()
        .filter(|e| e.name().starts_with("roll"))
        .collect();
    let current = before.stage(Stage::Current).unwrap().id.to_string();
    let previous = before.stage(Stage::Previous).unwrap().id.to_string();
    assert!(
        matches!(&rollback[..], [
            AuditEvent::RollbackStarted { from, to, by, .. },
            AuditEvent::RollbackFailed { from: f2, to: t2, error, .. },
        ] if *from == current && *to == previous && by == "bob"
            && f2 == from && t2 == to && error.contains("another writer changed it")),
        "{rollback:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operations_on_one_secret_take_turns() {
    let dir = tempfile::tempdir().unwrap();
    let memory = Arc::new(MemoryBackend::new("local"));
    let engine = Arc::new(engine(dir.path(), "audit.jsonl", memory.clone()).await);
    let secret = Arc::new(policy(bytes()));
    engine
        .reconcile(&secret, Attempt::First)
        .await
        .expect("create");
    // Eight manual rotations at once: each sees the version the previous one made, so
    // none loses a compare-and-swap and every one succeeds.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (engine, secret) = (Arc::clone(&engine), Arc::clone(&secret));
        tasks.push(tokio::spawn(async move {
            engine
                .rotate_manually(&secret, &format!("user{i}"), true)
                .await
        }));
    }
    for task in tasks {
        let outcome = task.await.unwrap().expect("no rotation lost a race");
        assert!(matches!(outcome, Outcome::Rotated { .. }));
    }
    let failures = events(dir.path(), "audit.jsonl")
        .into_iter()
        .filter(|e| matches!(e, AuditEvent::RotationFailed { .. }))
        .count();
    assert_eq!(failures, 0);
}

/// One operation at a time per secret, and the lock table forgets a secret once no one
/// holds or waits for its lock (a large policy must not leave one lock per secret).
#[tokio::test]
async fn per_secret_locks_serialize_and_are_forgotten_when_free() {
    let name = SecretName::new("locks/serialize-test").unwrap();
    let entry = || lock_table().lock().unwrap().get(name.as_str()).cloned();
    let first = serialize(&name).await;
    let held = entry().expect("in the table while held");
    assert!(held.try_lock().is_err(), "held by the first caller");
    drop(held);

    let waiter_name = name.clone();
    let waiter = tokio::spawn(async move { serialize(&waiter_name).await });
    // The waiter has queued once the table, the first caller, the waiter and the clone
    // looked at here all hold the lock.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while entry().is_none_or(|lock| Arc::strong_count(&lock) < 4) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the waiter never queued"
        );
        tokio::task::yield_now().await;
    }
    drop(first);
    let second = waiter.await.unwrap();
    assert!(entry().is_some(), "kept while the second caller holds it");
    drop(second);
    assert!(entry().is_none(), "forgotten once free");
}

/// A secret the backend cannot be asked about (here: a damaged store file) leaves one
/// failure entry per run of failures, not one per retry, and says whether it is retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_the_backend_cannot_describe_is_audited_once_per_run_of_failures() {
    use crate::backend::file::{FileBackend, secret_file};
    use crate::policy::FileBackendConfig;

    let dir = tempfile::tempdir().unwrap();
    let config = FileBackendConfig {
        path: dir.path().join("store"),
        key_file: dir.path().join("store.key"),
        key_env: None,
    };
    let store = Arc::new(FileBackend::open("local", &config).expect("store"));
    let engine = engine(dir.path(), "audit.jsonl", store).await;
    let secret = policy(bytes());
    engine
        .reconcile(&secret, Attempt::First)
        .await
        .expect("create");
    std::fs::write(secret_file(&config.path, &secret.name), b"not a record\n").unwrap();

    let describe_failures = || {
        events(dir.path(), "audit.jsonl")
            .into_iter()
            .filter_map(|e| match e {
                AuditEvent::RotationFailed {
                    secret: name,
                    version,
                    step,
                    error,
                    will_retry,
                } if step == "describe" => Some((name, version, error, will_retry)),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let first = engine.reconcile(&secret, Attempt::First).await;
    assert_eq!(first.expect_err("damaged file").step(), "describe");
    let recorded = describe_failures();
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    let (name, version, error, will_retry) = &recorded[0];
    assert_eq!(name, secret.name.as_str());
    assert_eq!(*version, None, "no rotation got as far as a version");
    assert!(error.contains("not a valid store file"), "{error}");
    assert!(will_retry);

    // Retries of the same outage fail the same way without a new entry.
    for _ in 0..3 {
        assert!(engine.reconcile(&secret, Attempt::Retry).await.is_err());
    }
    assert_eq!(describe_failures().len(), 1);

    // `run --once` does not retry, and says so.
    assert!(engine.reconcile(&secret, Attempt::Only).await.is_err());
    let recorded = describe_failures();
    assert_eq!(recorded.len(), 2);
    assert!(!recorded[1].3, "run --once does not retry");
}
