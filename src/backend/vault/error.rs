//! What can go wrong talking to Vault, as sentences an operator can act on, and how each
//! maps onto the backend contract's [`Error`](crate::backend::Error).
//!
//! Messages name the Vault path and the capability involved, never a value or a token.

use crate::backend::{Error, ErrorStatus};

/// One failed Vault interaction.
#[derive(Debug, thiserror::Error)]
pub(crate) enum VaultError {
    /// HTTP 403: the token lacks a capability (or is invalid or expired).
    #[error(
        "Vault denied {operation} of `{path}`: grant the token's policy path \"{path}\" {{ capabilities = [{capability}] }} (or a glob covering it), or the token is invalid or expired{detail}"
    )]
    PermissionDenied {
        /// What rekeyd was doing (`read`, `write`, `list`, `delete`).
        operation: &'static str,
        /// The API path, e.g. `secret/data/prod/db`.
        path: String,
        /// The ACL capabilities that operation needs, quoted and comma-separated.
        capability: &'static str,
        /// Vault's own words, prefixed with `: `, or empty.
        detail: String,
    },
    /// HTTP 503 "sealed".
    #[error("Vault at {address} is sealed: unseal it (`vault operator unseal`); rekeyd retries")]
    Sealed {
        /// The server.
        address: String,
    },
    /// The mount is not the KV engine version the policy names.
    #[error("{0}")]
    WrongMount(String),
    /// A KV v2 check-and-set write lost to another writer.
    #[error(
        "check-and-set conflict on `{path}`: another writer (a second rekeyd or a person) changed it since rekeyd read it; rekeyd re-reads and decides again"
    )]
    CasMismatch {
        /// The API path.
        path: String,
    },
    /// HTTP 404 (callers usually turn this into "absent").
    #[error("`{path}` does not exist in Vault")]
    NotFound {
        /// The API path.
        path: String,
    },
    /// The server could not be reached or did not answer in time.
    #[error("cannot reach Vault at {address}: {what}")]
    Unreachable {
        /// The server.
        address: String,
        /// The request.
        what: String,
        /// The transport error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Any other HTTP error status.
    #[error("Vault answered {operation} of `{path}` with HTTP {status}{detail}")]
    Http {
        /// What rekeyd was doing.
        operation: &'static str,
        /// The API path.
        path: String,
        /// The status code.
        status: u16,
        /// Vault's own words, prefixed with `: `, or empty.
        detail: String,
    },
    /// A credential could not be read or was refused.
    #[error("{0}")]
    Credentials(String),
    /// An answer rekeyd cannot use (not JSON, missing fields, a foreign layout).
    #[error("unexpected answer from Vault for `{path}`: {detail}")]
    BadAnswer {
        /// The API path.
        path: String,
        /// What was wrong (never the content).
        detail: String,
    },
    /// The backend's own configuration cannot work (e.g. an unreadable CA file).
    #[error("{0}")]
    Config(String),
    /// KV v1: another rekeyd held the secret's lock for too long.
    #[error("{0}")]
    Busy(String),
    /// A secret name Vault cannot hold as rekeyd lays it out.
    #[error("{0}")]
    BadName(String),
}

impl VaultError {
    /// Whether retrying later can help.
    pub(crate) fn status(&self) -> ErrorStatus {
        match self {
            VaultError::Sealed { .. }
            | VaultError::CasMismatch { .. }
            | VaultError::Unreachable { .. }
            | VaultError::Busy(_) => ErrorStatus::Temporary,
            VaultError::Http { status, .. } if *status == 429 || *status >= 500 => {
                ErrorStatus::Temporary
            }
            _ => ErrorStatus::Permanent,
        }
    }

    /// True for HTTP 404.
    pub(crate) fn is_not_found(&self) -> bool {
        matches!(self, VaultError::NotFound { .. })
    }

    /// The contract's error for backend `backend`.
    pub(crate) fn into_backend(self, backend: &str) -> Error {
        let backend = backend.to_owned();
        match self {
            VaultError::PermissionDenied { .. } => Error::PermissionDenied {
                backend,
                message: self.to_string(),
            },
            VaultError::NotFound { path } => Error::NotFound {
                backend,
                what: format!("Vault path `{path}`"),
            },
            other => Error::Generic {
                backend,
                message: other.to_string(),
                status: other.status(),
                source: None,
            },
        }
    }
}

/// Vault's error texts from a response body (`{"errors": [...]}`, or RustyVault's
/// `{"error": "..."}`), joined and shortened, as `: …` to append to a message; empty when
/// there are none. Vault's error texts name paths and reasons, never stored values.
pub(crate) fn server_detail(body: Option<&str>) -> String {
    #[derive(serde::Deserialize)]
    struct Body {
        #[serde(default)]
        errors: Vec<String>,
        #[serde(default)]
        error: Option<String>,
    }
    let Some(parsed) = body.and_then(|b| serde_json::from_str::<Body>(b).ok()) else {
        return String::new();
    };
    let mut texts: Vec<String> = parsed
        .errors
        .into_iter()
        .chain(parsed.error)
        .map(|t| t.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|t| !t.is_empty())
        .collect();
    texts.dedup();
    if texts.is_empty() {
        return String::new();
    }
    let mut joined = texts.join("; ");
    if joined.chars().count() > 300 {
        joined = joined.chars().take(300).collect::<String>() + "…";
    }
    format!(" ({joined})")
}
