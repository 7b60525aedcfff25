//! What a notification says: the event types, their `data`, the `{type, timestamp, data}`
//! envelope every consumer parses, and message ids (`webhook-id`).
//!
//! Ids, versions, stages and times only: a consumer reads a value from the backend, never
//! from a webhook. Nothing here can hold a [`crate::secret::SecretValue`].

use chrono::{DateTime, SecondsFormat, Utc};
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

/// The event types rekeyd sends (`type` in the envelope).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    /// A new version is stored as pending; gated secrets wait for confirmation now.
    #[serde(rename = "secret.rotation.pending")]
    RotationPending,
    /// A new version is current; the old one is previous.
    #[serde(rename = "secret.rotated")]
    Rotated,
    /// A rotation was abandoned (e.g. not confirmed in time); the current version is
    /// untouched.
    #[serde(rename = "secret.rotation.failed")]
    RotationFailed,
    /// An operator rolled the secret back: the previous version is current again and the
    /// version that was current is previous.
    #[serde(rename = "secret.rolled_back")]
    RolledBack,
    /// Several events for one target, coalesced within its `window`.
    #[serde(rename = "secret.batch")]
    Batch,
}

impl EventType {
    /// The `type` string.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::RotationPending => "secret.rotation.pending",
            EventType::Rotated => "secret.rotated",
            EventType::RotationFailed => "secret.rotation.failed",
            EventType::RolledBack => "secret.rolled_back",
            EventType::Batch => "secret.batch",
        }
    }
}

/// `data` of the secret events. Fields that do not apply to an event are left out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretEvent {
    /// The secret's name.
    pub secret: String,
    /// The backend instance (policy name) to read it from.
    pub backend: String,
    /// The version this event is about.
    pub version: String,
    /// Where that version stands now: `pending`, `current`, or `discarded`.
    pub stage: String,
    /// The version that is current (pending and failed events): consumers keep using it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    /// The version that became previous (rotated events), readable for the grace period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    /// The schedule slot the version is for (absent for manual rotations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<DateTime<Utc>>,
    /// Why the rotation ran: `schedule`, `catch_up`, `max_age`, `recovery`, `manual`,
    /// `initial`.
    pub trigger: String,
    /// Pending events of gated secrets: the targets whose confirmation is required.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub confirm: Vec<String>,
    /// Pending events of gated secrets: when the pending version is discarded unless
    /// every required target has confirmed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirm_by: Option<DateTime<Utc>>,
    /// Failed events: the step that failed (`confirm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// Failed events: why, in words (never a value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One event as it appears inside a batch: the envelope plus the id it would have had.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchItem {
    /// The event's own message id.
    pub id: String,
    /// Its type.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// When it happened.
    pub timestamp: String,
    /// Its data.
    pub data: serde_json::Value,
}

/// The Standard Webhooks envelope, serialized once (compact) and sent byte for byte.
#[derive(Serialize)]
struct Envelope<'a, T: Serialize> {
    #[serde(rename = "type")]
    kind: EventType,
    timestamp: &'a str,
    data: &'a T,
}

/// An event's timestamp as sent: RFC 3339, UTC, microseconds.
pub fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The body of a secret event.
pub fn body(kind: EventType, at: DateTime<Utc>, data: &SecretEvent) -> String {
    envelope(kind, &timestamp(at), data)
}

/// The body of a batch: `data.events` holds each event with its own id.
pub fn batch_body(at: DateTime<Utc>, items: &[BatchItem]) -> String {
    #[derive(Serialize)]
    struct Events<'a> {
        events: &'a [BatchItem],
    }
    envelope(EventType::Batch, &timestamp(at), &Events { events: items })
}

fn envelope<T: Serialize>(kind: EventType, timestamp: &str, data: &T) -> String {
    serde_json::to_string(&Envelope {
        kind,
        timestamp,
        data,
    })
    .expect("plain structs serialize")
}

/// Splits a body written by [`body`] back into a batch item (for coalescing).
pub fn batch_item(id: &str, body: &str) -> Option<BatchItem> {
    #[derive(Deserialize)]
    struct Parsed {
        #[serde(rename = "type")]
        kind: EventType,
        timestamp: String,
        data: serde_json::Value,
    }
    let parsed: Parsed = serde_json::from_str(body).ok()?;
    Some(BatchItem {
        id: id.to_owned(),
        kind: parsed.kind,
        timestamp: parsed.timestamp,
        data: parsed.data,
    })
}

