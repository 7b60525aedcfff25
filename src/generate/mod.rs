//! Secret generators: turn a [`GeneratorSpec`] into a fresh [`SecretValue`].
//!
//! Pure: knows no backend, no policy file. All randomness comes from
//! `ring::rand::SystemRandom` (the caller passes a `&dyn SecureRandom` so tests can count
//! calls, but production always passes `SystemRandom`).

use ring::rand::SecureRandom;
use serde_json::{Map, Value};

use crate::secret::SecretValue;

mod bytes;
mod json;

/// A JSON tree whose strings are wiped when it is dropped (for parsing secret JSON).
pub(crate) use json::WipedValue;
mod keypair;
mod password;
mod radix;
mod random;

pub use password::CompiledPassword;

/// Shortest password the policy accepts.
pub const MIN_PASSWORD_LENGTH: usize = 16;
/// Fewest random bytes the policy accepts for `bytes` (128 bits).
pub const MIN_BYTES: usize = 16;

/// The symbol class when a password spec gives no `symbols` of its own.
///
/// Leaves out quotes, backslash, backtick and space, which shells, connection strings and
/// config files tend to mangle.
pub const DEFAULT_SYMBOLS: &str = "!#$%&()*+,-./:;<=>?@[]^_{|}~";

/// How to make a new value.
#[derive(Clone, Debug, PartialEq)]
pub enum GeneratorSpec {
    /// A random password, its rules checked and its alphabet built once.
    Password(CompiledPassword),
    /// Random bytes, encoded as text.
    Bytes(BytesSpec),
    /// An Ed25519 key pair.
    Ed25519,
    /// An ECDSA P-256 key pair.
    EcdsaP256,
    /// A JSON object where one field is generated and the others are kept.
    Json(JsonSpec),
}

/// The character classes a password may draw from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CharClass {
    /// `a-z`
    Lower,
    /// `A-Z`
    Upper,
    /// `0-9`
    Digit,
    /// The symbol set (default ``!#$%&()*+,-./:;<=>?@[]^_{|}~``).
    Symbol,
}

/// A password's rules.
#[derive(Clone, Debug, PartialEq)]
pub struct PasswordSpec {
    /// Total length in characters.
    pub length: usize,
    /// Allowed classes with the minimum count of each (a minimum may be 0).
    pub classes: Vec<(CharClass, usize)>,
    /// Replaces the default symbol set.
    pub symbols: Option<String>,
    /// Characters never used (e.g. look-alikes `lI1O0`, or quotes a consumer chokes on).
    pub exclude: String,
}

/// How random bytes are written out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// Lowercase hex.
    Hex,
    /// Standard base64 with padding.
    Base64,
    /// URL-safe base64 without padding.
    Base64Url,
}

/// Random bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct BytesSpec {
    /// Number of random bytes (before encoding).
    pub length: usize,
    /// Text encoding of the bytes.
    pub encoding: Encoding,
}

/// A JSON object secret (the `{"username", "password", "host"}` shape).
#[derive(Clone, Debug, PartialEq)]
pub struct JsonSpec {
    /// The fields to start from.
    pub template: Map<String, Value>,
    /// The field that receives the generated value.
    pub field: String,
    /// How that field is generated (not `Json` itself).
    pub generate: Box<GeneratorSpec>,
}

/// Why generation failed. Never carries a value.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// The system random source failed.
    #[error("the system random number generator failed")]
    Rng,
    /// The spec cannot be satisfied (e.g. minimums exceed the length).
    #[error("generator rules cannot be satisfied: {0}")]
    Impossible(String),
}

/// Makes a new value. `current` is the value being replaced, if any: a `Json` spec keeps
/// its other fields.
pub fn generate(
    spec: &GeneratorSpec,
    current: Option<&SecretValue>,
    rng: &dyn SecureRandom,
) -> Result<SecretValue, GenerateError> {
    let source = random::Ring::new(rng);
    match spec {
        GeneratorSpec::Password(password) => password.generate(&source),
        GeneratorSpec::Bytes(bytes) => bytes::generate(bytes, &source),
        GeneratorSpec::Ed25519 => keypair::generate(keypair::Algorithm::Ed25519, rng),
        GeneratorSpec::EcdsaP256 => keypair::generate(keypair::Algorithm::EcdsaP256, rng),
        GeneratorSpec::Json(json) => json::generate(json, current, rng),
    }
}

#[cfg(test)]
mod tests {
    use ring::rand::SystemRandom;

    use super::random::tests::Scripted;
    use super::*;

    fn digits(length: usize) -> GeneratorSpec {
        GeneratorSpec::Password(
            CompiledPassword::new(PasswordSpec {
                length,
                classes: vec![(CharClass::Digit, 0)],
                symbols: None,
                exclude: String::new(),
            })
            .unwrap(),
        )
    }

    #[test]
    #[allow(deprecated)]
    fn generate_rejects_biased_tail_words_from_a_secure_random() {
        // ring seals SecureRandom; its own scripted implementation is the only fake that
        // can go through the public signature, and it hands out one slice per fill.
        use ring::test::rand::FixedSliceSequenceRandom;
        // Three digits come from one 8-byte word, read as 8 digits. An 8-byte request is
        // served from a 128-byte block; word 0 is in the biased tail (2^64 mod 10^8 =
        // 9551616 > 0 = 0 * 10^8 mod 2^64), so two replacement words are fetched in one
        // 16-byte request. 0x5958106250000000 scales to 34900000 and is accepted.
        let block = [0u8; 128];
        let mut spare = [0u8; 16];
        spare[..8].copy_from_slice(&0x5958_1062_5000_0000u64.to_be_bytes());
        let blocks: [&[u8]; 2] = [&block, &spare];
        let fake = FixedSliceSequenceRandom {
            bytes: &blocks,
            current: std::cell::UnsafeCell::new(0),
        };
        let value = generate(&digits(3), None, &fake).unwrap();
        assert_eq!(value.expose_str(), Some("349"));
    }

