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

/// Every line of a store file, each checked to be one intact format 2 record.
fn intact_records(path: &Path) -> Vec<SecretFile> {
    let bytes = fs::read(path).expect("store file");
    assert_eq!(
        bytes.last(),
        Some(&b'\n'),
        "the file ends with a whole record"
    );
    bytes
        .split_inclusive(|b| *b == b'\n')
        .map(|line| {
            let parsed = record::parse(line).expect("an intact record");
            let len = line.len() as u64;
            assert_eq!(parsed.layout, Layout::Records { end: len, len });
            parsed.file
        })
        .collect()
}

fn version(i: u32) -> VersionId {
    VersionId::new(format!("{i:032}"))
}

/// What a crash can leave after the last durable record: part of an append that never
/// reached `fdatasync` (power lost mid-write), or whole lines that are not a record.
#[derive(Clone, Copy, Debug)]
enum Damage {
    HalfARecord,
    Garbage,
    BadChecksum,
}

#[tokio::test]
async fn a_torn_last_record_reads_as_the_state_before_it_and_the_next_write_cuts_it_off() {
    for damage in [Damage::HalfARecord, Damage::Garbage, Damage::BadChecksum] {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = config(dir.path());
        let backend = FileBackend::open("local", &cfg).expect("open");
        let secret = name("svc");
        let path = secret_file(&cfg.path, &secret);
        let value = |i: u8| SecretValue::new(vec![i; 20]);
        backend
            .put_pending(&secret, &version(1), &value(1))
            .await
            .expect("put");
        backend
            .promote(&secret, &version(1), None)
            .await
            .expect("promote");
        let durable = fs::metadata(&path).unwrap().len();
        backend
            .put_pending(&secret, &version(2), &value(2))
            .await
            .expect("put");
        let full = fs::read(&path).unwrap();
        assert_eq!(
            intact_records(&path).len(),
            3,
            "two appends after the first write"
        );

        let file = OpenOptions::new().write(true).open(&path).unwrap();
        let last = &full[durable as usize..];
        match damage {
            Damage::HalfARecord => file.set_len(durable + last.len() as u64 / 2).unwrap(),
            Damage::Garbage => {
                file.set_len(durable).unwrap();
                fs::OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .unwrap()
                    .write_all(b"\0\0\0garbage\n{\"format\":2}\n\0\0")
                    .unwrap();
            }
            Damage::BadChecksum => {
                // The whole line is there, but one byte of it changed: pending → pendinG.
                let text = String::from_utf8(last.to_vec()).unwrap();
                assert!(text.contains("\"pending\""));
                let altered = text.replacen("\"pending\"", "\"pendinG\"", 1);
                fs::write(
                    &path,
                    [&full[..durable as usize], altered.as_bytes()].concat(),
                )
                .unwrap();
            }
        }
        let damaged_len = fs::metadata(&path).unwrap().len();
        assert!(damaged_len > durable, "{damage:?}: the tail is there");

        // Readers: the state of the last intact record (v1 current, nothing pending).
        let described = backend.describe(&secret).await.expect("describe");
        assert_eq!(described.versions.len(), 1, "{damage:?}: {described:?}");
        assert_eq!(described.stage(Stage::Current).unwrap().id, version(1));
        assert!(described.stage(Stage::Pending).is_none(), "{damage:?}");
        let current = backend
            .read(&secret, &Selector::Stage(Stage::Current))
            .await
            .expect("read");
        assert!(current.ct_eq(&value(1)), "{damage:?}");

        // The next write cuts the tail off and appends right after the intact record.
        backend
            .put_pending(&secret, &version(3), &value(3))
            .await
            .expect("put after the damage");
        let records = intact_records(&path);
        assert_eq!(records.len(), 3, "{damage:?}: no garbage between records");
        let ids: Vec<_> = records[2].versions.iter().map(|v| v.id.clone()).collect();
        assert_eq!(ids, [version(1), version(3)], "{damage:?}");
        assert!(
            backend
                .read(&secret, &Selector::Stage(Stage::Pending))
                .await
                .expect("pending")
                .ct_eq(&value(3))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_racing_appends_always_sees_a_whole_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let writer = FileBackend::open("local", &cfg).expect("open");
    // A second instance reads, as another process would.
    let reader = FileBackend::open("local", &cfg).expect("open");
    let secret = name("raced");
    let value = |i: u32| SecretValue::new(format!("value-{i:04}").into_bytes());
    writer
        .put_pending(&secret, &version(0), &value(0))
        .await
        .expect("put");
    writer
        .promote(&secret, &version(0), None)
        .await
        .expect("promote");
    const ROTATIONS: u32 = 150;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reads = {
        let (done, secret) = (Arc::clone(&done), secret.clone());
        tokio::spawn(async move {
            let mut reads = 0u32;
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                let current = reader
                    .read(&secret, &Selector::Stage(Stage::Current))
                    .await
                    .expect("a reader never sees a broken file");
                let text = String::from_utf8(current.expose().to_vec()).unwrap();
                let i: u32 = text.strip_prefix("value-").unwrap().parse().unwrap();
                assert!(i <= ROTATIONS, "{text}");
                reads += 1;
            }
            reads
        })
    };
    for i in 1..=ROTATIONS {
        writer
            .put_pending(&secret, &version(i), &value(i))
            .await
            .expect("put");
        writer
            .promote(&secret, &version(i), Some(&version(i - 1)))
            .await
            .expect("promote");
    }
    done.store(true, std::sync::atomic::Ordering::Release);
    let reads = reads.await.expect("reader");
    assert!(reads > 0, "the reader ran");
    let last = writer
        .read(&secret, &Selector::Stage(Stage::Current))
        .await
        .expect("read");
    assert!(last.ct_eq(&value(ROTATIONS)));
}

#[tokio::test]
async fn a_file_reaching_the_bound_is_compacted_to_one_record_of_the_same_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let backend = FileBackend::open("local", &cfg).expect("open");
    let secret = name("grows");
    let path = secret_file(&cfg.path, &secret);
    let inode = |path: &Path| std::os::unix::fs::MetadataExt::ino(&fs::metadata(path).unwrap());
    // 1 KiB values make records of about 3 KiB: the bound comes after a few dozen writes.
    let value = |i: u32| SecretValue::new(format!("{i:01024}").into_bytes());
    let mut compactions = 0;
    let mut previous: Option<VersionId> = None;
    for i in 0..100u32 {
        for step in ["put", "promote"] {
            let (len, records, ino) = (
                fs::metadata(&path).map_or(0, |m| m.len()),
                fs::read(&path).map_or(0, |b| b.iter().filter(|c| **c == b'\n').count()),
                fs::metadata(&path).ok().map(|_| inode(&path)),
            );
            if step == "put" {
                backend
                    .put_pending(&secret, &version(i), &value(i))
                    .await
                    .expect("put");
            } else {
                backend
                    .promote(&secret, &version(i), previous.as_ref())
                    .await
                    .expect("promote");
            }
            let after = intact_records(&path);
            let new_len = fs::metadata(&path).unwrap().len();
            assert!(new_len <= COMPACT_AT, "{new_len} bytes: past the bound");
            if new_len < len {
                compactions += 1;
                // The write that would have crossed the bound rewrote the file whole.
                let record = new_len;
                assert!(len + record > COMPACT_AT, "compacted early at {len} bytes");
                assert_eq!(after.len(), 1, "one record after compaction");
                assert_ne!(Some(inode(&path)), ino, "by rename");
            } else if ino.is_some() {
                assert_eq!(after.len(), records + 1, "appended");
                assert_eq!(Some(inode(&path)), ino, "appended in place");
            }
            // The state is the one just written, compaction or not.
            let described = backend.describe(&secret).await.expect("describe");
            let stage = |s| described.stage(s).map(|v| v.id.clone());
            if step == "put" {
                assert_eq!(stage(Stage::Pending), Some(version(i)));
                assert_eq!(stage(Stage::Current), previous);
            } else {
                assert_eq!(stage(Stage::Current), Some(version(i)));
                assert_eq!(stage(Stage::Previous), previous);
                assert_eq!(stage(Stage::Pending), None);
            }
        }
        for (stage, id) in [
            (Stage::Current, Some(i)),
            (Stage::Previous, i.checked_sub(1)),
        ] {
            if let Some(id) = id {
                let read = backend
                    .read(&secret, &Selector::Stage(stage))
                    .await
                    .expect("read");
                assert!(read.ct_eq(&value(id)), "{stage} after rotation {i}");
            }
        }
        previous = Some(version(i));
    }
    assert!(compactions >= 2, "{compactions} compactions in 200 writes");
}

