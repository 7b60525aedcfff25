//! Random bytes written out as hex or base64 text.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

use super::random::RandomSource;
use super::{BytesSpec, Encoding, GenerateError};
use crate::secret::SecretValue;
use crate::wipe::{WipedArray, WipedVec};

/// Raw lengths up to this are drawn into a stack buffer, longer ones onto the heap: the
/// common sizes (16 to 64 bytes) then cost one allocation, the value's own.
const ON_STACK: usize = 64;

/// `spec.length` random bytes in `spec.encoding`.
pub(super) fn generate(
    spec: &BytesSpec,
    source: &dyn RandomSource,
) -> Result<SecretValue, GenerateError> {
    if spec.length <= ON_STACK {
        let mut raw = WipedArray::<ON_STACK>::new();
        let raw = &mut raw[..spec.length];
        source.fill(raw)?;
        Ok(encode(raw, spec.encoding))
    } else {
        let mut raw = WipedVec::zeroed(spec.length);
        source.fill(&mut raw)?;
        Ok(encode(&raw, spec.encoding))
    }
}

/// `raw` as text, written into one allocation of exactly its length.
fn encode(raw: &[u8], encoding: Encoding) -> SecretValue {
    if encoding == Encoding::Hex {
        return SecretValue::from_string(crate::hex::encode(raw));
    }
    let (engine, padded) = match encoding {
        Encoding::Base64 => (&STANDARD, true),
        _ => (&URL_SAFE_NO_PAD, false),
    };
    let length = base64::encoded_len(raw.len(), padded).expect("a length fixed by policy");
    let mut text = WipedVec::zeroed(length);
    let written = engine
        .encode_slice(raw, &mut text)
        .expect("sized by encoded_len");
    debug_assert_eq!(written, length);
    SecretValue::new(text.into_vec())
}

#[cfg(test)]
mod tests {
    use ring::rand::SystemRandom;

    use super::super::random::Ring;
    use super::super::random::tests::Scripted;
    use super::*;

    fn text(length: usize, encoding: Encoding) -> String {
        let value = generate(
            &BytesSpec { length, encoding },
            &Ring::new(&SystemRandom::new()),
        )
        .unwrap();
        value.expose_str().unwrap().to_owned()
    }

    #[test]
    fn decoded_length_matches_for_every_encoding() {
        // 17 is not a multiple of 3, so base64 padding shows.
        for length in [16, 17, 32, 64] {
            let hex = text(length, Encoding::Hex);
            assert!(
                hex.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            );
            assert_eq!(crate::hex::decode(&hex).unwrap().len(), length);

            let b64 = text(length, Encoding::Base64);
            assert_eq!(STANDARD.decode(&b64).unwrap().len(), length, "{b64}");
            assert_eq!(
                b64.ends_with('='),
                !length.is_multiple_of(3),
                "standard base64 is padded"
            );

            let url = text(length, Encoding::Base64Url);
            assert_eq!(URL_SAFE_NO_PAD.decode(&url).unwrap().len(), length);
            assert!(!url.contains(['=', '+', '/']), "{url}");
        }
    }

    #[test]
    fn the_bytes_come_from_the_source() {
        let source = Scripted::new(&[0xde, 0xad, 0xbe, 0xef, 0xfb]);
        let spec = BytesSpec {
            length: 5,
            encoding: Encoding::Base64Url,
        };
        assert_eq!(
            generate(&spec, &source).unwrap().expose_str(),
            Some("3q2-7_s")
        );
        let source = Scripted::new(&[0xde, 0xad, 0xbe, 0xef, 0xfb]);
        let spec = BytesSpec {
            length: 5,
            encoding: Encoding::Base64,
        };
        assert_eq!(
            generate(&spec, &source).unwrap().expose_str(),
            Some("3q2+7/s=")
        );
    }

    #[test]
    fn two_calls_differ() {
        for encoding in [Encoding::Hex, Encoding::Base64, Encoding::Base64Url] {
            assert_ne!(text(16, encoding), text(16, encoding));
        }
    }

    #[test]
    fn a_failing_source_is_an_rng_error() {
        let spec = BytesSpec {
            length: 16,
            encoding: Encoding::Hex,
        };
        assert!(matches!(
            generate(&spec, &Scripted::new(&[0; 15])),
            Err(GenerateError::Rng)
        ));
    }
}
