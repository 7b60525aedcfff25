//! How a rekeyd value maps onto a Vault KV data object, so applications and Vault Agent
//! templates that read the secret keep working.
//!
//! - A value that is a flat-enough JSON object, written the way rekeyd's JSON generator
//!   writes it (compact, keys sorted), maps to its own fields: `{"username": "app",
//!   "password": "…"}` is read by a template as `.Data.data.password` (KV v2) or
//!   `.Data.password` (KV v1).
//! - Any other text value is stored under one field, `value`.
//! - Bytes that are not UTF-8 are stored base64-encoded under `value_base64`.
//!
//! The mapping is one to one: reading back gives the exact bytes written, which is what
//! makes a repeated `put_pending` recognisable as the same value.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value};

use crate::secret::SecretValue;
pub(crate) use crate::wipe::wipe_json;
use crate::wipe::{WipedVec, json_object_bytes};

/// The single field a non-object text value is stored under.
pub(crate) const VALUE_FIELD: &str = "value";
/// The single field a binary value is stored under.
pub(crate) const BINARY_FIELD: &str = "value_base64";
/// Integers beyond this are not sure to survive a JSON round trip through other tools.
const SAFE_INTEGER: u64 = (1 << 53) - 1;

/// A KV data object holding secret fields; every string is zeroized on drop.
///
/// Not `Debug`, so it cannot end up in a log line.
pub(crate) struct KvData(pub(crate) Map<String, Value>);

impl Drop for KvData {
    fn drop(&mut self) {
        for v in self.0.values_mut() {
            wipe_json(v);
        }
    }
}

impl KvData {
    /// The data object for `value`.
    pub(crate) fn from_value(value: &SecretValue) -> KvData {
        if let Some(fields) = as_fields(value) {
            return KvData(fields);
        }
        let mut map = Map::new();
        match value.expose_str() {
            Some(text) => map.insert(VALUE_FIELD.to_owned(), Value::String(text.to_owned())),
            None => map.insert(
                BINARY_FIELD.to_owned(),
                Value::String(STANDARD.encode(value.expose())),
            ),
        };
        KvData(map)
    }

    /// The value this data object holds; `None` when it is not one rekeyd could have written
    /// (a `value_base64` field that is not base64).
    pub(crate) fn to_value(&self) -> Option<SecretValue> {
        if self.0.len() == 1 {
            match self.0.iter().next() {
                Some((k, Value::String(text))) if k == VALUE_FIELD => {
                    return Some(SecretValue::new(text.as_bytes().to_vec()));
                }
                Some((k, Value::String(text))) if k == BINARY_FIELD => {
                    return STANDARD.decode(text).ok().map(SecretValue::new);
                }
                _ => {}
            }
        }
        Some(SecretValue::new(canonical(&self.0).into_vec()))
    }

    /// Takes the object in a JSON value (Vault's `data` field); `None` if it is not one.
    pub(crate) fn from_json(value: Value) -> Option<KvData> {
        match value {
            Value::Object(map) => Some(KvData(map)),
            mut other => {
                wipe_json(&mut other);
                None
            }
        }
    }

    /// The data object as a JSON value, for a request body.
    pub(crate) fn to_json(&self) -> Value {
        Value::Object(self.0.clone())
    }

    /// Whether two data objects hold the same value, compared without early exit.
    pub(crate) fn same_value(&self, other: &KvData) -> bool {
        match (self.to_value(), other.to_value()) {
            (Some(a), Some(b)) => a.ct_eq(&b),
            _ => false,
        }
    }
}

/// Compact JSON with sorted keys (serde_json's map is ordered), in a buffer that never
/// grew, so no unwiped partial copy is left behind.
fn canonical(map: &Map<String, Value>) -> WipedVec {
    json_object_bytes(map)
}

/// The fields of `value` when it is a JSON object that maps one to one onto KV fields: a
/// non-empty object, no floats, integers within ±2^53, written compactly with sorted keys,
/// and not a lone `value` / `value_base64` field (which would read back as a wrapper).
fn as_fields(value: &SecretValue) -> Option<Map<String, Value>> {
    let bytes = value.expose();
    if bytes.first() != Some(&b'{') {
        return None;
    }
    let parsed: Value = serde_json::from_slice(bytes).ok()?;
    let mut data = KvData::from_json(parsed)?;
    let fits = !data.0.is_empty()
        && !(data.0.len() == 1
            && (data.0.contains_key(VALUE_FIELD) || data.0.contains_key(BINARY_FIELD)))
        && data.0.values().all(plain)
        && canonical(&data.0).as_slice() == bytes;
    if fits {
        Some(std::mem::take(&mut data.0))
    } else {
        None
    }
}

fn plain(value: &Value) -> bool {
    match value {
        Value::Number(n) => n
            .as_i64()
            .map(|i| i.unsigned_abs() <= SAFE_INTEGER)
            .or_else(|| n.as_u64().map(|u| u <= SAFE_INTEGER))
            .unwrap_or(false),
        Value::Array(items) => items.iter().all(plain),
        Value::Object(fields) => fields.values().all(plain),
        Value::Null | Value::Bool(_) | Value::String(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(bytes: &[u8]) -> (Map<String, Value>, Vec<u8>) {
        let value = SecretValue::new(bytes.to_vec());
        let data = KvData::from_value(&value);
        // Through JSON text, as Vault would store and return it.
        let text = serde_json::to_string(&data.to_json()).unwrap();
        let back = KvData::from_json(serde_json::from_str(&text).unwrap()).unwrap();
        (data.0.clone(), back.to_value().unwrap().expose().to_vec())
    }

    #[test]
    fn a_generated_json_object_maps_to_its_fields() {
        let text = br#"{"host":"db","password":"s3cret","port":5432,"tls":true}"#;
        let (fields, back) = round_trip(text);
        assert_eq!(fields["password"], "s3cret");
        assert_eq!(fields["port"], 5432);
        assert_eq!(back, text);
    }

    #[test]
    fn other_text_goes_under_value_and_bytes_under_value_base64() {
        for text in [
            &b"hunter2-but-longer"[..],
            b"-----BEGIN PRIVATE KEY-----\nMC4CAQ\n-----END PRIVATE KEY-----\n",
            // JSON, but not as the generator writes it: must come back byte for byte.
            br#"{ "b": 1, "a": 2 }"#,
            br#"{"value":"x"}"#,
            br#"{"f":1.5}"#,
            br#"{"big":9007199254740993}"#,
            b"{}",
            b"",
        ] {
            let (fields, back) = round_trip(text);
            assert_eq!(fields.len(), 1, "{fields:?}");
            assert!(fields.contains_key(VALUE_FIELD));
            assert_eq!(back, text);
        }
        let binary: Vec<u8> = (0..=255u8).collect();
        let (fields, back) = round_trip(&binary);
        assert!(fields.contains_key(BINARY_FIELD));
        assert_eq!(back, binary);
    }

    #[test]
    fn equal_values_compare_equal_whatever_the_field_order_vault_returns() {
        let ours = KvData::from_value(&SecretValue::new(br#"{"a":"1","b":"2"}"#.to_vec()));
        let theirs =
            KvData::from_json(serde_json::from_str(r#"{"b":"2","a":"1"}"#).unwrap()).unwrap();
        assert!(ours.same_value(&theirs));
        let other =
            KvData::from_json(serde_json::from_str(r#"{"b":"2","a":"x"}"#).unwrap()).unwrap();
        assert!(!ours.same_value(&other));
    }
}
