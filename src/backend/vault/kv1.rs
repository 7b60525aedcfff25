//! KV v1: one value per path and no versions, so rekeyd keeps the stages at sibling paths.
//!
//! | Path (under the mount) | Holds |
//! |---|---|
//! | `<name>` | the current value only, as KV fields: what applications read |
//! | `<name>__rekeyd/previous` | `{version, created_at, data}`: the previous value |
//! | `<name>__rekeyd/staged/<id>` | `{version, created_at, data}`: a value not yet promoted |
//! | `<name>__rekeyd/meta` | `{format, current, pending, promoting}`: ids, no value |
//! | `<name>__rekeyd/lock` | the writers' lease lock (`lock.rs`) |
//!
//! A promote writes, in order: `meta.promoting` ← the new id; `previous` ← the current
//! value; `<name>` ← the new value; `meta` ← the new current; then deletes the staged
//! copy. Readers of `<name>` therefore only ever see a promoted value. A crash between two
//! writes is recognised by the next describe: `<name>` holding the value `meta.promoting`
//! names means the promote got that far (the new version is current); `previous` naming
//! the current version means it stopped before (the pending version is finished by the
//! engine). `docs/vault.md` lists every window.

use std::sync::{Arc, Mutex, Weak};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::data::{KvData, wipe_json};
use super::error::VaultError;
use super::{Conn, Method, Request, SIBLING, list_tree, lock};
use crate::backend::{
    Error, PutOutcome, Result, SecretDescription, Selector, VersionInfo, versions,
};
use crate::secret::{SecretName, SecretValue, Stage, VersionId};

/// The version id rekeyd gives a value it finds at `<name>` without its own metadata
/// (a secret that existed before rekeyd managed it): rotated at the next due slot.
const UNMANAGED: &str = "unmanaged";
const META_FORMAT: u32 = 1;

/// The KV v1 engine of one backend.
pub(crate) struct Kv1 {
    backend: String,
    conn: Arc<Conn>,
    /// One async mutex per secret, so this process's own writers queue locally instead of
    /// contending through Vault.
    local: Mutex<std::collections::HashMap<SecretName, Weak<tokio::sync::Mutex<()>>>>,
}

/// A version and when it was stored.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    version: VersionId,
    created_at: DateTime<Utc>,
}

/// A sibling record: a version with its value.
struct Stored {
    entry: Entry,
    data: KvData,
}

#[derive(serde::Deserialize)]
struct StoredWire {
    version: String,
    created_at: DateTime<Utc>,
    data: Value,
}

#[derive(Default, serde::Serialize, serde::Deserialize)]
struct MetaWire {
    format: u32,
    #[serde(default)]
    current: Option<EntryWire>,
    #[serde(default)]
    pending: Option<String>,
    #[serde(default)]
    promoting: Option<String>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct EntryWire {
    version: String,
    created_at: DateTime<Utc>,
}

/// Where a secret stands, read without the lock.
struct State {
    exists: bool,
    current: Option<Entry>,
    previous: Option<Stored>,
    pending: Option<Stored>,
    /// `<name>` when it had to be read to decide.
    main: Option<KvData>,
}

impl State {
    fn pending_id(&self) -> Option<&VersionId> {
        self.pending.as_ref().map(|p| &p.entry.version)
    }

    /// The metadata record for this state, with `pending` and `promoting` as given.
    fn meta(&self, pending: Option<&VersionId>, promoting: Option<&VersionId>) -> Value {
        json!(MetaWire {
            format: META_FORMAT,
            current: self.current.as_ref().map(|c| EntryWire {
                version: c.version.to_string(),
                created_at: c.created_at,
            }),
            pending: pending.map(ToString::to_string),
            promoting: promoting.map(ToString::to_string),
        })
    }
}

/// Version ids become path segments: only plain characters.
fn check_id(id: &VersionId) -> std::result::Result<(), VaultError> {
    let ok = !id.as_str().is_empty()
        && id.as_str() != "."
        && id.as_str() != ".."
        && id
            .as_str()
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(VaultError::BadName(format!(
            "version id `{id}` cannot be a KV v1 path segment (letters, digits, `.`, `_`, `-` only)"
        )))
    }
}

