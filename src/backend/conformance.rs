//! The backend contract as executable checks, run by every backend's tests.
//!
//! Each check takes a `&dyn Backend` and a prefix for the secret names it creates, so the
//! suite can share a server with other tests. The suite needs
//! [`Capabilities::creates_missing`](super::Capabilities) (configure AWS with
//! `create_missing = true` for it). A failed check panics with what the contract requires.

use chrono::Utc;

use super::{Backend, Error, PutOutcome, Selector};
use crate::secret::{SecretName, SecretValue, Stage, VersionId};

/// Runs every check.
pub async fn run_all(backend: &dyn Backend, prefix: &str) {
    describe_missing_is_not_found(backend, prefix).await;
    first_put_creates_a_pending_only_secret(backend, prefix).await;
    put_is_idempotent_for_the_same_value(backend, prefix).await;
    put_conflicts_on_a_different_value(backend, prefix).await;
    promote_moves_current_to_previous(backend, prefix).await;
    promote_is_idempotent(backend, prefix).await;
    promote_unknown_version_is_not_found(backend, prefix).await;
    promote_refuses_a_stale_expected_current(backend, prefix).await;
    racing_promotes_from_one_current_let_one_win(backend, prefix).await;
    put_of_the_current_id_changes_nothing(backend, prefix).await;
    new_put_moves_pending(backend, prefix).await;
    discard_pending_leaves_current_untouched(backend, prefix).await;
    rollback_by_promoting_previous(backend, prefix).await;
    read_of_missing_stage_is_not_found(backend, prefix).await;
    list_includes_written_secrets(backend, prefix).await;
    retire_keeps_every_staged_version(backend, prefix).await;
    concurrent_puts_of_one_id_store_one_value(backend, prefix).await;
    binary_values_round_trip(backend, prefix).await;
    errors_never_contain_values(backend, prefix).await;
}

fn name(prefix: &str, check: &str) -> SecretName {
    SecretName::new(format!("{prefix}/{check}")).expect("valid test secret name")
}

fn version(n: u32) -> VersionId {
    // 36 characters, like AWS's UUID tokens, and distinct per n.
    VersionId::new(format!("00000000-0000-4000-8000-{n:012}"))
}

fn value(text: &str) -> SecretValue {
    SecretValue::new(text.as_bytes().to_vec())
}

async fn read_text(backend: &dyn Backend, secret: &SecretName, selector: Selector) -> String {
    let v = backend
        .read(secret, &selector)
        .await
        .unwrap_or_else(|e| panic!("read {selector:?} of {secret}: {e}"));
    v.expose_str().expect("text value").to_owned()
}

async fn stage_of(backend: &dyn Backend, secret: &SecretName, stage: Stage) -> Option<VersionId> {
    backend
        .describe(secret)
        .await
        .unwrap_or_else(|e| panic!("describe {secret}: {e}"))
        .stage(stage)
        .map(|v| v.id.clone())
}

/// Creates `secret` with `v1` current.
async fn seeded(backend: &dyn Backend, secret: &SecretName) {
    let put = backend
        .put_pending(secret, &version(1), &value("one"))
        .await;
    assert!(put.is_ok(), "seed put of {secret}: {put:?}");
    backend
        .promote(secret, &version(1), None)
        .await
        .unwrap_or_else(|e| panic!("seed promote of {secret}: {e}"));
}

/// Describing a secret that was never written is `NotFound`.
pub async fn describe_missing_is_not_found(backend: &dyn Backend, prefix: &str) {
    let err = backend
        .describe(&name(prefix, "never-written"))
        .await
        .expect_err("describe of a missing secret must fail");
    assert!(err.is_not_found(), "expected NotFound, got {err}");
}

