//! The stage-moving rules of the contract, shared by the backends that keep their own
//! version lists (memory and file), so both implement `put_pending`/`promote` identically.

use chrono::{DateTime, Utc};

use crate::secret::{Stage, VersionId};

/// A version as a self-managed store keeps it; `V` is the stored value or ciphertext.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct StoredVersion<V> {
    pub(crate) id: VersionId,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) stages: Vec<Stage>,
    #[serde(flatten)]
    pub(crate) value: V,
}

/// What applying a put to a version list decided.
pub(crate) enum PutDecision {
    /// Store a new version (the caller appends it, then calls [`label_pending`]).
    Insert,
    /// The id exists; the caller compares values to choose `AlreadyPresent` or `Conflict`.
    Exists(usize),
}

pub(crate) fn decide_put<V>(versions: &[StoredVersion<V>], id: &VersionId) -> PutDecision {
    match versions.iter().position(|v| &v.id == id) {
        Some(index) => PutDecision::Exists(index),
        None => PutDecision::Insert,
    }
}

/// Points `stage` at `index` alone.
pub(crate) fn move_stage<V>(versions: &mut [StoredVersion<V>], stage: Stage, index: usize) {
    for v in versions.iter_mut() {
        v.stages.retain(|s| *s != stage);
    }
    versions[index].stages.push(stage);
    versions[index].stages.sort();
}

/// What a compare-and-swap promote decided.
pub(crate) enum Promoted {
    /// The stages moved; the caller persists the change.
    Moved,
    /// The version was current already: nothing to write.
    AlreadyCurrent,
    /// Another version is current than expected: the id found (if any).
    Stale(Option<VersionId>),
}

/// Makes `index` current if `expected` is the current version: old current → previous,
/// pending cleared if it was this version, and the old previous dropped if that was its
/// last stage.
///
/// Dropping it here rather than in `retire` saves the stores that keep no unlabelled
/// versions a second durable write per rotation: the change is one atomic write either
/// way, and no stage can name that version any more once it is made.
pub(crate) fn promote<V>(
    versions: &mut Vec<StoredVersion<V>>,
    index: usize,
    expected: Option<&VersionId>,
) -> Promoted {
    if versions[index].stages.contains(&Stage::Current) {
        return Promoted::AlreadyCurrent;
    }
    let found = versions
        .iter()
        .find(|v| v.stages.contains(&Stage::Current))
        .map(|v| v.id.clone());
    if found.as_ref() != expected {
        return Promoted::Stale(found);
    }
    let old_previous = versions
        .iter()
        .position(|v| v.stages.contains(&Stage::Previous));
    if let Some(old) = versions
        .iter()
        .position(|v| v.stages.contains(&Stage::Current))
    {
        move_stage(versions, Stage::Previous, old);
    }
    move_stage(versions, Stage::Current, index);
    versions[index].stages.retain(|s| *s != Stage::Pending);
    if let Some(old) = old_previous
        && versions[old].stages.is_empty()
    {
        versions.remove(old);
    }
    Promoted::Moved
}

/// The error for a stale promote.
pub(crate) fn current_changed(
    backend: &str,
    name: &crate::secret::SecretName,
    expected: Option<&VersionId>,
    found: Option<VersionId>,
) -> super::Error {
    let text = |v: Option<&VersionId>| v.map_or_else(|| "none".to_owned(), ToString::to_string);
    super::Error::CurrentChanged {
        backend: backend.to_owned(),
        secret: name.clone(),
        expected: text(expected),
        found: text(found.as_ref()),
    }
}

/// Removes `pending` from the version `id` if it holds it. Returns whether it did.
pub(crate) fn unlabel_pending<V>(versions: &mut [StoredVersion<V>], id: &VersionId) -> bool {
    match versions.iter_mut().find(|v| &v.id == id) {
        Some(v) if v.stages.contains(&Stage::Pending) => {
            v.stages.retain(|s| *s != Stage::Pending);
            true
        }
        _ => false,
    }
}

/// Drops versions no stage points at; returns how many.
pub(crate) fn drop_unlabelled<V>(versions: &mut Vec<StoredVersion<V>>) -> usize {
    let before = versions.len();
    versions.retain(|v| !v.stages.is_empty());
    before - versions.len()
}

pub(crate) fn find_index<V>(
    versions: &[StoredVersion<V>],
    selector: &super::Selector,
) -> Option<usize> {
    versions.iter().position(|v| match selector {
        super::Selector::Stage(stage) => v.stages.contains(stage),
        super::Selector::Version(id) => &v.id == id,
    })
}

pub(crate) fn describe<V>(versions: &[StoredVersion<V>]) -> Vec<super::VersionInfo> {
    versions
        .iter()
        .map(|v| super::VersionInfo {
            id: v.id.clone(),
            created_at: v.created_at,
            stages: v.stages.clone(),
        })
        .collect()
}

pub(crate) fn selector_text(selector: &super::Selector) -> String {
    match selector {
        super::Selector::Stage(stage) => format!("stage {stage}"),
        super::Selector::Version(id) => format!("version {id}"),
    }
}
