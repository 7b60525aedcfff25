//! Password generation: character classes, per-class minimums, exclusions.
//!
//! [`CompiledPassword`] checks a [`PasswordSpec`] and builds its alphabet once; every value
//! is then drawn by the method chosen for that spec:
//!
//! - **Uniform** (ASCII alphabets whose minimums a random draw usually meets): the whole
//!   password is drawn from the alphabet, several characters per random word
//!   (`super::radix`), straight into the output buffer, and drawn again if a minimum is
//!   missed. Every valid password is equally likely.
//! - **Spread** (non-ASCII symbols, or minimums a random draw often misses, which would
//!   make the redraws loop): each class's minimum is drawn from that class, the rest from
//!   the whole alphabet, then a shuffle hides which positions were forced.

use zeroize::{Zeroize, Zeroizing};

use super::radix::Radix;
use super::random::{MAX_REJECTIONS, RandomSource, index_below, shuffle};
use super::{CharClass, DEFAULT_SYMBOLS, GenerateError, PasswordSpec};
use crate::secret::SecretValue;
use crate::wipe::{WipedArray, WipedVec};

/// The estimated chance that a uniform draw meets every minimum below which a spec uses
/// the spread method: at 1/2 a healthy source needs two draws on average, and
/// `MAX_REJECTIONS` redraws fail with probability below 2^-256.
const MIN_ACCEPTANCE: f64 = 0.5;

/// The class's lowercase name, as the policy spells it.
fn class_name(class: CharClass) -> &'static str {
    match class {
        CharClass::Lower => "lower",
        CharClass::Upper => "upper",
        CharClass::Digit => "digit",
        CharClass::Symbol => "symbol",
    }
}

/// The class's characters before exclusions, sorted and without duplicates.
fn class_chars(class: CharClass, symbols: Option<&str>) -> Vec<char> {
    let mut chars: Vec<char> = match class {
        CharClass::Lower => ('a'..='z').collect(),
        CharClass::Upper => ('A'..='Z').collect(),
        CharClass::Digit => ('0'..='9').collect(),
        CharClass::Symbol => symbols.unwrap_or(DEFAULT_SYMBOLS).chars().collect(),
    };
    chars.sort_unstable();
    chars.dedup();
    chars
}

/// One allowed class after exclusions.
#[derive(Clone)]
struct Pool {
    class: CharClass,
    chars: Vec<char>,
    min: usize,
}

/// The allowed classes after exclusions, one entry per class.
///
/// A class listed twice keeps the larger minimum: both entries then hold.
fn pools(spec: &PasswordSpec) -> Vec<Pool> {
    let mut pools: Vec<Pool> = Vec::new();
    for &(class, min) in &spec.classes {
        if let Some(pool) = pools.iter_mut().find(|p| p.class == class) {
            pool.min = pool.min.max(min);
            continue;
        }
        let mut chars = class_chars(class, spec.symbols.as_deref());
        chars.retain(|c| !spec.exclude.contains(*c));
        pools.push(Pool { class, chars, min });
    }
    pools
}

/// A [`PasswordSpec`] checked once, with its alphabet built, ready to draw many passwords.
///
/// Immutable: the alphabet is built from the spec it holds, so it cannot describe another.
#[derive(Clone)]
pub struct CompiledPassword {
    spec: PasswordSpec,
    method: Method,
}

/// How values are drawn for one spec (see the module comment).
#[derive(Clone)]
enum Method {
    /// Shared: every secret's settings hold a copy of its generator, and the tables are
    /// 2.3 KiB (a policy of 100,000 secrets in some hundreds of setting groups held a
    /// copy for each group).
    Uniform(std::sync::Arc<Uniform>),
    Spread(Spread),
}

