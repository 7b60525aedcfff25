//! Logging in to Vault and staying logged in: a token from the environment or a file,
//! AppRole, or a Kubernetes service account; renewal before expiry and a fresh login when
//! renewal is refused or the token's maximum TTL is near.
//!
//! Credentials are read when needed, never kept longer than the login that uses them, and
//! never printed: the structs here hand-write `Debug`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde_json::json;
use tokio::sync::{Mutex, Notify};
use tokio::time::Instant;
use zeroize::Zeroizing;

use super::api::{Api, Method, Request};
use super::error::VaultError;
use crate::policy::{CredentialSource, VaultAuth};

/// Renew (or log in again) when this share of the token's TTL has passed.
const RENEW_AT: f64 = 2.0 / 3.0;
/// After a failed refresh, try again this soon (or sooner if the token expires first).
const RETRY_AFTER: Duration = Duration::from_secs(30);
/// Never refresh more often than this, whatever the TTL.
const MIN_REFRESH: Duration = Duration::from_millis(500);

/// How many times the backend logged in and renewed, for tests and operators.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuthStats {
    /// Successful logins (for a token from the environment or a file: successful reads
    /// of it that Vault accepted).
    pub logins: u64,
    /// Successful token renewals.
    pub renewals: u64,
}

/// A token and what Vault said about its lifetime.
struct Session {
    /// `None`: the token does not expire (or Vault did not say).
    ttl: Option<Duration>,
    renewable: bool,
    obtained: Instant,
    /// Set after a failed refresh: when to try again.
    retry_at: Option<Instant>,
    /// The token, kept to tell whether a re-read token file changed.
    token: Zeroizing<String>,
}

/// The login state of one backend.
pub(crate) struct Auth {
    method: VaultAuth,
    api: Arc<Api>,
    session: Mutex<Option<Session>>,
    /// Wakes the renewal task after a login (and when the backend is dropped).
    changed: Arc<Notify>,
    logins: AtomicU64,
    renewals: AtomicU64,
    generation: AtomicU64,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("method", &method_name(&self.method))
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

fn method_name(method: &VaultAuth) -> &'static str {
    match method {
        VaultAuth::Token { .. } => "token",
        VaultAuth::AppRole { .. } => "approle",
        VaultAuth::Kubernetes { .. } => "kubernetes",
    }
}

/// The part of a login or renewal answer rekeyd uses.
#[derive(serde::Deserialize)]
struct AuthAnswer {
    client_token: String,
    #[serde(default)]
    lease_duration: u64,
    #[serde(default)]
    renewable: bool,
}

impl Drop for AuthAnswer {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.client_token);
    }
}

/// The part of `lookup-self` rekeyd uses.
#[derive(serde::Deserialize)]
struct Lookup {
    #[serde(default)]
    ttl: u64,
    /// Absent on some servers: then renewal is tried and its failure tells.
    #[serde(default)]
    renewable: Option<bool>,
}

impl Auth {
    /// The auth state for `method`; nothing is read or sent until the first request.
    pub(crate) fn new(method: VaultAuth, api: Arc<Api>) -> Self {
        Self {
            method,
            api,
            session: Mutex::new(None),
            changed: Arc::new(Notify::new()),
            logins: AtomicU64::new(0),
            renewals: AtomicU64::new(0),
            generation: AtomicU64::new(0),
        }
    }

    /// Checks now what can be checked without the server: the credential sources exist.
    pub(crate) fn check_sources(&self) -> Result<(), VaultError> {
        match &self.method {
            VaultAuth::Token { token } => read_source(token, "the Vault token").map(drop),
            VaultAuth::AppRole {
                role_id, secret_id, ..
            } => {
                read_source(role_id, "the AppRole role id")?;
                read_source(secret_id, "the AppRole secret id").map(drop)
            }
            VaultAuth::Kubernetes { jwt_file, .. } => read_source(
                &CredentialSource::File(jwt_file.clone()),
                "the Kubernetes service-account token",
            )
            .map(drop),
        }
    }

    /// Counters of logins and renewals so far.
    pub(crate) fn stats(&self) -> AuthStats {
        AuthStats {
            logins: self.logins.load(Ordering::Relaxed),
            renewals: self.renewals.load(Ordering::Relaxed),
        }
    }

    /// Which login the current token came from; compare before and after a refused request.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Logs in unless a token is in place.
    pub(crate) async fn ensure(&self) -> Result<(), VaultError> {
        if self.api.has_token() {
            return Ok(());
        }
        let mut session = self.session.lock().await;
        if session.is_none() {
            *session = Some(self.login().await?);
            self.changed.notify_one();
        }
        Ok(())
    }

