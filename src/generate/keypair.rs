//! Ed25519 and ECDSA P-256 key pairs as PEM plus a public JWK.
//!
//! The value is a JSON object so a JWT/JWKS issuer can publish `public_jwk` as is and sign
//! with `private_key_pem`.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::digest;
use ring::rand::SecureRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair};
use serde_json::{Map, Value, json};

use super::GenerateError;
use super::json::WipedValue;
use crate::secret::SecretValue;
use crate::wipe::WipedVec;

/// DER of an Ed25519 SubjectPublicKeyInfo up to the 32-byte key (RFC 8410).
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// DER of a P-256 SubjectPublicKeyInfo up to the 65-byte uncompressed point (RFC 5480).
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// DER of an Ed25519 PKCS#8 v1 private key up to the 32-byte seed (RFC 8410).
const ED25519_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// The same up to the seed in the PKCS#8 v2 document ring generates.
const ED25519_RING_V2_PREFIX: [u8; 16] = [
    0x30, 0x51, 0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// What follows the seed in ring's v2 document, up to the 32-byte public key.
const ED25519_RING_V2_MIDDLE: [u8; 3] = [0x81, 0x21, 0x00];

/// What precedes the public point at the end of ring's P-256 PKCS#8 document: the `[1]`
/// tag of ECPrivateKey's `publicKey` and its BIT STRING header (RFC 5915).
const P256_PUBLIC_KEY_HEADER: [u8; 5] = [0xa1, 0x44, 0x03, 0x42, 0x00];

/// Which key pair to make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Algorithm {
    /// Ed25519 (JWS `EdDSA`).
    Ed25519,
    /// ECDSA on P-256 with SHA-256 (JWS `ES256`).
    EcdsaP256,
}

/// A new key pair as its serialized JSON object.
pub(super) fn generate(
    algorithm: Algorithm,
    rng: &dyn SecureRandom,
) -> Result<SecretValue, GenerateError> {
    generate_value(algorithm, rng)?.to_secret()
}

/// A new key pair as a JSON object, for nesting inside a `json` secret.
pub(super) fn generate_value(
    algorithm: Algorithm,
    rng: &dyn SecureRandom,
) -> Result<WipedValue, GenerateError> {
    // ring's pkcs8 document cannot be zeroized in place, so it is copied into a zeroizing
    // buffer at once; a failure here can only come from the random source.
    let (pkcs8, public) = match algorithm {
        Algorithm::Ed25519 => {
            let document = Ed25519KeyPair::generate_pkcs8(rng).map_err(|_| GenerateError::Rng)?;
            let v2 = WipedVec::new(document.as_ref().to_vec());
            ed25519_v1(&v2)?
        }
        Algorithm::EcdsaP256 => {
            let signing = &ECDSA_P256_SHA256_FIXED_SIGNING;
            let document =
                EcdsaKeyPair::generate_pkcs8(signing, rng).map_err(|_| GenerateError::Rng)?;
            let pkcs8 = WipedVec::new(document.as_ref().to_vec());
            let public = p256_public(&pkcs8)?;
            (pkcs8, public)
        }
    };
    let (kind, prefix): (&str, &[u8]) = match algorithm {
        Algorithm::Ed25519 => ("ed25519", &ED25519_SPKI_PREFIX),
        Algorithm::EcdsaP256 => ("ecdsa-p256", &P256_SPKI_PREFIX),
    };
    let spki = [prefix, &public].concat();
    let public_jwk = jwk(algorithm, &public)?;
    // Built inside the tree that wipes its strings on drop, so the private key's PEM is
    // in it from the moment it exists, and moved in rather than copied (as `json!` would).
    let mut object = WipedValue(Value::Object(Map::new()));
    let Value::Object(fields) = &mut object.0 else {
        unreachable!("built as an object above");
    };
    fields.insert("type".to_owned(), Value::from(kind));
    fields.insert(
        "private_key_pem".to_owned(),
        Value::String(pem("PRIVATE KEY", &pkcs8)),
    );
    fields.insert(
        "public_key_pem".to_owned(),
        Value::String(pem("PUBLIC KEY", &spki)),
    );
    fields.insert("public_jwk".to_owned(), public_jwk);
    Ok(object)
}

