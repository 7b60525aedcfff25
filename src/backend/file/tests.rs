use std::os::unix::fs::PermissionsExt;

use base64::Engine as _;

use super::*;
use crate::backend::conformance;

fn config(dir: &Path) -> FileBackendConfig {
    FileBackendConfig {
        path: dir.join("store"),
        key_file: dir.join("store.key"),
        key_env: None,
    }
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("metadata").permissions().mode() & 0o777
}

fn name(text: &str) -> SecretName {
    SecretName::new(text).expect("valid name")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_conformance_suite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = FileBackend::open("local", &config(dir.path())).expect("open");
    conformance::run_all(&backend, "conformance").await;
}

#[tokio::test]
async fn key_file_is_created_once_with_mode_0600_and_reused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let first = FileBackend::open("local", &cfg).expect("open");
    assert_eq!(mode(&cfg.key_file), 0o600);
    assert_eq!(mode(&cfg.path), 0o700);
    let key_text = fs::read_to_string(&cfg.key_file).expect("key");
    let secret = name("app/token");
    first
        .put_pending(
            &secret,
            &VersionId::new("v1".repeat(16)),
            &SecretValue::new(b"abc".to_vec()),
        )
        .await
        .expect("put");
    let second = FileBackend::open("local", &cfg).expect("reopen");
    assert_eq!(
        fs::read_to_string(&cfg.key_file).expect("key"),
        key_text,
        "key not replaced"
    );
    let read = second
        .read(&secret, &Selector::Stage(Stage::Pending))
        .await
        .expect("a reopened store reads what it wrote");
    assert_eq!(read.expose(), b"abc");
}

#[tokio::test]
async fn values_are_encrypted_at_rest_and_files_are_private() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let backend = FileBackend::open("local", &cfg).expect("open");
    let secret = name("prod/db.password");
    let canary = "canary-plaintext-8c1d2e";
    backend
        .put_pending(
            &secret,
            &VersionId::new("a".repeat(32)),
            &SecretValue::new(canary.as_bytes().to_vec()),
        )
        .await
        .expect("put");
    let path = secret_file(&cfg.path, &secret);
    assert_eq!(path.file_name().unwrap(), "prod%2Fdb%2Epassword.json");
    assert_eq!(mode(&path), 0o600);
    let on_disk = fs::read(&path).expect("read");
    let text = String::from_utf8_lossy(&on_disk);
    assert!(!text.contains(canary), "plaintext on disk");
    let b64 = base64::engine::general_purpose::STANDARD.encode(canary);
    assert!(!text.contains(&b64), "merely encoded on disk");
}

/// Regression (found in review of issue 7): a missing key file was silently replaced by a
/// new key, and every secret already in the store became unreadable.
#[tokio::test]
async fn a_lost_key_is_refused_not_replaced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let backend = FileBackend::open("local", &cfg).expect("open");
    backend
        .put_pending(
            &name("svc"),
            &VersionId::new("a".repeat(32)),
            &SecretValue::new(b"x".to_vec()),
        )
        .await
        .expect("put");
    fs::remove_file(&cfg.key_file).expect("lose the key");
    let err = FileBackend::open("local", &cfg).expect_err("must not mint a new key");
    assert!(err.to_string().contains("restore the key"), "{err}");
    assert!(!cfg.key_file.exists(), "no new key file was written");
}

#[tokio::test]
async fn a_wrong_key_is_reported_as_such() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let backend = FileBackend::open("local", &cfg).expect("open");
    let secret = name("svc");
    backend
        .put_pending(
            &secret,
            &VersionId::new("a".repeat(32)),
            &SecretValue::new(b"x".to_vec()),
        )
        .await
        .expect("put");
    let other = FileBackendConfig {
        key_file: dir.path().join("other.key"),
        ..cfg.clone()
    };
    key::load(&other.key_file, None).expect("another, existing key");
    let wrong = FileBackend::open("local", &other).expect("open with another key");
    let err = wrong.describe(&secret).await.expect_err("wrong key");
    assert!(err.to_string().contains("wrong key"), "{err}");
}

#[tokio::test]
async fn altered_or_moved_ciphertext_fails_to_decrypt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let backend = FileBackend::open("local", &cfg).expect("open");
    let (a, b) = (name("a"), name("b"));
    let id = VersionId::new("a".repeat(32));
    for secret in [&a, &b] {
        backend
            .put_pending(secret, &id, &SecretValue::new(b"value".to_vec()))
            .await
            .expect("put");
    }
    // Moving a's file over b's: same key, same version id, but bound to another name. The
    // record's checksum only tells torn from whole, so whoever moves it can recompute it.
    let mut moved = record::parse(&fs::read(secret_file(&cfg.path, &a)).expect("read"))
        .expect("a's file")
        .file;
    moved.name = b.clone();
    fs::write(secret_file(&cfg.path, &b), record::encode(&moved)).expect("write");
    let err = backend
        .read(&b, &Selector::Version(id.clone()))
        .await
        .expect_err("ciphertext bound to another secret");
    assert!(err.to_string().contains("cannot decrypt"), "{err}");
}

