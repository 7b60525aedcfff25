//! Random bytes and unbiased random indices for the generators.
//!
//! Generators read randomness through [`RandomSource`] rather than ring's sealed
//! `SecureRandom` trait directly, so tests can script exact bytes and failures.

use ring::rand::SecureRandom;
use zeroize::{Zeroize, Zeroizing};

use super::GenerateError;

/// Consecutive rejected draws after which the source is treated as broken.
///
/// Each draw is rejected with probability below 1/2, so a healthy source reaches this
/// with probability below 2^-256; a source stuck on one tail value would otherwise loop forever.
pub(super) const MAX_REJECTIONS: usize = 256;

/// Where generators get their random bytes.
pub(super) trait RandomSource {
    /// Fills `dest` with random bytes.
    fn fill(&self, dest: &mut [u8]) -> Result<(), GenerateError>;
}

/// Bytes fetched from the system per refill: one `getrandom` call serves a whole password
/// instead of one call per character drawn.
const BUFFER: usize = 128;
/// Requests this large or larger (bulk bytes, keys) go to the system directly: buffering
/// them would only fetch randomness that is thrown away.
const DIRECT: usize = 16;

/// The production source: ring's `SecureRandom` (in practice `SystemRandom`), read in
/// blocks of [`BUFFER`] bytes. Every byte is handed out once and wiped as it goes; the
/// unused rest is wiped when the source is dropped.
pub(super) struct Ring<'a> {
    rng: &'a dyn SecureRandom,
    /// Not `Zeroizing`: `Drop` wipes only the bytes not handed out. `None` until the
    /// first small request: most generators never need it (bulk requests bypass it), and
    /// would otherwise pay for zeroing and wiping it on every value.
    buffer: std::cell::RefCell<Option<[u8; BUFFER]>>,
    /// Bytes of `buffer` already handed out (`BUFFER`: empty).
    used: std::cell::Cell<usize>,
}

impl<'a> Ring<'a> {
    pub(super) fn new(rng: &'a dyn SecureRandom) -> Self {
        Self {
            rng,
            buffer: std::cell::RefCell::new(None),
            used: std::cell::Cell::new(BUFFER),
        }
    }
}

impl Ring<'_> {
    /// Wipes the bytes not handed out (those were wiped as they went); none are left when
    /// no block was fetched.
    fn wipe_unused(&mut self) {
        let used = self.used.get();
        if let Some(buffer) = self.buffer.get_mut() {
            buffer[used..].zeroize();
        }
    }
}

impl Drop for Ring<'_> {
    fn drop(&mut self) {
        self.wipe_unused();
    }
}

impl RandomSource for Ring<'_> {
    fn fill(&self, dest: &mut [u8]) -> Result<(), GenerateError> {
        if dest.len() >= DIRECT {
            return self.rng.fill(dest).map_err(|_| GenerateError::Rng);
        }
        let mut buffer = self.buffer.borrow_mut();
        let buffer = buffer.get_or_insert([0; BUFFER]);
        let mut written = 0;
        while written < dest.len() {
            if self.used.get() == BUFFER {
                self.rng
                    .fill(&mut buffer[..])
                    .map_err(|_| GenerateError::Rng)?;
                self.used.set(0);
            }
            let start = self.used.get();
            let take = (dest.len() - written).min(BUFFER - start);
            dest[written..written + take].copy_from_slice(&buffer[start..start + take]);
            // Handed-out bytes are wiped from the block at once.
            buffer[start..start + take].fill(0);
            self.used.set(start + take);
            written += take;
        }
        Ok(())
    }
}