    /// After Vault refused a request made with token `generation`: logs in again if no one
    /// has since. Returns whether a different token is now in place (worth one retry).
    pub(crate) async fn recover_from_denial(&self, generation: u64) -> bool {
        let mut session = self.session.lock().await;
        if self.generation() != generation {
            return true;
        }
        let before = session.as_ref().map(|s| s.token.clone());
        match self.login().await {
            Ok(fresh) => {
                let different = before.is_none_or(|b| *b != *fresh.token);
                *session = Some(fresh);
                self.changed.notify_one();
                different
            }
            Err(e) => {
                tracing::warn!(address = %self.api.address(), error = %e, "logging in to Vault again failed");
                false
            }
        }
    }

    /// Logs in with the configured method and installs the token.
    async fn login(&self) -> Result<Session, VaultError> {
        let session = match &self.method {
            VaultAuth::Token { token: source } => {
                let token = read_source(source, "the Vault token")?;
                check_token_text(&token, "the Vault token")?;
                self.api.set_token(&token);
                let lookup = self
                    .api
                    .send(&Request::new(Method::Get, "auth/token/lookup-self"))
                    .await;
                match lookup {
                    Ok(reply) => {
                        let info: Lookup = reply.data()?;
                        Session {
                            ttl: (info.ttl > 0).then(|| Duration::from_secs(info.ttl)),
                            renewable: info.ttl > 0 && info.renewable.unwrap_or(true),
                            obtained: Instant::now(),
                            retry_at: None,
                            token,
                        }
                    }
                    Err(VaultError::PermissionDenied { .. }) => {
                        return Err(VaultError::Credentials(format!(
                            "Vault at {} refused the token from {}: it is invalid or expired (or its policy lacks `read` on auth/token/lookup-self, which Vault's default policy grants)",
                            self.api.address(),
                            source_name(source)
                        )));
                    }
                    // A server without lookup-self: the token is used as it is; a refusal
                    // later makes rekeyd read it again.
                    Err(e @ (VaultError::Sealed { .. } | VaultError::Unreachable { .. })) => {
                        return Err(e);
                    }
                    Err(_) => Session {
                        ttl: None,
                        renewable: false,
                        obtained: Instant::now(),
                        retry_at: None,
                        token,
                    },
                }
            }
            VaultAuth::AppRole {
                mount,
                role_id,
                secret_id,
            } => {
                let role_id = read_source(role_id, "the AppRole role id")?;
                let secret_id = read_source(secret_id, "the AppRole secret id")?;
                let body = json!({
                    "role_id": role_id.as_str(),
                    "secret_id": secret_id.as_str(),
                });
                self.exchange(mount, body, "AppRole").await?
            }
            VaultAuth::Kubernetes {
                mount,
                role,
                jwt_file,
            } => {
                let jwt = read_source(
                    &CredentialSource::File(jwt_file.clone()),
                    "the Kubernetes service-account token",
                )?;
                let body = json!({ "role": role, "jwt": jwt.as_str() });
                self.exchange(mount, body, "Kubernetes").await?
            }
        };
        self.logins.fetch_add(1, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::AcqRel);
        tracing::debug!(
            address = %self.api.address(),
            method = method_name(&self.method),
            ttl_s = session.ttl.map(|t| t.as_secs()),
            renewable = session.renewable,
            "logged in to Vault"
        );
        Ok(session)
    }

    /// `POST auth/<mount>/login` with `body`; installs the token it returns.
    async fn exchange(
        &self,
        mount: &str,
        mut body: serde_json::Value,
        what: &str,
    ) -> Result<Session, VaultError> {
        let path = format!("auth/{mount}/login");
        let request = Request::post(&path, &body);
        super::data::wipe_json(&mut body);
        let reply = self
            .api
            .send_anonymous(&request)
            .await
            .map_err(|e| match e {
                VaultError::PermissionDenied { .. } | VaultError::Http { status: 400, .. } => {
                    VaultError::Credentials(format!(
                        "Vault at {} refused the {what} login at `{path}`: check the role and its credentials ({e})",
                        self.api.address()
                    ))
                }
                VaultError::NotFound { .. } => VaultError::Credentials(format!(
                    "no {what} auth method is enabled at `auth/{mount}` on {}: enable it or set auth.mount",
                    self.api.address()
                )),
                other => other,
            })?;
        let answer: AuthAnswer = reply.auth()?;
        let token = Zeroizing::new(answer.client_token.clone());
        check_token_text(&token, "the token Vault returned")?;
        self.api.set_token(&token);
        Ok(Session {
            ttl: (answer.lease_duration > 0).then(|| Duration::from_secs(answer.lease_duration)),
            renewable: answer.renewable,
            obtained: Instant::now(),
            retry_at: None,
            token,
        })
    }

    /// When the current token should next be refreshed; `None`: it need not be.
    async fn next_refresh(&self) -> Option<Instant> {
        let session = self.session.lock().await;
        let s = session.as_ref()?;
        if let Some(at) = s.retry_at {
            return Some(at);
        }
        let ttl = s.ttl?;
        Some(s.obtained + ttl.mul_f64(RENEW_AT).max(MIN_REFRESH))
    }

