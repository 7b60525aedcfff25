//! The AWS Secrets Manager backend against `moto_server`, through the real SDK (issue 4):
//! the conformance suite, labels as AWS consumers read them (cross-checked with boto3),
//! JSON and binary values, native rotation, missing secrets, leftovers, a crash between
//! `PutSecretValue` and the stage move, two replicas, and a start-up that probes nothing.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::process::ExitStatusExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::moto::{Moto, REGION};
use common::{Sandbox, read_jsonl};
use rekeyd::backend::aws::AwsBackend;
use rekeyd::backend::{Backend, Selector};
use rekeyd::policy::{AwsBackendConfig, CredentialsEnv};
use rekeyd::secret::{SecretName, Stage};
use serde_json::Value;

fn policy(moto: &Moto, backend_extra: &str, secrets: &str) -> String {
    format!(
        "[daemon]\nstate_dir = \"state\"\nmin_interval = \"1s\"\nconcurrency = 4\n\n{}\n\
         [defaults]\nbackend = \"aws\"\ngrace = \"0s\"\ngenerator = {{ type = \"password\", length = 24 }}\n\n{secrets}",
        moto.backend_table(backend_extra)
    )
}

/// An in-process backend on `moto`. moto takes any key pair: the backend reads two
/// variables cargo sets in every test process, so no test changes its environment.
async fn backend(moto: &Moto, create_missing: bool) -> AwsBackend {
    let config = AwsBackendConfig {
        region: Some(REGION.to_owned()),
        endpoint_url: Some(moto.url.clone()),
        create_missing,
        credentials_env: Some(CredentialsEnv {
            access_key_id: "CARGO_PKG_NAME".to_owned(),
            secret_access_key: "CARGO_PKG_VERSION".to_owned(),
            session_token: None,
        }),
        ..AwsBackendConfig::default()
    };
    AwsBackend::open("aws", &config).await.expect("open")
}

fn name(s: &str) -> SecretName {
    SecretName::new(s).unwrap()
}

/// Labels per version id, as boto3 reads them from `DescribeSecret`.
fn stages(inspected: &Value) -> BTreeMap<String, Vec<String>> {
    serde_json::from_value(inspected["stages"].clone()).expect("stages")
}

/// The version ids that hold `label`.
fn holders(inspected: &Value, label: &str) -> Vec<String> {
    stages(inspected)
        .into_iter()
        .filter(|(_, labels)| labels.iter().any(|l| l == label))
        .map(|(id, _)| id)
        .collect()
}