impl Kv1 {
    pub(crate) fn new(backend: &str, conn: Arc<Conn>) -> Self {
        Self {
            backend: backend.to_owned(),
            conn,
            local: Mutex::new(std::collections::HashMap::new()),
        }
    }

    fn fail(&self, e: VaultError) -> Error {
        e.into_backend(&self.backend)
    }

    fn main_path(&self, name: &SecretName) -> String {
        format!("{}/{name}", self.conn.mount)
    }

    fn sibling(&self, name: &SecretName, leaf: &str) -> String {
        format!("{}/{name}{SIBLING}/{leaf}", self.conn.mount)
    }

    fn staged(&self, name: &SecretName, id: &VersionId) -> String {
        self.sibling(name, &format!("staged/{id}"))
    }

    async fn get_data(&self, path: &str) -> std::result::Result<Option<KvData>, VaultError> {
        let Some(reply) = self.conn.get(path).await? else {
            return Ok(None);
        };
        let value: Value = reply.data()?;
        KvData::from_json(value)
            .map(Some)
            .ok_or_else(|| VaultError::BadAnswer {
                path: path.to_owned(),
                detail: "the data is not a JSON object".to_owned(),
            })
    }

    async fn get_stored(&self, path: &str) -> std::result::Result<Option<Stored>, VaultError> {
        let Some(reply) = self.conn.get(path).await? else {
            return Ok(None);
        };
        let wire: StoredWire = reply.data()?;
        let data = KvData::from_json(wire.data).ok_or_else(|| VaultError::BadAnswer {
            path: path.to_owned(),
            detail: "`data` is not a JSON object".to_owned(),
        })?;
        Ok(Some(Stored {
            entry: Entry {
                version: VersionId::new(wire.version),
                created_at: wire.created_at,
            },
            data,
        }))
    }

    async fn put_json(&self, path: &str, mut body: Value) -> std::result::Result<(), VaultError> {
        let request = Request::post(path, &body);
        wipe_json(&mut body);
        self.conn.send(&request).await.map(drop)
    }

    async fn put_stored(
        &self,
        path: &str,
        entry: &Entry,
        data: &KvData,
    ) -> std::result::Result<(), VaultError> {
        let body = json!({
            "version": entry.version.as_str(),
            "created_at": entry.created_at,
            "data": data.to_json(),
        });
        self.put_json(path, body).await
    }