impl CompiledPassword {
    /// Checks `spec` and builds its alphabet; fails when no password can follow it.
    pub fn new(spec: PasswordSpec) -> Result<Self, GenerateError> {
        let pools = pools(&spec);
        for pool in &pools {
            if pool.min > 0 && pool.chars.is_empty() {
                return Err(GenerateError::Impossible(format!(
                    "the {} class needs at least {} character(s) but every one of its characters is excluded",
                    class_name(pool.class),
                    pool.min
                )));
            }
        }
        let mut alphabet: Vec<char> = pools.iter().flat_map(|p| p.chars.iter().copied()).collect();
        alphabet.sort_unstable();
        alphabet.dedup();
        if alphabet.is_empty() {
            return Err(GenerateError::Impossible(
                "no characters are left to draw from once the excluded ones are removed".to_owned(),
            ));
        }
        let required = pools
            .iter()
            .try_fold(0usize, |sum, p| sum.checked_add(p.min))
            .filter(|&sum| sum <= spec.length);
        if required.is_none() {
            return Err(GenerateError::Impossible(format!(
                "the class minimums add up to more than the length of {} characters",
                spec.length
            )));
        }
        let method = match Uniform::new(spec.length, &pools, &alphabet) {
            Some(uniform) if acceptance(spec.length, &pools, alphabet.len()) >= MIN_ACCEPTANCE => {
                Method::Uniform(std::sync::Arc::new(uniform))
            }
            _ => Method::Spread(Spread {
                length: spec.length,
                pools: pools.into_iter().filter(|p| p.min > 0).collect(),
                alphabet,
            }),
        };
        Ok(Self { spec, method })
    }

    /// The rules this was compiled from.
    pub fn spec(&self) -> &PasswordSpec {
        &self.spec
    }

    /// A random password following the spec.
    pub(super) fn generate(&self, source: &dyn RandomSource) -> Result<SecretValue, GenerateError> {
        match &self.method {
            Method::Uniform(uniform) => uniform.generate(source),
            Method::Spread(spread) => spread.generate(source),
        }
    }

    /// Forces the spread method, so tests cover it for any spec.
    #[cfg(test)]
    pub(super) fn spread(mut self) -> Self {
        let pools = pools(&self.spec);
        let mut alphabet: Vec<char> = pools.iter().flat_map(|p| p.chars.iter().copied()).collect();
        alphabet.sort_unstable();
        alphabet.dedup();
        self.method = Method::Spread(Spread {
            length: self.spec.length,
            pools: pools.into_iter().filter(|p| p.min > 0).collect(),
            alphabet,
        });
        self
    }

    #[cfg(test)]
    pub(super) fn is_uniform(&self) -> bool {
        matches!(self.method, Method::Uniform(_))
    }
}

/// Equal when the specs are: the rest is built from the spec.
impl PartialEq for CompiledPassword {
    fn eq(&self, other: &Self) -> bool {
        self.spec == other.spec
    }
}

/// Shows the spec only; the tables are derived from it.
impl std::fmt::Debug for CompiledPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("CompiledPassword").field(&self.spec).finish()
    }
}

/// A lower bound on the chance that `length` uniform draws from `n` characters meet every
/// minimum: one minus the chances, summed over classes, that each one alone falls short.
fn acceptance(length: usize, pools: &[Pool], n: usize) -> f64 {
    let short: f64 = pools
        .iter()
        .map(|p| binomial_below(length, p.chars.len() as f64 / n as f64, p.min))
        .sum();
    1.0 - short
}

/// The chance that fewer than `min` of `trials` draws land in a class of probability `p`.
///
/// Terms are summed from their logarithms so that long passwords, where `(1 - p)^trials`
/// underflows, still add up correctly.
fn binomial_below(trials: usize, p: f64, min: usize) -> f64 {
    if min == 0 {
        return 0.0;
    }
    if p >= 1.0 {
        // Every draw is in the class, and minimums never exceed the length.
        return 0.0;
    }
    if p <= 0.0 {
        return 1.0;
    }
    let (ln_p, ln_q) = (p.ln(), (-p).ln_1p());
    let mut ln_term = trials as f64 * ln_q;
    let mut sum = 0.0;
    for i in 0..min.min(trials + 1) {
        sum += ln_term.exp();
        ln_term += ((trials - i) as f64 / (i + 1) as f64).ln() + ln_p - ln_q;
    }
    sum.min(1.0)
}

