//! Password generation: character classes, per-class minimums, exclusions.

use zeroize::Zeroizing;

use super::random::{RandomSource, index_below, shuffle};
use super::{CharClass, DEFAULT_SYMBOLS, GenerateError, PasswordSpec};
use crate::secret::SecretValue;

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

/// A random password following `spec`.
pub(super) fn generate(
    spec: &PasswordSpec,
    source: &dyn RandomSource,
) -> Result<SecretValue, GenerateError> {
    let pools = pools(spec);
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

    // Minimums first so each class is represented, then the rest from the whole alphabet;
    // the shuffle hides which positions were the forced ones.
    let mut picked: Zeroizing<Vec<char>> = Zeroizing::new(Vec::with_capacity(spec.length));
    for pool in &pools {
        for _ in 0..pool.min {
            picked.push(pool.chars[index_below(source, pool.chars.len())?]);
        }
    }
    while picked.len() < spec.length {
        picked.push(alphabet[index_below(source, alphabet.len())?]);
    }
    shuffle(source, &mut picked)?;

    // Exact capacity, so pushing never reallocates and leaves an unzeroized copy behind.
    let bytes: usize = picked.iter().map(|c| c.len_utf8()).sum();
    let mut text = String::with_capacity(bytes);
    text.extend(picked.iter());
    Ok(SecretValue::from_string(text))
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

    fn password(spec: &PasswordSpec) -> Result<String, GenerateError> {
        let value = generate(spec, &Ring::new(&system()))?;
        Ok(value.expose_str().expect("passwords are text").to_owned())
    }

    fn impossible(spec: &PasswordSpec) -> String {
        match generate(spec, &Ring::new(&system())) {
            Err(GenerateError::Impossible(why)) => why,
            other => panic!("expected Impossible, got {other:?}"),
        }
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
            let out = password(&spec).unwrap();
            let chars: Vec<char> = out.chars().collect();
            prop_assert_eq!(chars.len(), spec.length);
            let alphabet: String = spec
                .classes
                .iter()
                .map(|(c, _)| documented_set(*c, spec.symbols.as_deref()))
                .collect();
            for c in &chars {
                prop_assert!(alphabet.contains(*c), "{:?} is outside the alphabet", c);
                prop_assert!(!spec.exclude.contains(*c), "{:?} is excluded", c);
            }
            for (class, min) in &spec.classes {
                let set = documented_set(*class, spec.symbols.as_deref());
                let count = chars.iter().filter(|c| set.contains(**c)).count();
                prop_assert!(count >= *min, "{:?}: {} < {}", class, count, min);
            }
        }
    }

    #[test]
    fn tail_bytes_are_rejected_when_picking_characters() {
        // Digits only: 10 choices, so bytes 250..=255 are the biased tail. With plain
        // modulo 250 would give '0' and 255 would give '5'.
        let spec = PasswordSpec {
            length: 3,
            classes: vec![(CharClass::Digit, 0)],
            symbols: None,
            exclude: String::new(),
        };
        // Picks: 250 rejected, 3; 255 rejected, 4; 249 -> 9. Shuffle: j = 2, then j = 1
        // (bytes equal to i), so the order stays as picked.
        let source = Scripted::new(&[250, 3, 255, 4, 249, 2, 1]);
        let out = generate(&spec, &source).unwrap();
        assert_eq!(out.expose_str(), Some("349"));
        assert_eq!(source.remaining(), 0, "every scripted byte was consumed");
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
            let out = password(&spec).unwrap();
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
        let out = password(&spec).unwrap();
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
        assert_ne!(password(&spec).unwrap(), password(&spec).unwrap());
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
        let source = Scripted::new(&[1, 2, 3]);
        assert!(matches!(generate(&spec, &source), Err(GenerateError::Rng)));
    }
}