/// A fresh message id: `msg_` and 32 hex digits from the system CSPRNG.
pub fn random_id(rng: &SystemRandom) -> String {
    let mut bytes = [0u8; 16];
    rng.fill(&mut bytes)
        .expect("the system random source works");
    format!("msg_{}", crate::hex::encode(&bytes))
}

/// The id of an event that happens once per (type, secret, version, target, `extra`), such
/// as a version becoming current: every process that enqueues it (the rotation, or the
/// restart that finishes it) picks the same id, so the outbox and the receiver see one
/// message. `extra` tells apart events that may repeat for one version id (a pending
/// event names the stored value by its keyed fingerprint: a retry stores a new value).
pub fn derived_id(
    kind: EventType,
    secret: &str,
    version: &str,
    target: &str,
    extra: &str,
) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for part in [kind.as_str(), secret, version, target, extra] {
        ctx.update(part.as_bytes());
        ctx.update(&[0]);
    }
    format!("msg_{}", &crate::hex::encode(ctx.finish().as_ref())[..32])
}

/// True for ids rekeyd makes (`msg_` + 32 lowercase hex): safe as file names, and free of
/// `.` as the signature scheme requires.
pub fn valid_id(id: &str) -> bool {
    id.strip_prefix("msg_").is_some_and(|hex| {
        hex.len() == 32
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn rotated() -> SecretEvent {
        SecretEvent {
            secret: "prod/db".into(),
            backend: "local".into(),
            version: "v2".into(),
            stage: "current".into(),
            previous: Some("v1".into()),
            slot: Some(Utc.with_ymd_and_hms(2030, 5, 1, 2, 30, 0).unwrap()),
            trigger: "schedule".into(),
            ..SecretEvent::default()
        }
    }

    #[test]
    fn the_envelope_is_type_timestamp_data_and_leaves_out_what_does_not_apply() {
        let at = Utc.with_ymd_and_hms(2030, 5, 1, 2, 30, 1).unwrap();
        let text = body(EventType::Rotated, at, &rotated());
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["data", "timestamp", "type"]);
        assert!(
            text.starts_with(r#"{"type":"secret.rotated","timestamp":"#),
            "{text}"
        );
        assert_eq!(json["type"], "secret.rotated");
        assert_eq!(json["timestamp"], "2030-05-01T02:30:01.000000Z");
        assert_eq!(json["data"]["previous"], "v1");
        assert_eq!(json["data"]["slot"], "2030-05-01T02:30:00Z");
        for absent in ["current", "confirm", "confirm_by", "step", "reason"] {
            assert!(json["data"].get(absent).is_none(), "{absent} in {text}");
        }
        assert!(!text.contains(' '), "compact: {text}");
    }

    #[test]
    fn a_batch_carries_each_event_with_its_id() {
        let at = Utc.with_ymd_and_hms(2030, 5, 1, 2, 30, 1).unwrap();
        let one = body(EventType::Rotated, at, &rotated());
        let item = batch_item("msg_1", &one).unwrap();
        let text = batch_body(at, &[item.clone(), item]);
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["type"], "secret.batch");
        let events = json["data"]["events"].as_array().unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0]["id"], "msg_1");
        assert_eq!(events[0]["type"], "secret.rotated");
        assert_eq!(events[0]["data"]["version"], "v2");
    }

    #[test]
    fn ids_are_random_or_derived_and_always_valid() {
        let rng = SystemRandom::new();
        let (a, b) = (random_id(&rng), random_id(&rng));
        assert_ne!(a, b);
        let d = derived_id(EventType::Rotated, "s", "v", "t", "");
        assert_eq!(d, derived_id(EventType::Rotated, "s", "v", "t", ""));
        assert_ne!(d, derived_id(EventType::Rotated, "s", "v", "u", ""));
        assert_ne!(d, derived_id(EventType::Rotated, "s", "v", "t", "fp"));
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(
            derived_id(EventType::Rotated, "ab", "c", "t", ""),
            derived_id(EventType::Rotated, "a", "bc", "t", "")
        );
        for id in [&a, &b, &d] {
            assert!(valid_id(id), "{id}");
        }
        for bad in [
            "msg_",
            "msg_../../etc",
            "x",
            "msg_0123456789abcdef0123456789ABCDEF",
        ] {
            assert!(!valid_id(bad), "{bad}");
        }
    }
}