/// The uniform method's tables, for an ASCII alphabet.
#[derive(Clone)]
struct Uniform {
    length: usize,
    radix: Radix<64>,
    /// Words per password: the fewest that hold `length` digits.
    words: usize,
    /// Each digit's character.
    chars: [u8; 256],
    /// Each digit's classes: a 1 in the 16-bit lane of every class holding its character,
    /// so adding them up counts every class at once.
    lanes: [u64; 256],
    /// Each lane's minimum.
    minimums: [u16; 4],
}

impl Uniform {
    /// The tables, or `None` when the alphabet is not ASCII, has a single character (which
    /// needs no randomness), or the length does not fit a 16-bit lane.
    fn new(length: usize, pools: &[Pool], alphabet: &[char]) -> Option<Self> {
        if !alphabet.iter().all(char::is_ascii) || u16::try_from(length).is_err() {
            return None;
        }
        let most = Radix::new(alphabet.len())?;
        let words = length.div_ceil(most.per_word());
        // Spreading the digits evenly over the words keeps each word's rejection chance
        // (below n^k / 2^64) far smaller: 32 of 94 characters take 8 per word, not 9, 9,
        // 9 and 5. At least 8, which the in-place conversion in `generate` relies on.
        let per_word = length.div_ceil(words).max(8).min(most.per_word());
        let radix = most.with_digits(per_word);
        let mut chars = [0u8; 256];
        let mut lanes = [0u64; 256];
        let mut minimums = [0u16; 4];
        for (digit, c) in alphabet.iter().enumerate() {
            chars[digit] = *c as u8;
            // At most four pools: one per class.
            for (lane, pool) in pools.iter().enumerate() {
                if pool.chars.contains(c) {
                    lanes[digit] |= 1 << (16 * lane);
                }
            }
        }
        for (lane, pool) in pools.iter().enumerate() {
            // Below the length, checked to fit.
            minimums[lane] = u16::try_from(pool.min).ok()?;
        }
        Some(Self {
            length,
            radix,
            words,
            chars,
            lanes,
            minimums,
        })
    }

    fn generate(&self, source: &dyn RandomSource) -> Result<SecretValue, GenerateError> {
        let per_word = self.radix.per_word();
        let words = self.words;
        // The random words are fetched into the output buffer itself and turned into
        // characters in place, so no other copy of them is left to wipe.
        let room = self.length.max(words * 8);
        let mut out = WipedVec::zeroed(room);
        let mut spare = Spare::default();
        for _ in 0..MAX_REJECTIONS {
            // A redraw overwrites the rejected password.
            source.fill(&mut out[..words * 8])?;
            let mut counts = 0u64;
            let mut emit = |digit: u8| {
                counts += self.lanes[usize::from(digit)];
                self.chars[usize::from(digit)]
            };
            // Last word first: word i's characters start at per_word * i >= 8 * i, past the
            // bytes of every word not yet read.
            for i in (0..words).rev() {
                let bytes: [u8; 8] = out[8 * i..8 * i + 8].try_into().expect("8 bytes");
                let mut word = u64::from_be_bytes(bytes);
                let chars = per_word * i..(per_word * (i + 1)).min(self.length);
                let mut tries = 1;
                loop {
                    let chars = &mut out[chars.clone()];
                    // Eight characters a word is the common case (see `Uniform::new`): a
                    // fixed count lets the compiler unroll the digit loop.
                    let accepted = match <&mut [u8; 8]>::try_from(&mut *chars) {
                        Ok(eight) => self.radix.split(word, eight, &mut emit),
                        Err(_) => self.radix.split(word, chars, &mut emit),
                    };
                    if accepted {
                        break;
                    }
                    if tries == MAX_REJECTIONS {
                        return Err(GenerateError::Rng);
                    }
                    tries += 1;
                    word = spare.next(source)?;
                }
            }
            let met = (0..4).all(|lane| (counts >> (16 * lane)) as u16 >= self.minimums[lane]);
            if met {
                // Unused random bytes past the last character.
                out[self.length..].zeroize();
                out.truncate(self.length);
                return Ok(SecretValue::new(out.into_vec()));
            }
        }
        Err(GenerateError::Rng)
    }
}

