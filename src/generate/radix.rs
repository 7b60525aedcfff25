//! Many uniform base-`n` digits from one random word, exactly.
//!
//! With `k` the most digits a word can hold (`n^k <= 2^BITS < n^(k+1)`) and `s = n^k`,
//! the digits of `floor(r * s / 2^BITS)` are read off the top of a word `r` by repeated
//! multiplication. That maps the `2^BITS` words onto the `s` digit strings almost evenly;
//! Lemire's rule makes it exactly even: reject `r` when the low half of `r * s` is below
//! `2^BITS mod s`. Every digit string then has `floor(2^BITS / s)` accepted words. `BITS`
//! is 64 in production; the tests prove the rule exhaustively with 8- and 16-bit words.

/// Splits random words into base-`n` digits, `k` per word.
#[derive(Clone, Debug)]
pub(super) struct Radix<const BITS: u32> {
    n: u64,
    /// Digits per word.
    k: usize,
    /// `n^k`.
    span: u64,
    /// Words whose `r * span` has a low half below this are rejected (`2^BITS mod span`).
    threshold: u64,
}

impl<const BITS: u32> Radix<BITS> {
    const WORDS: u128 = 1 << BITS;
    const MASK: u128 = Self::WORDS - 1;

    /// The splitter for `n` digits taking as many per word as fit, or `None` outside
    /// `2..=256` (digits are bytes, and a single choice needs no randomness).
    pub(super) fn new(n: usize) -> Option<Self> {
        const { assert!(BITS >= 8 && BITS <= 64) };
        let n = u64::try_from(n).ok().filter(|n| (2..=256).contains(n))?;
        let (mut k, mut span) = (0, 1u128);
        while span * u128::from(n) <= Self::WORDS {
            span *= u128::from(n);
            k += 1;
        }
        Some(Self {
            n,
            k,
            span: span as u64,
            threshold: (Self::WORDS % span) as u64,
        })
    }

    /// The same digits, `k` per word (1 up to the most that fit): fewer digits per word
    /// make rejection rarer, below `n^k / 2^BITS`.
    pub(super) fn with_digits(self, k: usize) -> Self {
        assert!((1..=self.k).contains(&k), "{k} digits do not fit a word");
        let span = (0..k).fold(1u128, |span, _| span * u128::from(self.n));
        Self {
            k,
            span: span as u64,
            threshold: (Self::WORDS % span) as u64,
            ..self
        }
    }

    /// Digits one word yields.
    pub(super) fn per_word(&self) -> usize {
        self.k
    }

