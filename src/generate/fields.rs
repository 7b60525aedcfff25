//! Uniform base-`n` digits from independent bit fields of random bytes, exactly.
//!
//! The random bytes are read as slots of `k` bytes (little-endian), each yielding `k`
//! digits. A slot's low `b` bits are its field, `b` the fewest bits that hold `n^k`: a
//! field `v` below `n^k` is accepted and read as the `k` base-`n` digits of `v`, a field
//! at or above it is rejected. Each of the `n^k` digit strings is the digits of exactly
//! one field value, so every accepted field is equally likely to be any of them.
//!
//! Slot `j` gives digits `k·j` onwards unless a field before it was rejected, which is
//! the common case: then every slot is decoded at once, in a loop the compiler turns into
//! vector instructions (no slot waits for another, where a 64-bit word of `super::radix`
//! is a chain of dependent multiplications). Otherwise fields are taken one by one in a
//! fixed order, rejected ones skipped: the slots' fields, then the slots' unused high bits
//! cut into more fields, then fresh random bytes. The order never depends on the values,
//! so the accepted fields stay independent and uniform.

use super::GenerateError;
use super::random::MAX_REJECTIONS;

/// Cuts random bytes into slots of `k` bytes and decodes each field into `k` digits.
#[derive(Clone, Debug)]
pub(super) struct Fields {
    n: u16,
    /// Digits per field, and bytes per slot: 1 or 2.
    k: usize,
    /// Bits per field: the fewest that hold `span` values.
    bits: u32,
    /// `n^k`: fields at or above it are rejected.
    span: u16,
    /// `2^bits - 1`.
    mask: u16,
    /// For every field `v` below `span`, `floor(v / n)` is `(v * multiplier) >> shift`
    /// (checked for each one when built): a multiplication of 16-bit lanes instead of a
    /// division, which vector instructions do not have.
    multiplier: u16,
    shift: u32,
}

impl Fields {
    /// The fields for `n` digits, or `None` outside `2..=128` (ASCII alphabets; a single
    /// choice needs no randomness). One digit per byte or two per 16 bits, whichever
    /// accepts more fields per digit (one on a tie: it needs no division).
    pub(super) fn new(n: usize) -> Option<Self> {
        let one = Self::with_digits(n, 1)?;
        let two = Self::with_digits(n, 2)?;
        // Acceptance per digit: p for one digit a field, sqrt(p) for two.
        if one.acceptance() * one.acceptance() >= two.acceptance() {
            Some(one)
        } else {
            Some(two)
        }
    }

    /// Fields of `k` digits (1 or 2), or `None` when `n` is outside `2..=128`.
    pub(super) fn with_digits(n: usize, k: usize) -> Option<Self> {
        let n = u16::try_from(n).ok().filter(|n| (2..=128).contains(n))?;
        if !(1..=2).contains(&k) {
            return None;
        }
        // At most 128^2 = 2^14.
        let span = n.pow(k as u32);
        let bits = u16::BITS - (span - 1).leading_zeros();
        let (multiplier, shift) = (16..=31).find_map(|shift| {
            // The rounded-up reciprocal; the first shift where it is exact for every
            // field value is taken.
            let multiplier = u16::try_from((1u32 << shift).div_ceil(u32::from(n))).ok()?;
            let exact = (0..span)
                .all(|v| (u32::from(v) * u32::from(multiplier)) >> shift == u32::from(v / n));
            exact.then_some((multiplier, shift))
        })?;
        Some(Self {
            n,
            k,
            bits,
            span,
            mask: ((1u32 << bits) - 1) as u16,
            multiplier,
            shift,
        })
    }

    /// Digits per field, and bytes per slot.
    pub(super) fn digits(&self) -> usize {
        self.k
    }

    /// The chance that a field is accepted: `n^k / 2^b`.
    pub(super) fn acceptance(&self) -> f64 {
        f64::from(self.span) / f64::from(1u32 << self.bits)
    }

    /// Fields in `bytes` random bytes: one per slot, plus the slots' unused high bits
    /// cut into fields.
    pub(super) fn fields_in(&self, bytes: usize) -> usize {
        let slots = bytes / self.k;
        let spare = slots * (8 * self.k - self.bits as usize);
        slots + spare / self.bits as usize
    }

    /// Slot `index`, whole.
    #[inline]
    fn slot(&self, random: &[u8], index: usize) -> u16 {
        match self.k {
            1 => u16::from(random[index]),
            _ => u16::from_le_bytes([random[2 * index], random[2 * index + 1]]),
        }
    }

    /// The field of slot `index`.
    #[inline]
    fn field(&self, random: &[u8], index: usize) -> u16 {
        self.slot(random, index) & self.mask
    }

