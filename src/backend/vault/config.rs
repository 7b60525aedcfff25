//! From the policy's `VaultBackendConfig` to a ready HTTP client: TLS with the
//! configured CA, the namespace header, request timeouts.
//!
//! Nothing is taken from `VAULT_*` environment variables implicitly (vaultrs would read
//! `VAULT_ADDR`, `VAULT_CACERT`, `VAULT_SKIP_VERIFY`, …): the policy says everything, so two
//! backends in one process never share settings by accident.

use std::time::Duration;

use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};

use super::api::Api;
use super::error::VaultError;
use crate::policy::VaultBackendConfig;

/// How long one request may take. KV v1's lock relies on writes finishing well within its
/// lease (see `lock.rs`), so this stays far below the lease.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// The API client for `config`.
pub(crate) fn client(config: &VaultBackendConfig) -> Result<Api, VaultError> {
    // reqwest is built without a default crypto provider; rekeyd already ships ring.
    // Installing fails harmlessly when another backend installed it first.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let mut ca_certs = Vec::new();
    if let Some(path) = &config.ca_cert {
        // Read here too, so an unreadable CA file is reported with its path and a hint.
        let pem = std::fs::read(path).map_err(|e| {
            VaultError::Config(format!(
                "cannot read the Vault CA certificate {}: {e}",
                path.display()
            ))
        })?;
        if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
            return Err(VaultError::Config(format!(
                "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----): point ca_cert at the CA that signed Vault's certificate",
                path.display()
            )));
        }
        ca_certs.push(path.display().to_string());
    }
    // vaultrs panics on an address it cannot parse; the policy checks it, callers that
    // build the config themselves get an error instead.
    let url = url::Url::parse(&config.address)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
        .ok_or_else(|| {
            VaultError::Config(format!(
                "`{}` is not a URL with http:// or https:// and a host: write the Vault address as https://host:port",
                config.address
            ))
        })?;
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name == "localhost",
        None => false,
    };
    if url.scheme() == "http" && !loopback {
        tracing::warn!(address = %config.address, "the Vault address is plain HTTP: tokens and secret values cross the network unencrypted; use https://");
    }
    let mut builder = VaultClientSettingsBuilder::default();
    builder
        .address(&config.address)
        .token("")
        .ca_certs(ca_certs)
        .identity(None)
        .verify(true)
        .timeout(Some(REQUEST_TIMEOUT));
    if let Some(namespace) = &config.namespace {
        builder.set_namespace(namespace.clone());
    }
    let settings = builder
        .build()
        .map_err(|e| VaultError::Config(format!("invalid Vault client settings: {e}")))?;
    let client = VaultClient::new(settings).map_err(|e| {
        VaultError::Config(format!(
            "cannot set up the HTTP client for {}: {e}{}",
            config.address,
            std::error::Error::source(&e)
                .map(|s| format!(" ({s})"))
                .unwrap_or_default()
        ))
    })?;
    Ok(Api::new(client, config.address.clone()))
}
