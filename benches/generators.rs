//! `cargo bench --bench generators`: secrets per second per generator, against the floor of
//! raw `SystemRandom` fills of the same number of random bytes, in the same run. Key pairs
//! also run against ring's own key generation alone (`generate_pkcs8`), the least any
//! ring-based tool can spend, so rekeyd's own share (PEM, JWK, checks) shows. The sides
//! of each row run in alternating slices, so load from other processes hits them alike.

use std::hint::black_box;
use std::time::{Duration, Instant};

use rekeyd::generate::{
    BytesSpec, CharClass, CompiledPassword, Encoding, GeneratorSpec, PasswordSpec, generate,
};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, Ed25519KeyPair};

/// Time each side of a comparison runs in all, in `ROUNDS` alternating slices.
const RUN: Duration = Duration::from_millis(700);
/// The machine is shared: alternating short slices of each side puts load from other
/// processes on both sides alike, where one long run each would put it on whichever
/// side was running at the time; the ratio is the median of the rounds' ratios, so a
/// burst of load that still hits one side of a round moves it little.
const ROUNDS: u32 = 200;

/// Calls and time spent in them, over the slices of one side, and each slice's rate.
#[derive(Default)]
struct Meter {
    calls: u64,
    time: Duration,
    slices: Vec<f64>,
}

impl Meter {
    /// Runs `f` for one slice (`RUN / ROUNDS`), in batches of 16 calls.
    fn slice(&mut self, mut f: impl FnMut()) {
        let start = Instant::now();
        let mut calls = 0;
        while start.elapsed() < RUN / ROUNDS {
            for _ in 0..16 {
                f();
            }
            calls += 16;
        }
        let time = start.elapsed();
        self.calls += calls;
        self.time += time;
        self.slices.push(calls as f64 / time.as_secs_f64());
    }

    /// Calls per second over all slices.
    fn rate(&self) -> f64 {
        self.calls as f64 / self.time.as_secs_f64()
    }

    /// The median over rounds of how many times faster `peer` ran than this side.
    fn median_ratio(&self, peer: &Meter) -> f64 {
        let mut ratios: Vec<f64> = (self.slices.iter().zip(&peer.slices))
            .map(|(ours, theirs)| theirs / ours)
            .collect();
        ratios.sort_by(f64::total_cmp);
        ratios[ratios.len() / 2]
    }
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
    // Random bytes each generator consumes per value: the password's 32 characters of 90
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
        let mut buf = vec![0u8; *bytes];
        let (mut ours, mut floor, mut ring) = (Meter::default(), Meter::default(), None);
        for _ in 0..ROUNDS {
            ours.slice(|| {
                black_box(generate(spec, None, &rng).expect("generate"));
            });
            floor.slice(|| {
                rng.fill(&mut buf).expect("fill");
                black_box(&buf);
            });
            match spec {
                GeneratorSpec::Ed25519 => ring.get_or_insert_with(Meter::default).slice(|| {
                    black_box(Ed25519KeyPair::generate_pkcs8(&rng).expect("keygen"));
                }),
                GeneratorSpec::EcdsaP256 => ring.get_or_insert_with(Meter::default).slice(|| {
                    let alg = &ECDSA_P256_SHA256_ASN1_SIGNING;
                    black_box(EcdsaKeyPair::generate_pkcs8(alg, &rng).expect("keygen"));
                }),
                _ => {}
            }
        }
        let (ring, ring_ratio) = match ring {
            Some(r) => (
                format!("{:.0}", r.rate()),
                format!("{:.2}x", ours.median_ratio(&r)),
            ),
            None => ("-".to_owned(), "-".to_owned()),
        };
        println!(
            "{name:<28} {:>12.0} {:>14.0} {:>7.2}x {ring:>14} {ring_ratio:>8}",
            ours.rate(),
            floor.rate(),
            ours.median_ratio(&floor)
        );
    }
    println!(
        "ratio = time per value / time per raw fill of the same byte count, or per ring keygen"
    );
    println!("(median over {ROUNDS} rounds of alternating slices; rates over all slices)");
    println!("(issue 8 target: within 1.2x)");
}