    async fn delete(&self, path: &str) -> std::result::Result<(), VaultError> {
        match self.conn.send(&Request::new(Method::Delete, path)).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Reads meta and the siblings, and decides where the stages point.
    async fn state(&self, name: &SecretName) -> std::result::Result<State, VaultError> {
        let meta: Option<MetaWire> = match self.conn.get(&self.sibling(name, "meta")).await? {
            Some(reply) => Some(reply.data()?),
            None => None,
        };
        let previous = self.get_stored(&self.sibling(name, "previous")).await?;
        let id = |text: &Option<String>| text.as_ref().map(|t| VersionId::new(t.clone()));
        let (pending_id, promoting_id) = meta
            .as_ref()
            .map_or((None, None), |m| (id(&m.pending), id(&m.promoting)));
        let pending = match &pending_id {
            Some(id) if check_id(id).is_ok() => self.get_stored(&self.staged(name, id)).await?,
            _ => None,
        };
        let meta_current = meta
            .as_ref()
            .and_then(|m| m.current.as_ref())
            .map(|c| Entry {
                version: VersionId::new(c.version.clone()),
                created_at: c.created_at,
            });
        let mut main: Option<Option<KvData>> = None;
        let mut current = None;
        // The staged copy of the version a stopped promote was making current, when it is
        // not the pending one.
        let mut promoted_copy = None;
        // A promote that wrote `<name>` but not yet `meta`: the version it was promoting
        // is current.
        if let Some(promoting) = promoting_id
            .filter(|p| meta_current.as_ref().is_none_or(|c| &c.version != p))
            .filter(|p| check_id(p).is_ok())
        {
            let record = if pending
                .as_ref()
                .is_some_and(|p| p.entry.version == promoting)
            {
                None
            } else {
                self.get_stored(&self.staged(name, &promoting)).await?
            };
            let candidate = record
                .as_ref()
                .or(pending.as_ref().filter(|p| p.entry.version == promoting));
            if let Some(candidate) = candidate {
                let found = self.get_data(&self.main_path(name)).await?;
                if found
                    .as_ref()
                    .is_some_and(|m| m.same_value(&candidate.data))
                {
                    current = Some(candidate.entry.clone());
                }
                main = Some(found);
            }
            promoted_copy = record;
        }
        if current.is_none() {
            current = meta_current;
        }
        if current.is_none() && meta.is_none() {
            // A value rekeyd did not write: adopted, and rotated at the next due slot.
            let found = match main.take() {
                Some(found) => found,
                None => self.get_data(&self.main_path(name)).await?,
            };
            if found.is_some() {
                current = Some(Entry {
                    version: VersionId::new(UNMANAGED),
                    created_at: DateTime::<Utc>::UNIX_EPOCH,
                });
            }
            main = Some(found);
        }
        let current_id = current.as_ref().map(|c| c.version.clone());
        let previous = previous.filter(|p| Some(&p.entry.version) != current_id.as_ref());
        // A rollback stopped after `previous` was overwritten with the current value (it
        // has no pending version of its own) leaves the version it was restoring only in
        // its staged copy: shown as pending, so that it is finished rather than lost.
        let pending = pending.or(promoted_copy).filter(|p| {
            Some(&p.entry.version) != current_id.as_ref()
                && previous
                    .as_ref()
                    .is_none_or(|prev| prev.entry.version != p.entry.version)
        });
        Ok(State {
            exists: meta.is_some() || current.is_some() || previous.is_some(),
            current,
            previous,
            pending,
            main: main.flatten(),
        })
    }

    fn local_lock(&self, name: &SecretName) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.local.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = map.get(name).and_then(Weak::upgrade) {
            return existing;
        }
        map.retain(|_, weak| weak.strong_count() > 0);
        let fresh = Arc::new(tokio::sync::Mutex::new(()));
        map.insert(name.clone(), Arc::downgrade(&fresh));
        fresh
    }

    /// Runs `work` holding this process's and Vault's lock on the secret.
    async fn locked<T>(
        &self,
        name: &SecretName,
        work: impl AsyncFnOnce(&lock::Held) -> std::result::Result<T, VaultError>,
    ) -> std::result::Result<T, VaultError> {
        let local = self.local_lock(name);
        let _queued = local.lock().await;
        let held = lock::acquire(&self.conn, &self.sibling(name, "lock")).await?;
        let result = work(&held).await;
        held.release(&self.conn).await;
        result
    }

    /// The value of `<name>`, from the state if it was read already.
    async fn main_value(
        &self,
        name: &SecretName,
        state: &mut State,
    ) -> std::result::Result<Option<KvData>, VaultError> {
        match state.main.take() {
            Some(main) => Ok(Some(main)),
            None => self.get_data(&self.main_path(name)).await,
        }
    }

    /// The value stored for version `id`, wherever it is.
    async fn value_of(
        &self,
        name: &SecretName,
        state: &mut State,
        id: &VersionId,
    ) -> std::result::Result<Option<Stored>, VaultError> {
        if let Some(current) = state.current.clone().filter(|c| &c.version == id) {
            return Ok(self.main_value(name, state).await?.map(|data| Stored {
                entry: current,
                data,
            }));
        }
        if let Some(p) = state.previous.take_if(|p| &p.entry.version == id) {
            return Ok(Some(p));
        }
        if let Some(p) = state.pending.take_if(|p| &p.entry.version == id) {
            return Ok(Some(p));
        }
        check_id(id)?;
        self.get_stored(&self.staged(name, id)).await
    }

