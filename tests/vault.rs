//! The Vault backend against a real Vault-API server (RustyVault, KV v1): the conformance
//! suite, token and AppRole auth, renewal, errors an operator sees; and against the KV v2
//! / Kubernetes contract server built from Vault's published API (the documented
//! exception: RustyVault serves neither).

mod common;

use std::path::PathBuf;

use common::rvault::RustyVault;
use rekeyd::backend::Backend;
use rekeyd::backend::conformance;
use rekeyd::backend::vault::VaultBackend;
use rekeyd::policy::{CredentialSource, KvVersion, VaultAuth, VaultBackendConfig};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Writes `token` to a 0600 file in the server's temp dir.
fn token_file(server: &RustyVault, token: &str) -> PathBuf {
    let path = server.dir.path().join(format!("token-{}", token.len()));
    std::fs::write(&path, format!("{token}\n")).expect("token file");
    path
}

fn v1_config(server: &RustyVault, auth: VaultAuth) -> VaultBackendConfig {
    VaultBackendConfig {
        address: server.addr.clone(),
        mount: "secret".to_owned(),
        kv_version: KvVersion::V1,
        namespace: None,
        ca_cert: None,
        auth,
        max_versions: None,
    }
}

fn token_auth(path: PathBuf) -> VaultAuth {
    VaultAuth::Token {
        token: CredentialSource::File(path),
    }
}

#[test]
fn kv1_on_rustyvault_passes_the_conformance_suite() {
    let server = RustyVault::start();
    let auth = token_auth(token_file(&server, &server.root_token));
    runtime().block_on(async {
        let backend = VaultBackend::open("vault", &v1_config(&server, auth))
            .await
            .expect("open");
        conformance::run_all(&backend, "conformance").await;
        assert!(backend.auth_stats().logins >= 1);
        let _ = backend.name();
    });
}

// ---- KV v2 and Kubernetes auth: the contract server (Vault's documented API) ----

use common::vault_contract::{self, ContractVault};

fn v2_config(addr: &str, auth: VaultAuth) -> VaultBackendConfig {
    VaultBackendConfig {
        address: addr.to_owned(),
        mount: vault_contract::MOUNT.to_owned(),
        kv_version: KvVersion::V2,
        namespace: None,
        ca_cert: None,
        auth,
        max_versions: None,
    }
}

fn file_with(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write file");
    path
}

#[test]
fn kv2_contract_passes_the_conformance_suite_with_cas_on_every_write() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let server = ContractVault::start().await;
        let auth = token_auth(file_with(&dir, "token", &server.root_token));
        let backend = VaultBackend::open("vault", &v2_config(&server.addr, auth))
            .await
            .expect("open");
        conformance::run_all(&backend, "conformance").await;

        let seen = server.seen();
        let data_writes: Vec<_> = seen
            .iter()
            .filter(|s| s.method == "POST" && s.path.starts_with("/v1/secret/data/"))
            .collect();
        assert!(
            data_writes.len() > 20,
            "the suite writes data: {}",
            data_writes.len()
        );
        for write in &data_writes {
            assert!(
                write.body["options"]["cas"].is_u64(),
                "data write without check-and-set: {} {}",
                write.method,
                write.path
            );
        }
        // custom_metadata holds ids and version numbers only, never a value.
        for write in seen
            .iter()
            .filter(|s| s.path.starts_with("/v1/secret/metadata/"))
        {
            if let Some(custom) = write.body["custom_metadata"].as_object() {
                for (key, value) in custom {
                    let value = value.as_str().unwrap();
                    assert!(key.starts_with("rekeyd_"), "{key}");
                    let is_id = value.starts_with("00000000-0000-4000-8000-")
                        || value.chars().all(|c| c.is_ascii_digit());
                    assert!(
                        is_id,
                        "custom_metadata {key} = {value:?} is not an id or a number"
                    );
                }
            }
        }
    });
}

use rekeyd::backend::{Error, PutOutcome, Selector};
use rekeyd::secret::{SecretName, SecretValue, Stage, VersionId};

fn name(text: &str) -> SecretName {
    SecretName::new(text).unwrap()
}

fn value(text: &str) -> SecretValue {
    SecretValue::new(text.as_bytes().to_vec())
}

fn id(text: &str) -> VersionId {
    VersionId::new(text)
}

/// Puts and promotes `version` with `text` over `previous`.
async fn rotate(
    backend: &VaultBackend,
    secret: &SecretName,
    version: &str,
    text: &str,
    previous: Option<&str>,
) {
    let put = backend
        .put_pending(secret, &id(version), &value(text))
        .await;
    assert!(
        matches!(put, Ok(PutOutcome::Created)),
        "put {version}: {put:?}"
    );
    backend
        .promote(secret, &id(version), previous.map(id).as_ref())
        .await
        .unwrap_or_else(|e| panic!("promote {version}: {e}"));
}