    /// True when `haystack` holds any run of 6 consecutive characters of `secret`.
    fn leaks(haystack: &str, secret: &str) -> bool {
        let chars: Vec<char> = secret.chars().collect();
        chars
            .windows(6.min(chars.len()))
            .any(|run| haystack.contains(&run.iter().collect::<String>()))
    }

    #[test]
    fn the_leak_check_catches_a_leak() {
        assert!(leaks("value was xAb3#kQ9 oops", "zzxAb3#kzz"));
        assert!(!leaks("SecretValue([REDACTED])", "xAb3#kQ9"));
    }

    #[test]
    fn debug_output_never_shows_a_generated_value() {
        let password = PasswordSpec {
            length: 32,
            classes: vec![
                (CharClass::Lower, 4),
                (CharClass::Upper, 4),
                (CharClass::Symbol, 4),
            ],
            symbols: None,
            exclude: String::new(),
        };
        let password = CompiledPassword::new(password).unwrap();
        let specs = [
            GeneratorSpec::Password(password.clone()),
            GeneratorSpec::Bytes(BytesSpec {
                length: 32,
                encoding: Encoding::Hex,
            }),
            GeneratorSpec::Bytes(BytesSpec {
                length: 32,
                encoding: Encoding::Base64,
            }),
            GeneratorSpec::Bytes(BytesSpec {
                length: 32,
                encoding: Encoding::Base64Url,
            }),
            GeneratorSpec::Ed25519,
            GeneratorSpec::EcdsaP256,
            GeneratorSpec::Json(JsonSpec {
                template: Map::new(),
                field: "password".to_owned(),
                generate: Box::new(GeneratorSpec::Password(password)),
            }),
        ];
        for spec in &specs {
            let value = generate(spec, None, &SystemRandom::new()).unwrap();
            let text = value.expose_str().unwrap().to_owned();
            // Key pairs: check the private key's base64 rather than the JSON punctuation.
            let secret = match serde_json::from_str::<Value>(&text) {
                Ok(Value::Object(map)) => match (&map.get("private_key_pem"), &map.get("password"))
                {
                    (Some(Value::String(pem)), _) => pem.lines().nth(1).unwrap().to_owned(),
                    (_, Some(Value::String(pw))) => pw.clone(),
                    _ => panic!("unexpected shape"),
                },
                _ => text.clone(),
            };
            assert!(
                secret.len() >= 32,
                "{spec:?}: the canary is long enough to matter"
            );
            let as_result: Result<SecretValue, GenerateError> = Ok(value.clone());
            for shown in [
                format!("{value:?}"),
                format!("{value:#?}"),
                format!("{as_result:?}"),
            ] {
                assert!(!leaks(&shown, &secret), "{spec:?} leaked into {shown}");
            }
        }
    }

    #[test]
    fn errors_never_show_a_value() {
        let canary = "canarypw";
        let current = SecretValue::from_string(format!(r#"{{"password":"{canary}-old"}}"#));
        let mut errors = Vec::new();

        // The source spells "canarypw" in lowercase indices, then fails mid-password
        // (the spread method draws one character per byte).
        let lower = PasswordSpec {
            length: 16,
            classes: vec![(CharClass::Lower, 0)],
            symbols: None,
            exclude: String::new(),
        };
        let spread = CompiledPassword::new(lower.clone()).unwrap().spread();
        let spelled: Vec<u8> = canary.bytes().map(|b| b - b'a').collect();
        errors.push(spread.generate(&Scripted::new(&spelled)).unwrap_err());
        // The uniform method: word 0 is in the biased tail and no replacement comes.
        let uniform = CompiledPassword::new(lower.clone()).unwrap();
        errors.push(uniform.generate(&Scripted::new(&[0; 16])).unwrap_err());
        errors.push(
            bytes::generate(
                &BytesSpec {
                    length: 16,
                    encoding: Encoding::Hex,
                },
                &Scripted::new(canary.as_bytes()),
            )
            .unwrap_err(),
        );

        let impossible = [
            PasswordSpec {
                length: 16,
                classes: vec![(CharClass::Lower, 17)],
                ..lower.clone()
            },
            PasswordSpec {
                exclude: ('a'..='z').collect(),
                ..lower.clone()
            },
            PasswordSpec {
                classes: vec![(CharClass::Symbol, 1)],
                symbols: Some(canary.to_owned()),
                exclude: canary.to_owned(),
                ..lower.clone()
            },
        ];
        for spec in impossible {
            errors.push(CompiledPassword::new(spec).unwrap_err());
        }
        let nested = GeneratorSpec::Json(JsonSpec {
            template: Map::new(),
            field: "password".to_owned(),
            generate: Box::new(GeneratorSpec::Json(JsonSpec {
                template: Map::new(),
                field: "inner".to_owned(),
                generate: Box::new(GeneratorSpec::Password(
                    CompiledPassword::new(lower.clone()).unwrap(),
                )),
            })),
        });
        errors.push(generate(&nested, Some(&current), &SystemRandom::new()).unwrap_err());

        assert!(errors[..3].iter().all(|e| matches!(e, GenerateError::Rng)));
        assert!(
            errors[3..]
                .iter()
                .all(|e| matches!(e, GenerateError::Impossible(_)))
        );
        for error in &errors {
            for shown in [format!("{error:?}"), error.to_string()] {
                assert!(!leaks(&shown, canary), "{shown}");
            }
        }
    }
}
