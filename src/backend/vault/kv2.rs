//! KV v2: the secret's own versions, check-and-set on every data write, the stage
//! mapping in the secret's `custom_metadata`.
//!
//! - **Current** is the latest version of `<mount>/data/<name>`: what `vault kv get` and
//!   Vault Agent templates read. Every promote writes exactly one new version there, with
//!   `cas` set to the version rekeyd last saw, so **previous** is always the version
//!   before it, readable with `vault kv get -version=N` while `max_versions` keeps it.
//! - **Pending** waits at the sibling `<name>__rekeyd/pending` (`{version, created_at,
//!   data}`), written with `cas` too: readers of `<name>` never see it.
//! - `custom_metadata` of `<name>` maps Vault version numbers to rekeyd ids:
//!   `rekeyd_current` / `rekeyd_current_version`, `rekeyd_previous` /
//!   `rekeyd_previous_version` (ids and numbers only, never a value).
//!
//! Vault offers no check-and-set on metadata, so the mapping is written after the data
//! write it describes, only by the writer whose `cas` won that version, and only while
//! that version is still the latest. Every pair it holds is therefore true; it may lag.
//! A latest version the mapping does not name is identified by comparing its value with
//! the pending sibling's (the promote that wrote it stopped before the metadata write),
//! or else reported as `vault-v<N>` (someone wrote it by hand): rekeyd rotates over it
//! with `cas`, never blindly.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::data::{KvData, wipe_json};
use super::error::VaultError;
use super::{Conn, Method, Request, SIBLING, list_tree};
use crate::backend::{
    Error, PutOutcome, Result, SecretDescription, Selector, VersionInfo, versions,
};
use crate::secret::{SecretName, SecretValue, Stage, VersionId};

const CURRENT: &str = "rekeyd_current";
const CURRENT_VERSION: &str = "rekeyd_current_version";
const PREVIOUS: &str = "rekeyd_previous";
const PREVIOUS_VERSION: &str = "rekeyd_previous_version";
/// Ids rekeyd gives Vault versions it did not write (or cannot attribute).
const FOREIGN_PREFIX: &str = "vault-v";
/// How often a put re-reads after losing a `cas` race on the pending sibling.
const PUT_ATTEMPTS: usize = 5;

/// The KV v2 engine of one backend.
pub(crate) struct Kv2 {
    backend: String,
    conn: Arc<Conn>,
    max_versions: Option<u32>,
}

#[derive(serde::Deserialize)]
struct MetadataWire {
    #[serde(default)]
    current_version: u64,
    #[serde(default)]
    max_versions: u64,
    #[serde(default)]
    custom_metadata: Option<HashMap<String, String>>,
    #[serde(default)]
    versions: HashMap<String, VersionWire>,
}

#[derive(serde::Deserialize)]
struct VersionWire {
    #[serde(default)]
    created_time: String,
    #[serde(default)]
    deletion_time: String,
    #[serde(default)]
    destroyed: bool,
}

/// A key's metadata, as rekeyd uses it.
struct Metadata {
    current_version: u64,
    max_versions: u64,
    custom: HashMap<String, String>,
    versions: HashMap<u64, VersionWire>,
}

impl Metadata {
    fn live(&self, n: u64) -> bool {
        self.versions
            .get(&n)
            .is_some_and(|v| v.deletion_time.is_empty() && !v.destroyed)
    }

    fn created(&self, n: u64) -> DateTime<Utc> {
        self.versions
            .get(&n)
            .and_then(|v| DateTime::parse_from_rfc3339(&v.created_time).ok())
            .map_or(DateTime::<Utc>::UNIX_EPOCH, |t| t.with_timezone(&Utc))
    }

    /// The rekeyd id the mapping gives version `n`.
    fn mapped(&self, n: u64) -> Option<VersionId> {
        let number = n.to_string();
        [(CURRENT, CURRENT_VERSION), (PREVIOUS, PREVIOUS_VERSION)]
            .iter()
            .find(|(_, num)| self.custom.get(*num) == Some(&number))
            .and_then(|(id, _)| self.custom.get(*id))
            .map(|id| VersionId::new(id.clone()))
    }
}

/// A version of the main key: its number and rekeyd id.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Slot {
    number: u64,
    id: VersionId,
    created_at: DateTime<Utc>,
}

/// The pending sibling's latest readable version.
struct Pending {
    /// Its version number at the sibling path.
    number: u64,
    id: VersionId,
    created_at: DateTime<Utc>,
    data: KvData,
}

