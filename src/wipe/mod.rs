//! Wiping secret bytes so that the compiler cannot leave the writes out.
//!
//! Everything here goes through zeroize's wipe of a byte *slice* (`<[u8] as Zeroize>`),
//! not of a `Vec<u8>` or an array. zeroize 1.9 wipes a `Vec` or an array element by
//! element, one volatile store per byte; the slice wipe writes the zeros with an ordinary
//! fill (word- and vector-wide) and then passes the slice's address to an empty `asm!`
//! block declared as possibly reading that memory. The compiler cannot see into the
//! block, so it must assume the zeros are read there and cannot remove or shorten the
//! fill, even just before the memory is freed: the same guarantee as volatile stores,
//! at a fraction of the cost for anything longer than a few bytes. (On targets without
//! stable `asm!`, zeroize's slice wipe falls back to volatile stores.)
//! `tests/wiped_on_drop.rs` checks, at the allocator, that dropped values free zeros.

use std::ops::{Deref, DerefMut};

use zeroize::Zeroize;

mod json;
pub(crate) use json::{json_bytes, json_object_bytes, wipe_json};

/// Wipes every byte of `bytes`' allocation, its spare capacity included, leaving
/// `bytes` as long as its capacity and all zeros.
///
/// The spare capacity may hold secret bytes a `truncate` left behind. Growing the vector
/// into it first (no reallocation: the new length is the capacity) makes the whole
/// allocation one slice for the wipe.
pub(crate) fn wipe_allocation(bytes: &mut Vec<u8>) {
    bytes.resize(bytes.capacity(), 0);
    bytes.as_mut_slice().zeroize();
}

/// Wipes a string's whole allocation, leaving the string empty.
pub(crate) fn wipe_string(text: &mut String) {
    let mut bytes = std::mem::take(text).into_bytes();
    wipe_allocation(&mut bytes);
}

/// Heap bytes whose whole allocation is wiped when dropped.
///
/// Like `Zeroizing<Vec<u8>>`, only the current allocation is wiped: code that makes the
/// vector grow past its capacity leaves the old allocation unwiped, so size it up front.
#[derive(Clone, Default)]
pub(crate) struct WipedVec(Vec<u8>);

impl WipedVec {
    /// Takes ownership of `bytes`, to be wiped on drop.
    pub(crate) fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// `length` zero bytes, in an allocation of exactly that size.
    ///
    /// Not `vec![0; length]`: that asks the allocator for zeroed memory (`calloc`), which
    /// glibc serves without its per-thread cache of small blocks, a measurable share of
    /// a generator's time; a plain allocation zeroed here takes the cache's fast path.
    #[allow(clippy::slow_vector_initialization)] // measured faster here, see above
    pub(crate) fn zeroed(length: usize) -> Self {
        let mut bytes = Vec::with_capacity(length);
        bytes.resize(length, 0);
        Self(bytes)
    }

    /// The bytes, no longer wiped on drop: the caller takes that over.
    pub(crate) fn into_vec(mut self) -> Vec<u8> {
        std::mem::take(&mut self.0)
    }
}

impl Deref for WipedVec {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.0
    }
}

impl DerefMut for WipedVec {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
}

impl Drop for WipedVec {
    fn drop(&mut self) {
        wipe_allocation(&mut self.0);
    }
}

/// Bytes on the stack, wiped when dropped.
pub(crate) struct WipedArray<const N: usize>([u8; N]);

impl<const N: usize> WipedArray<N> {
    /// `N` zero bytes.
    pub(crate) fn new() -> Self {
        Self([0; N])
    }

    /// What dropping does: zeros every byte.
    pub(crate) fn wipe(&mut self) {
        self.0.as_mut_slice().zeroize();
    }
}

impl<const N: usize> Deref for WipedArray<N> {
    type Target = [u8; N];
    fn deref(&self) -> &[u8; N] {
        &self.0
    }
}

impl<const N: usize> DerefMut for WipedArray<N> {
    fn deref_mut(&mut self) -> &mut [u8; N] {
        &mut self.0
    }
}

impl<const N: usize> Drop for WipedArray<N> {
    fn drop(&mut self) {
        self.wipe();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_whole_allocation_is_wiped_spare_capacity_included() {
        let mut bytes = vec![0xa5u8; 48];
        bytes.truncate(16);
        let capacity = bytes.capacity();
        assert!(capacity >= 48, "the truncated bytes are still allocated");
        let before = bytes.as_ptr();
        wipe_allocation(&mut bytes);
        assert_eq!(bytes.as_ptr(), before, "wiped in place, not reallocated");
        assert_eq!(bytes.len(), capacity, "every allocated byte was covered");
        assert!(bytes.iter().all(|&b| b == 0));
    }

    #[test]
    fn every_length_is_wiped_to_its_last_byte() {
        // Lengths around the fill's word and vector widths, where a tail could be missed.
        for length in 0..=130 {
            let mut bytes = vec![0xffu8; length];
            wipe_allocation(&mut bytes);
            assert!(bytes.iter().all(|&b| b == 0), "length {length}");
            assert!(bytes.len() >= length);
        }
    }

    #[test]
    fn a_zeroed_vec_is_exactly_as_long_as_asked() {
        for length in [0, 1, 32, 43, 100] {
            let zeroed = WipedVec::zeroed(length);
            assert_eq!(zeroed.len(), length);
            assert_eq!(zeroed.capacity(), length);
            assert!(zeroed.iter().all(|&b| b == 0));
        }
    }

    #[test]
    fn a_wiped_vec_hands_over_its_bytes_unchanged() {
        let mut wiped = WipedVec::new(Vec::with_capacity(4));
        wiped.extend_from_slice(b"abcd");
        let copy = wiped.clone();
        assert_eq!(wiped.into_vec(), b"abcd");
        assert_eq!(&copy[..], b"abcd");
    }

    #[test]
    fn an_array_is_wiped_to_its_last_byte() {
        let mut array = WipedArray::<67>::new();
        array.fill(0x5a);
        array.wipe();
        assert_eq!(*array, [0u8; 67]);
    }
}