/// Rewrites ring's Ed25519 PKCS#8 v2 document as v1, with its public key.
///
/// OpenSSL 3.0 (and tools built on it) refuses v2 Ed25519 keys, while every PKCS#8 reader
/// accepts v1; readers derive the public key from the seed.
fn ed25519_v1(v2: &[u8]) -> Result<(WipedVec, Vec<u8>), GenerateError> {
    let layout_changed = || {
        GenerateError::Impossible("ring's Ed25519 PKCS#8 layout is not the expected one".to_owned())
    };
    let (prefix, rest) = v2.split_at_checked(16).ok_or_else(layout_changed)?;
    let (seed, rest) = rest.split_at_checked(32).ok_or_else(layout_changed)?;
    let (middle, public) = rest.split_at_checked(3).ok_or_else(layout_changed)?;
    if prefix != ED25519_RING_V2_PREFIX || middle != ED25519_RING_V2_MIDDLE || public.len() != 32 {
        return Err(layout_changed());
    }
    // Every byte around the seed and the key was checked above; deriving the key from the
    // seed again here would double the cost of a key pair (tests do it, and openssl too).
    let mut v1 = WipedVec::new(Vec::with_capacity(ED25519_V1_PREFIX.len() + seed.len()));
    v1.extend_from_slice(&ED25519_V1_PREFIX);
    v1.extend_from_slice(seed);
    Ok((v1, public.to_vec()))
}

/// The uncompressed public point at the end of ring's P-256 PKCS#8 document, read where it
/// lies instead of parsing the document back, which would derive it a second time.
fn p256_public(pkcs8: &[u8]) -> Result<Vec<u8>, GenerateError> {
    const POINT: usize = 65;
    let layout_changed = || {
        GenerateError::Impossible("ring's P-256 PKCS#8 layout is not the expected one".to_owned())
    };
    let split = pkcs8.len().checked_sub(POINT).ok_or_else(layout_changed)?;
    let (head, point) = pkcs8.split_at(split);
    if !head.ends_with(&P256_PUBLIC_KEY_HEADER) || point[0] != 0x04 {
        return Err(layout_changed());
    }
    Ok(point.to_vec())
}