#[derive(serde::Deserialize)]
struct PendingWire {
    version: String,
    created_at: DateTime<Utc>,
    data: Value,
}

/// Where a secret stands.
struct State {
    main: Option<Metadata>,
    sibling: Option<Metadata>,
    pending_raw: Option<Pending>,
    current: Option<Slot>,
    previous: Option<Slot>,
    /// The current version's id came from the mapping (not from a value comparison).
    current_mapped: bool,
}

impl State {
    fn pending(&self) -> Option<&Pending> {
        self.pending_raw.as_ref().filter(|p| {
            self.current.as_ref().is_none_or(|c| c.id != p.id)
                && self.previous.as_ref().is_none_or(|c| c.id != p.id)
        })
    }

    fn exists(&self) -> bool {
        self.main.as_ref().is_some_and(|m| m.current_version > 0) || self.pending_raw.is_some()
    }
}

impl Kv2 {
    pub(crate) fn new(backend: &str, conn: Arc<Conn>, max_versions: Option<u32>) -> Self {
        Self {
            backend: backend.to_owned(),
            conn,
            max_versions,
        }
    }

    fn fail(&self, e: VaultError) -> Error {
        e.into_backend(&self.backend)
    }

    fn path(&self, kind: &str, name: &SecretName) -> String {
        format!("{}/{kind}/{name}", self.conn.mount)
    }

    fn sibling(&self, kind: &str, name: &SecretName) -> String {
        format!("{}/{kind}/{name}{SIBLING}/pending", self.conn.mount)
    }

    async fn metadata(&self, path: &str) -> std::result::Result<Option<Metadata>, VaultError> {
        let Some(reply) = self.conn.get(path).await? else {
            return Ok(None);
        };
        let wire: MetadataWire = reply.data()?;
        Ok(Some(Metadata {
            current_version: wire.current_version,
            max_versions: wire.max_versions,
            custom: wire.custom_metadata.unwrap_or_default(),
            versions: wire
                .versions
                .into_iter()
                .filter_map(|(k, v)| k.parse().ok().map(|n| (n, v)))
                .collect(),
        }))
    }