    pub(crate) async fn describe(&self, name: &SecretName) -> Result<SecretDescription> {
        let state = self.state(name).await.map_err(|e| self.fail(e))?;
        if !state.exists {
            return Err(Error::NotFound {
                backend: self.backend.clone(),
                what: format!("secret {name:?}"),
            });
        }
        let mut versions = Vec::new();
        let info = |e: &Entry, stage: Stage| VersionInfo {
            id: e.version.clone(),
            created_at: e.created_at,
            stages: vec![stage],
        };
        if let Some(p) = &state.previous {
            versions.push(info(&p.entry, Stage::Previous));
        }
        if let Some(c) = &state.current {
            versions.push(info(c, Stage::Current));
        }
        if let Some(p) = &state.pending {
            versions.push(info(&p.entry, Stage::Pending));
        }
        Ok(SecretDescription {
            name: name.clone(),
            versions,
        })
    }

    pub(crate) async fn put_pending(
        &self,
        name: &SecretName,
        version: &VersionId,
        value: &SecretValue,
    ) -> Result<PutOutcome> {
        check_id(version).map_err(|e| self.fail(e))?;
        let wanted = KvData::from_value(value);
        let outcome = self
            .locked(name, async |held| {
                let mut state = self.state(name).await?;
                if let Some(existing) = self.value_of(name, &mut state, version).await? {
                    return Ok(Some(existing.data.same_value(&wanted)));
                }
                let entry = Entry {
                    version: version.clone(),
                    created_at: Utc::now(),
                };
                held.check()?;
                self.put_stored(&self.staged(name, version), &entry, &wanted)
                    .await?;
                held.check()?;
                self.put_json(&self.sibling(name, "meta"), state.meta(Some(version), None))
                    .await?;
                Ok(None)
            })
            .await
            .map_err(|e| self.fail(e))?;
        match outcome {
            None => Ok(PutOutcome::Created),
            Some(true) => Ok(PutOutcome::AlreadyPresent),
            Some(false) => Err(Error::Conflict {
                backend: self.backend.clone(),
                secret: name.clone(),
                version: version.clone(),
            }),
        }
    }

    pub(crate) async fn promote(
        &self,
        name: &SecretName,
        version: &VersionId,
        expected_current: Option<&VersionId>,
    ) -> Result<()> {
        enum Done {
            Ok,
            Stale(Option<VersionId>),
            Missing,
        }
        check_id(version).map_err(|e| self.fail(e))?;
        let done = self
            .locked(name, async |held| {
                let mut state = self.state(name).await?;
                let current = state.current.clone();
                if current.as_ref().is_some_and(|c| &c.version == version) {
                    return Ok(Done::Ok);
                }
                let found = current.as_ref().map(|c| c.version.clone());
                if found.as_ref() != expected_current {
                    return Ok(Done::Stale(found));
                }
                let rollback = state
                    .previous
                    .as_ref()
                    .is_some_and(|p| &p.entry.version == version);
                let pending = state.pending_id().cloned();
                let Some(source) = self.value_of(name, &mut state, version).await? else {
                    return Ok(Done::Missing);
                };
                if rollback {
                    // Keep the old value staged, so no crash from here on can lose it
                    // when `previous` is overwritten.
                    held.check()?;
                    self.put_stored(&self.staged(name, version), &source.entry, &source.data)
                        .await?;
                }
                held.check()?;
                let meta = self.sibling(name, "meta");
                self.put_json(&meta, state.meta(pending.as_ref(), Some(version)))
                    .await?;
                crate::fault::point("vault_promote_after_marked");
                if let Some(current) = &current {
                    match self.main_value(name, &mut state).await? {
                        Some(value) => {
                            held.check()?;
                            self.put_stored(&self.sibling(name, "previous"), current, &value)
                                .await?;
                            crate::fault::point("vault_promote_after_previous");
                        }
                        None => {
                            tracing::warn!(secret = %name, path = %self.main_path(name), "the current value is missing from Vault (deleted by hand?); promoting without a previous version");
                            held.check()?;
                            self.delete(&self.sibling(name, "previous")).await?;
                        }
                    }
                }
                held.check()?;
                self.put_json(&self.main_path(name), source.data.to_json())
                    .await?;
                state.current = Some(Entry {
                    version: version.clone(),
                    created_at: source.entry.created_at,
                });
                let still_pending = pending.filter(|p| p != version);
                held.check()?;
                self.put_json(&meta, state.meta(still_pending.as_ref(), None))
                    .await?;
                self.delete(&self.staged(name, version)).await?;
                Ok(Done::Ok)
            })
            .await
            .map_err(|e| self.fail(e))?;
        match done {
            Done::Ok => Ok(()),
            Done::Stale(found) => Err(versions::current_changed(
                &self.backend,
                name,
                expected_current,
                found,
            )),
            Done::Missing => Err(Error::NotFound {
                backend: self.backend.clone(),
                what: format!("version {version} of {name:?}"),
            }),
        }
    }

