//! The HashiCorp Vault backend: secrets in a KV engine (v2 by default, or v1), rotated so
//! that applications and Vault Agent templates reading the usual path keep working.
//!
//! - [`kv2`]: the secret's own versions; every write is check-and-set; the stage mapping
//!   lives in the secret's `custom_metadata`; a pending value waits at a sibling path.
//! - [`kv1`]: no versions, so `previous` and `pending` live at sibling paths and the main
//!   path only ever holds a promoted value; writers take a lease lock (KV v1 has no
//!   check-and-set).
//! - [`auth`]: token, AppRole and Kubernetes logins, renewal, re-login.
//! - [`data`]: how a value maps onto KV fields.
//!
//! The layout, what readers call, and what was tested against which server are in
//! `docs/vault.md`.

mod api;
mod auth;
mod config;
mod data;
mod error;
mod kv1;
mod kv2;
mod lock;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use async_trait::async_trait;

use super::{Backend, Capabilities, PutOutcome, Result, SecretDescription, Selector};
use crate::policy::{KvVersion, VaultBackendConfig};
use crate::secret::{SecretName, SecretValue, VersionId};
use api::{Api, Method, Reply, Request};
use auth::Auth;
pub use auth::AuthStats;
use error::VaultError;

/// The suffix of the sibling paths rekeyd keeps next to a secret (`<name>__rekeyd/…`).
const SIBLING: &str = "__rekeyd";

/// A Vault KV mount, seen through the backend contract.
pub struct VaultBackend {
    name: String,
    conn: Arc<Conn>,
    kv: Kv,
}

enum Kv {
    V1(kv1::Kv1),
    V2(kv2::Kv2),
}

impl std::fmt::Debug for VaultBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultBackend")
            .field("name", &self.name)
            .field("address", &self.conn.api.address())
            .field("mount", &self.conn.mount)
            .field(
                "kv_version",
                &match self.kv {
                    Kv::V1(_) => 1,
                    Kv::V2(_) => 2,
                },
            )
            .field("auth", &self.conn.auth)
            .finish()
    }
}

/// The authenticated connection every engine call goes through.
#[derive(Debug)]
pub(crate) struct Conn {
    api: Arc<Api>,
    auth: Arc<Auth>,
    mount: String,
    kv_version: KvVersion,
    /// Set once the mount was found to be the configured KV version (or could not be
    /// checked for lack of permission); the mutex keeps concurrent first calls to one check.
    mount_checked: tokio::sync::Mutex<bool>,
    /// The same, readable without waiting on the mutex.
    mount_ok: std::sync::atomic::AtomicBool,
}

impl Conn {
    /// Sends `request`, logging in first if needed; if Vault refuses it because the token
    /// expired or was revoked, logs in again and retries once.
    pub(crate) async fn send(&self, request: &Request) -> std::result::Result<Reply, VaultError> {
        self.auth.ensure().await?;
        self.check_mount().await?;
        self.send_checked(request).await
    }

    async fn send_checked(&self, request: &Request) -> std::result::Result<Reply, VaultError> {
        let generation = self.auth.generation();
        match self.api.send(request).await {
            Err(denied @ VaultError::PermissionDenied { .. }) => {
                if self.token_is_dead().await && self.auth.recover_from_denial(generation).await {
                    self.api.send(request).await
                } else {
                    Err(denied)
                }
            }
            other => other,
        }
    }

    /// After a 403: is the token itself refused (expired, revoked), rather than lacking a
    /// capability? Only then does logging in again help.
    async fn token_is_dead(&self) -> bool {
        matches!(
            self.api
                .send(&Request::new(Method::Get, "auth/token/lookup-self"))
                .await,
            Err(VaultError::PermissionDenied { .. })
        )
    }