/// The first put creates the secret with a pending version and nothing current.
pub async fn first_put_creates_a_pending_only_secret(backend: &dyn Backend, prefix: &str) {
    let secret = name(prefix, "first-put");
    let outcome = backend
        .put_pending(&secret, &version(1), &value("one"))
        .await
        .expect("first put");
    assert_eq!(outcome, PutOutcome::Created);
    assert_eq!(
        stage_of(backend, &secret, Stage::Pending).await,
        Some(version(1))
    );
    assert_eq!(stage_of(backend, &secret, Stage::Current).await, None);
    let err = backend
        .read(&secret, &Selector::Stage(Stage::Current))
        .await
        .expect_err("no current version yet");
    assert!(err.is_not_found(), "expected NotFound, got {err}");
    assert_eq!(
        read_text(backend, &secret, Selector::Stage(Stage::Pending)).await,
        "one"
    );
}

/// Repeating a put with the same id and value is `AlreadyPresent` and stores nothing new.
pub async fn put_is_idempotent_for_the_same_value(backend: &dyn Backend, prefix: &str) {
    let secret = name(prefix, "idempotent-put");
    seeded(backend, &secret).await;
    let first = backend
        .put_pending(&secret, &version(2), &value("two"))
        .await
        .expect("put");
    let again = backend
        .put_pending(&secret, &version(2), &value("two"))
        .await
        .expect("repeated put");
    assert_eq!(
        (first, again),
        (PutOutcome::Created, PutOutcome::AlreadyPresent)
    );
    let description = backend.describe(&secret).await.expect("describe");
    let ids: Vec<_> = description.versions.iter().map(|v| v.id.clone()).collect();
    assert_eq!(ids, vec![version(1), version(2)], "no extra version");
    assert_eq!(
        description.stage(Stage::Pending).map(|v| &v.id),
        Some(&version(2))
    );
}

/// A put under an existing id with a different value is `Conflict` and changes nothing.
pub async fn put_conflicts_on_a_different_value(backend: &dyn Backend, prefix: &str) {
    let secret = name(prefix, "conflicting-put");
    seeded(backend, &secret).await;
    backend
        .put_pending(&secret, &version(2), &value("two"))
        .await
        .expect("put");
    let err = backend
        .put_pending(&secret, &version(2), &value("other"))
        .await
        .expect_err("a different value under the same id must be refused");
    assert!(
        matches!(err, Error::Conflict { .. }),
        "expected Conflict, got {err}"
    );
    assert_eq!(
        read_text(backend, &secret, Selector::Version(version(2))).await,
        "two"
    );
}

/// Promoting pending makes it current and the old current previous; pending is cleared.
pub async fn promote_moves_current_to_previous(backend: &dyn Backend, prefix: &str) {
    let secret = name(prefix, "promote");
    seeded(backend, &secret).await;
    backend
        .put_pending(&secret, &version(2), &value("two"))
        .await
        .expect("put");
    backend
        .promote(&secret, &version(2), Some(&version(1)))
        .await
        .expect("promote");
    assert_eq!(
        stage_of(backend, &secret, Stage::Current).await,
        Some(version(2))
    );
    assert_eq!(
        stage_of(backend, &secret, Stage::Previous).await,
        Some(version(1))
    );
    assert_eq!(stage_of(backend, &secret, Stage::Pending).await, None);
    assert_eq!(
        read_text(backend, &secret, Selector::Stage(Stage::Current)).await,
        "two"
    );
    assert_eq!(
        read_text(backend, &secret, Selector::Stage(Stage::Previous)).await,
        "one"
    );
    // A third rotation pushes v1 out of `previous`.
    backend
        .put_pending(&secret, &version(3), &value("three"))
        .await
        .expect("put");
    backend
        .promote(&secret, &version(3), Some(&version(2)))
        .await
        .expect("promote");
    assert_eq!(
        stage_of(backend, &secret, Stage::Previous).await,
        Some(version(2))
    );
    let description = backend.describe(&secret).await.expect("describe");
    let v1_stages = description.version(&version(1)).map(|v| v.stages.clone());
    assert!(
        v1_stages.as_ref().is_none_or(|s| s.is_empty()),
        "v1 must have no stage left, has {v1_stages:?}"
    );
}