/// A uniform index in `0..n`.
///
/// Draws one byte when `n <= 256`, else a big-endian `u32`, and rejects draws at or above
/// the largest multiple of `n` the draw can hold, since plain modulo would favour the low
/// indices. `n <= 1` needs no randomness and draws nothing.
pub(super) fn index_below(source: &dyn RandomSource, n: usize) -> Result<usize, GenerateError> {
    if n <= 1 {
        return Ok(0);
    }
    if n <= 256 {
        let limit = 256 - 256 % n;
        let mut byte = Zeroizing::new([0u8; 1]);
        for _ in 0..MAX_REJECTIONS {
            source.fill(&mut byte[..])?;
            let value = usize::from(byte[0]);
            if value < limit {
                return Ok(value % n);
            }
        }
        return Err(GenerateError::Rng);
    }
    let Ok(n32) = u32::try_from(n) else {
        return Err(GenerateError::Impossible(format!(
            "cannot pick uniformly among {n} choices (at most {} are supported)",
            u32::MAX
        )));
    };
    let span = 1u64 << 32;
    let limit = span - span % u64::from(n32);
    let mut word = Zeroizing::new([0u8; 4]);
    for _ in 0..MAX_REJECTIONS {
        source.fill(&mut word[..])?;
        let value = u64::from(u32::from_be_bytes(*word));
        if value < limit {
            return Ok((value % u64::from(n32)) as usize);
        }
    }
    Err(GenerateError::Rng)
}

/// Shuffles `items` in place with Fisher–Yates, every permutation equally likely.
pub(super) fn shuffle<T>(source: &dyn RandomSource, items: &mut [T]) -> Result<(), GenerateError> {
    for i in (1..items.len()).rev() {
        let j = index_below(source, i + 1)?;
        items.swap(i, j);
    }
    Ok(())
}

#[cfg(test)]
pub(super) mod tests {
    use std::cell::{Cell, RefCell};
    use std::collections::VecDeque;

    use super::*;

    /// Yields exactly the scripted bytes, then fails like a broken random source.
    pub(in crate::generate) struct Scripted {
        bytes: RefCell<VecDeque<u8>>,
        /// Number of `fill` calls made so far.
        pub(in crate::generate) calls: Cell<usize>,
    }

    impl Scripted {
        pub(in crate::generate) fn new(bytes: &[u8]) -> Self {
            Self {
                bytes: RefCell::new(bytes.iter().copied().collect()),
                calls: Cell::new(0),
            }
        }

        pub(in crate::generate) fn remaining(&self) -> usize {
            self.bytes.borrow().len()
        }
    }

    impl RandomSource for Scripted {
        fn fill(&self, dest: &mut [u8]) -> Result<(), GenerateError> {
            self.calls.set(self.calls.get() + 1);
            let mut bytes = self.bytes.borrow_mut();
            if bytes.len() < dest.len() {
                return Err(GenerateError::Rng);
            }
            for slot in dest.iter_mut() {
                *slot = bytes.pop_front().expect("length checked above");
            }
            Ok(())
        }
    }

    #[test]
    #[allow(deprecated)] // ring's scripted SecureRandom: the only fake its sealed trait allows
    fn the_buffered_system_source_hands_each_byte_out_once() {
        use ring::test::rand::FixedSliceSequenceRandom;
        let first: Vec<u8> = (0..128).collect();
        let second = [7u8; 128];
        let bulk = [9u8; 32];
        let blocks: [&[u8]; 3] = [&first, &bulk, &second];
        let fake = FixedSliceSequenceRandom {
            bytes: &blocks,
            current: std::cell::UnsafeCell::new(0),
        };
        let source = Ring::new(&fake);
        // Small draws come from one block, in order, each byte once.
        let mut drawn = Vec::new();
        for _ in 0..120 {
            let mut byte = [0u8; 1];
            source.fill(&mut byte).unwrap();
            drawn.push(byte[0]);
        }
        assert_eq!(drawn, first[..120].to_vec());
        // A bulk request goes straight to the system.
        let mut key = [0u8; 32];
        source.fill(&mut key).unwrap();
        assert_eq!(key, bulk);
        // Small draws resume: the rest of the first block, then the next one.
        let mut tail = [0u8; 12];
        source.fill(&mut tail).unwrap();
        assert_eq!(&tail[..8], &first[120..]);
        assert_eq!(&tail[8..], &[7u8; 4][..]);
        {
            let buffer = source.buffer.borrow();
            let buffer = buffer.as_ref().expect("a small request fetched a block");
            assert!(
                buffer[..4].iter().all(|&x| x == 0),
                "handed-out bytes are wiped"
            );
            assert!(
                buffer[4..].iter().all(|&x| x == 7),
                "the rest is still unused"
            );
        }
        // What dropping the source does: the unused rest is wiped too.
        let mut source = source;
        source.wipe_unused();
        let buffer = source.buffer.borrow();
        assert!(buffer.as_ref().unwrap().iter().all(|&x| x == 0));
    }