    /// Renews the token, or logs in again when it cannot be renewed (any more).
    async fn refresh(&self) {
        let mut session = self.session.lock().await;
        let Some(current) = session.as_mut() else {
            return;
        };
        let Some(ttl) = current.ttl else { return };
        let can_login_again = !matches!(self.method, VaultAuth::Token { .. });
        if current.renewable {
            let increment = ttl.as_secs().max(1);
            let renewed = self
                .api
                .send(&Request::post(
                    "auth/token/renew-self",
                    &json!({ "increment": format!("{increment}s") }),
                ))
                .await
                .and_then(|reply| reply.auth::<AuthAnswer>());
            match renewed {
                // Vault capped the renewal: the maximum TTL is near, so log in afresh
                // while the token still works rather than let it lapse.
                Ok(answer) if can_login_again && answer.lease_duration < increment / 2 => {
                    tracing::info!(address = %self.api.address(), "Vault token near its maximum TTL: logging in again");
                }
                Ok(answer) if answer.lease_duration > 0 => {
                    current.ttl = Some(Duration::from_secs(answer.lease_duration));
                    current.renewable = answer.renewable;
                    current.obtained = Instant::now();
                    current.retry_at = None;
                    self.renewals.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(address = %self.api.address(), ttl_s = answer.lease_duration, "renewed the Vault token");
                    return;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::info!(address = %self.api.address(), error = %e, "renewing the Vault token failed: logging in again");
                }
            }
        }
        match self.login().await {
            Ok(fresh) => {
                tracing::info!(address = %self.api.address(), method = method_name(&self.method), "logged in to Vault again");
                if !can_login_again && *fresh.token == *current.token {
                    tracing::warn!(
                        address = %self.api.address(),
                        "the Vault token cannot be renewed and its source still holds the same token: provide a fresh one before it expires"
                    );
                }
                *current = fresh;
            }
            Err(e) => {
                tracing::error!(address = %self.api.address(), error = %e, "could not log in to Vault again; retrying");
                // Try again soon, but never after the token has expired.
                let left = (current.obtained + ttl).saturating_duration_since(Instant::now());
                current.retry_at =
                    Some(Instant::now() + RETRY_AFTER.min(left / 2).max(MIN_REFRESH));
            }
        }
    }

    /// Runs until the backend is dropped: refreshes the token before it expires.
    pub(crate) fn spawn_renewal(auth: &Arc<Auth>) {
        let weak: Weak<Auth> = Arc::downgrade(auth);
        // The task holds only the wake-up and a weak reference, so dropping the backend
        // ends it.
        let changed = Arc::clone(&auth.changed);
        tokio::spawn(async move {
            loop {
                let next = match weak.upgrade() {
                    Some(auth) => auth.next_refresh().await,
                    None => return,
                };
                match next {
                    Some(at) => {
                        tokio::select! {
                            _ = tokio::time::sleep_until(at) => {}
                            _ = changed.notified() => continue,
                        }
                    }
                    None => {
                        changed.notified().await;
                        continue;
                    }
                }
                let Some(auth) = weak.upgrade() else { return };
                auth.refresh().await;
            }
        });
    }
}

impl Drop for Auth {
    fn drop(&mut self) {
        // Lets the renewal task see the backend is gone.
        self.changed.notify_one();
    }
}

/// Reads a credential; whitespace around a file's content is dropped.
fn read_source(source: &CredentialSource, what: &str) -> Result<Zeroizing<String>, VaultError> {
    let text = match source {
        CredentialSource::Literal(text) => Zeroizing::new(text.clone()),
        CredentialSource::Env(var) => match std::env::var(var) {
            Ok(text) if !text.trim().is_empty() => Zeroizing::new(text.trim().to_owned()),
            _ => {
                return Err(VaultError::Credentials(format!(
                    "{what} is read from the environment variable {var}, which is not set or empty: set it in rekeyd's environment"
                )));
            }
        },
        CredentialSource::File(path) => match std::fs::read_to_string(path) {
            Ok(text) => {
                let text = Zeroizing::new(text);
                if text.trim().is_empty() {
                    return Err(VaultError::Credentials(format!(
                        "{what} is read from {}, which is empty",
                        path.display()
                    )));
                }
                Zeroizing::new(text.trim().to_owned())
            }
            Err(e) => {
                return Err(VaultError::Credentials(format!(
                    "{what} is read from {}, which cannot be read: {e}",
                    path.display()
                )));
            }
        },
    };
    Ok(text)
}

/// Where a credential comes from, for messages.
fn source_name(source: &CredentialSource) -> String {
    match source {
        CredentialSource::Literal(_) => "the policy".to_owned(),
        CredentialSource::Env(var) => format!("${var}"),
        CredentialSource::File(path) => path.display().to_string(),
    }
}

/// Tokens travel in an HTTP header: reject characters a header cannot carry.
fn check_token_text(token: &str, what: &str) -> Result<(), VaultError> {
    if token.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        Ok(())
    } else {
        Err(VaultError::Credentials(format!(
            "{what} contains spaces or control characters, which a Vault token never has: check its source"
        )))
    }
}