/// Promoting the current version again changes nothing (a retry after a crash).
pub async fn promote_is_idempotent(backend: &dyn Backend, prefix: &str) {
    let secret = name(prefix, "promote-twice");
    seeded(backend, &secret).await;
    backend
        .put_pending(&secret, &version(2), &value("two"))
        .await
        .expect("put");
    backend
        .promote(&secret, &version(2), Some(&version(1)))
        .await
        .expect("promote");
    let before = backend.describe(&secret).await.expect("describe");
    backend
        .promote(&secret, &version(2), Some(&version(1)))
        .await
        .expect("repeated promote");
    let after = backend.describe(&secret).await.expect("describe");
    assert_eq!(before, after, "a repeated promote must change nothing");
}

/// Promoting a version that does not exist is `NotFound` and moves no stage.
pub async fn promote_unknown_version_is_not_found(backend: &dyn Backend, prefix: &str) {
    let secret = name(prefix, "promote-unknown");
    seeded(backend, &secret).await;
    let err = backend
        .promote(&secret, &version(99), Some(&version(1)))
        .await
        .expect_err("unknown version");
    assert!(err.is_not_found(), "expected NotFound, got {err}");
    assert_eq!(
        stage_of(backend, &secret, Stage::Current).await,
        Some(version(1))
    );
}

/// Promoting against a current version that has since changed is `CurrentChanged`.
pub async fn promote_refuses_a_stale_expected_current(backend: &dyn Backend, prefix: &str) {
    let secret = name(prefix, "promote-stale");
    seeded(backend, &secret).await;
    for n in [2, 3] {
        backend
            .put_pending(&secret, &version(n), &value("x"))
            .await
            .expect("put");
    }
    backend
        .promote(&secret, &version(2), Some(&version(1)))
        .await
        .expect("promote");
    // Someone who still believes v1 is current must not clobber v2.
    let err = backend
        .promote(&secret, &version(3), Some(&version(1)))
        .await
        .expect_err("stale expectation");
    assert!(
        matches!(err, Error::CurrentChanged { .. }),
        "expected CurrentChanged, got {err}"
    );
    let err = backend
        .promote(&secret, &version(3), None)
        .await
        .expect_err("expected no current, there is one");
    assert!(
        matches!(err, Error::CurrentChanged { .. }),
        "expected CurrentChanged, got {err}"
    );
    assert_eq!(
        stage_of(backend, &secret, Stage::Current).await,
        Some(version(2))
    );
    assert_eq!(
        stage_of(backend, &secret, Stage::Previous).await,
        Some(version(1))
    );
}

/// Two writers promoting different versions from the same current: one wins, one is told.
pub async fn racing_promotes_from_one_current_let_one_win(backend: &dyn Backend, prefix: &str) {
    let secret = name(prefix, "promote-race");
    seeded(backend, &secret).await;
    backend
        .put_pending(&secret, &version(2), &value("two"))
        .await
        .expect("put");
    backend
        .put_pending(&secret, &version(3), &value("three"))
        .await
        .expect("put");
    let v1 = version(1);
    let (v2, v3) = (version(2), version(3));
    let results = futures_join_all(
        [&v2, &v3]
            .into_iter()
            .map(|v| backend.promote(&secret, v, Some(&v1))),
    )
    .await;
    let wins = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(wins, 1, "exactly one promote wins: {results:?}");
    assert!(
        results
            .iter()
            .any(|r| matches!(r, Err(Error::CurrentChanged { .. }))),
        "the loser is told: {results:?}"
    );
    assert_eq!(
        stage_of(backend, &secret, Stage::Previous).await,
        Some(version(1))
    );
}

/// Re-putting the current version's id and value (a retry after promotion) moves nothing.
pub async fn put_of_the_current_id_changes_nothing(backend: &dyn Backend, prefix: &str) {
    let secret = name(prefix, "put-current-again");
    seeded(backend, &secret).await;
    let outcome = backend
        .put_pending(&secret, &version(1), &value("one"))
        .await
        .expect("repeat of the seed put");
    assert_eq!(outcome, PutOutcome::AlreadyPresent);
    assert_eq!(
        stage_of(backend, &secret, Stage::Current).await,
        Some(version(1))
    );
    assert_eq!(stage_of(backend, &secret, Stage::Pending).await, None);
}