async fn contract_backend(
    server: &ContractVault,
    dir: &tempfile::TempDir,
    max_versions: Option<u32>,
) -> VaultBackend {
    let auth = token_auth(file_with(dir, "token", &server.root_token));
    let mut config = v2_config(&server.addr, auth);
    config.max_versions = max_versions;
    VaultBackend::open("vault", &config).await.expect("open")
}

#[test]
fn kv2_readers_find_current_at_the_path_and_previous_by_the_number_in_custom_metadata() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let server = ContractVault::start().await;
        let backend = contract_backend(&server, &dir, Some(5)).await;
        let app = name("prod/app");
        let first = r#"{"password":"first-pw","username":"app"}"#;
        let second = r#"{"password":"second-pw","username":"app"}"#;
        rotate(
            &backend,
            &app,
            "s20261125T000000Z-0000000000000001",
            first,
            None,
        )
        .await;
        rotate(
            &backend,
            &app,
            "s20261126T000000Z-0000000000000002",
            second,
            Some("s20261125T000000Z-0000000000000001"),
        )
        .await;
        // What `vault kv get secret/prod/app` and a Vault Agent template read.
        let (status, latest) = server.call("GET", "secret/data/prod/app", None).await;
        assert_eq!(status, 200);
        assert_eq!(latest["data"]["data"]["password"], "second-pw");
        assert_eq!(latest["data"]["data"]["username"], "app");
        // What `vault kv metadata get` shows, and the previous version by its number.
        let (_, meta) = server.call("GET", "secret/metadata/prod/app", None).await;
        let custom = &meta["data"]["custom_metadata"];
        assert_eq!(
            custom["rekeyd_current"],
            "s20261126T000000Z-0000000000000002"
        );
        assert_eq!(
            custom["rekeyd_previous"],
            "s20261125T000000Z-0000000000000001"
        );
        assert_eq!(meta["data"]["max_versions"], 5);
        let previous = custom["rekeyd_previous_version"].as_str().unwrap();
        assert_eq!(
            custom["rekeyd_current_version"].as_str().unwrap(),
            meta["data"]["current_version"].to_string()
        );
        let (status, old) = server
            .call(
                "GET",
                &format!("secret/data/prod/app?version={previous}"),
                None,
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(old["data"]["data"]["password"], "first-pw");
        // A pending value never shows at the path readers use.
        backend
            .put_pending(
                &app,
                &id("s20261127T000000Z-0000000000000003"),
                &value(r#"{"password":"third-pw","username":"app"}"#),
            )
            .await
            .expect("put");
        let (_, latest) = server.call("GET", "secret/data/prod/app", None).await;
        assert_eq!(latest["data"]["data"]["password"], "second-pw");
        // A plain value lands under `value`.
        let plain = name("prod/plain");
        rotate(
            &backend,
            &plain,
            "s20261125T000000Z-00000000000000aa",
            "just-a-password",
            None,
        )
        .await;
        let (_, latest) = server.call("GET", "secret/data/prod/plain", None).await;
        assert_eq!(latest["data"]["data"]["value"], "just-a-password");
    });
}

#[test]
fn kv2_a_person_writing_in_between_is_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let server = ContractVault::start().await;
        let backend = contract_backend(&server, &dir, None).await;
        let app = name("app");
        rotate(&backend, &app, "v-one", "one", None).await;
        let seen = backend.describe(&app).await.expect("describe");
        let current = seen.stage(Stage::Current).map(|v| v.id.clone());
        assert_eq!(current, Some(id("v-one")));
        backend
            .put_pending(&app, &id("v-two"), &value("two"))
            .await
            .expect("put");
        // Someone edits the secret by hand, as `vault kv put` would (with cas).
        let (status, body) = server
            .call(
                "POST",
                "secret/data/app",
                Some(serde_json::json!({"options": {"cas": 1}, "data": {"value": "by-hand"}})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let err = backend
            .promote(&app, &id("v-two"), current.as_ref())
            .await
            .expect_err("the person's write must not be overwritten");
        assert!(matches!(err, Error::CurrentChanged { .. }), "{err}");
        assert!(
            err.to_string().contains("vault-v2"),
            "names the foreign version: {err}"
        );
        let (_, latest) = server.call("GET", "secret/data/app", None).await;
        assert_eq!(latest["data"]["data"]["value"], "by-hand");
        // Deciding again from a fresh description rotates over it, keeping it previous.
        backend
            .promote(&app, &id("v-two"), Some(&id("vault-v2")))
            .await
            .expect("promote");
        let now = backend.describe(&app).await.expect("describe");
        assert_eq!(
            now.stage(Stage::Previous).map(|v| v.id.clone()),
            Some(id("vault-v2"))
        );
        let previous = backend
            .read(&app, &Selector::Stage(Stage::Previous))
            .await
            .expect("read");
        assert_eq!(previous.expose(), b"by-hand");
    });
}