    /// The data object of version `n` at a data path; `None` if it is gone.
    async fn version_data(
        &self,
        path: &str,
        n: u64,
    ) -> std::result::Result<Option<Value>, VaultError> {
        #[derive(serde::Deserialize)]
        struct Wire {
            data: Option<Value>,
        }
        let request = Request::new(Method::Get, path).query(format!("version={n}"));
        match self.conn.send(&request).await {
            Ok(reply) => Ok(reply.data::<Wire>()?.data),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn main_value(
        &self,
        name: &SecretName,
        n: u64,
    ) -> std::result::Result<Option<KvData>, VaultError> {
        let path = self.path("data", name);
        match self.version_data(&path, n).await? {
            None => Ok(None),
            Some(value) => {
                KvData::from_json(value)
                    .map(Some)
                    .ok_or_else(|| VaultError::BadAnswer {
                        path,
                        detail: format!("version {n} is not a JSON object"),
                    })
            }
        }
    }

    async fn state(&self, name: &SecretName) -> std::result::Result<State, VaultError> {
        let main = self.metadata(&self.path("metadata", name)).await?;
        let sibling = self.metadata(&self.sibling("metadata", name)).await?;
        let mut pending_raw = None;
        if let Some(s) = &sibling
            && s.live(s.current_version)
        {
            let path = self.sibling("data", name);
            if let Some(value) = self.version_data(&path, s.current_version).await? {
                let wire: PendingWire =
                    serde_json::from_value(value).map_err(|_| VaultError::BadAnswer {
                        path: path.clone(),
                        detail: "not a rekeyd pending record ({version, created_at, data})"
                            .to_owned(),
                    })?;
                let data = KvData::from_json(wire.data).ok_or_else(|| VaultError::BadAnswer {
                    path: path.clone(),
                    detail: "`data` is not a JSON object".to_owned(),
                })?;
                pending_raw = Some(Pending {
                    number: s.current_version,
                    id: VersionId::new(wire.version),
                    created_at: wire.created_at,
                    data,
                });
            }
        }
        let mut current = None;
        let mut previous = None;
        let mut current_mapped = false;
        if let Some(m) = &main {
            let latest = m.current_version;
            if latest > 0 && m.live(latest) {
                let id = match m.mapped(latest) {
                    Some(id) => {
                        current_mapped = true;
                        id
                    }
                    None => self.attribute(name, latest, pending_raw.as_ref()).await?,
                };
                current = Some(Slot {
                    number: latest,
                    id,
                    created_at: m.created(latest),
                });
                let before = latest - 1;
                if before > 0 && m.live(before) {
                    previous = Some(Slot {
                        number: before,
                        id: m.mapped(before).unwrap_or_else(|| foreign(before)),
                        created_at: m.created(before),
                    });
                }
            }
        }
        Ok(State {
            main,
            sibling,
            pending_raw,
            current,
            previous,
            current_mapped,
        })
    }

    /// The id of a latest version the mapping does not name: the pending version if it
    /// holds the same value (its promote stopped before writing the mapping), else foreign.
    async fn attribute(
        &self,
        name: &SecretName,
        n: u64,
        pending: Option<&Pending>,
    ) -> std::result::Result<VersionId, VaultError> {
        if let Some(p) = pending
            && let Some(value) = self.main_value(name, n).await?
            && value.same_value(&p.data)
        {
            return Ok(p.id.clone());
        }
        Ok(foreign(n))
    }

    pub(crate) async fn describe(&self, name: &SecretName) -> Result<SecretDescription> {
        let state = self.state(name).await.map_err(|e| self.fail(e))?;
        if !state.exists() {
            return Err(Error::NotFound {
                backend: self.backend.clone(),
                what: format!("secret {name:?}"),
            });
        }
        let mut versions = Vec::new();
        for (slot, stage) in [
            (&state.previous, Stage::Previous),
            (&state.current, Stage::Current),
        ] {
            if let Some(s) = slot {
                versions.push(VersionInfo {
                    id: s.id.clone(),
                    created_at: s.created_at,
                    stages: vec![stage],
                });
            }
        }
        if let Some(p) = state.pending() {
            versions.push(VersionInfo {
                id: p.id.clone(),
                created_at: p.created_at,
                stages: vec![Stage::Pending],
            });
        }
        Ok(SecretDescription {
            name: name.clone(),
            versions,
        })
    }

    /// The value version `id` holds, from the state; `None` when no stage names it.
    async fn value_of(
        &self,
        name: &SecretName,
        state: &mut State,
        id: &VersionId,
    ) -> std::result::Result<Option<KvData>, VaultError> {
        for slot in [&state.current, &state.previous].into_iter().flatten() {
            if &slot.id == id {
                return self.main_value(name, slot.number).await;
            }
        }
        if state.pending().is_some_and(|p| &p.id == id) {
            return Ok(state.pending_raw.take().map(|p| p.data));
        }
        Ok(None)
    }

    /// Like `value_of`, but also finds a version that a later put replaced as pending
    /// (still promotable until `retire`), in the pending sibling's older versions.
    async fn any_value_of(
        &self,
        name: &SecretName,
        state: &mut State,
        id: &VersionId,
    ) -> std::result::Result<Option<KvData>, VaultError> {
        if let Some(found) = self.value_of(name, state, id).await? {
            return Ok(Some(found));
        }
        if let Some(p) = state.pending_raw.take_if(|p| &p.id == id) {
            return Ok(Some(p.data));
        }
        let Some(sibling) = &state.sibling else {
            return Ok(None);
        };
        let mut older: Vec<u64> = sibling
            .versions
            .keys()
            .copied()
            .filter(|n| *n != sibling.current_version && sibling.live(*n))
            .collect();
        older.sort_unstable_by(|a, b| b.cmp(a));
        let path = self.sibling("data", name);
        for n in older {
            let Some(mut value) = self.version_data(&path, n).await? else {
                continue;
            };
            let Ok(wire) = serde_json::from_value::<PendingWire>(value.clone()) else {
                wipe_json(&mut value);
                continue;
            };
            wipe_json(&mut value);
            let data = KvData::from_json(wire.data);
            if wire.version == id.as_str() {
                return Ok(data);
            }
        }
        Ok(None)
    }

    pub(crate) async fn put_pending(
        &self,
        name: &SecretName,
        version: &VersionId,
        value: &SecretValue,
    ) -> Result<PutOutcome> {
        let wanted = KvData::from_value(value);
        for _ in 0..PUT_ATTEMPTS {
            let mut state = self.state(name).await.map_err(|e| self.fail(e))?;
            let existing = self
                .any_value_of(name, &mut state, version)
                .await
                .map_err(|e| self.fail(e))?;
            if let Some(existing) = existing {
                return if existing.same_value(&wanted) {
                    Ok(PutOutcome::AlreadyPresent)
                } else {
                    Err(Error::Conflict {
                        backend: self.backend.clone(),
                        secret: name.clone(),
                        version: version.clone(),
                    })
                };
            }
            // The pending sibling may be the only record of which version is current
            // (a promote stopped before its mapping): record that before replacing it.
            self.heal(name, &state).await.map_err(|e| self.fail(e))?;
            let cas = state.sibling.as_ref().map_or(0, |s| s.current_version);
            let mut body = json!({
                "options": { "cas": cas },
                "data": {
                    "version": version.as_str(),
                    "created_at": Utc::now(),
                    "data": wanted.to_json(),
                },
            });
            let request = Request::post(self.sibling("data", name), &body);
            wipe_json(&mut body);
            match self.write(&request).await {
                Ok(_) => return Ok(PutOutcome::Created),
                // Another writer moved pending in between: look again.
                Err(VaultError::CasMismatch { .. }) => continue,
                Err(e) => return Err(self.fail(e)),
            }
        }
        Err(self.fail(VaultError::Busy(format!(
            "the pending value of {name:?} kept changing under other writers ({PUT_ATTEMPTS} check-and-set attempts lost): it retries"
        ))))
    }

    /// A data write; its answer names the version it created. A KV v1 mount would have
    /// stored the body as a literal key and answered with nothing: say so.
    async fn write(&self, request: &Request) -> std::result::Result<u64, VaultError> {
        #[derive(serde::Deserialize)]
        struct Written {
            version: u64,
        }
        let reply = self.conn.send(request).await?;
        if reply.is_empty() {
            return Err(VaultError::WrongMount(format!(
                "writing `{}` returned no version: `{}/` is not a KV version 2 mount (the request was stored as a plain key there; delete it) — set kv_version = 1",
                request.path(),
                self.conn.mount
            )));
        }
        Ok(reply.data::<Written>()?.version)
    }

    pub(crate) async fn promote(
        &self,
        name: &SecretName,
        version: &VersionId,
        expected_current: Option<&VersionId>,
    ) -> Result<()> {
        let fail = |e| self.fail(e);
        let mut state = self.state(name).await.map_err(fail)?;
        let found = state.current.as_ref().map(|c| c.id.clone());
        if found.as_ref() == Some(version) {
            return self.heal(name, &state).await.map_err(fail);
        }
        if found.as_ref() != expected_current {
            return Err(versions::current_changed(
                &self.backend,
                name,
                expected_current,
                found,
            ));
        }
        let Some(source) = self
            .any_value_of(name, &mut state, version)
            .await
            .map_err(fail)?
        else {
            return Err(Error::NotFound {
                backend: self.backend.clone(),
                what: format!("version {version} of {name:?}"),
            });
        };
        let latest = state.main.as_ref().map_or(0, |m| m.current_version);
        if let Some(max) = self.max_versions
            && state
                .main
                .as_ref()
                .is_none_or(|m| m.max_versions != u64::from(max))
        {
            let request =
                Request::post(self.path("metadata", name), &json!({ "max_versions": max }));
            self.conn.send(&request).await.map_err(fail)?;
        }
        let mut body = json!({ "options": { "cas": latest }, "data": source.to_json() });
        let request = Request::post(self.path("data", name), &body);
        wipe_json(&mut body);
        drop(source);
        let written = match self.write(&request).await {
            Ok(n) => n,
            Err(VaultError::CasMismatch { .. }) => {
                // Someone wrote in between: done if it was this very version (a replica),
                // otherwise the caller decides again.
                let after = self.state(name).await.map_err(fail)?;
                let found = after.current.map(|c| c.id);
                return if found.as_ref() == Some(version) {
                    Ok(())
                } else {
                    Err(versions::current_changed(
                        &self.backend,
                        name,
                        expected_current,
                        found,
                    ))
                };
            }
            Err(e) => return Err(fail(e)),
        };
        self.record_mapping(name, written, version, state.current.as_ref())
            .await
            .map_err(fail)
    }

    /// Records the mapping for a current version that was identified by its value only.
    async fn heal(&self, name: &SecretName, state: &State) -> std::result::Result<(), VaultError> {
        match &state.current {
            Some(current)
                if !state.current_mapped && !current.id.as_str().starts_with(FOREIGN_PREFIX) =>
            {
                self.record_mapping(name, current.number, &current.id, state.previous.as_ref())
                    .await
            }
            _ => Ok(()),
        }
    }

    /// Writes the stage mapping for the version this promote won, unless a later version
    /// exists already (whose writer records its own).
    async fn record_mapping(
        &self,
        name: &SecretName,
        written: u64,
        version: &VersionId,
        previous: Option<&Slot>,
    ) -> std::result::Result<(), VaultError> {
        let path = self.path("metadata", name);
        let Some(meta) = self.metadata(&path).await? else {
            return Ok(());
        };
        if meta.current_version != written {
            return Ok(());
        }
        let mut custom: HashMap<String, String> = meta
            .custom
            .into_iter()
            .filter(|(k, _)| {
                ![CURRENT, CURRENT_VERSION, PREVIOUS, PREVIOUS_VERSION].contains(&k.as_str())
            })
            .collect();
        custom.insert(CURRENT.to_owned(), version.to_string());
        custom.insert(CURRENT_VERSION.to_owned(), written.to_string());
        if let Some(p) = previous {
            custom.insert(PREVIOUS.to_owned(), p.id.to_string());
            custom.insert(PREVIOUS_VERSION.to_owned(), p.number.to_string());
        }
        let request = Request::post(&path, &json!({ "custom_metadata": custom }));
        self.conn.send(&request).await.map(drop)
    }

    pub(crate) async fn discard_pending(
        &self,
        name: &SecretName,
        version: &VersionId,
    ) -> Result<()> {
        let state = self.state(name).await.map_err(|e| self.fail(e))?;
        if let Some(p) = state.pending().filter(|p| &p.id == version) {
            self.destroy(&self.sibling("destroy", name), &[p.number])
                .await
                .map_err(|e| self.fail(e))?;
        }
        Ok(())
    }

    /// Permanently removes versions of a key (version-specific: a concurrent write of a
    /// newer version is untouched).
    async fn destroy(&self, path: &str, numbers: &[u64]) -> std::result::Result<(), VaultError> {
        let request = Request::post(path, &json!({ "versions": numbers }));
        self.conn.send(&request).await.map(drop)
    }

    pub(crate) async fn read(&self, name: &SecretName, selector: &Selector) -> Result<SecretValue> {
        let mut state = self.state(name).await.map_err(|e| self.fail(e))?;
        let id = match selector {
            Selector::Version(id) => Some(id.clone()),
            Selector::Stage(Stage::Current) => state.current.as_ref().map(|s| s.id.clone()),
            Selector::Stage(Stage::Previous) => state.previous.as_ref().map(|s| s.id.clone()),
            Selector::Stage(Stage::Pending) => state.pending().map(|p| p.id.clone()),
        };
        let data = match id {
            Some(id) => self
                .value_of(name, &mut state, &id)
                .await
                .map_err(|e| self.fail(e))?,
            None => None,
        };
        let Some(data) = data else {
            return Err(Error::NotFound {
                backend: self.backend.clone(),
                what: format!("{} of {name:?}", versions::selector_text(selector)),
            });
        };
        data.to_value().ok_or_else(|| Error::Generic {
            backend: self.backend.clone(),
            message: format!(
                "the value of {name:?} in Vault has a `value_base64` field that is not base64: it was not written by rekeyd"
            ),
            status: crate::backend::ErrorStatus::Permanent,
            source: None,
        })
    }

    pub(crate) async fn list(&self) -> Result<Vec<SecretName>> {
        list_tree(&self.conn, &format!("{}/metadata/", self.conn.mount))
            .await
            .map_err(|e| self.fail(e))
    }

    /// Destroys the pending sibling's versions that are no longer needed: older ones, and
    /// the latest once the mapping records it as promoted. The main key's versions are
    /// Vault's to prune (`max_versions`), so `previous` stays readable by number.
    pub(crate) async fn retire(&self, name: &SecretName) -> Result<usize> {
        let state = self.state(name).await.map_err(|e| self.fail(e))?;
        let Some(sibling) = &state.sibling else {
            return Ok(0);
        };
        let promoted = state.current_mapped
            && state.pending_raw.as_ref().is_some_and(|p| {
                state.current.as_ref().is_some_and(|c| c.id == p.id)
                    || state.previous.as_ref().is_some_and(|c| c.id == p.id)
            });
        let mut doomed: Vec<u64> = sibling
            .versions
            .keys()
            .copied()
            .filter(|n| sibling.live(*n) && (*n != sibling.current_version || promoted))
            .collect();
        doomed.sort_unstable();
        if !doomed.is_empty() {
            self.destroy(&self.sibling("destroy", name), &doomed)
                .await
                .map_err(|e| self.fail(e))?;
        }
        Ok(doomed.len())
    }
}

fn foreign(n: u64) -> VersionId {
    VersionId::new(format!("{FOREIGN_PREFIX}{n}"))
}
