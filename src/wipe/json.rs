//! JSON holding secrets: wiping a parsed tree's strings, and writing a tree as text into
//! a buffer that never grows.
//!
//! A `Vec` that grows while JSON is written into it reallocates, and the blocks it leaves
//! behind hold the start of the text, unwiped. Sizing the buffer first from a walk of the
//! tree (an upper bound, cheaper than a counting serialization pass) leaves one
//! allocation, wiped as a whole when dropped.

use serde_json::{Map, Value};

use super::{WipedVec, wipe_string};

/// Zeroizes every string in `value`; keys are field names, not secrets.
pub(crate) fn wipe_json(value: &mut Value) {
    match value {
        Value::String(text) => wipe_string(text),
        Value::Array(items) => items.iter_mut().for_each(wipe_json),
        Value::Object(fields) => fields.values_mut().for_each(wipe_json),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// `value` as compact JSON text, in a buffer that was never reallocated.
pub(crate) fn json_bytes(value: &Value) -> WipedVec {
    write_sized(json_len_bound(value), value)
}

/// A JSON object's fields as compact JSON text, in a buffer that was never reallocated.
pub(crate) fn json_object_bytes(fields: &Map<String, Value>) -> WipedVec {
    write_sized(object_len_bound(fields), fields)
}

fn write_sized(bound: usize, value: &impl serde::Serialize) -> WipedVec {
    let mut out = WipedVec::new(Vec::with_capacity(bound));
    let capacity = out.capacity();
    // Writing JSON values (string keys) to memory cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
    debug_assert_eq!(out.capacity(), capacity, "the bound held");
    out
}

/// At least the length of `value` written as compact JSON, found without writing it.
fn json_len_bound(value: &Value) -> usize {
    match value {
        Value::Null => "null".len(),
        Value::Bool(_) => "false".len(),
        // Not secret, and rare in secrets: written out to count exactly.
        Value::Number(number) => number.to_string().len(),
        Value::String(text) => quoted_len_bound(text),
        // Brackets, commas between items.
        Value::Array(items) => {
            2 + items.len().saturating_sub(1) + items.iter().map(json_len_bound).sum::<usize>()
        }
        Value::Object(fields) => object_len_bound(fields),
    }
}

/// Braces, commas between fields, and a colon in each.
fn object_len_bound(fields: &Map<String, Value>) -> usize {
    2 + fields.len().saturating_sub(1)
        + fields
            .iter()
            .map(|(key, value)| quoted_len_bound(key) + 1 + json_len_bound(value))
            .sum::<usize>()
}

/// At least the length of `text` as a JSON string: quotes, and the bytes JSON escapes
/// (`"`, `\` and controls below 0x20) counted at the longest escape, six bytes
/// (`\u001f`), though `\n` and the like take two.
fn quoted_len_bound(text: &str) -> usize {
    let escaped = text
        .bytes()
        .filter(|&b| b < 0x20 || b == b'"' || b == b'\\')
        .count();
    2 + text.len() + 5 * escaped
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_length_bound_covers_every_kind_of_value() {
        let values = [
            json!(null),
            json!(true),
            json!(false),
            json!(i64::MIN),
            json!(u64::MAX),
            json!(-1.234_567_890_123_456_7e-308),
            json!(0.1),
            json!(""),
            json!("plain"),
            json!("quote \" backslash \\ newline \n tab \t bell \u{7} unit \u{1f} del \u{7f}"),
            json!("non-ASCII: é ✓ 🔑"),
            json!([]),
            json!({}),
            json!([1, "two", [3, {"four": null}], {}]),
            json!({"a\n": {"b": ["c\"", 2.5, false]}, "": ""}),
        ];
        for value in values {
            let written = serde_json::to_vec(&value).unwrap();
            let bound = json_len_bound(&value);
            assert!(
                bound >= written.len(),
                "{value}: bound {bound} < {}",
                written.len()
            );
            // Written into a buffer of exactly the bound: the same text, never grown.
            let ours = json_bytes(&value);
            assert_eq!(&ours[..], &written[..]);
            assert_eq!(ours.capacity(), bound, "{value}: the buffer grew");
            if let Value::Object(fields) = &value {
                assert_eq!(&json_object_bytes(fields)[..], &written[..]);
            }
        }
        // Exact for what key pairs hold: strings without controls, and plain structure.
        let plain = json!({"type": "ed25519", "jwk": {"x": "abc", "kid": "d-_"}, "n": [1, 2]});
        assert_eq!(
            json_len_bound(&plain),
            serde_json::to_vec(&plain).unwrap().len()
        );
    }

    #[test]
    fn wiping_clears_every_string() {
        let mut value = json!({"a": "secret", "b": ["nested-secret", 1], "c": {"d": "deep"}});
        wipe_json(&mut value);
        assert_eq!(value, json!({"a": "", "b": ["", 1], "c": {"d": ""}}));
    }
}
