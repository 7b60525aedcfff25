//! Standard Webhooks signatures: `v1,<base64 HMAC-SHA256>` over `id.timestamp.body`, keyed
//! with `whsec_<base64>` secrets, one signature per key so receivers keep verifying while
//! they move from an old key to a new one (see `docs/adr/0005-webhook-signatures.md`).

use std::fmt;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use ring::hmac;
use zeroize::Zeroizing;

use crate::policy::KeySource;

/// The prefix that marks a symmetric Standard Webhooks secret.
pub const KEY_PREFIX: &str = "whsec_";
/// The spec asks for at least 24 random bytes.
const MIN_KEY_BYTES: usize = 24;
/// And at most 64.
const MAX_KEY_BYTES: usize = 64;

/// Why a signing key could not be loaded. Never contains the key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The environment variable is not set (or not UTF-8).
    #[error(
        "notify target {target}: environment variable {var} is not set; export it with the target's whsec_ signing key"
    )]
    MissingEnv {
        /// The target.
        target: String,
        /// The variable.
        var: String,
    },
    /// The key file could not be read.
    #[error("notify target {target}: cannot read signing key file {path}: {source}")]
    File {
        /// The target.
        target: String,
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The text is not `whsec_` + base64 of 24 to 64 bytes.
    #[error("notify target {target}: the signing key from {from} is not valid: {problem}")]
    Malformed {
        /// The target.
        target: String,
        /// `$VAR` or the file path.
        from: String,
        /// What is wrong (never the key itself).
        problem: &'static str,
    },
}

/// One HMAC signing key. Its bytes are zeroized on drop and never printed.
pub struct SigningKey {
    /// Only the raw bytes are kept (zeroized on drop): ring's `hmac::Key` holds derived
    /// state it does not wipe, so one is built per signature and dropped at once.
    raw: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey([REDACTED])")
    }
}

impl SigningKey {
    /// Parses `whsec_<base64>` (padded or not). `Err` names the problem, never the key.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        let text = text.trim();
        let Some(encoded) = text.strip_prefix(KEY_PREFIX) else {
            return Err("it must start with whsec_");
        };
        let raw = Zeroizing::new(
            STANDARD
                .decode(encoded)
                .or_else(|_| STANDARD_NO_PAD.decode(encoded))
                .map_err(|_| "the part after whsec_ is not base64")?,
        );
        if raw.len() < MIN_KEY_BYTES {
            return Err("it decodes to fewer than 24 bytes; generate at least 24 random bytes");
        }
        if raw.len() > MAX_KEY_BYTES {
            return Err("it decodes to more than 64 bytes");
        }
        Ok(Self { raw })
    }

    /// Reads and parses the key for `target` from where the policy says it lives.
    pub fn load(target: &str, source: &KeySource) -> Result<Self, KeyError> {
        let (text, from) = match source {
            KeySource::Env(var) => (
                Zeroizing::new(std::env::var(var).map_err(|_| KeyError::MissingEnv {
                    target: target.to_owned(),
                    var: var.clone(),
                })?),
                format!("${var}"),
            ),
            KeySource::File(path) => (
                Zeroizing::new(read_key_file(path).map_err(|source| KeyError::File {
                    target: target.to_owned(),
                    path: path.display().to_string(),
                    source,
                })?),
                path.display().to_string(),
            ),
        };
        Self::parse(&text).map_err(|problem| KeyError::Malformed {
            target: target.to_owned(),
            from,
            problem,
        })
    }

    /// `v1,<base64 HMAC-SHA256(key, id.timestamp.body)>`.
    fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.raw);
        let mut ctx = hmac::Context::with_key(&key);
        ctx.update(id.as_bytes());
        ctx.update(b".");
        ctx.update(timestamp.to_string().as_bytes());
        ctx.update(b".");
        ctx.update(body);
        format!("v1,{}", STANDARD.encode(ctx.sign().as_ref()))
    }
}

fn read_key_file(path: &Path) -> std::io::Result<String> {
    std::fs::read_to_string(path)
}

