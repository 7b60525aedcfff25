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
