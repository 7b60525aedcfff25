//! Secret values and the identifiers that refer to them.
//!
//! [`SecretValue`] is the only type in rekeyd that holds secret material. It has no
//! `Display` or `Serialize`, its `Debug` prints `[REDACTED]`, and its bytes are zeroized
//! when it is dropped. Everything else ([`SecretName`], [`VersionId`], [`Stage`]) is public
//! metadata that may appear in logs, audit entries and webhooks.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use ring::digest;
use serde::{Deserialize, Serialize};

use crate::wipe::WipedVec;

/// A secret's value: bytes that must never reach a log, an error or a panic message.
#[derive(Clone)]
pub struct SecretValue(WipedVec);

impl SecretValue {
    /// Wraps bytes; the vector's whole allocation is wiped when the value is dropped.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(WipedVec::new(bytes))
    }

    /// Wraps a string's bytes.
    pub fn from_string(text: String) -> Self {
        Self::new(text.into_bytes())
    }

    /// The raw bytes. Call sites are the places a value leaves rekeyd: a backend write, `get`.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The value as UTF-8 text, if it is text.
    pub fn expose_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// Length in bytes (not secret: lengths are fixed by policy).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when the value has no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Compares two values in time independent of where they differ.
    pub fn ct_eq(&self, other: &SecretValue) -> bool {
        if self.0.len() != other.0.len() {
            return false;
        }
        self.0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue([REDACTED])")
    }
}

/// The name of a secret as written in the policy and in the backend.
///
/// Allowed characters are those AWS Secrets Manager accepts (`A-Z a-z 0-9 / _ + = . @ -`),
/// so one name works in every backend; 1 to 512 characters.
///
/// Cloning shares the text. The names of a loaded policy share one buffer: holding
/// 100,000 secrets, one allocation per name would cost more than the names, and would be
/// scattered among the parser's freed memory, which the allocator then cannot return.
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SecretName {
    /// A thin pointer (an `Arc<str>` would be two words): 16 bytes a name.
    text: Arc<Box<str>>,
    start: u32,
    end: u32,
}

/// Why a string is not a valid [`SecretName`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidName {
    /// Zero characters.
    #[error("a secret name cannot be empty")]
    Empty,
    /// Over 512 characters.
    #[error("a secret name has at most 512 characters, this one has {0}")]
    TooLong(usize),
    /// A character outside the allowed set.
    #[error(
        "character {0:?} is not allowed in a secret name (use letters, digits and / _ + = . @ -)"
    )]
    BadChar(char),
}

impl SecretName {
    /// Validates and wraps a name.
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidName> {
        let name = name.into();
        Self::check(&name)?;
        let end = name.len() as u32;
        Ok(Self {
            text: Arc::new(name.into_boxed_str()),
            start: 0,
            end,
        })
    }

    /// Whether `name` is a valid name, and if not, why.
    pub fn check(name: &str) -> Result<(), InvalidName> {
        if name.is_empty() {
            return Err(InvalidName::Empty);
        }
        let chars = name.chars().count();
        if chars > 512 {
            return Err(InvalidName::TooLong(chars));
        }
        if let Some(bad) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "/_+=.@-".contains(*c)))
        {
            return Err(InvalidName::BadChar(bad));
        }
        Ok(())
    }

    /// The name at `range` of a shared buffer of names, each already [`checked`](Self::check).
    pub(crate) fn in_buffer(buffer: &Arc<Box<str>>, range: std::ops::Range<usize>) -> Self {
        debug_assert!(Self::check(&buffer[range.clone()]).is_ok());
        Self {
            text: Arc::clone(buffer),
            start: range.start as u32,
            end: range.end as u32,
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.text[self.start as usize..self.end as usize]
    }
}

impl PartialEq for SecretName {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for SecretName {}

impl PartialOrd for SecretName {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SecretName {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl std::hash::Hash for SecretName {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl TryFrom<String> for SecretName {
    type Error = InvalidName;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<SecretName> for String {
    fn from(value: SecretName) -> Self {
        value.as_str().to_owned()
    }
}

impl fmt::Display for SecretName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for SecretName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// A version's identifier, chosen by rekeyd before the version is written.
///
/// Scheduled rotations use [`VersionId::for_slot`], so every replica and every retry that
/// rotates the same secret for the same schedule slot names the same version, and the
/// backend's idempotent put turns the duplicates into no-ops. The id is also AWS's
/// `ClientRequestToken` (32 to 64 characters), which is why it is at least 32 long.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct VersionId(String);

const SLOT_FORMAT: &str = "%Y%m%dT%H%M%SZ";
const MANUAL_FORMAT: &str = "%Y%m%dT%H%M%S%.6fZ";

impl VersionId {
    /// Wraps an id read from a backend.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The id of the version that rotates `secret` for the schedule slot `slot`:
    /// `s20261125T023000Z-` followed by 16 hex digits of SHA-256 over name and slot.
    pub fn for_slot(secret: &SecretName, slot: DateTime<Utc>) -> Self {
        Self::derive('s', secret, slot)
    }

    /// The id of a manual rotation requested at `at` (microsecond resolution): each request
    /// is a new version, and a retry that reuses the request's id repeats it idempotently.
    pub fn for_manual(secret: &SecretName, at: DateTime<Utc>) -> Self {
        Self::derive('m', secret, at)
    }

    /// The id of the rotation forced by `max_age` when the current version passes its
    /// `deadline`: derived from the deadline, so replicas agree on it.
    pub fn for_deadline(secret: &SecretName, deadline: DateTime<Utc>) -> Self {
        Self::derive('a', secret, deadline)
    }

