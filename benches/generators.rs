//! `cargo bench --bench generators`: secrets per second per generator, against the floor of
//! raw `SystemRandom` fills of the same number of random bytes, in the same run. Key pairs
//! also run against ring's own key generation alone (`generate_pkcs8`), the least any
//! ring-based tool can spend, so rekeyd's own share (PEM, JWK, checks) shows.

use std::hint::black_box;
use std::time::{Duration, Instant};

use rekeyd::generate::{
    BytesSpec, CharClass, CompiledPassword, Encoding, GeneratorSpec, PasswordSpec, generate,
};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, Ed25519KeyPair};

const RUN: Duration = Duration::from_millis(700);

/// Calls per second of `f` over about `RUN`.
fn rate(mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < RUN {
        for _ in 0..64 {
            f();
        }
        n += 64;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let rng = SystemRandom::new();
    let password = CompiledPassword::new(PasswordSpec {
        length: 32,
        classes: vec![
            (CharClass::Lower, 1),
            (CharClass::Upper, 1),
            (CharClass::Digit, 1),
            (CharClass::Symbol, 1),
        ],
        symbols: None,
        exclude: String::new(),
    })
    .expect("a valid spec");
    let password = GeneratorSpec::Password(password);
    // Random bytes each generator consumes per value: the password's 32 characters of 94
    // take four 8-byte words, plus a redraw for the ~3% that miss a class minimum; the
    // floor uses the minimum.
    let cases: [(&str, GeneratorSpec, usize); 4] = [
        ("password, 32 characters", password, 32),
        (
            "bytes, 32 as base64url",
            GeneratorSpec::Bytes(BytesSpec {
                length: 32,
                encoding: Encoding::Base64Url,
            }),
            32,
        ),
        ("ed25519 key pair", GeneratorSpec::Ed25519, 32),
        ("ecdsa-p256 key pair", GeneratorSpec::EcdsaP256, 32),
    ];
    println!(
        "{:<28} {:>12} {:>14} {:>8} {:>14} {:>8}",
        "generator", "values/s", "floor fills/s", "ratio", "ring keygen/s", "ratio"
    );
    for (name, spec, bytes) in &cases {
        let ours = rate(|| {
            black_box(generate(spec, None, &rng).expect("generate"));
        });
        let mut buf = vec![0u8; *bytes];
        let floor = rate(|| {
            rng.fill(&mut buf).expect("fill");
            black_box(&buf);
        });
        let ring = match spec {
            GeneratorSpec::Ed25519 => Some(rate(|| {
                black_box(Ed25519KeyPair::generate_pkcs8(&rng).expect("keygen"));
            })),
            GeneratorSpec::EcdsaP256 => Some(rate(|| {
                let alg = &ECDSA_P256_SHA256_ASN1_SIGNING;
                black_box(EcdsaKeyPair::generate_pkcs8(alg, &rng).expect("keygen"));
            })),
            _ => None,
        };
        let (ring, ring_ratio) = match ring {
            Some(r) => (format!("{r:.0}"), format!("{:.2}x", r / ours)),
            None => ("-".to_owned(), "-".to_owned()),
        };
        println!(
            "{name:<28} {ours:>12.0} {floor:>14.0} {:>7.2}x {ring:>14} {ring_ratio:>8}",
            floor / ours
        );
    }
    println!(
        "ratio = time per value / time per raw fill of the same byte count, or per ring keygen"
    );
    println!("(issue 8 target: within 1.2x)");
}