/// Words that replace rejected ones, fetched two at a time and only when needed: a request
/// of 16 bytes goes to the system directly, where an 8-byte one would refill the source's
/// 128-byte block.
#[derive(Default)]
struct Spare(Option<(WipedArray<16>, usize)>);

impl Spare {
    fn next(&mut self, source: &dyn RandomSource) -> Result<u64, GenerateError> {
        if self.0.as_ref().is_none_or(|(_, used)| *used == 16) {
            let mut bytes = WipedArray::new();
            source.fill(&mut bytes[..])?;
            self.0 = Some((bytes, 0));
        }
        let (bytes, used) = self.0.as_mut().expect("filled above");
        let word: [u8; 8] = bytes[*used..*used + 8].try_into().expect("8 bytes");
        // Handed out once, then wiped.
        bytes[*used..*used + 8].fill(0);
        *used += 8;
        Ok(u64::from_be_bytes(word))
    }
}

/// The spread method's alphabet and the classes with minimums, as characters.
#[derive(Clone)]
struct Spread {
    length: usize,
    pools: Vec<Pool>,
    alphabet: Vec<char>,
}

impl Spread {
    fn generate(&self, source: &dyn RandomSource) -> Result<SecretValue, GenerateError> {
        // Minimums first so each class is represented, then the rest from the whole
        // alphabet; the shuffle hides which positions were the forced ones.
        let mut picked: Zeroizing<Vec<char>> = Zeroizing::new(Vec::with_capacity(self.length));
        for pool in &self.pools {
            for _ in 0..pool.min {
                picked.push(pool.chars[index_below(source, pool.chars.len())?]);
            }
        }
        while picked.len() < self.length {
            picked.push(self.alphabet[index_below(source, self.alphabet.len())?]);
        }
        shuffle(source, &mut picked)?;

        // Exact capacity, so pushing never reallocates and leaves an unzeroized copy behind.
        let bytes: usize = picked.iter().map(|c| c.len_utf8()).sum();
        let mut text = String::with_capacity(bytes);
        text.extend(picked.iter());
        Ok(SecretValue::from_string(text))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use ring::rand::SystemRandom;

    use super::super::random::Ring;
    use super::super::random::tests::Scripted;
    use super::*;

    // Spelled out again here rather than taken from the module, so the test checks the
    // generator against the documented sets instead of against itself.
    const LOWER: &str = "abcdefghijklmnopqrstuvwxyz";
    const UPPER: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    const DIGIT: &str = "0123456789";
    const SYMBOL: &str = "!#$%&()*+,-./:;<=>?@[]^_{|}~";
    const CLASSES: [CharClass; 4] = [
        CharClass::Lower,
        CharClass::Upper,
        CharClass::Digit,
        CharClass::Symbol,
    ];

    fn documented_set(class: CharClass, symbols: Option<&str>) -> &str {
        match class {
            CharClass::Lower => LOWER,
            CharClass::Upper => UPPER,
            CharClass::Digit => DIGIT,
            CharClass::Symbol => symbols.unwrap_or(SYMBOL),
        }
    }

    fn system() -> SystemRandom {
        SystemRandom::new()
    }

    fn compiled(spec: &PasswordSpec) -> CompiledPassword {
        CompiledPassword::new(spec.clone()).expect("a valid spec")
    }

    fn draw(password: &CompiledPassword) -> String {
        let value = password
            .generate(&Ring::new(&system()))
            .expect("a password");
        value.expose_str().expect("passwords are text").to_owned()
    }

    fn password(spec: &PasswordSpec) -> String {
        draw(&compiled(spec))
    }

    fn impossible(spec: &PasswordSpec) -> String {
        match CompiledPassword::new(spec.clone()) {
            Err(GenerateError::Impossible(why)) => why,
            other => panic!("expected Impossible, got {other:?}"),
        }
    }

    /// Every rule of `spec` that `out` breaks, checked against the documented sets.
    fn check_rules(spec: &PasswordSpec, out: &str) -> Result<(), String> {
        let chars: Vec<char> = out.chars().collect();
        if chars.len() != spec.length {
            return Err(format!("length {} instead of {}", chars.len(), spec.length));
        }
        let alphabet: String = spec
            .classes
            .iter()
            .map(|(c, _)| documented_set(*c, spec.symbols.as_deref()))
            .collect();
        for c in &chars {
            if !alphabet.contains(*c) {
                return Err(format!("{c:?} is outside the alphabet"));
            }
            if spec.exclude.contains(*c) {
                return Err(format!("{c:?} is excluded"));
            }
        }
        for (class, min) in &spec.classes {
            let set = documented_set(*class, spec.symbols.as_deref());
            let count = chars.iter().filter(|c| set.contains(**c)).count();
            if count < *min {
                return Err(format!("{class:?}: {count} < {min}"));
            }
        }
        Ok(())
    }

    /// A valid spec: 16..=128 long, a non-empty subset of classes with minimums that fit,
    /// sometimes custom symbols, and exclusions that leave every chosen class non-empty.
    fn valid_spec() -> impl Strategy<Value = PasswordSpec> {
        let symbols = prop::option::of(
            prop::collection::vec(
                prop::sample::select(&['!', '@', '§', '€', 'µ', '~'][..]),
                1..6,
            )
            .prop_map(|chars| chars.into_iter().collect::<String>()),
        );
        let pool: Vec<char> = [LOWER, UPPER, DIGIT, SYMBOL, "§€µ"]
            .concat()
            .chars()
            .collect();
        let exclude = prop::collection::vec(prop::sample::select(pool), 0..40);
        (
            16usize..=128,
            1u8..16,
            prop::array::uniform4(0usize..=32),
            symbols,
            exclude,
        )
            .prop_map(|(length, mask, mins, symbols, mut exclude)| {
                let chosen: Vec<CharClass> = CLASSES
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| mask & (1 << i) != 0)
                    .map(|(_, c)| *c)
                    .collect();
                // Scaling each minimum to at most length / classes keeps the sum feasible.
                let share = length / chosen.len();
                let classes: Vec<(CharClass, usize)> = chosen
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (*c, mins[i] * share / 32))
                    .collect();
                // Give back the first character of any chosen class the exclusions emptied.
                for (class, _) in &classes {
                    let set = documented_set(*class, symbols.as_deref());
                    if set.chars().all(|c| exclude.contains(&c)) {
                        let keep = set.chars().next().unwrap();
                        exclude.retain(|&c| c != keep);
                    }
                }
                PasswordSpec {
                    length,
                    classes,
                    symbols,
                    exclude: exclude.into_iter().collect(),
                }
            })
    }

    proptest! {
        // No regression files: they would land outside src/generate; a failure prints its
        // minimal spec instead.
        #![proptest_config(ProptestConfig {
            failure_persistence: None,
            ..ProptestConfig::with_cases(256)
        })]

        #[test]
        fn passwords_follow_every_rule(spec in valid_spec()) {
            // The method chosen for the spec, then the spread method forced on it too,
            // so both are checked on every spec.
            let chosen = compiled(&spec);
            let out = draw(&chosen);
            prop_assert!(check_rules(&spec, &out).is_ok(), "{:?}", check_rules(&spec, &out));
            let out = draw(&chosen.spread());
            prop_assert!(check_rules(&spec, &out).is_ok(), "spread: {:?}", check_rules(&spec, &out));
        }

        #[test]
        fn uniform_passwords_follow_every_rule(spec in uniform_spec()) {
            let chosen = compiled(&spec);
            prop_assert!(chosen.is_uniform(), "the strategy makes uniform specs");
            for _ in 0..4 {
                let out = draw(&chosen);
                prop_assert!(check_rules(&spec, &out).is_ok(), "{:?}", check_rules(&spec, &out));
            }
        }
    }

    /// ASCII specs whose minimums a uniform draw meets at least half the time: every
    /// class keeps at least 5 characters, and minimums are 0..=2 of 32 or more characters.
    fn uniform_spec() -> impl Strategy<Value = PasswordSpec> {
        let exclude = prop::collection::vec(
            prop::sample::select([LOWER, UPPER, DIGIT, SYMBOL].concat().into_bytes()),
            0..40,
        );
        (
            32usize..=300,
            1u8..16,
            prop::array::uniform4(0usize..=2),
            exclude,
        )
            .prop_map(|(length, mask, mins, exclude)| {
                let classes: Vec<(CharClass, usize)> = CLASSES
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| mask & (1 << i) != 0)
                    .map(|(i, c)| (*c, mins[i]))
                    .collect();
                // Keep five characters of every class out of the exclusions.
                let exclude: String = exclude
                    .into_iter()
                    .map(char::from)
                    .filter(|c| {
                        CLASSES
                            .iter()
                            .map(|class| documented_set(*class, None))
                            .all(|set| set.chars().position(|s| s == *c).is_none_or(|i| i >= 5))
                    })
                    .collect();
                PasswordSpec {
                    length,
                    classes,
                    symbols: None,
                    exclude,
                }
            })
    }

    #[test]
    fn the_spec_strategy_reaches_both_methods() {
        // Otherwise the property test above could silently check one method only.
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let strategy = valid_spec();
        let (mut uniform, mut spread) = (0, 0);
        for _ in 0..256 {
            let spec =
                proptest::strategy::ValueTree::current(&strategy.new_tree(&mut runner).unwrap());
            if compiled(&spec).is_uniform() {
                uniform += 1;
            } else {
                spread += 1;
            }
        }
        assert!(
            uniform >= 20 && spread >= 20,
            "{uniform} uniform, {spread} spread"
        );
    }

    #[test]
    fn the_method_follows_the_chance_of_meeting_the_minimums() {
        let spec = |length, min, symbols: Option<&str>| PasswordSpec {
            length,
            classes: CLASSES.iter().map(|c| (*c, min)).collect(),
            symbols: symbols.map(str::to_owned),
            exclude: String::new(),
        };
        // The policy's default: 32 characters, one of each class, met ~97% of the time.
        assert!(compiled(&spec(32, 1, None)).is_uniform());
        // 16 characters with 4 of each class: a uniform draw rarely has 4 digits.
        assert!(!compiled(&spec(16, 4, None)).is_uniform());
        // Non-ASCII symbols are drawn as characters.
        assert!(!compiled(&spec(32, 1, Some("€µ"))).is_uniform());
        // One character needs no randomness at all.
        let single = PasswordSpec {
            length: 16,
            classes: vec![(CharClass::Digit, 1)],
            symbols: None,
            exclude: "012345678".to_owned(),
        };
        assert!(!compiled(&single).is_uniform());
        assert_eq!(password(&single), "9".repeat(16));
    }

    #[test]
    fn the_binomial_tail_is_exact_on_small_cases_and_survives_underflow() {
        // Three fair coins, fewer than two heads: 1 + 3 of 8 outcomes.
        assert!((binomial_below(3, 0.5, 2) - 0.5).abs() < 1e-12);
        // One draw of 94 landing outside a 10-character class, 32 times.
        let none = (84.0f64 / 94.0).powi(32);
        assert!((binomial_below(32, 10.0 / 94.0, 1) - none).abs() < 1e-12);
        // 0.5^4096 underflows, yet P(X < 2048) = (1 - C(4096, 2048) / 2^4096) / 2.
        assert!((binomial_below(4096, 0.5, 2048) - 0.493_768).abs() < 1e-5);
        assert_eq!(binomial_below(32, 1.0, 32), 0.0);
        assert_eq!(binomial_below(32, 0.3, 0), 0.0);
    }

    fn three_digits() -> PasswordSpec {
        PasswordSpec {
            length: 3,
            classes: vec![(CharClass::Digit, 0)],
            symbols: None,
            exclude: String::new(),
        }
    }

    #[test]
    fn tail_words_are_rejected_by_the_uniform_method() {
        // Digits only: 8 per word (19 would fit; 8 make rejection rarer), and words whose
        // low half of r * 10^8 is below 2^64 mod 10^8 = 9551616 are the biased tail. Word
        // 0 is one; the replacement comes as two words in one 16-byte request, and
        // 0x5958106250000000 scales to 34900000 (worked out with Python's integers).
        let mut script = vec![0u8; 8];
        script.extend_from_slice(&0x5958_1062_5000_0000u64.to_be_bytes());
        script.extend_from_slice(&[0xff; 8]);
        let source = Scripted::new(&script);
        let password = compiled(&three_digits());
        assert!(password.is_uniform());
        let out = password.generate(&source).unwrap();
        assert_eq!(out.expose_str(), Some("349"));
        assert_eq!(source.calls.get(), 2, "the word, then the replacements");
        assert_eq!(source.remaining(), 0, "every scripted byte was consumed");
    }

    #[test]
    fn tail_bytes_are_rejected_by_the_spread_method() {
        // 10 choices, so bytes 250..=255 are the biased tail. With plain modulo 250
        // would give '0' and 255 would give '5'.
        // Picks: 250 rejected, 3; 255 rejected, 4; 249 -> 9. Shuffle: j = 2, then j = 1
        // (bytes equal to i), so the order stays as picked.
        let source = Scripted::new(&[250, 3, 255, 4, 249, 2, 1]);
        let out = compiled(&three_digits())
            .spread()
            .generate(&source)
            .unwrap();
        assert_eq!(out.expose_str(), Some("349"));
        assert_eq!(source.remaining(), 0, "every scripted byte was consumed");
    }

    #[test]
    fn a_uniform_draw_that_misses_a_minimum_is_drawn_again() {
        // 36 characters ('0'-'9' then 'a'-'z'): 16 need two words, 8 characters each.
        // The first draw is all 'z', with no digit; the second is kept. Expected
        // characters worked out with Python's integers: word 0, 0x0123456789abcdef, gives
        // "05rcyk5r" and word 1, 0xfedcba9876543210, gives "zu8n1fu8".
        let spec = PasswordSpec {
            length: 16,
            classes: vec![(CharClass::Digit, 1), (CharClass::Lower, 0)],
            symbols: None,
            exclude: String::new(),
        };
        let mut script = vec![0xff; 16];
        script.extend_from_slice(&0x0123_4567_89ab_cdefu64.to_be_bytes());
        script.extend_from_slice(&0xfedc_ba98_7654_3210u64.to_be_bytes());
        let source = Scripted::new(&script);
        let password = compiled(&spec);
        assert!(password.is_uniform());
        let out = password.generate(&source).unwrap();
        assert_eq!(out.expose_str(), Some("05rcyk5rzu8n1fu8"));
        assert_eq!(source.remaining(), 0);
    }

    #[test]
    fn a_source_that_never_meets_the_minimums_is_an_error_not_a_hang() {
        let spec = PasswordSpec {
            length: 16,
            classes: vec![(CharClass::Digit, 1), (CharClass::Lower, 0)],
            symbols: None,
            exclude: String::new(),
        };
        // Always all 'z': every draw misses the digit.
        let stuck = Scripted::new(&[0xff; 16 * MAX_REJECTIONS]);
        let password = compiled(&spec);
        assert!(matches!(password.generate(&stuck), Err(GenerateError::Rng)));
        assert_eq!(stuck.calls.get(), MAX_REJECTIONS);
    }

    #[test]
    fn passwords_of_every_length_around_the_word_size_are_whole() {
        // Lengths that end mid-word and that need fewer bytes than characters.
        let all = PasswordSpec {
            length: 0,
            classes: CLASSES.iter().map(|c| (*c, 0)).collect(),
            symbols: None,
            exclude: String::new(),
        };
        for length in 1..=40 {
            let spec = PasswordSpec {
                length,
                ..all.clone()
            };
            let password = compiled(&spec);
            assert!(password.is_uniform());
            let out = draw(&password);
            assert_eq!(check_rules(&spec, &out), Ok(()), "{out}");
        }
    }

    #[test]
    fn minimums_are_drawn_from_their_class() {
        // One symbol from a single-character class: it must appear even though the
        // alphabet holds 27 characters.
        let spec = PasswordSpec {
            length: 16,
            classes: vec![(CharClass::Lower, 0), (CharClass::Symbol, 3)],
            symbols: Some("€".to_owned()),
            exclude: String::new(),
        };
        for _ in 0..20 {
            let out = password(&spec);
            assert!(out.chars().filter(|&c| c == '€').count() >= 3, "{out}");
            assert!(out.chars().all(|c| c == '€' || c.is_ascii_lowercase()));
        }
    }

    #[test]
    fn a_fully_excluded_optional_class_is_simply_unused() {
        let spec = PasswordSpec {
            length: 32,
            classes: vec![(CharClass::Digit, 0), (CharClass::Upper, 4)],
            symbols: None,
            exclude: DIGIT.to_owned(),
        };
        let out = password(&spec);
        assert!(out.chars().all(|c| c.is_ascii_uppercase()), "{out}");
    }

    #[test]
    fn two_passwords_differ() {
        let spec = PasswordSpec {
            length: 24,
            classes: CLASSES.iter().map(|c| (*c, 1)).collect(),
            symbols: None,
            exclude: "lI1O0".to_owned(),
        };
        assert_ne!(password(&spec), password(&spec));
    }

    #[test]
    fn minimums_past_the_length_are_impossible() {
        let why = impossible(&PasswordSpec {
            length: 16,
            classes: vec![(CharClass::Lower, 10), (CharClass::Digit, 7)],
            symbols: None,
            exclude: String::new(),
        });
        assert!(why.contains("minimums") && why.contains("16"), "{why}");
        let why = impossible(&PasswordSpec {
            length: 16,
            classes: vec![(CharClass::Lower, usize::MAX), (CharClass::Digit, 1)],
            symbols: None,
            exclude: String::new(),
        });
        assert!(why.contains("minimums"), "overflow is caught too: {why}");
    }

    #[test]
    fn a_required_class_emptied_by_exclusions_is_impossible() {
        let why = impossible(&PasswordSpec {
            length: 16,
            classes: vec![(CharClass::Lower, 1), (CharClass::Digit, 2)],
            symbols: None,
            exclude: DIGIT.to_owned(),
        });
        assert!(why.contains("digit") && why.contains("excluded"), "{why}");
        let why = impossible(&PasswordSpec {
            length: 16,
            classes: vec![(CharClass::Lower, 1), (CharClass::Symbol, 1)],
            symbols: Some(String::new()),
            exclude: String::new(),
        });
        assert!(why.contains("symbol"), "{why}");
    }

    #[test]
    fn an_empty_alphabet_is_impossible() {
        let why = impossible(&PasswordSpec {
            length: 16,
            classes: vec![(CharClass::Digit, 0)],
            symbols: None,
            exclude: DIGIT.to_owned(),
        });
        assert!(why.contains("no characters"), "{why}");
        let why = impossible(&PasswordSpec {
            length: 16,
            classes: vec![],
            symbols: None,
            exclude: String::new(),
        });
        assert!(why.contains("no characters"), "{why}");
    }

    #[test]
    fn a_failing_source_is_an_rng_error() {
        let spec = PasswordSpec {
            length: 16,
            classes: vec![(CharClass::Lower, 0)],
            symbols: None,
            exclude: String::new(),
        };
        let password = compiled(&spec);
        for method in [password.clone(), password.spread()] {
            let source = Scripted::new(&[1, 2, 3]);
            assert!(matches!(method.generate(&source), Err(GenerateError::Rng)));
        }
    }
}