    fn derive(kind: char, secret: &SecretName, at: DateTime<Utc>) -> Self {
        let format = if kind == 'm' {
            MANUAL_FORMAT
        } else {
            SLOT_FORMAT
        };
        let stamp = at.format(format).to_string();
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(b"rekeyd-version-v1\0");
        ctx.update(secret.as_str().as_bytes());
        ctx.update(b"\0");
        ctx.update(&[kind as u8]);
        ctx.update(stamp.as_bytes());
        let hash = ctx.finish();
        Self(format!(
            "{kind}{stamp}-{}",
            crate::hex::encode(&hash.as_ref()[..8])
        ))
    }

    /// The schedule slot this id was derived from, if rekeyd made it for a scheduled slot.
    pub fn slot(&self) -> Option<DateTime<Utc>> {
        self.stamp('s')
    }

    /// When a rekeyd-made id was requested (slot, manual request time or max-age deadline);
    /// `None` for ids rekeyd did not make.
    pub fn requested_at(&self) -> Option<DateTime<Utc>> {
        self.stamp('s')
            .or_else(|| self.stamp('m'))
            .or_else(|| self.stamp('a'))
    }

    fn stamp(&self, kind: char) -> Option<DateTime<Utc>> {
        let rest = self.0.strip_prefix(kind)?;
        let (stamp, hash) = rest.split_once('-')?;
        if hash.len() != 16 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let format = if kind == 'm' {
            MANUAL_FORMAT
        } else {
            SLOT_FORMAT
        };
        chrono::NaiveDateTime::parse_from_str(stamp, format)
            .ok()
            .map(|naive| naive.and_utc())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for VersionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for VersionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// A label that points at one version of a secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// The version readers should use.
    Current,
    /// The version that was current before the last promotion; readable for the grace period.
    Previous,
    /// A version written by a rotation in progress, not yet promoted.
    Pending,
}

impl Stage {
    /// Every stage, in display order.
    pub const ALL: [Stage; 3] = [Stage::Current, Stage::Previous, Stage::Pending];

    /// The stage's lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Current => "current",
            Stage::Previous => "previous",
            Stage::Pending => "pending",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Stage {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "current" => Ok(Stage::Current),
            "previous" => Ok(Stage::Previous),
            "pending" => Ok(Stage::Pending),
            other => Err(format!(
                "unknown stage {other:?}: expected current, previous or pending"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn debug_never_shows_the_value() {
        let value = SecretValue::from_string("canary-7f3a".to_owned());
        assert_eq!(format!("{value:?}"), "SecretValue([REDACTED])");
        assert!(!format!("{:?}", Some(&value)).contains("canary"));
    }

    #[test]
    fn constant_time_equality() {
        let a = SecretValue::new(b"abc".to_vec());
        assert!(a.ct_eq(&SecretValue::new(b"abc".to_vec())));
        assert!(!a.ct_eq(&SecretValue::new(b"abd".to_vec())));
        assert!(!a.ct_eq(&SecretValue::new(b"ab".to_vec())));
    }

    #[test]
    fn names_follow_the_aws_character_set() {
        assert!(SecretName::new("prod/db-main_pw+x=y.z@a").is_ok());
        assert_eq!(SecretName::new(""), Err(InvalidName::Empty));
        assert_eq!(SecretName::new("a b"), Err(InvalidName::BadChar(' ')));
        assert_eq!(
            SecretName::new("x".repeat(513)),
            Err(InvalidName::TooLong(513))
        );
    }

    #[test]
    fn names_in_a_shared_buffer_behave_like_names_of_their_own() {
        let buffer = Arc::new(Box::from("prod/dbapp/cache"));
        let db = SecretName::in_buffer(&buffer, 0..7);
        let cache = SecretName::in_buffer(&buffer, 11..16);
        assert_eq!(db.as_str(), "prod/db");
        assert_eq!(db, SecretName::new("prod/db").unwrap());
        assert_eq!(format!("{db} {cache:?}"), "prod/db \"cache\"");
        assert!(cache < db);
        use std::hash::BuildHasher;
        let state = std::hash::RandomState::new();
        assert_eq!(
            state.hash_one(&db),
            state.hash_one(SecretName::new("prod/db").unwrap())
        );
        assert_eq!(serde_json::to_string(&db).unwrap(), "\"prod/db\"");
        assert_eq!(String::from(cache), "cache");
    }

    #[test]
    fn slot_versions_are_deterministic_and_carry_their_slot() {
        let name = SecretName::new("prod/db").unwrap();
        let slot = Utc.with_ymd_and_hms(2026, 11, 25, 2, 30, 0).unwrap();
        let a = VersionId::for_slot(&name, slot);
        assert_eq!(a, VersionId::for_slot(&name, slot));
        assert!(a.as_str().starts_with("s20261125T023000Z-"));
        assert!((32..=64).contains(&a.as_str().len()), "AWS token length");
        assert_eq!(a.slot(), Some(slot));
        let other = SecretName::new("prod/cache").unwrap();
        assert_ne!(a, VersionId::for_slot(&other, slot));
        let manual = VersionId::for_manual(&name, slot);
        assert_ne!(a, manual);
        let later = VersionId::for_manual(&name, slot + chrono::Duration::microseconds(1));
        assert_ne!(manual, later, "quick successive requests are distinct");
        assert_eq!(
            later.requested_at(),
            Some(slot + chrono::Duration::microseconds(1))
        );
        assert!(later.as_str().len() <= 64, "AWS token length");
        assert_eq!(manual.slot(), None);
        assert_eq!(manual.requested_at(), Some(slot));
        assert_eq!(VersionId::new("EXAMPLE1-90ab-cdef").slot(), None);
    }
}