    /// Writes `emit(d)` for the first `out.len()` (at most `k`) digits `d` of `word`, most
    /// significant first; returns false, writing nothing, when the word must be rejected.
    ///
    /// `word` must be below `2^BITS`. Taking fewer than `k` digits stays uniform: they are
    /// the leading digits of a uniform `k`-digit string.
    #[inline]
    pub(super) fn split(&self, word: u64, out: &mut [u8], mut emit: impl FnMut(u8) -> u8) -> bool {
        debug_assert!(out.len() <= self.k && u128::from(word) <= Self::MASK);
        let low = (u128::from(word) * u128::from(self.span)) & Self::MASK;
        if (low as u64) < self.threshold {
            return false;
        }
        let mut rest = word;
        for slot in out {
            let product = u128::from(rest) * u128::from(self.n);
            // Below n <= 256, so the byte keeps the digit whole.
            *slot = emit((product >> BITS) as u8);
            rest = (product & Self::MASK) as u64;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Digit `d` written as `d` itself.
    fn same(d: u8) -> u8 {
        d
    }

    /// Every word of a `BITS`-bit space through `split`, with the most digits that fit
    /// and with each smaller count: each `k`-digit string must come from the same number
    /// of accepted words, and the rest must be rejected.
    fn exhaustive<const BITS: u32>(n: usize) {
        let most = Radix::<BITS>::new(n).unwrap();
        let k = most.per_word();
        let strings = (n as u64).pow(k as u32);
        assert!(
            strings <= 1 << BITS && strings * n as u64 > 1 << BITS,
            "n = {n}: k = {k}"
        );
        for k in 1..=k {
            exhaustive_with::<BITS>(n, most.clone().with_digits(k));
        }
    }

    fn exhaustive_with<const BITS: u32>(n: usize, radix: Radix<BITS>) {
        let k = radix.per_word();
        let strings = (n as u64).pow(k as u32);
        let mut hits = vec![0u32; strings as usize];
        let mut rejected = 0u64;
        let mut digits = [0u8; 64];
        for word in 0..(1u64 << BITS) {
            if !radix.split(word, &mut digits[..k], same) {
                rejected += 1;
                continue;
            }
            // The digits read as a base-n number, so each string has its own slot.
            let value = digits[..k]
                .iter()
                .fold(0u64, |acc, &d| acc * n as u64 + u64::from(d));
            assert!(digits[..k].iter().all(|&d| usize::from(d) < n));
            hits[value as usize] += 1;
        }
        let each = (1u64 << BITS) / strings;
        assert!(
            hits.iter().all(|&h| u64::from(h) == each),
            "n = {n}, k = {k}, {BITS} bits: uneven"
        );
        assert_eq!(
            rejected,
            (1u64 << BITS) % strings,
            "n = {n}, k = {k}, {BITS} bits"
        );
    }

    #[test]
    fn every_digit_string_has_as_many_accepted_8_bit_words() {
        for n in 2..=256 {
            exhaustive::<8>(n);
        }
    }

    #[test]
    fn every_digit_string_has_as_many_accepted_16_bit_words() {
        // Every ASCII alphabet size, plus the byte-sized ones up to 256.
        for n in 2..=256 {
            exhaustive::<16>(n);
        }
    }

    #[test]
    fn digits_are_the_base_n_expansion_of_the_scaled_word() {
        // 94 printable ASCII characters: 9 digits per 64-bit word (94^9 <= 2^64 < 94^10).
        let radix = Radix::<64>::new(94).unwrap();
        assert_eq!(radix.per_word(), 9);
        // floor(0x0123456789abcdef * 94^9 / 2^64) = 2546643565460518, whose base-94
        // digits (worked out with Python's integers) are these.
        let mut out = [0u8; 9];
        assert!(radix.split(0x0123_4567_89ab_cdef, &mut out, same));
        assert_eq!(out, [0, 39, 25, 45, 50, 51, 75, 58, 6]);
        // Taking fewer digits gives the leading ones.
        let mut first = [0u8; 4];
        assert!(radix.split(0x0123_4567_89ab_cdef, &mut first, same));
        assert_eq!(first, out[..4]);
    }

    #[test]
    fn the_biased_tail_is_rejected_at_64_bits() {
        // For n = 10, k = 19 and 2^64 mod 10^19 = 8446744073709551616: word 0 has a low
        // half of 0 and is rejected; the largest word is accepted.
        let radix = Radix::<64>::new(10).unwrap();
        assert_eq!(radix.per_word(), 19);
        assert_eq!(radix.threshold, 8_446_744_073_709_551_616);
        let mut out = [0u8; 19];
        assert!(!radix.split(0, &mut out, same));
        assert!(radix.split(u64::MAX, &mut out, same));
        assert_eq!(out, [9; 19]);
    }

    #[test]
    fn sizes_outside_a_byte_are_refused() {
        assert!(Radix::<64>::new(0).is_none());
        assert!(Radix::<64>::new(1).is_none());
        assert!(Radix::<64>::new(257).is_none());
        assert_eq!(Radix::<64>::new(256).unwrap().per_word(), 8);
        assert_eq!(Radix::<64>::new(2).unwrap().per_word(), 64);
    }
}
