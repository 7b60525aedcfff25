//! Unit tests that need no server: names, redaction, configuration errors.

use super::*;
use crate::policy::VaultAuth;

fn config(auth: VaultAuth) -> VaultBackendConfig {
    VaultBackendConfig {
        address: "http://127.0.0.1:1".to_owned(),
        mount: "secret".to_owned(),
        kv_version: KvVersion::V2,
        namespace: None,
        ca_cert: None,
        auth,
        max_versions: None,
    }
}

#[test]
fn names_that_would_break_the_layout_are_refused() {
    for bad in ["a__rekeyd", "a//b", "a/./b", "a/../b", "/a", "a/"] {
        let name = SecretName::new(bad).unwrap();
        assert!(check_name(&name).is_err(), "{bad} accepted");
    }
    for good in ["a", "prod/db/password", "x.y@z+1=2"] {
        assert!(
            check_name(&SecretName::new(good).unwrap()).is_ok(),
            "{good}"
        );
    }
}

#[test]
fn debug_output_never_shows_the_token() {
    let canary = "hvs.canary-token-4b1d9f";
    let api = config::client(&config(VaultAuth::Token {
        token: crate::policy::CredentialSource::Env("VAULT_TOKEN".to_owned()),
    }))
    .expect("client");
    api.set_token(canary);
    let api = Arc::new(api);
    let auth = Auth::new(
        VaultAuth::AppRole {
            mount: "approle".to_owned(),
            role_id: crate::policy::CredentialSource::Literal("role".to_owned()),
            secret_id: crate::policy::CredentialSource::Env("SECRET_ID".to_owned()),
        },
        Arc::clone(&api),
    );
    for text in [format!("{api:?}"), format!("{auth:?}")] {
        assert!(!text.contains(canary), "token in Debug output: {text}");
        assert!(!text.is_empty());
    }
}

#[tokio::test]
async fn open_names_the_unset_variable_the_unreadable_file_and_the_bad_address() {
    let unset = "REKEYD_TEST_VAULT_TOKEN_THAT_IS_NEVER_SET";
    let err = VaultBackend::open(
        "vault",
        &config(VaultAuth::Token {
            token: crate::policy::CredentialSource::Env(unset.to_owned()),
        }),
    )
    .await
    .expect_err("an unset token variable must fail at open");
    assert!(err.to_string().contains(unset), "{err}");

    let mut bad_address = config(VaultAuth::Token {
        token: crate::policy::CredentialSource::File("/dev/null".into()),
    });
    bad_address.address = "vault.example:8200 with spaces".to_owned();
    let err = VaultBackend::open("vault", &bad_address)
        .await
        .expect_err("an address that is not a URL must fail, not panic");
    assert!(err.to_string().contains("is not a URL"), "{err}");

    let missing = std::path::PathBuf::from("/nonexistent/rekeyd/vault-ca.pem");
    let mut with_ca = config(VaultAuth::Token {
        token: crate::policy::CredentialSource::File(missing.clone()),
    });
    with_ca.ca_cert = Some(missing.clone());
    let err = VaultBackend::open("vault", &with_ca)
        .await
        .expect_err("a missing CA file must fail at open");
    assert!(
        err.to_string().contains("/nonexistent/rekeyd/vault-ca.pem"),
        "{err}"
    );
}