    /// Reads a path; `None` when it does not exist.
    pub(crate) async fn get(&self, path: &str) -> std::result::Result<Option<Reply>, VaultError> {
        match self.send(&Request::new(Method::Get, path)).await {
            Ok(reply) => Ok(Some(reply)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Lists the keys under a folder path; empty when there is none.
    pub(crate) async fn list(&self, path: &str) -> std::result::Result<Vec<String>, VaultError> {
        #[derive(serde::Deserialize)]
        struct Keys {
            #[serde(default)]
            keys: Vec<String>,
        }
        match self.send(&Request::new(Method::List, path)).await {
            Ok(reply) if reply.is_empty() => Ok(Vec::new()),
            Ok(reply) => Ok(reply.data::<Keys>()?.keys),
            Err(e) if e.is_not_found() => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Checks once that the mount runs the configured KV version, so a KV v2 layout is
    /// never written into a KV v1 mount as literal `data/…` keys (or the reverse).
    async fn check_mount(&self) -> std::result::Result<(), VaultError> {
        if self.mount_ok.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(());
        }
        let mut checked = self.mount_checked.lock().await;
        if *checked {
            return Ok(());
        }
        let found = self.mount_version().await?;
        let expected = match self.kv_version {
            KvVersion::V1 => 1,
            KvVersion::V2 => 2,
        };
        match found {
            Some(MountKind::Kv(version)) if version != expected => {
                return Err(VaultError::WrongMount(format!(
                    "`{}/` on {} is a KV version {version} secrets engine, but the backend says kv_version = {expected}: set kv_version = {version}",
                    self.mount,
                    self.api.address()
                )));
            }
            Some(MountKind::Other(kind)) => {
                return Err(VaultError::WrongMount(format!(
                    "`{}/` on {} is a `{kind}` secrets engine, not KV: point `mount` at a KV engine",
                    self.mount,
                    self.api.address()
                )));
            }
            Some(MountKind::Missing) => {
                return Err(VaultError::WrongMount(format!(
                    "no secrets engine is mounted at `{}/` on {}: enable one (`vault secrets enable -path={} kv-v2`) or fix `mount`",
                    self.mount,
                    self.api.address(),
                    self.mount
                )));
            }
            Some(MountKind::Kv(_)) => {}
            None => tracing::debug!(
                mount = %self.mount,
                "cannot read the mount's type (no permission on sys/internal/ui/mounts or sys/mounts); trusting kv_version"
            ),
        }
        *checked = true;
        self.mount_ok
            .store(true, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// The mount's engine: from `sys/internal/ui/mounts/<mount>` (what the Vault CLI asks),
    /// else from `sys/mounts`; `None` when neither may be read.
    async fn mount_version(&self) -> std::result::Result<Option<MountKind>, VaultError> {
        #[derive(serde::Deserialize)]
        struct Mount {
            #[serde(rename = "type", default)]
            kind: String,
            #[serde(default)]
            options: Option<std::collections::HashMap<String, serde_json::Value>>,
        }
        fn kind(mount: &Mount) -> MountKind {
            let version = mount
                .options
                .as_ref()
                .and_then(|o| o.get("version"))
                .and_then(|v| match v {
                    serde_json::Value::String(s) => s.parse().ok(),
                    serde_json::Value::Number(n) => n.as_u64(),
                    _ => None,
                })
                .unwrap_or(1);
            match mount.kind.as_str() {
                "kv" | "generic" => MountKind::Kv(version),
                other => MountKind::Other(other.to_owned()),
            }
        }
        let ui = format!("sys/internal/ui/mounts/{}", self.mount);
        match self.send_checked(&Request::new(Method::Get, ui)).await {
            Ok(reply) => {
                if let Ok(mount) = reply.data::<Mount>()
                    && !mount.kind.is_empty()
                {
                    return Ok(Some(kind(&mount)));
                }
            }
            Err(e @ (VaultError::Sealed { .. } | VaultError::Unreachable { .. })) => {
                return Err(e);
            }
            Err(_) => {}
        }
        let reply = match self
            .send_checked(&Request::new(Method::Get, "sys/mounts"))
            .await
        {
            Ok(reply) => reply,
            Err(e @ (VaultError::Sealed { .. } | VaultError::Unreachable { .. })) => {
                return Err(e);
            }
            Err(_) => return Ok(None),
        };
        // Vault answers with the table both at the top level and under `data`.
        let table: std::collections::HashMap<String, serde_json::Value> = match reply.data() {
            Ok(table) => table,
            Err(_) => match reply.whole() {
                Ok(table) => table,
                Err(_) => return Ok(None),
            },
        };
        let key = format!("{}/", self.mount);
        Ok(Some(match table.get(&key) {
            Some(entry) => match serde_json::from_value::<Mount>(entry.clone()) {
                Ok(mount) => kind(&mount),
                Err(_) => return Ok(None),
            },
            None => MountKind::Missing,
        }))
    }
}

/// What is mounted at the configured path.
enum MountKind {
    Kv(u64),
    Other(String),
    Missing,
}

impl VaultBackend {
    /// Opens the backend: builds the client and checks that the credentials' sources
    /// exist. Logging in and the mount check happen on the first request, so a daemon
    /// starts while Vault is briefly away.
    pub async fn open(name: &str, config: &VaultBackendConfig) -> Result<Self> {
        let fail = |e: VaultError| e.into_backend(name);
        let api = Arc::new(config::client(config).map_err(fail)?);
        let auth = Arc::new(Auth::new(config.auth.clone(), Arc::clone(&api)));
        auth.check_sources().map_err(fail)?;
        Auth::spawn_renewal(&auth);
        let conn = Arc::new(Conn {
            api,
            auth,
            mount: config.mount.clone(),
            kv_version: config.kv_version,
            mount_checked: tokio::sync::Mutex::new(false),
            mount_ok: std::sync::atomic::AtomicBool::new(false),
        });
        let kv = match config.kv_version {
            KvVersion::V1 => Kv::V1(kv1::Kv1::new(name, Arc::clone(&conn))),
            KvVersion::V2 => Kv::V2(kv2::Kv2::new(name, Arc::clone(&conn), config.max_versions)),
        };
        Ok(Self {
            name: name.to_owned(),
            conn,
            kv,
        })
    }

    /// How often the backend has logged in and renewed its token so far.
    pub fn auth_stats(&self) -> AuthStats {
        self.conn.auth.stats()
    }

    fn check_name(&self, name: &SecretName) -> Result<()> {
        check_name(name).map_err(|e| e.into_backend(&self.name))
    }
}

/// Names must map to clean Vault paths, and must not collide with rekeyd's siblings.
fn check_name(name: &SecretName) -> std::result::Result<(), VaultError> {
    let text = name.as_str();
    let bad = |why: &str| {
        Err(VaultError::BadName(format!(
            "secret name `{text}` cannot be kept in Vault: {why}"
        )))
    };
    if text.contains(SIBLING) {
        return bad("names containing `__rekeyd` are reserved for rekeyd's own paths");
    }
    if text
        .split('/')
        .any(|segment| segment.is_empty() || segment == "." || segment == "..")
    {
        return bad("each `/`-separated part must be non-empty and not `.` or `..`");
    }
    Ok(())
}

#[async_trait]
impl Backend for VaultBackend {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            creates_missing: true,
            keeps_unlabelled_versions: false,
            binary_values: true,
        }
    }

    async fn describe(&self, name: &SecretName) -> Result<SecretDescription> {
        self.check_name(name)?;
        match &self.kv {
            Kv::V1(kv) => kv.describe(name).await,
            Kv::V2(kv) => kv.describe(name).await,
        }
    }

    async fn put_pending(
        &self,
        name: &SecretName,
        version: &VersionId,
        value: &SecretValue,
    ) -> Result<PutOutcome> {
        self.check_name(name)?;
        match &self.kv {
            Kv::V1(kv) => kv.put_pending(name, version, value).await,
            Kv::V2(kv) => kv.put_pending(name, version, value).await,
        }
    }

    async fn promote(
        &self,
        name: &SecretName,
        version: &VersionId,
        expected_current: Option<&VersionId>,
    ) -> Result<()> {
        self.check_name(name)?;
        match &self.kv {
            Kv::V1(kv) => kv.promote(name, version, expected_current).await,
            Kv::V2(kv) => kv.promote(name, version, expected_current).await,
        }
    }

    async fn discard_pending(&self, name: &SecretName, version: &VersionId) -> Result<()> {
        self.check_name(name)?;
        match &self.kv {
            Kv::V1(kv) => kv.discard_pending(name, version).await,
            Kv::V2(kv) => kv.discard_pending(name, version).await,
        }
    }

    async fn read(&self, name: &SecretName, selector: &Selector) -> Result<SecretValue> {
        self.check_name(name)?;
        match &self.kv {
            Kv::V1(kv) => kv.read(name, selector).await,
            Kv::V2(kv) => kv.read(name, selector).await,
        }
    }

    async fn list(&self) -> Result<Vec<SecretName>> {
        match &self.kv {
            Kv::V1(kv) => kv.list().await,
            Kv::V2(kv) => kv.list().await,
        }
    }

    async fn retire(&self, name: &SecretName) -> Result<usize> {
        self.check_name(name)?;
        match &self.kv {
            Kv::V1(kv) => kv.retire(name).await,
            Kv::V2(kv) => kv.retire(name).await,
        }
    }
}

/// Walks a KV folder tree from `root` (`<mount>/` or `<mount>/metadata/`), turning keys
/// into secret names: rekeyd's sibling folders name their secret (one whose first
/// rotation only got as far as a pending value), everything under them is skipped.
pub(crate) async fn list_tree(
    conn: &Conn,
    root: &str,
) -> std::result::Result<Vec<SecretName>, VaultError> {
    let mut names = std::collections::BTreeSet::new();
    let mut folders = vec![String::new()];
    while let Some(prefix) = folders.pop() {
        for key in conn.list(&format!("{root}{prefix}")).await? {
            if let Some(folder) = key.strip_suffix('/') {
                match folder.strip_suffix(SIBLING) {
                    Some(secret) => {
                        if let Ok(name) = SecretName::new(format!("{prefix}{secret}")) {
                            names.insert(name);
                        }
                    }
                    None => folders.push(format!("{prefix}{key}")),
                }
            } else if !key.contains(SIBLING)
                && let Ok(name) = SecretName::new(format!("{prefix}{key}"))
            {
                names.insert(name);
            }
        }
    }
    Ok(names.into_iter().collect())
}