    #[test]
    fn bulk_requests_alone_never_fetch_a_block() {
        let rng = ring::rand::SystemRandom::new();
        let source = Ring::new(&rng);
        let mut key = [0u8; DIRECT];
        source.fill(&mut key).unwrap();
        assert!(source.buffer.borrow().is_none());
    }

    #[test]
    fn a_byte_in_the_biased_tail_is_rejected_and_the_next_one_used() {
        // For 10 choices the largest multiple of 10 under 256 is 250: 250..=255 would
        // make indices 0..=5 more likely, so they are skipped.
        let source = Scripted::new(&[250, 255, 7]);
        assert_eq!(index_below(&source, 10).unwrap(), 7);
        assert_eq!(source.calls.get(), 3);
        assert_eq!(source.remaining(), 0);

        let source = Scripted::new(&[249]);
        assert_eq!(index_below(&source, 10).unwrap(), 9, "249 is below 250");
    }

    #[test]
    fn every_index_is_reached_by_exactly_as_many_bytes() {
        // Exhaustive over every byte value: an unbiased sampler maps the same number of
        // accepted bytes to each index and rejects the rest.
        for n in 2..=256usize {
            let mut hits = vec![0usize; n];
            let mut rejected = 0;
            for byte in 0..=255u8 {
                match index_below(&Scripted::new(&[byte]), n) {
                    Ok(index) => hits[index] += 1,
                    Err(GenerateError::Rng) => rejected += 1,
                    Err(other) => panic!("unexpected error {other:?}"),
                }
            }
            assert!(hits.iter().all(|&h| h == 256 / n), "n = {n}: {hits:?}");
            assert_eq!(rejected, 256 % n, "n = {n}");
        }
    }

    #[test]
    fn ranges_over_a_byte_draw_u32_and_reject_their_tail() {
        // 2^32 mod 300 = 196, so the accepted draws are 0..4_294_967_100.
        let mut script = Vec::new();
        script.extend_from_slice(&u32::MAX.to_be_bytes());
        script.extend_from_slice(&4_294_967_100u32.to_be_bytes());
        script.extend_from_slice(&4_294_967_099u32.to_be_bytes());
        let source = Scripted::new(&script);
        assert_eq!(index_below(&source, 300).unwrap(), 299);
        assert_eq!(source.calls.get(), 3, "two tail draws were rejected");
        assert_eq!(source.remaining(), 0);

        let source = Scripted::new(&301u32.to_be_bytes());
        assert_eq!(index_below(&source, 300).unwrap(), 1);
    }

    #[test]
    fn a_single_choice_needs_no_randomness() {
        let source = Scripted::new(&[]);
        assert_eq!(index_below(&source, 1).unwrap(), 0);
        assert_eq!(source.calls.get(), 0);
    }

    #[test]
    fn a_source_stuck_in_the_tail_is_an_error_not_a_hang() {
        let stuck = Scripted::new(&[255; MAX_REJECTIONS]);
        assert!(matches!(index_below(&stuck, 10), Err(GenerateError::Rng)));
        assert_eq!(stuck.calls.get(), MAX_REJECTIONS);
    }

    #[test]
    fn shuffle_is_fisher_yates_driven_by_the_source() {
        // Draws for i = 3, 2, 1 pick j = 0, 0, 0: [a b c d] -> [d b c a] -> [c b d a] -> [b c d a].
        let source = Scripted::new(&[0, 0, 0]);
        let mut items = ['a', 'b', 'c', 'd'];
        shuffle(&source, &mut items).unwrap();
        assert_eq!(items, ['b', 'c', 'd', 'a']);
        assert_eq!(source.remaining(), 0);
    }
}
