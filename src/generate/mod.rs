//! Secret generators: turn a [`GeneratorSpec`] into a fresh [`SecretValue`].
//!
//! Pure: knows no backend, no policy file. All randomness comes from
//! `ring::rand::SystemRandom` (the caller passes a `&dyn SecureRandom` so tests can count
//! calls, but production always passes `SystemRandom`).

use ring::rand::SecureRandom;
use serde_json::{Map, Value};

use crate::secret::SecretValue;

/// Shortest password the policy accepts.
pub const MIN_PASSWORD_LENGTH: usize = 16;
/// Fewest random bytes the policy accepts for `bytes` (128 bits).
pub const MIN_BYTES: usize = 16;

/// How to make a new value.
#[derive(Clone, Debug, PartialEq)]
pub enum GeneratorSpec {
    /// A random password.
    Password(PasswordSpec),
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
    let _ = (spec, current, rng);
    todo!("generate")
}