/// PEM text: base64 of `der` in 64-character lines between BEGIN/END `label` lines.
///
/// The text is returned as is, for the caller to move into a wiped tree; the base64 body
/// it is cut from is wiped here.
fn pem(label: &str, der: &[u8]) -> String {
    let mut body = WipedVec::zeroed(der.len().div_ceil(3) * 4);
    let written = STANDARD
        .encode_slice(der, &mut body)
        .expect("sized for padded base64");
    debug_assert_eq!(written, body.len());
    let lines = body.len().div_ceil(64);
    let mut out = String::with_capacity(2 * (label.len() + 17) + body.len() + lines);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    // Base64 is ASCII, so every 64-byte chunk is a valid str boundary.
    for line in body.chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

/// The public JWK (RFC 7517; RFC 8037 for OKP) with `kid` set to its RFC 7638 thumbprint.
fn jwk(algorithm: Algorithm, public: &[u8]) -> Result<Value, GenerateError> {
    match algorithm {
        Algorithm::Ed25519 => {
            let x = URL_SAFE_NO_PAD.encode(public);
            let kid = thumbprint(&format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#));
            Ok(
                json!({"kty": "OKP", "crv": "Ed25519", "x": x, "alg": "EdDSA", "use": "sig", "kid": kid}),
            )
        }
        Algorithm::EcdsaP256 => {
            // ring returns the uncompressed point: 0x04 || x || y.
            let [0x04, coordinates @ ..] = public else {
                return Err(GenerateError::Rng);
            };
            if coordinates.len() != 64 {
                return Err(GenerateError::Rng);
            }
            let (x, y) = coordinates.split_at(32);
            let (x, y) = (URL_SAFE_NO_PAD.encode(x), URL_SAFE_NO_PAD.encode(y));
            let kid = thumbprint(&format!(
                r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#
            ));
            Ok(
                json!({"kty": "EC", "crv": "P-256", "x": x, "y": y, "alg": "ES256", "use": "sig", "kid": kid}),
            )
        }
    }
}

/// RFC 7638: base64url of the SHA-256 of the required members in lexicographic order.
fn thumbprint(canonical: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, canonical.as_bytes()))
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::process::Command;

    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_FIXED, ED25519, KeyPair, UnparsedPublicKey};

    fn make(algorithm: Algorithm) -> Map<String, Value> {
        let value = generate(algorithm, &SystemRandom::new()).unwrap();
        match serde_json::from_slice(value.expose()).unwrap() {
            Value::Object(map) => map,
            other => panic!("expected an object, got {other}"),
        }
    }

    /// The DER inside a PEM, checking the armor and the 64-character lines on the way.
    fn unpem(text: &str, label: &str) -> Vec<u8> {
        let mut lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.remove(0), format!("-----BEGIN {label}-----"));
        assert_eq!(lines.pop(), Some(format!("-----END {label}-----").as_str()));
        assert!(text.ends_with("-----\n"));
        let (last, full) = lines.split_last().unwrap();
        assert!(full.iter().all(|l| l.len() == 64), "{lines:?}");
        assert!((1..=64).contains(&last.len()));
        STANDARD.decode(lines.concat()).unwrap()
    }

    fn b64url(value: &Value) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(value.as_str().unwrap()).unwrap()
    }

    #[test]
    fn ed25519_signs_and_verifies_with_the_published_halves() {
        let key = make(Algorithm::Ed25519);
        assert_eq!(key["type"], "ed25519");
        let pkcs8 = unpem(key["private_key_pem"].as_str().unwrap(), "PRIVATE KEY");
        assert_eq!(
            &pkcs8[..5],
            [0x30, 0x2e, 0x02, 0x01, 0x00],
            "PKCS#8 v1, for OpenSSL 3.0"
        );
        // ring's strict `from_pkcs8` insists on v2; v1 readers use this one.
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pkcs8).unwrap();
        let message = b"rekeyd signs this";
        let signature = pair.sign(message);

        let spki = unpem(key["public_key_pem"].as_str().unwrap(), "PUBLIC KEY");
        let (prefix, raw) = spki.split_at(12);
        assert_eq!(prefix, ED25519_SPKI_PREFIX);
        UnparsedPublicKey::new(&ED25519, raw)
            .verify(message, signature.as_ref())
            .expect("the PEM public key verifies");

        let jwk = &key["public_jwk"];
        assert_eq!(
            (jwk["kty"].as_str(), jwk["crv"].as_str()),
            (Some("OKP"), Some("Ed25519"))
        );
        UnparsedPublicKey::new(&ED25519, b64url(&jwk["x"]))
            .verify(message, signature.as_ref())
            .expect("the JWK public key verifies");
        assert!(
            UnparsedPublicKey::new(&ED25519, b64url(&jwk["x"]))
                .verify(b"another message", signature.as_ref())
                .is_err(),
            "verification is not vacuous"
        );
        let canonical = format!(
            r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
            jwk["x"].as_str().unwrap()
        );
        assert_eq!(jwk["kid"].as_str().unwrap(), thumbprint(&canonical));
    }

    #[test]
    fn ecdsa_p256_signs_and_verifies_with_the_published_halves() {
        let rng = SystemRandom::new();
        let key = make(Algorithm::EcdsaP256);
        assert_eq!(key["type"], "ecdsa-p256");
        let pkcs8 = unpem(key["private_key_pem"].as_str().unwrap(), "PRIVATE KEY");
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &rng).unwrap();
        let message = b"rekeyd signs this";
        let signature = pair.sign(&rng, message).unwrap();

        let spki = unpem(key["public_key_pem"].as_str().unwrap(), "PUBLIC KEY");
        let (prefix, raw) = spki.split_at(26);
        assert_eq!(prefix, P256_SPKI_PREFIX);
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, raw)
            .verify(message, signature.as_ref())
            .expect("the PEM public key verifies");

        let jwk = &key["public_jwk"];
        assert_eq!(
            (jwk["kty"].as_str(), jwk["crv"].as_str()),
            (Some("EC"), Some("P-256"))
        );
        let (x, y) = (b64url(&jwk["x"]), b64url(&jwk["y"]));
        assert_eq!((x.len(), y.len()), (32, 32));
        let point = [&[0x04][..], &x, &y].concat();
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point)
            .verify(message, signature.as_ref())
            .expect("the JWK public key verifies");
        assert!(
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point)
                .verify(b"another message", signature.as_ref())
                .is_err()
        );
        let canonical = format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            jwk["x"].as_str().unwrap(),
            jwk["y"].as_str().unwrap()
        );
        assert_eq!(jwk["kid"].as_str().unwrap(), thumbprint(&canonical));
    }

    #[test]
    fn thumbprint_matches_the_rfc_8037_example() {
        // RFC 8037 appendix A.3.
        assert_eq!(
            thumbprint(
                r#"{"crv":"Ed25519","kty":"OKP","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#
            ),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }

    #[test]
    fn ring_v2_is_rewritten_as_v1_only_when_the_layout_is_known() {
        let document = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let v2 = document.as_ref();
        let (v1, public) = ed25519_v1(v2).unwrap();
        assert_eq!(v1.len(), 48);
        assert_eq!(&v1[16..], &v2[16..48], "the seed is carried over");
        assert_eq!(
            public,
            Ed25519KeyPair::from_pkcs8(v2)
                .unwrap()
                .public_key()
                .as_ref()
        );

        // Any byte of the layout around the seed and the key differing: refused.
        for at in [0, 4, 15, 48, 50] {
            let mut tampered = v2.to_vec();
            tampered[at] ^= 1;
            assert!(
                matches!(ed25519_v1(&tampered), Err(GenerateError::Impossible(_))),
                "byte {at}"
            );
        }
        assert!(matches!(
            ed25519_v1(&v2[..80]),
            Err(GenerateError::Impossible(_))
        ));
    }

    #[test]
    fn the_public_keys_read_from_rings_documents_are_the_ones_ring_derives() {
        let rng = ring::rand::SystemRandom::new();
        for _ in 0..16 {
            let v2 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
            let (v1, public) = ed25519_v1(v2.as_ref()).unwrap();
            let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&v1).unwrap();
            assert_eq!(pair.public_key().as_ref(), &public[..]);

            let signing = &ECDSA_P256_SHA256_FIXED_SIGNING;
            let document = EcdsaKeyPair::generate_pkcs8(signing, &rng).unwrap();
            let pair = EcdsaKeyPair::from_pkcs8(signing, document.as_ref(), &rng).unwrap();
            assert_eq!(
                pair.public_key().as_ref(),
                &p256_public(document.as_ref()).unwrap()[..]
            );
        }
        // A document of another shape is refused, not misread.
        assert!(p256_public(&[0u8; 40]).is_err());
        let mut shifted = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .unwrap()
            .as_ref()
            .to_vec();
        shifted.push(0);
        assert!(p256_public(&shifted).is_err());
    }

    #[test]
    fn two_key_pairs_differ() {
        for algorithm in [Algorithm::Ed25519, Algorithm::EcdsaP256] {
            let (a, b) = (make(algorithm), make(algorithm));
            assert_ne!(a["private_key_pem"], b["private_key_pem"]);
            assert_ne!(a["public_jwk"]["kid"], b["public_jwk"]["kid"]);
        }
    }

    /// Runs `openssl` with `args` in `dir`, returning stdout; fails, never skips, without it.
    fn openssl(dir: &Path, args: &[&str]) -> String {
        let output = match Command::new("openssl").args(args).current_dir(dir).output() {
            Ok(output) => output,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => panic!(
                "the openssl binary is needed to check the PEMs independently: apt-get install openssl"
            ),
            Err(error) => panic!("could not run openssl: {error}"),
        };
        assert!(
            output.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    #[test]
    fn openssl_reads_both_pems_and_derives_the_same_public_key() {
        for (algorithm, expect) in [
            (Algorithm::Ed25519, "ED25519 Public-Key"),
            (Algorithm::EcdsaP256, "P-256"),
        ] {
            let key = make(algorithm);
            let dir = tempfile::TempDir::new().unwrap();
            let public_pem = key["public_key_pem"].as_str().unwrap();
            std::fs::write(
                dir.path().join("priv.pem"),
                key["private_key_pem"].as_str().unwrap(),
            )
            .unwrap();
            std::fs::write(dir.path().join("pub.pem"), public_pem).unwrap();

            openssl(dir.path(), &["pkey", "-in", "priv.pem", "-noout"]);
            let text = openssl(
                dir.path(),
                &["pkey", "-pubin", "-in", "pub.pem", "-noout", "-text"],
            );
            assert!(text.contains(expect), "{algorithm:?}: {text}");
            // The public half openssl derives from the private key is the one we published.
            let derived = openssl(dir.path(), &["pkey", "-in", "priv.pem", "-pubout"]);
            assert_eq!(derived, public_pem, "{algorithm:?}");
        }
    }
}