    /// The `K` base-`n` digits of field `v`, most significant first; meaningless for a
    /// rejected field, but still bytes.
    #[inline]
    fn decode<const K: usize>(&self, v: u16) -> [u8; K] {
        let mut digits = [0u8; K];
        if K == 1 {
            digits[0] = v as u8;
        } else {
            // 16 x 16 -> high 16 bits, then a shift: the form vector code has.
            let high = ((u32::from(v) * u32::from(self.multiplier)) >> 16) as u16;
            let quotient = high >> (self.shift - 16);
            digits[0] = quotient as u8;
            digits[K - 1] = v.wrapping_sub(quotient.wrapping_mul(self.n)) as u8;
        }
        digits
    }

    /// Writes uniform digits into every byte of `out` from `random`, whose bytes were just
    /// fetched. When its fields run out, `refill` fetches new random bytes into it and
    /// fields start again from the first.
    ///
    /// `out` has `k - 1` bytes of room past the digits wanted: a last field with more
    /// digits than needed writes them all, and the leading ones, those kept, are the
    /// leading digits of a uniform string, so uniform too.
    pub(super) fn fill(
        &self,
        out: &mut [u8],
        random: &mut [u8],
        refill: impl FnMut(&mut [u8]) -> Result<(), GenerateError>,
    ) -> Result<(), GenerateError> {
        match self.k {
            1 => self.fill_with::<1>(out, random, refill),
            _ => self.fill_with::<2>(out, random, refill),
        }
    }

    fn fill_with<const K: usize>(
        &self,
        out: &mut [u8],
        random: &mut [u8],
        refill: impl FnMut(&mut [u8]) -> Result<(), GenerateError>,
    ) -> Result<(), GenerateError> {
        let wanted = out.len() / K;
        assert!(
            out.len().is_multiple_of(K) && wanted <= random.len() / K,
            "room for the digits"
        );
        // Every slot at once, then one check: the compiler vectorizes this loop.
        let mut largest = 0;
        for (digits, slot) in out.chunks_exact_mut(K).zip(random.chunks_exact(K)) {
            let v = match K {
                1 => u16::from(slot[0]),
                _ => u16::from_le_bytes([slot[0], slot[K - 1]]),
            } & self.mask;
            largest = largest.max(v);
            digits.copy_from_slice(&self.decode::<K>(v));
        }
        if largest < self.span {
            return Ok(());
        }
        self.fill_in_order::<K>(out, random, refill)
    }

    /// Fields one by one in their fixed order, rejected ones skipped, from the first slot
    /// whose field was rejected.
    #[cold]
    #[inline(never)]
    fn fill_in_order<const K: usize>(
        &self,
        out: &mut [u8],
        random: &mut [u8],
        mut refill: impl FnMut(&mut [u8]) -> Result<(), GenerateError>,
    ) -> Result<(), GenerateError> {
        let wanted = out.len() / K;
        let first = (0..wanted)
            .find(|&j| self.field(random, j) >= self.span)
            .expect("a field was rejected");
        let mut next = Next::at(first + 1);
        let mut refills = 0;
        for digits in out.chunks_exact_mut(K).skip(first) {
            let v = loop {
                let Some(v) = next.field(self, random) else {
                    // A healthy source needs this rarely (the caller fetches spare
                    // fields); a source stuck on rejected fields would loop forever.
                    if refills == MAX_REJECTIONS {
                        return Err(GenerateError::Rng);
                    }
                    refills += 1;
                    refill(random)?;
                    next = Next::at(0);
                    continue;
                };
                if v < self.span {
                    break v;
                }
            };
            digits.copy_from_slice(&self.decode::<K>(v));
        }
        Ok(())
    }
}

/// The next field in the fixed order: slot `slot`'s, or once past the last slot, the
/// next `b` bits of the slots' high bits read as one stream (the bits above each slot's
/// field, slot by slot, lowest first).
struct Next {
    slot: usize,
    /// The next slot whose high bits join the stream.
    spare: usize,
    /// Stream bits read from the slots and not yet taken, lowest first.
    stream: u32,
    /// How many bits `stream` holds.
    held: u32,
}

impl Next {
    fn at(slot: usize) -> Self {
        Self {
            slot,
            spare: 0,
            stream: 0,
            held: 0,
        }
    }

    /// The field, or `None` when every field of `random` has been taken.
    fn field(&mut self, fields: &Fields, random: &[u8]) -> Option<u16> {
        let slots = random.len() / fields.k;
        if self.slot < slots {
            self.slot += 1;
            return Some(fields.field(random, self.slot - 1));
        }
        // At most 15 bits held, plus at most 15 from a slot.
        while self.held < fields.bits {
            if self.spare == slots {
                return None;
            }
            let high = u32::from(fields.slot(random, self.spare) >> fields.bits);
            self.stream |= high << self.held;
            self.held += 8 * fields.k as u32 - fields.bits;
            self.spare += 1;
        }
        let v = self.stream as u16 & fields.mask;
        self.stream >>= fields.bits;
        self.held -= fields.bits;
        Some(v)
    }
}