/// AWSPENDING is on no version, or on the current one: never blocks the next rotation.
fn assert_pending_not_dangling(inspected: &Value) {
    let pending = holders(inspected, "AWSPENDING");
    let current = holders(inspected, "AWSCURRENT");
    assert!(
        pending.is_empty() || pending == current,
        "AWSPENDING dangles: {inspected}"
    );
    assert!(
        holders(inspected, "REKEYD_UNPROMOTED").is_empty(),
        "rekeyd's marker left behind: {inspected}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_conformance_suite_passes_on_moto() {
    let moto = Moto::start();
    let backend = backend(&moto, true).await;
    rekeyd::backend::conformance::run_all(&backend, "conformance").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_values_are_secret_binary_and_text_is_secret_string() {
    let moto = Moto::start();
    // Written by another AWS client as SecretBinary: read back byte for byte.
    moto.boto3(&["create-binary", "bin/external", "00ff10fe"]);
    let backend = backend(&moto, true).await;
    let read = backend
        .read(&name("bin/external"), &Selector::Stage(Stage::Current))
        .await
        .expect("read binary");
    assert_eq!(read.expose(), &[0x00, 0xff, 0x10, 0xfe]);
    // Written by rekeyd: bytes that are not UTF-8 go as SecretBinary, text as SecretString.
    let secret = name("bin/ours");
    let v1 = rekeyd::secret::VersionId::new("00000000-0000-4000-8000-000000000001");
    backend
        .put_pending(
            &secret,
            &v1,
            &rekeyd::secret::SecretValue::new(vec![0xc3, 0x28, 0x00]),
        )
        .await
        .expect("put");
    backend.promote(&secret, &v1, None).await.expect("promote");
    let seen = moto.inspect("bin/ours");
    assert_eq!(seen["current"]["value"], "b64:wygA", "{seen}");
    assert_pending_not_dangling(&seen);
}

#[test]
fn aws_consumers_read_what_rekeyd_wrote() {
    let moto = Moto::start();
    moto.boto3(&[
        "create",
        "app/db",
        r#"{"username":"app","host":"db.internal","port":5432,"password":"initial"}"#,
    ]);
    let sandbox = Sandbox::raw(&policy(
        &moto,
        "create_missing = true\nkms_key_id = \"alias/rekeyd-test\"\ntags = { managed_by = \"rekeyd\", env = \"test\" }",
        r#"
[[secrets]]
name = "app/token"
schedule = { every = "30d" }

[[secrets]]
name = "app/db"
schedule = { every = "30d" }
generator = { type = "json", field = "password", template = { username = "app" }, generate = { type = "password", length = 32 } }
"#,
    ));
    sandbox.ok(&["run", "--once"]);
    sandbox.ok(&["rotate", "app/token", "--force"]);
    sandbox.ok(&["rotate", "app/db", "--force"]);

    // Two rotations of a secret rekeyd created: AWSCURRENT and AWSPREVIOUS as rekeyd says.
    let token = moto.inspect("app/token");
    assert_eq!(
        token["current"]["value"].as_str().unwrap(),
        sandbox.get("app/token", "current"),
        "{token}"
    );
    assert_eq!(
        token["previous"]["value"].as_str().unwrap(),
        sandbox.get("app/token", "previous"),
        "{token}"
    );
    let status = sandbox.status("app/token");
    assert_eq!(token["current"]["id"], status["current"]["id"], "{status}");
    assert_eq!(
        token["previous"]["id"], status["previous"]["id"],
        "{status}"
    );
    assert_eq!(stages(&token).len(), 2, "one version per rotation: {token}");
    assert_pending_not_dangling(&token);
    assert_eq!(token["kms_key_id"], "alias/rekeyd-test", "{token}");
    // A rollback swaps AWSCURRENT and AWSPREVIOUS and leaves AWSPENDING on no old version.
    sandbox.ok(&["rollback", "app/token"]);
    let rolled = moto.inspect("app/token");
    assert_eq!(rolled["current"]["id"], token["previous"]["id"], "{rolled}");
    assert_eq!(rolled["previous"]["id"], token["current"]["id"], "{rolled}");
    assert_pending_not_dangling(&rolled);
    assert_eq!(token["tags"]["managed_by"], "rekeyd", "{token}");

    // A JSON secret created elsewhere: the generated field changes, the others stay.
    let db = moto.inspect("app/db");
    let current: Value = serde_json::from_str(db["current"]["value"].as_str().unwrap()).unwrap();
    assert_eq!(current["host"], "db.internal", "{current}");
    assert_eq!(current["port"], 5432, "{current}");
    assert_eq!(current["username"], "app", "{current}");
    assert_ne!(current["password"], "initial");
    assert_eq!(current["password"].as_str().unwrap().len(), 32);
    let previous: Value = serde_json::from_str(db["previous"]["value"].as_str().unwrap()).unwrap();
    assert_eq!(previous["host"], "db.internal");
    assert_ne!(previous["password"], current["password"]);
    assert_pending_not_dangling(&db);
}

#[test]
fn a_missing_secret_is_a_clear_error_unless_create_missing() {
    let moto = Moto::start();
    let sandbox = Sandbox::raw(&policy(
        &moto,
        "",
        "[[secrets]]\nname = \"absent\"\nschedule = { every = \"30d\" }\n",
    ));
    let out = sandbox.run(&["run", "--once"]);
    assert!(!out.status.success());
    let failed = sandbox.events("rotation_failed", "absent");
    let error = failed[0]["error"].as_str().unwrap();
    assert!(
        error.contains("not found") && error.contains("create_missing = true"),
        "{error}"
    );
    assert!(
        moto.boto3_output(&["inspect", "absent"]).status.code() != Some(0),
        "nothing was created"
    );
}

#[test]
fn access_denied_names_the_action_and_the_secret() {
    // moto checks IAM policies after its first 4 requests (the readiness probe and the
    // set-up of a user that may read and describe secrets, but neither write versions nor
    // list secrets).
    let moto = Moto::start_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", "4")]);
    let keys: Value =
        serde_json::from_str(&moto.boto3(&["restricted-user", "denied/secret"])).unwrap();
    let sandbox = Sandbox::raw(&policy(
        &moto,
        "",
        "[[secrets]]\nname = \"denied/secret\"\nschedule = { every = \"30d\" }\n",
    ));
    let out = sandbox
        .command(&["rotate", "denied/secret"])
        .env(common::moto::KEY_VAR, keys["key"].as_str().unwrap())
        .env(common::moto::SECRET_VAR, keys["secret"].as_str().unwrap())
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    // ListSecrets was denied too: the native-rotation check fell back to DescribeSecret,
    // and the write itself is what failed.
    assert!(
        stderr.contains("permission denied")
            && stderr
                .contains("secretsmanager:PutSecretValue on secret \"denied/secret\" was refused"),
        "{stderr}"
    );
    assert_eq!(out.status.code(), Some(1), "{stderr}");
}

#[test]
fn a_natively_rotated_secret_is_refused_unless_taken_over() {
    let moto = Moto::start();
    moto.boto3(&["create", "lambda/rotated", "v0"]);
    let lambda = moto.boto3(&["enable-rotation", "lambda/rotated"]);
    let lambda = lambda.trim();
    let before = moto.inspect("lambda/rotated");
    assert_eq!(before["rotation_enabled"], true, "{before}");
    let secrets = "[[secrets]]\nname = \"lambda/rotated\"\nschedule = { every = \"30d\" }\n";
    let sandbox = Sandbox::raw(&policy(&moto, "", secrets));
    for args in [&["rotate", "lambda/rotated"][..], &["run", "--once"][..]] {
        let out = sandbox.run(args);
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("rotated by AWS itself")
                && stderr.contains(lambda)
                && stderr.contains("take_over_native_rotation = true"),
            "{args:?}: {stderr}"
        );
    }
    assert_eq!(
        stages(&moto.inspect("lambda/rotated")),
        stages(&before),
        "nothing written, the Lambda's pending version untouched"
    );

    sandbox.write_raw_policy(&policy(&moto, "take_over_native_rotation = true", secrets));
    sandbox.ok(&["rotate", "lambda/rotated"]);
    let after = moto.inspect("lambda/rotated");
    assert_eq!(
        after["rotation_enabled"], false,
        "AWS's rotation turned off: {after}"
    );
    assert_eq!(
        after["current"]["value"].as_str().unwrap(),
        sandbox.get("lambda/rotated", "current")
    );
    assert_eq!(after["previous"]["value"], "v0", "{after}");
    assert_pending_not_dangling(&after);
    // The Lambda's unfinished rotation was cleaned once, and the audit log says so (the
    // refused attempts found it too, and stopped before touching it).
    let found = sandbox.events("recovery_found", "lambda/rotated");
    assert!(found.iter().all(|e| e["action"] == "discard"), "{found:?}");
    let discarded = sandbox.events("pending_discarded", "lambda/rotated");
    assert_eq!(discarded.len(), 1, "{discarded:?}");
    assert_eq!(discarded[0]["version"], found[0]["version"]);
    assert_eq!(
        sandbox.events("rotation_succeeded", "lambda/rotated").len(),
        1
    );
}

#[test]
fn a_lambdas_leftover_pending_is_discarded_and_audited() {
    let moto = Moto::start();
    let sandbox = Sandbox::raw(&policy(
        &moto,
        "create_missing = true",
        "[[secrets]]\nname = \"left/over\"\nschedule = { every = \"30d\" }\n",
    ));
    sandbox.ok(&["run", "--once"]);
    let current = moto.inspect("left/over")["current"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // A rotation Lambda stored its version and crashed before finishSecret.
    let lambda_token = "3f1c2a8e-5d7b-4c1e-9a0f-0123456789ab";
    moto.boto3(&["put-pending", "left/over", lambda_token, "lambda-value"]);
    sandbox.ok(&["run", "--once"]);

    let found = sandbox.events("recovery_found", "left/over");
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["action"], "discard");
    assert_eq!(found[0]["version"], lambda_token);
    assert_eq!(sandbox.events("pending_discarded", "left/over").len(), 1);
    let seen = moto.inspect("left/over");
    assert_eq!(holders(&seen, "AWSCURRENT"), vec![current], "{seen}");
    assert_pending_not_dangling(&seen);
}

/// The slot version `rekeyd` would write for `secret` now.
fn slot_version(sandbox: &Sandbox, secret: &str) -> String {
    let policy = rekeyd::policy::load(&sandbox.policy()).expect("policy");
    let secret = policy.secret(secret).expect("secret");
    let slot = rekeyd::rotation::plan::latest_due_slot(secret, chrono::Utc::now()).expect("slot");
    rekeyd::secret::VersionId::for_slot(&secret.name, slot).to_string()
}

fn crash_at_put(sandbox: &Sandbox, args: &[&str]) {
    let out = sandbox
        .command(args)
        .env("REKEYD_CRASH_AT", "after_put")
        .output()
        .expect("run rekeyd");
    assert_eq!(
        out.status.signal(),
        Some(6),
        "expected an abort: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_crash_between_put_and_stage_move_is_resumed_once() {
    let moto = Moto::start();
    let sandbox = Sandbox::raw(&policy(
        &moto,
        "create_missing = true",
        "[[secrets]]\nname = \"crash/first\"\nschedule = { every = \"30d\" }\n\n\
         [[secrets]]\nname = \"crash/second\"\nschedule = { every = \"30d\" }\n",
    ));
    // A first rotation that creates the secret, killed after PutSecretValue.
    crash_at_put(&sandbox, &["run", "--once"]);
    sandbox.ok(&["run", "--once"]);
    for secret in ["crash/first", "crash/second"] {
        let seen = moto.inspect(secret);
        let expected = slot_version(&sandbox, secret);
        assert_eq!(
            stages(&seen).keys().collect::<Vec<_>>(),
            vec![&expected],
            "{seen}"
        );
        assert_eq!(holders(&seen, "AWSCURRENT"), vec![expected], "{seen}");
        assert_pending_not_dangling(&seen);
    }
    // The two secrets rotate concurrently: whichever reached PutSecretValue first aborted
    // the process, and the other may have stored its value too. Every stored one is
    // resumed, at least one was.
    let resumed: Vec<_> = ["crash/first", "crash/second"]
        .iter()
        .flat_map(|s| sandbox.events("recovery_found", s))
        .collect();
    assert!((1..=2).contains(&resumed.len()), "{resumed:?}");
    assert!(
        resumed.iter().all(|e| e["action"] == "resume"),
        "{resumed:?}"
    );

    // A later rotation of an existing secret, killed after PutSecretValue.
    let before = moto.inspect("crash/first");
    let old = holders(&before, "AWSCURRENT")[0].clone();
    crash_at_put(&sandbox, &["rotate", "crash/first", "--force"]);
    let crashed = sandbox.events("rotation_started", "crash/first");
    let crashed = crashed.last().unwrap()["version"]
        .as_str()
        .unwrap()
        .to_owned();
    let mid = moto.inspect("crash/first");
    assert_eq!(holders(&mid, "AWSPENDING"), vec![crashed.clone()], "{mid}");
    assert_eq!(holders(&mid, "AWSCURRENT"), vec![old.clone()], "{mid}");

    sandbox.ok(&["run", "--once"]);
    let after = moto.inspect("crash/first");
    assert_eq!(stages(&after).len(), 2, "exactly one new version: {after}");
    assert_eq!(
        holders(&after, "AWSCURRENT"),
        vec![crashed.clone()],
        "{after}"
    );
    assert_eq!(holders(&after, "AWSPREVIOUS"), vec![old], "{after}");
    assert_pending_not_dangling(&after);
    let found = sandbox.events("recovery_found", "crash/first");
    assert_eq!(found.last().unwrap()["action"], "resume", "{found:?}");
    assert_eq!(found.last().unwrap()["version"], crashed.as_str());
    let audit = sandbox.run(&["audit", "verify", sandbox.audit_log().to_str().unwrap()]);
    assert!(audit.status.success());
}

#[test]
fn two_replicas_make_one_version_per_secret_per_slot_and_agree() {
    const SECRETS: usize = 16;
    let moto = Moto::start();
    let secrets: String = (0..SECRETS)
        .map(|i| {
            format!("[[secrets]]\nname = \"replica/s{i:02}\"\nschedule = {{ every = \"12s\" }}\n\n")
        })
        .collect();
    let text = policy(&moto, "create_missing = true", &secrets);
    // Two deployments of one policy, differing only in their audit log; they share the
    // fingerprint key, so equal values have equal fingerprints in both logs.
    let sandbox = Sandbox::raw(&text);
    let policy_b = sandbox.path("policy-b.toml");
    std::fs::write(
        &policy_b,
        text.replace(
            "state_dir = \"state\"",
            "state_dir = \"state\"\naudit_log = \"state/audit-b.jsonl\"",
        ),
    )
    .unwrap();
    let log_a = sandbox.audit_log();
    let log_b = sandbox.path("state/audit-b.jsonl");
    let replica = |policy: &std::path::Path| {
        sandbox
            .command_with_policy(&["run", "--once"], policy)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn")
    };
    let together = |round: &str| {
        let policies = [sandbox.policy(), policy_b.clone()];
        let children = policies.clone().map(|policy| replica(&policy));
        for (child, policy) in children.into_iter().zip(&policies) {
            let out = child.wait_with_output().expect("wait");
            if out.status.success() {
                continue;
            }
            // A slot can begin between the two replicas' looks at one secret: each then
            // rotates for its own slot, and the one that promotes second finds the current
            // version changed and stops (the compare-and-swap doing its job). A daemon
            // retries that secret after a backoff; `run --once` reports it and exits 1, so
            // the test runs that replica again, as the daemon would. Any other failure fails.
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.contains("another writer changed it"),
                "{round}: a replica failed: {stderr}"
            );
            let again = replica(policy).wait_with_output().expect("wait");
            assert!(
                again.status.success(),
                "{round}: a replica failed on its retry: {}",
                String::from_utf8_lossy(&again.stderr)
            );
        }
    };
    // Round 1 creates every secret; round 2 rotates each once its next slot is due.
    together("create");
    std::thread::sleep(Duration::from_millis(12_500));
    together("rotate");

    let (entries_a, entries_b) = (read_jsonl(&log_a), read_jsonl(&log_b));
    let fingerprints = |entries: &[Value], secret: &str| -> BTreeMap<String, String> {
        entries
            .iter()
            .filter(|e| e["event"] == "pending_stored" && e["secret"] == secret)
            .map(|e| {
                (
                    e["version"].as_str().unwrap().to_owned(),
                    e["fingerprint"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let mut both = 0;
    for i in 0..SECRETS {
        let secret = format!("replica/s{i:02}");
        let seen = moto.inspect(&secret);
        let versions = stages(&seen);
        // Every version is a slot's version (its id is derived from the slot, so a second
        // version for one slot could only have another id), and at least two slots ran (a
        // loaded machine can make a run last into the next slot).
        assert!(versions.len() >= 2, "{seen}");
        for id in versions.keys() {
            assert!(
                rekeyd::secret::VersionId::new(id.clone()).slot().is_some(),
                "slot versions only: {seen}"
            );
        }
        // The later slot's version is current (ids start with their slot's time).
        assert_eq!(
            holders(&seen, "AWSCURRENT"),
            vec![versions.keys().max().unwrap().clone()],
            "{seen}"
        );
        assert_pending_not_dangling(&seen);
        let (fa, fb) = (
            fingerprints(&entries_a, &secret),
            fingerprints(&entries_b, &secret),
        );
        for (version, print) in &fa {
            if let Some(other) = fb.get(version) {
                assert_eq!(print, other, "{secret} {version}: the logs disagree");
                both += 1;
            }
        }
    }
    assert!(both > 0, "the replicas never raced on a version");
    for log in [&log_a, &log_b] {
        let out = sandbox.run(&["audit", "verify", log.to_str().unwrap()]);
        assert!(out.status.success(), "{}", log.display());
    }
}

#[test]
fn start_up_with_explicit_region_and_keys_probes_no_metadata_service() {
    let moto = Moto::start();
    // A stand-in metadata service that counts connections.
    let imds = TcpListener::bind("127.0.0.1:0").unwrap();
    let imds_url = format!("http://{}", imds.local_addr().unwrap());
    imds.set_nonblocking(true).unwrap();
    let probes = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&probes);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopping = Arc::clone(&stop);
    let watcher = std::thread::spawn(move || {
        while !stopping.load(Ordering::Relaxed) {
            if let Ok((mut s, _)) = imds.accept() {
                counter.fetch_add(1, Ordering::Relaxed);
                let _ = s.read(&mut [0u8; 512]);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let sandbox = Sandbox::raw(&policy(
        &moto,
        "create_missing = true",
        "[[secrets]]\nname = \"quiet\"\nschedule = { every = \"30d\" }\n",
    ));
    for args in [
        &["run", "--once"][..],
        &["status"][..],
        &["get", "quiet"][..],
    ] {
        let out = sandbox
            .command(args)
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &imds_url)
            .env_remove("AWS_REGION")
            .env_remove("AWS_ACCESS_KEY_ID")
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    assert_eq!(
        probes.load(Ordering::Relaxed),
        0,
        "the metadata service was probed"
    );
}

#[test]
fn no_value_reaches_trace_logs_through_the_sdk() {
    let moto = Moto::start();
    let sandbox = Sandbox::raw(&policy(
        &moto,
        "create_missing = true",
        r#"
[[secrets]]
name = "canary/pw"
schedule = { every = "30d" }

[[secrets]]
name = "canary/json"
schedule = { every = "30d" }
generator = { type = "json", field = "password", template = { username = "svc" }, generate = { type = "password", length = 28 } }
"#,
    ));
    let mut printed = String::new();
    for args in [
        &["run", "--once"][..],
        &["rotate", "canary/pw", "--force"][..],
        &["rotate", "canary/json", "--force"][..],
        &["status"][..],
    ] {
        let out = sandbox
            .command(args)
            .args(["--log", "trace"])
            .output()
            .expect("run");
        assert!(out.status.success(), "{args:?}");
        printed.push_str(&String::from_utf8_lossy(&out.stdout));
        printed.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    assert!(
        printed.contains("PutSecretValue"),
        "trace logging reached the SDK"
    );
    let audit = std::fs::read_to_string(sandbox.audit_log()).unwrap();
    for secret in ["canary/pw", "canary/json"] {
        for stage in ["current", "previous"] {
            let value = sandbox.get(secret, stage);
            let canary = if secret == "canary/json" {
                let json: Value = serde_json::from_str(&value).unwrap();
                json["password"].as_str().unwrap().to_owned()
            } else {
                value
            };
            assert!(
                !printed.contains(&canary),
                "{secret} {stage} leaked into the logs"
            );
            assert!(
                !audit.contains(&canary),
                "{secret} {stage} leaked into the audit log"
            );
        }
    }
}

#[test]
fn an_assumed_role_is_used_for_every_call() {
    // moto checks IAM policies after its first 6 requests (the readiness probe and the
    // set-up): the base user may only assume the role, and only the role may use
    // Secrets Manager.
    let moto = Moto::start_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", "6")]);
    let keys: Value = serde_json::from_str(&moto.boto3(&["role-only-user"])).unwrap();
    let role = "role_arn = \"arn:aws:iam::123456789012:role/rekeyd\"\nsession_name = \"rekeyd-test\"\ncreate_missing = true";
    let sandbox = Sandbox::raw(&policy(
        &moto,
        role,
        "[[secrets]]\nname = \"assumed\"\nschedule = { every = \"30d\" }\n",
    ));
    let run = |policy_text: &str| {
        sandbox.write_raw_policy(policy_text);
        sandbox
            .command(&["run", "--once"])
            .env(common::moto::KEY_VAR, keys["key"].as_str().unwrap())
            .env(common::moto::SECRET_VAR, keys["secret"].as_str().unwrap())
            // STS keeps its own endpoint (endpoint_url is Secrets Manager's); the standard
            // variable points it at moto.
            .env("AWS_ENDPOINT_URL_STS", &moto.url)
            .output()
            .expect("run")
    };
    let out = run(&policy(
        &moto,
        role,
        "[[secrets]]\nname = \"assumed\"\nschedule = { every = \"30d\" }\n",
    ));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without the role, the same keys are refused: the role is what allowed it.
    let out = run(&policy(
        &moto,
        "create_missing = true",
        "[[secrets]]\nname = \"direct\"\nschedule = { every = \"30d\" }\n",
    ));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("permission denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Found by the soak: a daemon restarted after a crash while AWS was unreachable exited,
/// because closing the crashed rotation needs a describe. It must come up, keep retrying,
/// and close that rotation before the secret's next one once AWS answers again.
#[test]
fn a_crashed_rotation_is_closed_once_aws_is_back_and_the_daemon_stays_up_meanwhile() {
    use common::flaky_proxy::{FlakyProxy, Mode};
    let moto = Moto::start();
    let proxy = FlakyProxy::start(moto.port);
    let text = policy(
        &moto,
        "create_missing = true",
        "[[secrets]]\nname = \"outage/app\"\nschedule = { every = \"30d\" }\n",
    )
    .replace(&moto.url, &proxy.url());
    let sandbox = Sandbox::raw(&text);
    // A rotation that starts and dies before it stores anything.
    let out = sandbox
        .command(&["run", "--once"])
        .env("REKEYD_CRASH_AT", "after_started")
        .output()
        .expect("run rekeyd");
    assert_eq!(out.status.signal(), Some(6), "expected an abort");

    proxy.set(Mode::Refuse);
    let log = std::fs::File::create(sandbox.path("daemon.log")).expect("log file");
    let mut daemon = sandbox
        .command(&["run"])
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start rekeyd run");
    // Up, and retrying the secret while AWS is down, not exited.
    common::wait_for(
        "a failed attempt while AWS is down",
        Duration::from_secs(120),
        || {
            let text = std::fs::read_to_string(sandbox.path("daemon.log")).unwrap_or_default();
            if let Ok(Some(status)) = daemon.try_wait() {
                panic!("rekeyd run exited while AWS was down ({status}): {text}");
            }
            (text.contains("outage/app") && text.contains("will retry")).then_some(())
        },
    );
    assert!(
        sandbox.events("rotation_started", "outage/app").len() == 1,
        "no new rotation starts before the crashed one is closed"
    );

    proxy.set(Mode::Pass);
    common::wait_for(
        "the rotation once AWS is back",
        Duration::from_secs(120),
        || {
            (!sandbox
                .events("rotation_succeeded", "outage/app")
                .is_empty())
            .then_some(())
        },
    );
    common::signal(&daemon, "TERM");
    assert!(daemon.wait().expect("wait").success());

    // The crashed start got its outcome before the next start.
    let lifecycle: Vec<(String, String)> = sandbox
        .audit_entries()
        .into_iter()
        .filter(|e| e["secret"] == "outage/app")
        .filter(|e| {
            ["rotation_started", "rotation_succeeded"].contains(&e["event"].as_str().unwrap())
                || e["step"] == "interrupted"
        })
        .map(|e| {
            (
                e["event"].as_str().unwrap().to_owned(),
                e["version"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let crashed = lifecycle[0].1.clone();
    assert_eq!(lifecycle[0].0, "rotation_started");
    assert_eq!(lifecycle[1], ("rotation_failed".to_owned(), crashed));
    assert_eq!(lifecycle[2].0, "rotation_started");
    assert_eq!(lifecycle[3].0, "rotation_succeeded");
    let out = sandbox.run(&["audit", "verify", sandbox.audit_log().to_str().unwrap()]);
    assert!(out.status.success());
}
