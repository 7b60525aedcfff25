//! `cargo bench --bench generators`: secrets per second per generator, against the floor of
//! raw `SystemRandom` fills of the same number of random bytes, in the same run.

use std::hint::black_box;
use std::time::{Duration, Instant};

use rekeyd::generate::{
    BytesSpec, CharClass, CompiledPassword, Encoding, GeneratorSpec, PasswordSpec, generate,
};
use ring::rand::{SecureRandom, SystemRandom};

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
    // Random bytes each generator consumes per value (rejection sampling draws a little
    // more than one byte per character; the floor uses the minimum).
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
        "{:<28} {:>14} {:>16} {:>8}",
        "generator", "values/s", "floor fills/s", "ratio"
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
        println!(
            "{name:<28} {ours:>14.0} {floor:>16.0} {:>7.2}x",
            floor / ours
        );
    }
    println!(
        "ratio = time per value / time per raw fill of the same byte count (target: within 1.2x)"
    );
}