#[test]
fn kv2_a_promote_stopped_before_its_mapping_is_recognised_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let server = ContractVault::start().await;
        let backend = contract_backend(&server, &dir, None).await;
        let app = name("app");
        rotate(&backend, &app, "v-one", "one", None).await;
        backend
            .put_pending(&app, &id("v-two"), &value("two"))
            .await
            .expect("put");
        // The promote's data write happened; the process died before custom_metadata.
        let (status, _) = server
            .call(
                "POST",
                "secret/data/app",
                Some(serde_json::json!({"options": {"cas": 1}, "data": {"value": "two"}})),
            )
            .await;
        assert_eq!(status, 200);
        let seen = backend.describe(&app).await.expect("describe");
        assert_eq!(
            seen.stage(Stage::Current).map(|v| v.id.clone()),
            Some(id("v-two"))
        );
        assert_eq!(
            seen.stage(Stage::Previous).map(|v| v.id.clone()),
            Some(id("v-one"))
        );
        assert!(seen.stage(Stage::Pending).is_none());
        // The retried promote is a no-op that records the mapping...
        backend
            .promote(&app, &id("v-two"), Some(&id("v-one")))
            .await
            .expect("retry");
        let (_, meta) = server.call("GET", "secret/metadata/app", None).await;
        assert_eq!(meta["data"]["custom_metadata"]["rekeyd_current"], "v-two");
        assert_eq!(meta["data"]["current_version"], 2);
        // ...so the next rotation's pending value can replace the sibling safely.
        rotate(&backend, &app, "v-three", "three", Some("v-two")).await;
        let seen = backend.describe(&app).await.expect("describe");
        assert_eq!(
            seen.stage(Stage::Previous).map(|v| v.id.clone()),
            Some(id("v-two"))
        );
    });
}

#[test]
fn kv2_denied_writes_name_the_path_and_the_capability() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let server = ContractVault::start().await;
        let token = server.token(vault_contract::Token {
            ttl: 0,
            renewable: false,
            read_only: true,
        });
        let auth = token_auth(file_with(&dir, "token", &token));
        let backend = VaultBackend::open("vault", &v2_config(&server.addr, auth))
            .await
            .expect("open");
        let err = backend
            .put_pending(&name("prod/db"), &id("v-one"), &value("pw"))
            .await
            .expect_err("read-only token");
        assert!(matches!(err, Error::PermissionDenied { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("secret/data/prod/db__rekeyd/pending"),
            "{text}"
        );
        assert!(
            text.contains(r#"path "secret/data/prod/db__rekeyd/pending" { capabilities = ["create", "update"] }"#),
            "{text}"
        );
        assert!(!text.contains(&token), "token leaked: {text}");
    });
}

#[test]
fn kubernetes_login_sends_the_documented_request_and_uses_the_token_it_gets() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let server = ContractVault::start().await;
        let jwt = file_with(
            &dir,
            "sa-token",
            &format!("{}\n", vault_contract::SERVICE_ACCOUNT_JWT),
        );
        let auth = VaultAuth::Kubernetes {
            mount: "kubernetes".to_owned(),
            role: vault_contract::KUBERNETES_ROLE.to_owned(),
            jwt_file: jwt,
        };
        let backend = VaultBackend::open("vault", &v2_config(&server.addr, auth))
            .await
            .expect("open");
        rotate(&backend, &name("app"), "v-one", "one", None).await;
        assert_eq!(backend.auth_stats().logins, 1);
        let seen = server.seen();
        let login = &seen[0];
        assert_eq!(
            (login.method.as_str(), login.path.as_str()),
            ("POST", "/v1/auth/kubernetes/login")
        );
        assert_eq!(login.token, None, "a login carries no token");
        assert_eq!(login.body["role"], vault_contract::KUBERNETES_ROLE);
        assert_eq!(login.body["jwt"], vault_contract::SERVICE_ACCOUNT_JWT);
        assert!(
            seen[1..]
                .iter()
                .all(|s| s.token.as_deref() == Some("contract-k8s-token-1"))
        );

        // A service-account token Vault refuses: the error says which login failed.
        let wrong = file_with(&dir, "wrong-sa-token", "eyJ.not-the-right-one.sig");
        let auth = VaultAuth::Kubernetes {
            mount: "kubernetes".to_owned(),
            role: vault_contract::KUBERNETES_ROLE.to_owned(),
            jwt_file: wrong,
        };
        let backend = VaultBackend::open("vault", &v2_config(&server.addr, auth))
            .await
            .expect("open");
        let err = backend
            .describe(&name("app"))
            .await
            .expect_err("refused login");
        let text = err.to_string();
        assert!(
            text.contains("refused the Kubernetes login at `auth/kubernetes/login`"),
            "{text}"
        );
        assert!(!text.contains("not-the-right-one"), "jwt leaked: {text}");
    });
}