/// A put under a new id moves `pending` to it; current stays.
pub async fn new_put_moves_pending(backend: &dyn Backend, prefix: &str) {
    let secret = name(prefix, "pending-moves");
    seeded(backend, &secret).await;
    for n in [2, 3] {
        backend
            .put_pending(&secret, &version(n), &value("x"))
            .await
            .expect("put");
    }
    assert_eq!(
        stage_of(backend, &secret, Stage::Pending).await,
        Some(version(3))
    );
    assert_eq!(
        stage_of(backend, &secret, Stage::Current).await,
        Some(version(1))
    );
}

/// Discarding pending leaves current and previous where they were; repeating it is a no-op.
pub async fn discard_pending_leaves_current_untouched(backend: &dyn Backend, prefix: &str) {
    let secret = name(prefix, "discard");
    seeded(backend, &secret).await;
    backend
        .put_pending(&secret, &version(2), &value("two"))
        .await
        .expect("put");
    backend
        .discard_pending(&secret, &version(2))
        .await
        .expect("discard");
    backend
        .discard_pending(&secret, &version(2))
        .await
        .expect("repeated discard");
    assert_eq!(stage_of(backend, &secret, Stage::Pending).await, None);
    assert_eq!(
        stage_of(backend, &secret, Stage::Current).await,
        Some(version(1))
    );
    assert_eq!(
        read_text(backend, &secret, Selector::Stage(Stage::Current)).await,
        "one"
    );
    // Discarding a version that is current must not touch it.
    backend
        .discard_pending(&secret, &version(1))
        .await
        .expect("discard of a non-pending version");
    assert_eq!(
        stage_of(backend, &secret, Stage::Current).await,
        Some(version(1))
    );
}

/// Promoting the previous version is a rollback: the two swap places.
pub async fn rollback_by_promoting_previous(backend: &dyn Backend, prefix: &str) {
    let secret = name(prefix, "rollback");
    seeded(backend, &secret).await;
    backend
        .put_pending(&secret, &version(2), &value("two"))
        .await
        .expect("put");
    backend
        .promote(&secret, &version(2), Some(&version(1)))
        .await
        .expect("promote");
    backend
        .promote(&secret, &version(1), Some(&version(2)))
        .await
        .expect("rollback");
    assert_eq!(
        stage_of(backend, &secret, Stage::Current).await,
        Some(version(1))
    );
    assert_eq!(
        stage_of(backend, &secret, Stage::Previous).await,
        Some(version(2))
    );
    assert_eq!(
        read_text(backend, &secret, Selector::Stage(Stage::Current)).await,
        "one"
    );
}

/// Reading a stage no version holds, or an unknown version, is `NotFound`.
pub async fn read_of_missing_stage_is_not_found(backend: &dyn Backend, prefix: &str) {
    let secret = name(prefix, "read-missing");
    seeded(backend, &secret).await;
    for selector in [
        Selector::Stage(Stage::Previous),
        Selector::Stage(Stage::Pending),
        Selector::Version(version(42)),
    ] {
        let err = backend
            .read(&secret, &selector)
            .await
            .expect_err("nothing there");
        assert!(
            err.is_not_found(),
            "{selector:?}: expected NotFound, got {err}"
        );
    }
}

/// `list` names every secret written through the backend.
pub async fn list_includes_written_secrets(backend: &dyn Backend, prefix: &str) {
    let a = name(prefix, "listed-a");
    let b = name(prefix, "listed-b");
    seeded(backend, &a).await;
    seeded(backend, &b).await;
    let listed = backend.list().await.expect("list");
    assert!(
        listed.contains(&a) && listed.contains(&b),
        "list missed: {listed:?}"
    );
}

