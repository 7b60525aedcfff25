//! JSON object secrets: one generated field, the other fields kept; and the zeroizing
//! JSON helpers the key pair generator shares.

use ring::rand::SecureRandom;
use serde_json::Value;

use super::{GenerateError, GeneratorSpec, JsonSpec, keypair};
use crate::secret::SecretValue;
use crate::wipe::{json_bytes, wipe_json};

/// A JSON value whose strings are zeroized when it is dropped.
///
/// Deliberately not `Debug`, so it cannot end up in a log line.
pub(crate) struct WipedValue(pub(crate) Value);

impl Drop for WipedValue {
    fn drop(&mut self) {
        wipe_json(&mut self.0);
    }
}

impl WipedValue {
    /// The value as compact JSON text, written into a buffer that never grows.
    pub(super) fn to_secret(&self) -> Result<SecretValue, GenerateError> {
        Ok(SecretValue::new(json_bytes(&self.0).into_vec()))
    }
}

/// The template, overlaid with the current value's fields, with `spec.field` generated anew.
pub(super) fn generate(
    spec: &JsonSpec,
    current: Option<&SecretValue>,
    rng: &dyn SecureRandom,
) -> Result<SecretValue, GenerateError> {
    let fresh = match &*spec.generate {
        GeneratorSpec::Json(_) => {
            return Err(GenerateError::Impossible(format!(
                "field {:?} of a json secret cannot itself be generated as json",
                spec.field
            )));
        }
        // Key pairs nest as objects so consumers read `field.public_jwk` without re-parsing.
        GeneratorSpec::Ed25519 => keypair::generate_value(keypair::Algorithm::Ed25519, rng)?,
        GeneratorSpec::EcdsaP256 => keypair::generate_value(keypair::Algorithm::EcdsaP256, rng)?,
        inner @ (GeneratorSpec::Password(_) | GeneratorSpec::Bytes(_)) => {
            let value = super::generate(inner, None, rng)?;
            let text = value.expose_str().ok_or_else(|| {
                GenerateError::Impossible(format!(
                    "field {:?} was generated as non-text",
                    spec.field
                ))
            })?;
            WipedValue(Value::String(text.to_owned()))
        }
    };

    let mut object = WipedValue(Value::Object(spec.template.clone()));
    let Value::Object(fields) = &mut object.0 else {
        unreachable!("built as an object above");
    };
    // The current secret's fields win over the template: a human may have moved the host.
    if let Some(current) = current {
        let mut parsed =
            WipedValue(serde_json::from_slice(current.expose()).unwrap_or(Value::Null));
        if let Value::Object(previous) = &mut parsed.0 {
            for (key, value) in std::mem::take(previous) {
                if let Some(replaced) = fields.insert(key, value) {
                    drop(WipedValue(replaced));
                }
            }
        }
    }
    let mut fresh = fresh;
    let generated = std::mem::replace(&mut fresh.0, Value::Null);
    if let Some(old) = fields.insert(spec.field.clone(), generated) {
        drop(WipedValue(old));
    }
    object.to_secret()
}

#[cfg(test)]
mod tests {
    use ring::rand::SystemRandom;
    use serde_json::{Map, json};

    use super::*;
    use crate::generate::{BytesSpec, CharClass, CompiledPassword, Encoding, PasswordSpec};

    fn template() -> Map<String, Value> {
        let Value::Object(map) = json!({
            "username": "app",
            "host": "db.internal",
            "port": 5432,
            "password": "placeholder"
        }) else {
            unreachable!()
        };
        map
    }

    fn password_spec() -> JsonSpec {
        JsonSpec {
            template: template(),
            field: "password".to_owned(),
            generate: Box::new(GeneratorSpec::Password(
                CompiledPassword::new(PasswordSpec {
                    length: 20,
                    classes: vec![(CharClass::Lower, 2), (CharClass::Digit, 2)],
                    symbols: None,
                    exclude: String::new(),
                })
                .unwrap(),
            )),
        }
    }

    fn run(spec: &JsonSpec, current: Option<&str>) -> Map<String, Value> {
        let current = current.map(|text| SecretValue::from_string(text.to_owned()));
        let value = generate(spec, current.as_ref(), &SystemRandom::new()).unwrap();
        match serde_json::from_slice(value.expose()).unwrap() {
            Value::Object(map) => map,
            other => panic!("expected an object, got {other}"),
        }
    }

    fn is_fresh_password(value: &Value) -> bool {
        value.as_str().is_some_and(|p| {
            p.chars().count() == 20
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
    }

    #[test]
    fn without_a_current_value_the_template_is_kept_and_the_field_generated() {
        let out = run(&password_spec(), None);
        assert_eq!(out["username"], "app");
        assert_eq!(out["host"], "db.internal");
        assert_eq!(out["port"], 5432);
        assert!(is_fresh_password(&out["password"]), "{}", out["password"]);
        assert_eq!(out.len(), 4);
    }

    #[test]
    fn the_current_values_fields_win_and_only_the_field_is_replaced() {
        let current = r#"{"username":"app","host":"db2.internal","password":"old-password-123","note":"moved by ops"}"#;
        let first = run(&password_spec(), Some(current));
        assert_eq!(first["host"], "db2.internal", "a human's change is kept");
        assert_eq!(
            first["note"], "moved by ops",
            "fields outside the template are kept"
        );
        assert_eq!(
            first["port"], 5432,
            "template fields missing from current are added"
        );
        assert_ne!(first["password"], "old-password-123");
        assert!(is_fresh_password(&first["password"]));

        let second = run(&password_spec(), Some(current));
        assert_ne!(
            first["password"], second["password"],
            "each call generates anew"
        );
    }

    #[test]
    fn a_current_value_that_is_not_an_object_is_ignored() {
        for current in ["just-a-password", "[1,2]", "\"text\"", "{broken"] {
            let out = run(&password_spec(), Some(current));
            assert_eq!(out["host"], "db.internal", "{current}");
            assert!(is_fresh_password(&out["password"]));
        }
    }

    #[test]
    fn bytes_land_as_a_string() {
        let mut spec = password_spec();
        spec.field = "api_key".to_owned();
        *spec.generate = GeneratorSpec::Bytes(BytesSpec {
            length: 16,
            encoding: Encoding::Hex,
        });
        let out = run(&spec, None);
        let key = out["api_key"].as_str().unwrap();
        assert_eq!(crate::hex::decode(key).unwrap().len(), 16);
        assert_eq!(out["password"], "placeholder");
    }

    #[test]
    fn a_key_pair_lands_as_a_nested_object() {
        let mut spec = password_spec();
        spec.field = "signing_key".to_owned();
        *spec.generate = GeneratorSpec::Ed25519;
        let out = run(&spec, Some(r#"{"signing_key":"old","host":"h"}"#));
        let key = &out["signing_key"];
        assert_eq!(key["type"], "ed25519");
        assert!(
            key["private_key_pem"]
                .as_str()
                .unwrap()
                .starts_with("-----BEGIN PRIVATE KEY-----\n")
        );
        assert_eq!(key["public_jwk"]["kty"], "OKP");
        assert_eq!(out["host"], "h");
    }

    #[test]
    fn json_inside_json_is_impossible() {
        let mut spec = password_spec();
        *spec.generate = GeneratorSpec::Json(password_spec());
        match generate(&spec, None, &SystemRandom::new()) {
            Err(GenerateError::Impossible(why)) => assert!(why.contains("json"), "{why}"),
            other => panic!("expected Impossible, got {other:?}"),
        }
    }
}