#[tokio::test]
async fn records_larger_than_the_first_read_are_read_whole() {
    // Reads start with the file's last 8 KiB and read more until a record lies whole in
    // what they read: values of several KiB make records that never fit the first read.
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = FileBackend::open("local", &config(dir.path())).expect("open");
    let secret = name("big");
    let values: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 9_000 + usize::from(i)]).collect();
    let mut current = None;
    for (i, value) in values.iter().enumerate() {
        let id = version(i as u32);
        backend
            .put_pending(&secret, &id, &SecretValue::new(value.clone()))
            .await
            .expect("put");
        backend
            .promote(&secret, &id, current.as_ref())
            .await
            .expect("promote");
        current = Some(id);
    }
    let path = secret_file(&config(dir.path()).path, &secret);
    assert!(
        fs::read_to_string(&path)
            .expect("file")
            .lines()
            .all(|record| record.len() as u64 > FIRST_READ),
        "every record is longer than the first read"
    );
    for (stage, expected) in [(Stage::Current, &values[3]), (Stage::Previous, &values[2])] {
        let read = backend.read(&secret, &Selector::Stage(stage)).await;
        assert_eq!(read.expect("readable").expose(), &expected[..]);
    }
}

#[tokio::test]
async fn retire_drops_a_replaced_pending_version_and_leaves_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let backend = FileBackend::open("local", &cfg).expect("open");
    let secret = name("app/retire");
    let put = |n: u32| {
        let backend = &backend;
        let secret = &secret;
        async move {
            backend
                .put_pending(secret, &version(n), &SecretValue::new(vec![n as u8]))
                .await
                .expect("put")
        }
    };
    put(1).await;
    backend
        .promote(&secret, &version(1), None)
        .await
        .expect("promote");
    // A second pending takes the stage from the first, which is left with none.
    put(2).await;
    put(3).await;
    let before = fs::read(secret_file(&cfg.path, &secret)).expect("store file");
    assert_eq!(
        backend
            .describe(&secret)
            .await
            .expect("describe")
            .versions
            .len(),
        3
    );

    assert_eq!(backend.retire(&secret).await.expect("retire"), 1);
    let after = backend.describe(&secret).await.expect("describe");
    let ids: Vec<_> = after.versions.iter().map(|v| v.id.clone()).collect();
    assert_eq!(ids, [version(1), version(3)], "{after:?}");
    assert_eq!(
        after.stage(Stage::Pending).map(|v| &v.id),
        Some(&version(3))
    );
    assert!(
        fs::read(secret_file(&cfg.path, &secret))
            .expect("store file")
            .len()
            > before.len(),
        "the drop is written"
    );

    // Nothing left to drop: the file is not written again.
    let written = fs::read(secret_file(&cfg.path, &secret)).expect("store file");
    assert_eq!(backend.retire(&secret).await.expect("retire again"), 0);
    assert_eq!(
        fs::read(secret_file(&cfg.path, &secret)).expect("store file"),
        written
    );
}