/// `retire` never removes a version a stage points at.
pub async fn retire_keeps_every_staged_version(backend: &dyn Backend, prefix: &str) {
    let secret = name(prefix, "retire");
    seeded(backend, &secret).await;
    for n in [2, 3] {
        backend
            .put_pending(&secret, &version(n), &value(&format!("v{n}")))
            .await
            .expect("put");
        backend
            .promote(&secret, &version(n), Some(&version(n - 1)))
            .await
            .expect("promote");
    }
    backend
        .put_pending(&secret, &version(4), &value("v4"))
        .await
        .expect("put");
    backend.retire(&secret).await.expect("retire");
    backend.retire(&secret).await.expect("repeated retire");
    assert_eq!(
        read_text(backend, &secret, Selector::Stage(Stage::Current)).await,
        "v3"
    );
    assert_eq!(
        read_text(backend, &secret, Selector::Stage(Stage::Previous)).await,
        "v2"
    );
    assert_eq!(
        read_text(backend, &secret, Selector::Stage(Stage::Pending)).await,
        "v4"
    );
}

/// Racing puts of one id with different values (two replicas) leave exactly one value.
pub async fn concurrent_puts_of_one_id_store_one_value(backend: &dyn Backend, prefix: &str) {
    let secret = name(prefix, "racing-puts");
    seeded(backend, &secret).await;
    let values: Vec<SecretValue> = (0..8).map(|i| value(&format!("candidate-{i}"))).collect();
    let v2 = version(2);
    let results =
        futures_join_all(values.iter().map(|v| backend.put_pending(&secret, &v2, v))).await;
    let created = results
        .iter()
        .filter(|r| matches!(r, Ok(PutOutcome::Created)))
        .count();
    assert_eq!(
        created, 1,
        "exactly one put creates the version: {results:?}"
    );
    for r in &results {
        assert!(
            matches!(r, Ok(_) | Err(Error::Conflict { .. })),
            "losers see Conflict: {r:?}"
        );
    }
    let stored = read_text(backend, &secret, Selector::Version(version(2))).await;
    assert!(
        stored.starts_with("candidate-"),
        "stored one of the candidates"
    );
    let description = backend.describe(&secret).await.expect("describe");
    assert_eq!(description.versions.len(), 2, "one new version, not eight");
}

/// Values that are not UTF-8 come back byte for byte, where the backend supports them.
pub async fn binary_values_round_trip(backend: &dyn Backend, prefix: &str) {
    if !backend.capabilities().binary_values {
        return;
    }
    let secret = name(prefix, "binary");
    let bytes: Vec<u8> = (0..=255u8).rev().collect();
    backend
        .put_pending(&secret, &version(1), &SecretValue::new(bytes.clone()))
        .await
        .expect("put");
    backend
        .promote(&secret, &version(1), None)
        .await
        .expect("promote");
    let read = backend
        .read(&secret, &Selector::Stage(Stage::Current))
        .await
        .expect("read");
    assert_eq!(read.expose(), bytes.as_slice());
}

/// No error message or `Debug` output contains the value involved.
pub async fn errors_never_contain_values(backend: &dyn Backend, prefix: &str) {
    let secret = name(prefix, "canary");
    let canary = format!("canary-{}", Utc::now().timestamp_nanos_opt().unwrap_or(7));
    backend
        .put_pending(&secret, &version(1), &value(&canary))
        .await
        .expect("put");
    let err = backend
        .put_pending(&secret, &version(1), &value(&format!("{canary}-other")))
        .await
        .expect_err("conflict");
    for text in [err.to_string(), format!("{err:?}"), format!("{backend:?}")] {
        assert!(!text.contains(&canary), "value leaked into: {text}");
    }
}

/// Polls several futures to completion concurrently (no extra dependency for one helper).
async fn futures_join_all<F: std::future::Future>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futures {
        set.push(Box::pin(f));
    }
    let mut outputs: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in set.iter_mut().enumerate() {
            if outputs[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(out) => outputs[i] = Some(out),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().map(|o| o.expect("completed")).collect()
}
