//! An in-process backend: the reference implementation of the contract. It backs the
//! engine's unit tests and proves the conformance suite itself is satisfiable.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::Utc;

use super::versions::{self, Promoted, PutDecision, StoredVersion};
use super::{Backend, Capabilities, Error, PutOutcome, Result, SecretDescription, Selector};
use crate::secret::{SecretName, SecretValue, Stage, VersionId};

/// Secrets held in memory, lost when the process ends.
#[derive(Debug)]
pub struct MemoryBackend {
    name: String,
    secrets: Mutex<BTreeMap<SecretName, Vec<StoredVersion<Held>>>>,
}

/// A held value; wrapped so `StoredVersion`'s serde derives never see a `SecretValue`.
#[derive(Clone, Debug)]
struct Held(SecretValue);

impl serde::Serialize for Held {
    fn serialize<S: serde::Serializer>(&self, _: S) -> std::result::Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom(
            "memory values are never serialized",
        ))
    }
}

impl<'de> serde::Deserialize<'de> for Held {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> std::result::Result<Self, D::Error> {
        Err(serde::de::Error::custom(
            "memory values are never deserialized",
        ))
    }
}

impl MemoryBackend {
    /// An empty store named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            secrets: Mutex::new(BTreeMap::new()),
        }
    }

    fn not_found(&self, what: String) -> Error {
        Error::NotFound {
            backend: self.name.clone(),
            what,
        }
    }

    fn with_secret<T>(
        &self,
        name: &SecretName,
        f: impl FnOnce(&mut Vec<StoredVersion<Held>>) -> Result<T>,
    ) -> Result<T> {
        let mut secrets = self.secrets.lock().expect("memory backend lock poisoned");
        let versions = secrets
            .get_mut(name)
            .ok_or_else(|| self.not_found(format!("secret {name:?}")))?;
        f(versions)
    }
}

#[async_trait]
impl Backend for MemoryBackend {
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
        self.with_secret(name, |versions| {
            Ok(SecretDescription {
                name: name.clone(),
                versions: versions::describe(versions),
            })
        })
    }

    async fn put_pending(
        &self,
        name: &SecretName,
        version: &VersionId,
        value: &SecretValue,
    ) -> Result<PutOutcome> {
        let mut secrets = self.secrets.lock().expect("memory backend lock poisoned");
        let versions = secrets.entry(name.clone()).or_default();
        match versions::decide_put(versions, version) {
            PutDecision::Exists(index) if versions[index].value.0.ct_eq(value) => {
                Ok(PutOutcome::AlreadyPresent)
            }
            PutDecision::Exists(_) => Err(Error::Conflict {
                backend: self.name.clone(),
                secret: name.clone(),
                version: version.clone(),
            }),
            PutDecision::Insert => {
                versions.push(StoredVersion {
                    id: version.clone(),
                    created_at: Utc::now(),
                    stages: Vec::new(),
                    value: Held(value.clone()),
                });
                let index = versions.len() - 1;
                versions::move_stage(versions, Stage::Pending, index);
                Ok(PutOutcome::Created)
            }
        }
    }

    async fn promote(
        &self,
        name: &SecretName,
        version: &VersionId,
        expected_current: Option<&VersionId>,
    ) -> Result<()> {
        self.with_secret(name, |versions| {
            let index = versions
                .iter()
                .position(|v| &v.id == version)
                .ok_or_else(|| self.not_found(format!("version {version} of {name:?}")))?;
            match versions::promote(versions, index, expected_current) {
                Promoted::Moved | Promoted::AlreadyCurrent => Ok(()),
                Promoted::Stale(found) => Err(versions::current_changed(
                    &self.name,
                    name,
                    expected_current,
                    found,
                )),
            }
        })
    }

    async fn discard_pending(&self, name: &SecretName, version: &VersionId) -> Result<()> {
        self.with_secret(name, |versions| {
            if versions::unlabel_pending(versions, version) {
                versions::drop_unlabelled(versions);
            }
            Ok(())
        })
    }

    async fn read(&self, name: &SecretName, selector: &Selector) -> Result<SecretValue> {
        self.with_secret(name, |versions| {
            versions::find_index(versions, selector)
                .map(|i| versions[i].value.0.clone())
                .ok_or_else(|| {
                    self.not_found(format!("{} of {name:?}", versions::selector_text(selector)))
                })
        })
    }

    async fn list(&self) -> Result<Vec<SecretName>> {
        let secrets = self.secrets.lock().expect("memory backend lock poisoned");
        Ok(secrets.keys().cloned().collect())
    }

    async fn retire(&self, name: &SecretName) -> Result<usize> {
        self.with_secret(name, |versions| Ok(versions::drop_unlabelled(versions)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passes_the_conformance_suite() {
        let backend = MemoryBackend::new("memory");
        crate::backend::conformance::run_all(&backend, "conformance").await;
    }
}