#[test]
fn renewable_tokens_are_renewed_with_renew_self_before_they_expire() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let server = ContractVault::start().await;
        let token = server.token(vault_contract::Token {
            ttl: 2,
            renewable: true,
            read_only: false,
        });
        let auth = token_auth(file_with(&dir, "token", &token));
        let backend = VaultBackend::open("vault", &v2_config(&server.addr, auth))
            .await
            .expect("open");
        rotate(&backend, &name("app"), "v-one", "one", None).await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while backend.auth_stats().renewals < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "no renewal within 10s: {:?}",
                backend.auth_stats()
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let renewals: Vec<_> = server
            .seen()
            .into_iter()
            .filter(|s| s.path == "/v1/auth/token/renew-self")
            .collect();
        assert!(renewals.len() >= 2);
        assert_eq!(renewals[0].method, "POST");
        assert_eq!(renewals[0].token.as_deref(), Some(token.as_str()));
        assert_eq!(renewals[0].body["increment"], "2s");
        assert_eq!(
            backend.auth_stats().logins,
            1,
            "renewed, not logged in again"
        );
    });
}

// ---- Auth and errors against the real RustyVault ----

#[test]
fn approle_logs_in_and_logs_in_again_so_an_expired_token_never_stops_it() {
    let server = RustyVault::start();
    let (role_id, secret_id) = server.approle("rekeyd", "3s", "6s");
    let secret_id_file = token_file(&server, &secret_id);
    let auth = VaultAuth::AppRole {
        mount: "approle".to_owned(),
        role_id: CredentialSource::Literal(role_id.clone()),
        secret_id: CredentialSource::File(secret_id_file),
    };
    runtime().block_on(async {
        let backend = VaultBackend::open("vault", &v1_config(&server, auth))
            .await
            .expect("open");
        let app = name("app");
        rotate(&backend, &app, "v-one", "one", None).await;
        assert_eq!(backend.auth_stats().logins, 1);
        // A token of the same role, logged in after the backend's: once RustyVault
        // refuses it, the backend's first token has expired too.
        let (status, login) = server.call(
            "POST",
            "auth/approle/login",
            None,
            Some(&serde_json::json!({"role_id": role_id, "secret_id": secret_id})),
        );
        assert_eq!(status, 200, "{login}");
        let watched = login["auth"]["client_token"].as_str().unwrap().to_owned();
        assert_eq!(login["auth"]["lease_duration"], 3);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let (status, _) = server.call("GET", "secret/app", Some(&watched), None);
            if status == 403 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "RustyVault never expired the token"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        rotate(&backend, &app, "v-two", "two", Some("v-one")).await;
        let read = backend
            .read(&app, &Selector::Stage(Stage::Previous))
            .await
            .expect("read");
        assert_eq!(read.expose(), b"one");
        let stats = backend.auth_stats();
        // RustyVault answers renew-self with an error, so each refresh is a fresh login.
        assert!(stats.logins >= 2, "logged in again: {stats:?}");
    });
}

#[test]
fn a_refused_token_is_reported_with_where_it_came_from() {
    let server = RustyVault::start();
    let bogus = "s.not-a-token-rustyvault-knows";
    let path = token_file(&server, bogus);
    runtime().block_on(async {
        let backend = VaultBackend::open("vault", &v1_config(&server, token_auth(path.clone())))
            .await
            .expect("open");
        let err = backend.describe(&name("app")).await.expect_err("refused");
        let text = err.to_string();
        assert!(text.contains("refused the token from"), "{text}");
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(!text.contains(bogus), "token leaked: {text}");
        assert!(!format!("{err:?}").contains(bogus));
    });
}

#[test]
fn a_sealed_vault_is_reported_as_temporary_and_work_resumes_after_unseal() {
    let server = RustyVault::start();
    let auth = token_auth(token_file(&server, &server.root_token));
    runtime().block_on(async {
        let backend = VaultBackend::open("vault", &v1_config(&server, auth))
            .await
            .expect("open");
        let app = name("app");
        rotate(&backend, &app, "v-one", "one", None).await;
        server.seal();
        let err = backend.describe(&app).await.expect_err("sealed");
        assert!(err.is_temporary(), "{err}");
        assert!(err.to_string().contains("is sealed"), "{err}");
        assert!(err.to_string().contains(&server.addr), "{err}");
        server.unseal();
        let read = backend
            .read(&app, &Selector::Stage(Stage::Current))
            .await
            .expect("read");
        assert_eq!(read.expose(), b"one");
    });
}

#[test]
fn a_kv_version_that_does_not_match_the_mount_is_reported_before_anything_is_written() {
    let server = RustyVault::start();
    let auth = token_auth(token_file(&server, &server.root_token));
    runtime().block_on(async {
        let mut config = v1_config(&server, auth);
        config.kv_version = KvVersion::V2;
        let backend = VaultBackend::open("vault", &config).await.expect("open");
        let err = backend
            .put_pending(&name("app"), &id("v-one"), &value("one"))
            .await
            .expect_err("wrong mount type");
        let text = err.to_string();
        assert!(text.contains("is a KV version 1 secrets engine"), "{text}");
        assert!(text.contains("set kv_version = 1"), "{text}");
        // Nothing was written under the mount.
        let (_, keys) = server.root("LIST", "secret/", None);
        assert!(
            keys["data"]["keys"].as_array().is_none_or(|k| k.is_empty()),
            "{keys}"
        );

        config.mount = "nowhere".to_owned();
        config.kv_version = KvVersion::V1;
        let backend = VaultBackend::open("vault", &config).await.expect("open");
        let err = backend.describe(&name("app")).await.expect_err("no mount");
        assert!(
            err.to_string()
                .contains("no secrets engine is mounted at `nowhere/`"),
            "{err}"
        );
    });
}

