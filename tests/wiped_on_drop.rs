//! A dropped secret value gives back only zeros: the allocator sees its whole block,
//! spare capacity included, wiped before it is freed.
//!
//! Its own test binary, because it watches frees through a global allocator. The library
//! forbids `unsafe`; a global allocator cannot be written without it, and this one only
//! forwards to the system allocator after reading the block it is handed.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use rekeyd::generate::{
    BytesSpec, CharClass, CompiledPassword, Encoding, GeneratorSpec, PasswordSpec, generate,
};
use rekeyd::secret::SecretValue;
use ring::rand::SystemRandom;

/// The system allocator, reporting for one block under watch whether it was all zeros
/// when freed.
struct Watching;

/// Address of the block under watch (0: none).
static WATCHED: AtomicUsize = AtomicUsize::new(0);
/// What the watched block held when freed.
static SEEN: AtomicU8 = AtomicU8::new(NOT_FREED);
const NOT_FREED: u8 = 0;
const ZEROS: u8 = 1;
const NOT_ZEROS: u8 = 2;

// SAFETY: every call is forwarded unchanged to `System`; `dealloc` only reads the block
// it was handed (valid for `layout.size()` bytes until it is passed on) before freeing it.
unsafe impl GlobalAlloc for Watching {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let address = ptr as usize;
        if address != 0
            && WATCHED
                .compare_exchange(address, 0, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            let block = unsafe { std::slice::from_raw_parts(ptr, layout.size()) };
            let seen = if block.iter().all(|&b| b == 0) {
                ZEROS
            } else {
                NOT_ZEROS
            };
            SEEN.store(seen, Ordering::SeqCst);
        }
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Watching = Watching;

/// Drops `value` and says what its block held when the allocator got it back.
fn freed_block(value: SecretValue) -> u8 {
    SEEN.store(NOT_FREED, Ordering::SeqCst);
    WATCHED.store(value.expose().as_ptr() as usize, Ordering::SeqCst);
    drop(value);
    SEEN.load(Ordering::SeqCst)
}

// One test function: the watch is global, and tests in one binary run on several threads.
#[test]
fn dropped_values_free_only_zeros() {
    // Secret bytes past the length, as a `truncate` leaves them, are wiped too.
    let mut bytes = b"canary-7f3a".repeat(8);
    bytes.truncate(20);
    assert!(bytes.capacity() > bytes.len());
    assert_eq!(
        freed_block(SecretValue::new(bytes)),
        ZEROS,
        "a truncated vector"
    );

    let value = SecretValue::from_string("canary-7f3a".to_owned());
    assert_eq!(freed_block(value.clone()), ZEROS, "a clone");
    assert_eq!(freed_block(value), ZEROS, "a string's bytes");

    let rng = SystemRandom::new();
    let password = CompiledPassword::new(PasswordSpec {
        length: 32,
        classes: vec![(CharClass::Lower, 1), (CharClass::Digit, 1)],
        symbols: None,
        exclude: String::new(),
    })
    .unwrap();
    let specs = [
        GeneratorSpec::Password(password),
        GeneratorSpec::Bytes(BytesSpec {
            length: 32,
            encoding: Encoding::Base64Url,
        }),
        GeneratorSpec::Ed25519,
        GeneratorSpec::EcdsaP256,
    ];
    for spec in &specs {
        let value = generate(spec, None, &rng).unwrap();
        assert_eq!(freed_block(value), ZEROS, "{spec:?}");
    }

    // The watch sees a block that is not wiped, so the checks above can fail.
    let plain = b"canary-7f3a".to_vec();
    SEEN.store(NOT_FREED, Ordering::SeqCst);
    WATCHED.store(plain.as_ptr() as usize, Ordering::SeqCst);
    drop(plain);
    assert_eq!(SEEN.load(Ordering::SeqCst), NOT_ZEROS);
}
