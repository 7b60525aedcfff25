//! The storage contract every secret store implements, and the stores themselves.
//!
//! A secret has versions; the stages `current`, `previous` and `pending` each point at
//! no version or one. rekeyd's rotation engine only ever talks to a store through
//! [`Backend`], so AWS Secrets Manager, Vault and the embedded file store behave alike.
//! [`conformance`] holds the checks that pin the contract down; every backend runs them.

use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::secret::{SecretName, SecretValue, Stage, VersionId};

pub mod aws;
pub mod file;
pub mod memory;
pub mod vault;
mod versions;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

/// One version of a secret, without its value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VersionInfo {
    /// The version's id.
    pub id: VersionId,
    /// When the backend stored it.
    pub created_at: DateTime<Utc>,
    /// The stages that point at it (empty for a retired version the backend still keeps).
    pub stages: Vec<Stage>,
}

/// What a backend knows about one secret: its versions and where the stages point.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SecretDescription {
    /// The secret.
    pub name: SecretName,
    /// Its versions, oldest first.
    pub versions: Vec<VersionInfo>,
}

impl SecretDescription {
    /// The version a stage points at, if any.
    pub fn stage(&self, stage: Stage) -> Option<&VersionInfo> {
        self.versions.iter().find(|v| v.stages.contains(&stage))
    }

    /// The version with this id, if the backend still has it.
    pub fn version(&self, id: &VersionId) -> Option<&VersionInfo> {
        self.versions.iter().find(|v| &v.id == id)
    }
}

/// Which version a read wants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    /// Whatever version the stage points at.
    Stage(Stage),
    /// One version by id.
    Version(VersionId),
}

/// What [`Backend::put_pending`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    /// A new version was stored and labelled `pending`.
    Created,
    /// A version with this id and this value already existed (a retry); nothing new was stored.
    AlreadyPresent,
}

/// Optional behaviours, so callers and the conformance suite can branch on them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// `put_pending` on a secret that does not exist creates it (otherwise `NotFound`).
    pub creates_missing: bool,
    /// Versions that lose every stage are kept and stay readable by id.
    pub keeps_unlabelled_versions: bool,
    /// Values may be arbitrary bytes, not only UTF-8 text.
    pub binary_values: bool,
}

/// Whether retrying an operation can help.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorStatus {
    /// Retrying the same call will fail the same way.
    Permanent,
    /// A passing condition (throttling, timeout, lock held): retry with backoff.
    Temporary,
}

/// The errors every backend maps its own failures into. Messages never contain values.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The secret, stage or version does not exist.
    #[error("{what} not found in backend {backend}")]
    NotFound {
        /// The backend instance's name.
        backend: String,
        /// What was missing, e.g. `secret "prod/db"` or `stage previous of "prod/db"`.
        what: String,
    },
    /// A version with the requested id already exists with a different value.
    #[error(
        "version {version} of {secret:?} already exists in backend {backend} with a different value"
    )]
    Conflict {
        /// The backend instance's name.
        backend: String,
        /// The secret.
        secret: SecretName,
        /// The version id that clashed.
        version: VersionId,
    },
    /// `promote` found another version current than the caller expected.
    #[error(
        "current version of {secret:?} in backend {backend} is {found}, not {expected}: another writer changed it"
    )]
    CurrentChanged {
        /// The backend instance's name.
        backend: String,
        /// The secret.
        secret: SecretName,
        /// What the caller expected (`none` for no current version).
        expected: String,
        /// What was current (`none` for no current version).
        found: String,
    },
    /// The backend refused the caller.
    #[error("permission denied by backend {backend}: {message}")]
    PermissionDenied {
        /// The backend instance's name.
        backend: String,
        /// What was refused and what would allow it.
        message: String,
    },
    /// Any other failure, with its cause.
    #[error("backend {backend}: {message}")]
    Generic {
        /// The backend instance's name.
        backend: String,
        /// What was being done.
        message: String,
        /// Whether a retry can help.
        status: ErrorStatus,
        /// The underlying error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl Error {
    /// Whether a retry with backoff can help.
    pub fn is_temporary(&self) -> bool {
        matches!(
            self,
            Error::Generic {
                status: ErrorStatus::Temporary,
                ..
            }
        )
    }

    /// True for [`Error::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }
}

/// Opens one backend instance from its policy configuration.
pub async fn open(
    name: &str,
    config: &crate::policy::BackendConfig,
) -> Result<std::sync::Arc<dyn Backend>> {
    Ok(match config {
        crate::policy::BackendConfig::File(file) => {
            std::sync::Arc::new(file::FileBackend::open(name, file)?)
        }
        crate::policy::BackendConfig::Vault(vault) => {
            std::sync::Arc::new(vault::VaultBackend::open(name, vault).await?)
        }
        crate::policy::BackendConfig::Aws(aws) => {
            std::sync::Arc::new(aws::AwsBackend::open(name, aws).await?)
        }
    })
}