// ---- The real binary on RustyVault: crash recovery, two replicas, canaries ----

use chrono::Utc;
use common::Sandbox;
use serde_json::Value;

/// A policy whose secrets live in RustyVault's KV v1 `secret/` mount.
fn vault_policy(
    server: &RustyVault,
    audit_key_file: Option<&std::path::Path>,
    secrets: &str,
) -> String {
    let key = audit_key_file
        .map(|p| format!("audit_key_file = \"{}\"\n", p.display()))
        .unwrap_or_default();
    format!(
        r#"[daemon]
state_dir = "state"
min_interval = "1s"
concurrency = 4
{key}
[backends.vault]
type = "vault"
address = "{addr}"
mount = "secret"
kv_version = 1
auth = {{ method = "token", token_env = "VAULT_TOKEN" }}

[defaults]
backend = "vault"
grace = "0s"
generator = {{ type = "password", length = 24 }}

{secrets}"#,
        addr = server.addr
    )
}

fn vault_sandbox(server: &RustyVault, secrets: &str) -> Sandbox {
    let sandbox = Sandbox::new("");
    sandbox.write_raw_policy(&vault_policy(server, None, secrets));
    sandbox
}

/// `rekeyd ARGS` with the root token in `VAULT_TOKEN`.
fn rekeyd(sandbox: &Sandbox, server: &RustyVault, args: &[&str]) -> std::process::Command {
    let mut cmd = sandbox.command(args);
    cmd.env("VAULT_TOKEN", &server.root_token);
    cmd
}

/// `rekeyd ARGS`, which must abort at crash point `point`.
fn crash_at(sandbox: &Sandbox, server: &RustyVault, point: &str, args: &[&str]) {
    common::run_to_crash(rekeyd(sandbox, server, args), point);
}

fn ok(sandbox: &Sandbox, server: &RustyVault, args: &[&str]) -> String {
    let out = rekeyd(sandbox, server, args).output().expect("run rekeyd");
    assert!(
        out.status.success(),
        "rekeyd {args:?} failed ({:?}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn slot_version(sandbox: &Sandbox, secret: &str) -> String {
    let policy = rekeyd::policy::load(&sandbox.policy()).expect("policy");
    let secret = policy.secret(secret).expect("secret");
    let slot = rekeyd::rotation::plan::latest_due_slot(secret, Utc::now()).expect("slot");
    VersionId::for_slot(&secret.name, slot).to_string()
}

fn status(sandbox: &Sandbox, server: &RustyVault, secret: &str) -> Value {
    let out = ok(sandbox, server, &["status", "--format", "json"]);
    let all: Value = serde_json::from_str(&out).expect("status JSON");
    all.as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == secret)
        .cloned()
        .unwrap_or_else(|| panic!("{secret} missing from {out}"))
}

/// What an application reading the secret from Vault sees.
fn vault_value(server: &RustyVault, secret: &str) -> String {
    let (status, body) = server.root("GET", &format!("secret/{secret}"), None);
    assert_eq!(status, 200, "GET secret/{secret}: {body}");
    body["data"]["value"]
        .as_str()
        .expect("value field")
        .to_owned()
}

#[test]
fn a_crash_at_any_step_is_finished_on_restart_with_exactly_one_version() {
    let server = RustyVault::start();
    // Also inside the backend's own promote, after `meta.promoting` names the version (a
    // first rotation has no `previous` to write; a rollback test covers that step).
    let points = rekeyd::rotation::CRASH_POINTS
        .iter()
        .chain(&["vault_promote_after_marked"]);
    for (i, point) in points.enumerate() {
        let secret = format!("crash/app-{i}");
        let sandbox = vault_sandbox(
            &server,
            &format!("[[secrets]]\nname = \"{secret}\"\nschedule = {{ every = \"30d\" }}\n"),
        );
        crash_at(&sandbox, &server, point, &["run", "--once"]);
        ok(&sandbox, &server, &["run", "--once"]);

        let expected = slot_version(&sandbox, &secret);
        let s = status(&sandbox, &server, &secret);
        assert_eq!(s["current"]["id"], expected.as_str(), "{point}: {s}");
        assert!(
            s["pending"].is_null() && s["previous"].is_null(),
            "{point}: {s}"
        );
        // Readers of the main path see the value rekeyd serves; nothing is left staged.
        let served = ok(&sandbox, &server, &["get", &secret]);
        assert_eq!(vault_value(&server, &secret), served, "{point}");
        let (_, staged) = server.root("LIST", &format!("secret/{secret}__rekeyd/staged/"), None);
        assert!(
            staged["data"]["keys"]
                .as_array()
                .is_none_or(|k| k.is_empty()),
            "{point}: {staged}"
        );
        assert_eq!(
            sandbox.events("rotation_succeeded", &secret).len(),
            1,
            "{point}"
        );
        // A crash before `pending_stored` was audited leaves the restart to find the value
        // already present: at most one entry says it was created, all name the slot.
        let stored = sandbox.events("pending_stored", &secret);
        assert!(!stored.is_empty(), "{point}");
        assert!(
            stored.iter().filter(|e| e["outcome"] == "created").count() <= 1,
            "{point}"
        );
        assert!(
            stored.iter().all(|e| e["version"] == expected.as_str()),
            "{point}"
        );
        let verify = sandbox.run(&["audit", "verify", sandbox.audit_log().to_str().unwrap()]);
        assert!(verify.status.success(), "{point}: audit log broken");
    }
}

