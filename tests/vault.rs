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