/// A target's keys, newest first.
#[derive(Debug)]
pub struct Signer {
    keys: Vec<SigningKey>,
}

impl Signer {
    /// Signs with each key, newest first.
    pub fn new(keys: Vec<SigningKey>) -> Self {
        Self { keys }
    }

    /// Loads every key a target names.
    pub fn load(target: &str, sources: &[KeySource]) -> Result<Self, KeyError> {
        let keys = sources
            .iter()
            .map(|source| SigningKey::load(target, source))
            .collect::<Result<_, _>>()?;
        Ok(Self::new(keys))
    }

    /// The `webhook-signature` header: one `v1,…` per key, space-separated.
    pub fn signature(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        self.keys
            .iter()
            .map(|key| key.sign(id, timestamp, body))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 32 bytes 0x00..0x1f, encoded by hand-checked base64.
    const KEY: &str = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    #[test]
    fn signs_id_timestamp_and_body_like_the_spec_says() {
        let key = SigningKey::parse(KEY).unwrap();
        let (id, ts, body) = (
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        // Recompute independently of `sign`: HMAC over the dotted concatenation.
        let raw = STANDARD.decode(&KEY[KEY_PREFIX.len()..]).unwrap();
        let expected = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, &raw),
            format!("{id}.{ts}.{}", std::str::from_utf8(body).unwrap()).as_bytes(),
        );
        assert_eq!(
            key.sign(id, ts, body),
            format!("v1,{}", STANDARD.encode(expected.as_ref()))
        );
        // The reference implementation's answer for this key and message (computed with
        // the `standardwebhooks` Python package, not with this code).
        assert_eq!(
            key.sign(id, ts, body),
            "v1,O4Gjv1HqPqsMrjmczoggs/sWA8gZD0VyHG+fLh4+ktI="
        );
    }

    #[test]
    fn two_keys_give_two_space_separated_signatures_newest_first() {
        let other = "whsec_ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8";
        let signer = Signer::new(vec![
            SigningKey::parse(KEY).unwrap(),
            SigningKey::parse(other).unwrap(),
        ]);
        let header = signer.signature("msg_1", 7, b"{}");
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(
            parts[0],
            SigningKey::parse(KEY).unwrap().sign("msg_1", 7, b"{}")
        );
        assert_eq!(
            parts[1],
            SigningKey::parse(other).unwrap().sign("msg_1", 7, b"{}")
        );
        assert_ne!(parts[0], parts[1]);
    }

    #[test]
    fn malformed_keys_are_refused_without_echoing_them() {
        for (text, problem) in [
            ("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", "whsec_"),
            ("whsec_not*base64!", "not base64"),
            ("whsec_AAECAwQFBgcI", "fewer than 24 bytes"),
        ] {
            let err = SigningKey::parse(text).unwrap_err();
            assert!(err.contains(problem), "{text}: {err}");
            assert!(!err.contains(text), "the error echoes the key");
        }
    }

    #[test]
    fn debug_is_redacted_and_errors_name_only_the_source() {
        let key = SigningKey::parse(KEY).unwrap();
        let shown = format!("{key:?}");
        let shown = format!("{shown} {:?}", Signer::new(vec![key]));
        assert!(!shown.contains(&KEY[KEY_PREFIX.len()..KEY_PREFIX.len() + 8]));
        assert!(shown.contains("REDACTED"));

        let var = "REKEYD_TEST_SIGNATURE_MISSING_VAR";
        let err = SigningKey::load("hooks", &KeySource::Env(var.into())).unwrap_err();
        assert!(err.to_string().contains(var) && err.to_string().contains("hooks"));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, "whsec_c2hvcnQ=\n").unwrap();
        let err = SigningKey::load("hooks", &KeySource::File(path.clone())).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("fewer than 24 bytes") && text.contains("hooks"),
            "{text}"
        );
        assert!(!text.contains("c2hvcnQ"), "{text}");
        std::fs::write(&path, format!("  {KEY}\n")).unwrap();
        assert!(SigningKey::load("hooks", &KeySource::File(path)).is_ok());
    }
}