/// A rollback stopped inside Vault's promote. Before `previous` is overwritten nothing
/// has changed for readers: the next start records it as not taken effect, and it can be
/// run again. After, the version it restores survives only in its staged copy: the next
/// start finishes it as the rollback it was (current and served, `rolled_back` on record,
/// no rotation recorded for the old version).
///
/// Two tests, so that the 60 s lock lease each crash leaves is waited out side by side.
#[test]
fn a_rollback_stopped_before_previous_is_written_is_left_as_it_was() {
    rollback_stopped_at("vault_promote_after_marked");
}

#[test]
fn a_rollback_stopped_after_previous_is_written_is_finished() {
    rollback_stopped_at("vault_promote_after_previous");
}

fn rollback_stopped_at(point: &str) {
    let server = RustyVault::start();
    let secret = format!("crash/rollback-{point}");
    let sandbox = vault_sandbox(
        &server,
        &format!("[[secrets]]\nname = \"{secret}\"\nschedule = {{ every = \"30d\" }}\n"),
    );
    ok(&sandbox, &server, &["rotate", &secret]);
    ok(&sandbox, &server, &["rotate", &secret, "--force"]);
    let before = status(&sandbox, &server, &secret);
    let id = |s: &Value, stage: &str| s[stage]["id"].as_str().unwrap_or("none").to_owned();
    let (first, second) = (id(&before, "previous"), id(&before, "current"));
    let first_value = ok(&sandbox, &server, &["get", &secret, "--stage", "previous"]);
    let second_value = ok(&sandbox, &server, &["get", &secret]);

    crash_at(
        &sandbox,
        &server,
        point,
        &["rollback", &secret, "--by", "alice"],
    );
    ok(&sandbox, &server, &["run", "--once"]);

    let after = status(&sandbox, &server, &secret);
    assert!(after["pending"].is_null(), "{point}: {after}");
    let (done, failed) = (
        sandbox.events("rolled_back", &secret),
        sandbox.events("rollback_failed", &secret),
    );
    if point == "vault_promote_after_marked" {
        assert_eq!(
            (id(&after, "current"), id(&after, "previous")),
            (second.clone(), first.clone()),
            "{point}: as it was"
        );
        assert_eq!(vault_value(&server, &secret), second_value, "{point}");
        assert_eq!((done.len(), failed.len()), (0, 1), "{point}");
        // And it can simply be run again.
        ok(&sandbox, &server, &["rollback", &secret, "--by", "alice"]);
        assert_eq!(id(&status(&sandbox, &server, &secret), "current"), first);
    } else {
        assert_eq!(
            (id(&after, "current"), id(&after, "previous")),
            (first.clone(), second.clone()),
            "{point}: finished"
        );
        assert_eq!(
            vault_value(&server, &secret),
            first_value,
            "{point}: served"
        );
        assert_eq!((done.len(), failed.len()), (1, 0), "{point}");
        assert_eq!(done[0]["by"], "alice");
        let recovered: Vec<_> = sandbox
            .events("recovery_found", &secret)
            .iter()
            .map(|e| e["action"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(recovered, ["record_rollback"], "{point}");
    }
    assert_eq!(
        sandbox.events("rotation_succeeded", &secret).len(),
        2,
        "{point}: only the two rotations"
    );
    let verify = sandbox.run(&["audit", "verify", sandbox.audit_log().to_str().unwrap()]);
    assert!(verify.status.success(), "{point}");
}

#[test]
fn two_replicas_rotating_the_same_secrets_make_one_version_each_and_agree() {
    let server = RustyVault::start();
    let shared = tempfile::tempdir().unwrap();
    let key = shared.path().join("audit.key");
    let names: Vec<String> = (0..6).map(|i| format!("replicas/svc-{i}")).collect();
    let secrets: String = names
        .iter()
        .map(|n| format!("[[secrets]]\nname = \"{n}\"\nschedule = {{ every = \"30d\" }}\n\n"))
        .collect();
    // The same policy text in two places: each replica has its own state dir and audit
    // log, and they share the audit key so fingerprints are comparable.
    let policy = vault_policy(&server, Some(&key), &secrets);
    let replicas = [Sandbox::new(""), Sandbox::new("")];
    for r in &replicas {
        r.write_raw_policy(&policy);
    }
    // Create the shared key once, so neither replica races to create it.
    ok(&replicas[0], &server, &["check"]);
    let children: Vec<_> = replicas
        .iter()
        .map(|r| {
            rekeyd(r, &server, &["run", "--once"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn replica")
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().expect("replica");
        assert!(
            out.status.success(),
            "replica failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut raced = 0;
    for secret in &names {
        let expected = slot_version(&replicas[0], secret);
        for r in &replicas {
            let s = status(r, &server, secret);
            assert_eq!(s["current"]["id"], expected.as_str(), "{secret}: {s}");
            assert!(
                s["pending"].is_null() && s["previous"].is_null(),
                "{secret}: {s}"
            );
            assert_eq!(
                ok(r, &server, &["get", secret]),
                vault_value(&server, secret)
            );
        }
        let stored: Vec<Value> = replicas
            .iter()
            .flat_map(|r| r.events("pending_stored", secret))
            .collect();
        let created = stored.iter().filter(|e| e["outcome"] == "created").count();
        assert_eq!(created, 1, "{secret}: exactly one value stored: {stored:?}");
        let fingerprints: std::collections::BTreeSet<String> = stored
            .iter()
            .map(|e| e["fingerprint"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            fingerprints.len(),
            1,
            "{secret}: both logs record the same value: {stored:?}"
        );
        for r in &replicas {
            assert!(r.events("rotation_failed", secret).is_empty(), "{secret}");
            for kind in ["rotation_succeeded", "slot_already_done"] {
                for e in r.events(kind, secret) {
                    assert_eq!(e["version"], expected.as_str(), "{secret}: {kind}");
                }
            }
        }
        let succeeded: usize = replicas
            .iter()
            .map(|r| r.events("rotation_succeeded", secret).len())
            .sum();
        assert!(succeeded >= 1, "{secret}: someone finished it");
        if replicas
            .iter()
            .all(|r| !r.events("rotation_started", secret).is_empty())
        {
            raced += 1;
        }
    }
    // Both replicas worked on the same secrets at once, or the test proved nothing.
    assert!(raced >= 1, "the replicas never raced on a secret");
}

#[test]
fn values_and_tokens_never_reach_logs_audit_entries_or_errors() {
    let server = RustyVault::start();
    let sandbox = vault_sandbox(
        &server,
        "[[secrets]]\nname = \"canary/app\"\nschedule = { every = \"30d\" }\n",
    );
    let out = rekeyd(&sandbox, &server, &["run", "--once", "--log", "trace"])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let value = ok(&sandbox, &server, &["get", "canary/app"]);
    assert_eq!(value.len(), 24);
    let forced = ok(
        &sandbox,
        &server,
        &["rotate", "canary/app", "--force", "--log", "trace"],
    );
    let second = ok(&sandbox, &server, &["get", "canary/app"]);
    assert_ne!(value, second);
    let audit = std::fs::read_to_string(sandbox.audit_log()).expect("audit log");
    for secret in [&value, &second, &server.root_token] {
        for (what, text) in [
            ("run log", String::from_utf8_lossy(&out.stderr).to_string()),
            ("rotate output", forced.clone()),
            ("audit log", audit.clone()),
        ] {
            assert!(
                !text.contains(secret.as_str()),
                "a secret leaked into the {what}"
            );
        }
    }
    // An error while Vault is sealed names the problem, not the values.
    server.seal();
    let failed = rekeyd(&sandbox, &server, &["rotate", "canary/app", "--force"])
        .output()
        .expect("run");
    assert!(!failed.status.success());
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(stderr.contains("sealed"), "{stderr}");
    for secret in [&value, &second, &server.root_token] {
        assert!(!stderr.contains(secret.as_str()));
    }
}

#[test]
fn a_vault_only_policy_named_by_a_relative_path_runs() {
    // The audit log then lives at the relative `state/audit.jsonl`, whose directory
    // nothing else creates first (a file backend would have).
    let server = RustyVault::start();
    let sandbox = vault_sandbox(
        &server,
        "[[secrets]]\nname = \"rel/app\"\nschedule = { every = \"30d\" }\n",
    );
    let out = std::process::Command::new(common::BIN)
        .args(["run", "--once", "--policy", "policy.toml"])
        .current_dir(sandbox.dir.path())
        .env("VAULT_TOKEN", &server.root_token)
        .env_remove("RUST_LOG")
        .env_remove("REKEYD_CRASH_AT")
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sandbox.events("rotation_succeeded", "rel/app").len(), 1);
    // Expected 404s are not logged as errors.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("ERROR"), "{stderr}");
}

#[test]
fn tls_with_a_custom_ca_is_trusted_only_when_configured() {
    let ca = common::rvault::TestCa::new();
    let server = RustyVault::start_tls(&ca);
    assert!(server.addr.starts_with("https://"));
    let auth = token_auth(token_file(&server, &server.root_token));
    runtime().block_on(async {
        let mut config = v1_config(&server, auth);
        config.ca_cert = Some(ca.ca.clone());
        let backend = VaultBackend::open("vault", &config).await.expect("open");
        rotate(&backend, &name("tls/app"), "v-one", "one", None).await;
        let read = backend
            .read(&name("tls/app"), &Selector::Stage(Stage::Current))
            .await
            .expect("read");
        assert_eq!(read.expose(), b"one");

        // Without the CA the server is not trusted, and the error says what to set.
        config.ca_cert = None;
        let backend = VaultBackend::open("vault", &config).await.expect("open");
        let err = backend
            .describe(&name("tls/app"))
            .await
            .expect_err("untrusted server");
        let text = err.to_string();
        assert!(text.contains("certificate"), "{text}");
        assert!(text.contains("set ca_cert"), "{text}");
    });
}

#[test]
fn a_secret_that_was_in_vault_before_rekeyd_is_adopted_and_kept_as_previous() {
    let server = RustyVault::start();
    let (code, _) = server.root(
        "POST",
        "secret/legacy/db",
        Some(&serde_json::json!({"value": "set-by-hand-long-ago"})),
    );
    assert!(code < 300);
    let sandbox = vault_sandbox(
        &server,
        "[[secrets]]\nname = \"legacy/db\"\nschedule = { every = \"30d\" }\n",
    );
    let before = status(&sandbox, &server, "legacy/db");
    assert_eq!(before["current"]["id"], "unmanaged", "{before}");
    ok(&sandbox, &server, &["run", "--once"]);
    let after = status(&sandbox, &server, "legacy/db");
    assert_eq!(
        after["current"]["id"],
        slot_version(&sandbox, "legacy/db").as_str(),
        "{after}"
    );
    assert_eq!(after["previous"]["id"], "unmanaged", "{after}");
    assert_eq!(
        ok(
            &sandbox,
            &server,
            &["get", "legacy/db", "--stage", "previous"]
        ),
        "set-by-hand-long-ago"
    );
    assert_ne!(vault_value(&server, "legacy/db"), "set-by-hand-long-ago");
}

#[test]
fn every_request_carries_the_configured_namespace() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let server = ContractVault::start().await;
        let auth = token_auth(file_with(&dir, "token", &server.root_token));
        let mut config = v2_config(&server.addr, auth);
        config.namespace = Some("admin/team-a".to_owned());
        let backend = VaultBackend::open("vault", &config).await.expect("open");
        rotate(&backend, &name("app"), "v-one", "one", None).await;
        let seen = server.seen();
        assert!(seen.len() > 3);
        for s in &seen {
            assert_eq!(
                s.namespace.as_deref(),
                Some("admin/team-a"),
                "{} {}",
                s.method,
                s.path
            );
        }
    });
}

#[test]
fn a_kv1_engine_at_another_mount_is_used_through_mount() {
    let server = RustyVault::start();
    let (code, body) = server.root(
        "POST",
        "sys/mounts/team-kv",
        Some(&serde_json::json!({"type": "kv"})),
    );
    assert!(code < 300, "{body}");
    let auth = token_auth(token_file(&server, &server.root_token));
    runtime().block_on(async {
        let mut config = v1_config(&server, auth);
        config.mount = "team-kv".to_owned();
        let backend = VaultBackend::open("vault", &config).await.expect("open");
        rotate(&backend, &name("svc/api-key"), "v-one", "key-one", None).await;
        assert_eq!(
            backend.list().await.expect("list"),
            vec![name("svc/api-key")]
        );
    });
    let (code, body) = server.root("GET", "team-kv/svc/api-key", None);
    assert_eq!(code, 200);
    assert_eq!(body["data"]["value"], "key-one");
    let (code, _) = server.root("GET", "secret/svc/api-key", None);
    assert_eq!(code, 404, "nothing written to the default mount");
}

#[test]
fn a_kv1_lock_left_by_a_dead_rekeyd_is_taken_over_after_the_lease() {
    // A rekeyd that died inside a locked step leaves its lock record behind.
    let server = RustyVault::start();
    let (code, _) = server.root(
        "POST",
        "secret/stale/app__rekeyd/lock",
        Some(&serde_json::json!({"owner": "0123456789abcdef", "holder": "rekeyd pid 1 on gone"})),
    );
    assert!(code < 300);
    let auth = token_auth(token_file(&server, &server.root_token));
    runtime().block_on(async {
        let backend = VaultBackend::open("vault", &v1_config(&server, auth))
            .await
            .expect("open");
        let started = std::time::Instant::now();
        let put = backend
            .put_pending(&name("stale/app"), &id("v-one"), &value("one"))
            .await;
        let waited = started.elapsed();
        assert!(matches!(put, Ok(PutOutcome::Created)), "{put:?}");
        // Not before the 60 s lease has passed on this process's clock, and soon after.
        assert!(
            waited >= std::time::Duration::from_secs(60),
            "took over after {waited:?}"
        );
        assert!(
            waited < std::time::Duration::from_secs(90),
            "waited {waited:?}"
        );
    });
    let (code, _) = server.root("GET", "secret/stale/app__rekeyd/lock", None);
    assert_eq!(code, 404, "the lock is released after the put");
}