/// Opens every backend instance the policy defines, by name.
pub async fn open_all(
    policy: &crate::policy::Policy,
) -> Result<std::collections::BTreeMap<String, std::sync::Arc<dyn Backend>>> {
    let mut out = std::collections::BTreeMap::new();
    for (name, config) in &policy.backends {
        out.insert(name.clone(), open(name, config).await?);
    }
    Ok(out)
}

/// Result alias for backend calls.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A secret store, seen as versions and stages.
///
/// # Contract
///
/// Every implementation passes [`conformance`]. In short:
///
/// - **Stages are exclusive.** Each stage points at no version or exactly one.
/// - **Writes are idempotent under the caller's version id.** rekeyd derives the id from the
///   secret and the schedule slot, so a retry, a restart or a second replica repeats the same
///   call, and the repeat must change nothing.
/// - **Readers never see an unpromoted value** through `current`.
/// - **Errors carry no values.**
#[async_trait]
pub trait Backend: Send + Sync + fmt::Debug {
    /// The backend instance's name from the policy (used in errors and audit entries).
    fn name(&self) -> &str;

    /// Which optional behaviours this backend has.
    fn capabilities(&self) -> Capabilities;

    /// Lists the secret's versions and stages.
    ///
    /// # Behavior
    /// `NotFound` when the secret does not exist. A secret that exists but has only a
    /// pending version (its first rotation was interrupted) is described normally.
    async fn describe(&self, name: &SecretName) -> Result<SecretDescription>;

    /// Stores `value` as version `version` and points `pending` at it.
    ///
    /// # Behavior
    /// - A version with this id and an equal value already exists: `AlreadyPresent`, and no
    ///   stage moves (if it is current already, it stays current and nothing is pending).
    /// - A version with this id and a different value exists: `Conflict`; nothing changes.
    /// - Otherwise the version is stored and `pending` moves to it from wherever it was;
    ///   `current` and `previous` do not move.
    /// - A missing secret is created when [`Capabilities::creates_missing`], else `NotFound`.
    async fn put_pending(
        &self,
        name: &SecretName,
        version: &VersionId,
        value: &SecretValue,
    ) -> Result<PutOutcome>;

    /// Makes `version` current, provided `expected_current` still is (compare-and-swap).
    ///
    /// # Behavior
    /// - `version` is current already: nothing changes, so a retry after a crash is safe.
    /// - The current version is not `expected_current` (`None`: the caller saw no current
    ///   version): `CurrentChanged`, and nothing changes. Another writer rotated in between;
    ///   the caller re-reads and decides again.
    /// - Otherwise the old current becomes previous (the old previous loses that stage) and
    ///   `pending` is removed if it pointed at `version`. Promoting the previous version is
    ///   how a rollback is done. A backend that keeps no unlabelled versions
    ///   ([`Capabilities::keeps_unlabelled_versions`] false) may drop the old previous in
    ///   the same atomic change when that was its last stage.
    /// - `NotFound` when the version does not exist.
    ///
    /// The move is atomic: a concurrent reader sees the old or the new current, never neither.
    async fn promote(
        &self,
        name: &SecretName,
        version: &VersionId,
        expected_current: Option<&VersionId>,
    ) -> Result<()>;

    /// Removes the `pending` stage from `version`, abandoning a rotation.
    ///
    /// # Behavior
    /// `current` and `previous` never move. If `pending` does not point at `version`, this is
    /// a no-op (so it is idempotent). Whether the abandoned version is kept is the
    /// backend's choice ([`Capabilities::keeps_unlabelled_versions`]).
    async fn discard_pending(&self, name: &SecretName, version: &VersionId) -> Result<()>;

    /// Reads one version's value.
    ///
    /// # Behavior
    /// `NotFound` when the secret, the stage or the version does not exist.
    async fn read(&self, name: &SecretName, selector: &Selector) -> Result<SecretValue>;

    /// Lists the names of the secrets the backend holds.
    async fn list(&self) -> Result<Vec<SecretName>>;

    /// Whether the backend answers, for readiness probes. The default lists secrets;
    /// backends with a cheaper check override it.
    async fn health(&self) -> Result<()> {
        self.list().await.map(|_| ())
    }

    /// Drops versions that no stage points at, where the backend keeps history itself
    /// (the file store); others may do nothing. Returns how many versions were removed.
    ///
    /// # Behavior
    /// Never touches a version that a stage points at. Idempotent.
    async fn retire(&self, name: &SecretName) -> Result<usize>;
}