    pub(crate) async fn discard_pending(
        &self,
        name: &SecretName,
        version: &VersionId,
    ) -> Result<()> {
        self.locked(name, async |held| {
            let state = self.state(name).await?;
            if state.pending_id() == Some(version) {
                held.check()?;
                self.put_json(&self.sibling(name, "meta"), state.meta(None, None))
                    .await?;
                self.delete(&self.staged(name, version)).await?;
            }
            Ok(())
        })
        .await
        .map_err(|e| self.fail(e))
    }

    pub(crate) async fn read(&self, name: &SecretName, selector: &Selector) -> Result<SecretValue> {
        let missing = || Error::NotFound {
            backend: self.backend.clone(),
            what: format!("{} of {name:?}", versions::selector_text(selector)),
        };
        // A promote may move the stages between two reads: a value read from `<name>`
        // counts only if the same version was current before and after.
        for _ in 0..3 {
            let mut state = self.state(name).await.map_err(|e| self.fail(e))?;
            let id = match selector {
                Selector::Version(id) => Some(id.clone()),
                Selector::Stage(Stage::Current) => {
                    state.current.as_ref().map(|c| c.version.clone())
                }
                Selector::Stage(Stage::Previous) => {
                    state.previous.as_ref().map(|p| p.entry.version.clone())
                }
                Selector::Stage(Stage::Pending) => state.pending_id().cloned(),
            };
            let Some(id) = id else {
                return Err(missing());
            };
            let current = state.current.clone();
            let from_main = current.as_ref().is_some_and(|c| c.version == id);
            if !from_main && check_id(&id).is_err() {
                return Err(missing());
            }
            let Some(stored) = self
                .value_of(name, &mut state, &id)
                .await
                .map_err(|e| self.fail(e))?
            else {
                return Err(missing());
            };
            if from_main {
                let after = self.state(name).await.map_err(|e| self.fail(e))?;
                if after.current != current {
                    continue;
                }
            }
            return value_of(&stored.data, &self.backend, name);
        }
        Err(VaultError::Busy(format!(
            "{name:?} kept changing while it was read (rotations in quick succession): read it again"
        ))
        .into_backend(&self.backend))
    }

    pub(crate) async fn list(&self) -> Result<Vec<SecretName>> {
        list_tree(&self.conn, &format!("{}/", self.conn.mount))
            .await
            .map_err(|e| self.fail(e))
    }

    /// Deletes staged values no stage points at any more (left by interrupted promotes or
    /// by puts that a later put replaced as pending).
    pub(crate) async fn retire(&self, name: &SecretName) -> Result<usize> {
        self.locked(name, async |held| {
            let state = self.state(name).await?;
            let keep = state.pending_id().cloned();
            let staged = self.conn.list(&self.sibling(name, "staged/")).await?;
            let mut removed = 0;
            for key in staged {
                let id = VersionId::new(key);
                if Some(&id) == keep.as_ref() || check_id(&id).is_err() {
                    continue;
                }
                held.check()?;
                self.delete(&self.staged(name, &id)).await?;
                removed += 1;
            }
            Ok(removed)
        })
        .await
        .map_err(|e| self.fail(e))
    }
}

fn value_of(data: &KvData, backend: &str, name: &SecretName) -> Result<SecretValue> {
    data.to_value().ok_or_else(|| Error::Generic {
        backend: backend.to_owned(),
        message: format!(
            "the value of {name:?} in Vault has a `value_base64` field that is not base64: it was not written by rekeyd"
        ),
        status: crate::backend::ErrorStatus::Permanent,
        source: None,
    })
}