#[test]
fn key_from_environment_variable_wins_over_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("unused.key");
    let encoded = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let (from_env, source) =
        key::load(&key_file, Some(("REKEYD_KEY", Some(encoded)))).expect("env key");
    assert_eq!(source, key::KeySource::Env);
    assert!(
        !key_file.exists(),
        "no key file is created when the variable is set"
    );
    // Unset variable: falls back to (creating) the file, which is a different key.
    let (from_file, source) = key::load(&key_file, Some(("REKEYD_KEY", None))).expect("file key");
    assert_eq!(source, key::KeySource::CreatedFile);
    assert_ne!(from_env.id, from_file.id);
    let short = base64::engine::general_purpose::STANDARD.encode([7u8; 16]);
    let err = key::load(&key_file, Some(("REKEYD_KEY", Some(short)))).expect_err("16 bytes");
    assert!(
        err.contains("32 bytes") && err.contains("REKEYD_KEY"),
        "{err}"
    );
}

#[test]
fn a_key_file_readable_by_others_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("open.key");
    key::load(&key_file, None).expect("create");
    fs::set_permissions(&key_file, fs::Permissions::from_mode(0o644)).expect("chmod");
    let err = key::load(&key_file, None).expect_err("mode 644");
    assert!(err.contains("chmod 600"), "{err}");
}

/// `.` and `/` are valid in secret names (AWS allows them), so a hostile name must still
/// land inside the store directory.
#[tokio::test]
async fn a_path_traversal_name_stays_inside_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let backend = FileBackend::open("local", &cfg).expect("open");
    let hostile = name("../../outside");
    backend
        .put_pending(
            &hostile,
            &VersionId::new("a".repeat(32)),
            &SecretValue::new(b"x".to_vec()),
        )
        .await
        .expect("put");
    let inside: Vec<_> = fs::read_dir(&cfg.path)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    assert_eq!(inside, vec!["%2E%2E%2F%2E%2E%2Foutside.json"]);
    assert!(!dir.path().join("outside.json").exists());
    assert_eq!(backend.list().await.unwrap(), vec![hostile]);
}

#[test]
fn name_encoding_round_trips() {
    for text in ["plain", "prod/db.password", "a+b=c@d", "-_"] {
        let secret = name(text);
        let encoded = encode_name(&secret);
        assert!(!encoded.contains('/'));
        assert_eq!(decode_name(&encoded), Some(secret));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_store_instances_writing_at_once_lose_no_update() {
    // Two FileBackend instances hold separate file descriptions, as two processes would,
    // so the flock between them is the one that protects separate processes.
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let one = FileBackend::open("local", &cfg).expect("open");
    let two = FileBackend::open("local", &cfg).expect("open");
    let secret = name("shared");
    let mut tasks = Vec::new();
    for i in 0..40u32 {
        let backend = if i % 2 == 0 { one.clone() } else { two.clone() };
        let secret = secret.clone();
        tasks.push(tokio::spawn(async move {
            let id = VersionId::new(format!("{i:032}"));
            backend
                .put_pending(&secret, &id, &SecretValue::new(i.to_be_bytes().to_vec()))
                .await
                .expect("put");
            // Compare-and-swap until this task's version is current: a lost race is a
            // CurrentChanged, never a silent overwrite.
            loop {
                let current = backend
                    .describe(&secret)
                    .await
                    .expect("describe")
                    .stage(Stage::Current)
                    .map(|v| v.id.clone());
                match backend.promote(&secret, &id, current.as_ref()).await {
                    Ok(()) => break,
                    Err(Error::CurrentChanged { .. }) => continue,
                    Err(e) => panic!("promote: {e}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let description = one.describe(&secret).await.expect("describe");
    // Every promote ran under the lock and against the version it saw, and found its own
    // version (a lost put would have failed it with NotFound): the last one is current,
    // the one before previous, and each of the other 38 was dropped by the promote that
    // took its last stage, so retire finds nothing.
    assert_eq!(description.versions.len(), 2, "{description:?}");
    assert!(description.stage(Stage::Current).is_some());
    assert!(description.stage(Stage::Previous).is_some());
    assert_eq!(one.retire(&secret).await.expect("retire"), 0);
}
