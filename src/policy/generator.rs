//! `generator = { type = … }` tables: read and check them into a [`GeneratorSpec`].
//!
//! Checks here are the ones that make a spec impossible to satisfy (minimums above the
//! length, a class emptied by `exclude`), so a bad policy fails at load, not at 2 a.m.

use serde_json::{Map, Number, Value as Json};
use toml::de::DeValue;

use super::diagnostic::{Diags, Loc, did_you_mean, list};
use super::parse::{
    Table, Value, array, check_keys, integer, non_empty, string, table, wrong_type,
};
use crate::generate::{
    BytesSpec, CharClass, CompiledPassword, DEFAULT_SYMBOLS, Encoding, GeneratorSpec, JsonSpec,
    MIN_BYTES, MIN_PASSWORD_LENGTH, PasswordSpec,
};

/// The generator types, for hints.
const TYPES: &[&str] = &["password", "bytes", "ed25519", "ecdsa-p256", "json"];
const PASSWORD_KEYS: &[&str] = &[
    "type",
    "length",
    "classes",
    "min_lower",
    "min_upper",
    "min_digit",
    "min_symbol",
    "symbols",
    "exclude",
];
const BYTES_KEYS: &[&str] = &["type", "length", "encoding"];
const KEY_PAIR_KEYS: &[&str] = &["type"];
const JSON_KEYS: &[&str] = &["type", "template", "field", "generate"];
const ENCODINGS: &[&str] = &["hex", "base64", "base64url"];

/// The class names as written in `classes`, in their default order.
const CLASS_NAMES: [&str; 4] = ["lower", "upper", "digit", "symbol"];
const CLASSES: [CharClass; 4] = [
    CharClass::Lower,
    CharClass::Upper,
    CharClass::Digit,
    CharClass::Symbol,
];
/// The `min_*` key of each class, same order.
const MIN_KEYS: [&str; 4] = ["min_lower", "min_upper", "min_digit", "min_symbol"];

/// Longest password or byte string accepted: guards against a typo'd extra zero.
const MAX_LENGTH: i64 = 4096;

const TABLE_HINT: &str = "write a table like { type = \"password\", length = 32 }";

/// Reads a generator table; `nested` is true inside a `json` generator's `generate`.
pub(super) fn spec(
    d: &mut Diags<'_>,
    value: &Value<'_>,
    loc: &Loc<'_>,
    nested: bool,
) -> Option<GeneratorSpec> {
    let t = table(d, value, loc, "a generator table", TABLE_HINT)?;
    let types_hint = format!("generator types: {}", list(TYPES));
    let Some(kind_value) = t.get("type") else {
        d.report(
            value.span(),
            &loc.key("type"),
            "a generator needs a `type`",
            format!("add type = \"password\"; {types_hint}"),
        );
        return None;
    };
    let type_loc = loc.key("type");
    let kind = string(
        d,
        kind_value,
        &type_loc,
        "a string like \"password\"",
        &types_hint,
    )?;
    match kind {
        "password" => {
            check_keys(d, t, PASSWORD_KEYS, loc);
            let spec = password(d, value, t, loc)?;
            // The checks above give each problem its position; this is the backstop.
            match CompiledPassword::new(spec) {
                Ok(compiled) => Some(GeneratorSpec::Password(compiled)),
                Err(error) => {
                    let hint = "change the password rules so a password can follow them";
                    d.report(value.span(), loc, error.to_string(), hint);
                    None
                }
            }
        }
        "bytes" => {
            check_keys(d, t, BYTES_KEYS, loc);
            bytes(d, t, loc).map(GeneratorSpec::Bytes)
        }
        "ed25519" => {
            check_keys(d, t, KEY_PAIR_KEYS, loc);
            Some(GeneratorSpec::Ed25519)
        }
        "ecdsa-p256" => {
            check_keys(d, t, KEY_PAIR_KEYS, loc);
            Some(GeneratorSpec::EcdsaP256)
        }
        "json" if nested => {
            d.report(
                kind_value.span(),
                &type_loc,
                "a json generator cannot generate its field with another json generator",
                "use password, bytes, ed25519 or ecdsa-p256 for `generate`",
            );
            None
        }
        "json" => {
            check_keys(d, t, JSON_KEYS, loc);
            json(d, value, t, loc).map(GeneratorSpec::Json)
        }
        other => {
            let message = format!(
                "unknown generator type `{other}`{}",
                did_you_mean(other, TYPES)
            );
            d.report(kind_value.span(), &type_loc, message, types_hint);
            None
        }
    }
}

/// A length between `min` and [`MAX_LENGTH`], or `default` when absent.
fn length(
    d: &mut Diags<'_>,
    t: &Table<'_>,
    loc: &Loc<'_>,
    min: usize,
    what: &str,
) -> Option<usize> {
    let Some(v) = t.get("length") else {
        return Some(32);
    };
    let hint = format!("{what} length is between {min} and {MAX_LENGTH}");
    integer(d, v, &loc.key("length"), min as i64..=MAX_LENGTH, &hint).map(|n| n as usize)
}

fn password(
    d: &mut Diags<'_>,
    value: &Value<'_>,
    t: &Table<'_>,
    loc: &Loc<'_>,
) -> Option<PasswordSpec> {
    let mut ok = true;
    let length = length(d, t, loc, MIN_PASSWORD_LENGTH, "a password");
    ok &= length.is_some();

    // Which classes are allowed, in the order written.
    let classes_hint = format!(
        "list one or more of {} once each, e.g. classes = [\"lower\", \"upper\", \"digit\"]",
        list(&CLASS_NAMES)
    );
    let mut listed: Vec<usize> = Vec::with_capacity(4);
    // Whether `listed` is trustworthy: checks that depend on it are skipped otherwise.
    let mut classes_ok = true;
    let classes_loc = loc.key("classes");
    match t.get("classes") {
        None => listed.extend(0..4),
        Some(v) => match array(d, v, &classes_loc, "an array of class names", &classes_hint) {
            None => classes_ok = false,
            Some([]) => {
                d.report(
                    v.span(),
                    &classes_loc,
                    "no character classes listed",
                    &classes_hint,
                );
                classes_ok = false;
            }
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    let item_loc = classes_loc.index(i);
                    let Some(name) = string(d, item, &item_loc, "a class name", &classes_hint)
                    else {
                        classes_ok = false;
                        continue;
                    };
                    match CLASS_NAMES.iter().position(|c| *c == name) {
                        Some(class) if listed.contains(&class) => {
                            let message = format!("class `{name}` is listed twice");
                            d.report(item.span(), &item_loc, message, &classes_hint);
                            classes_ok = false;
                        }
                        Some(class) => listed.push(class),
                        None => {
                            let message = format!(
                                "unknown character class `{name}`{}",
                                did_you_mean(name, &CLASS_NAMES)
                            );
                            d.report(item.span(), &item_loc, message, &classes_hint);
                            classes_ok = false;
                        }
                    }
                }
            }
        },
    }

    // Minimums: 1 for each listed class unless set; set only for listed classes.
    let mut minimums = [1usize; 4];
    for (class, key) in MIN_KEYS.iter().enumerate() {
        let Some((k, v)) = t.get_key_value(*key) else {
            continue;
        };
        let min_loc = loc.key(key);
        if classes_ok && !listed.contains(&class) {
            d.report(
                k.span(),
                &min_loc,
                format!(
                    "`{key}` is set but `{}` is not in classes",
                    CLASS_NAMES[class]
                ),
                format!("add \"{}\" to classes, or remove {key}", CLASS_NAMES[class]),
            );
            ok = false;
            continue;
        }
        let hint = "a minimum count of characters from this class, 0 or more";
        match integer(d, v, &min_loc, 0..=MAX_LENGTH, hint) {
            Some(n) => minimums[class] = n as usize,
            None => ok = false,
        }
    }

    let symbols = match t.get_key_value("symbols") {
        None => None,
        Some((k, v)) => {
            let symbols_loc = loc.key("symbols");
            let hint = "printable ASCII punctuation, e.g. symbols = \"!#%+-=_\"";
            match non_empty(d, v, &symbols_loc, "a string of symbols", hint) {
                None => {
                    ok = false;
                    None
                }
                Some(s) if !s.chars().all(|c| c.is_ascii_punctuation()) => {
                    let message = "symbols may only contain ASCII punctuation (letters, digits, \
                         spaces and other characters belong elsewhere or nowhere)";
                    d.report(v.span(), &symbols_loc, message, hint);
                    ok = false;
                    None
                }
                Some(_) if classes_ok && !listed.contains(&3) => {
                    d.report(
                        k.span(),
                        &symbols_loc,
                        "`symbols` is set but `symbol` is not in classes",
                        "add \"symbol\" to classes, or remove symbols",
                    );
                    ok = false;
                    None
                }
                Some(s) => Some(s.to_owned()),
            }
        }
    };

    let exclude = match t.get("exclude") {
        None => Some(""),
        Some(v) => string(
            d,
            v,
            &loc.key("exclude"),
            "a string of characters",
            "characters never used, e.g. exclude = \"lI1O0\"",
        ),
    };
    let (Some(length), Some(exclude), true) = (length, exclude, ok && classes_ok) else {
        return None;
    };

    let required: usize = listed.iter().map(|c| minimums[*c]).sum();
    if required > length {
        let at = t.get("length").map_or(value.span(), |v| v.span());
        d.report(
            at,
            &loc.key("length"),
            format!("the class minimums add up to {required}, more than the length {length}"),
            format!("raise length to at least {required}, or lower the min_* counts"),
        );
        return None;
    }

    // A required class (minimum above 0) with nothing left after `exclude` cannot be
    // satisfied; neither can a password with no characters left at all.
    let emptied: Vec<usize> = listed
        .iter()
        .copied()
        .filter(|&class| {
            let symbols = symbols.as_deref().unwrap_or(DEFAULT_SYMBOLS);
            let mut alphabet = match CLASSES[class] {
                CharClass::Lower => ('a'..='z').collect::<Vec<_>>(),
                CharClass::Upper => ('A'..='Z').collect(),
                CharClass::Digit => ('0'..='9').collect(),
                CharClass::Symbol => symbols.chars().collect(),
            }
            .into_iter();
            alphabet.all(|c| exclude.contains(c))
        })
        .collect();
    let blocking = emptied
        .iter()
        .find(|&&class| minimums[class] > 0)
        .or_else(|| (emptied.len() == listed.len()).then(|| &emptied[0]));
    if let Some(&class) = blocking {
        let at = t.get("exclude").map_or(value.span(), |v| v.span());
        d.report(
            at,
            &loc.key("exclude"),
            format!(
                "exclude removes every character of class `{}`",
                CLASS_NAMES[class]
            ),
            format!(
                "exclude fewer characters, or remove \"{}\" from classes",
                CLASS_NAMES[class]
            ),
        );
        return None;
    }

    Some(PasswordSpec {
        length,
        classes: listed.iter().map(|c| (CLASSES[*c], minimums[*c])).collect(),
        symbols,
        exclude: exclude.to_owned(),
    })
}

fn bytes(d: &mut Diags<'_>, t: &Table<'_>, loc: &Loc<'_>) -> Option<BytesSpec> {
    let length = length(d, t, loc, MIN_BYTES, "a byte string's");
    let encoding = match t.get("encoding") {
        None => Some(Encoding::Base64Url),
        Some(v) => {
            let enc_loc = loc.key("encoding");
            let hint = format!("encodings: {}", list(ENCODINGS));
            match string(d, v, &enc_loc, "a string like \"base64url\"", &hint)? {
                "hex" => Some(Encoding::Hex),
                "base64" => Some(Encoding::Base64),
                "base64url" => Some(Encoding::Base64Url),
                other => {
                    let message = format!(
                        "unknown encoding `{other}`{}",
                        did_you_mean(other, ENCODINGS)
                    );
                    d.report(v.span(), &enc_loc, message, hint);
                    None
                }
            }
        }
    };
    Some(BytesSpec {
        length: length?,
        encoding: encoding?,
    })
}

fn json(d: &mut Diags<'_>, value: &Value<'_>, t: &Table<'_>, loc: &Loc<'_>) -> Option<JsonSpec> {
    let template = match t.get("template") {
        None => Some(Map::new()),
        Some(v) => {
            let tpl_loc = loc.key("template");
            let hint = "write a table like { username = \"app\", host = \"db.internal\" }";
            table(d, v, &tpl_loc, "a table", hint).and_then(|tpl| json_object(d, tpl, &tpl_loc))
        }
    };
    let field_hint = "name the field that receives the generated value, e.g. field = \"password\"";
    let field = match t.get("field") {
        None => {
            d.report(
                value.span(),
                &loc.key("field"),
                "a json generator needs a `field`",
                field_hint,
            );
            None
        }
        Some(v) => non_empty(d, v, &loc.key("field"), "a string", field_hint),
    };
    let generate = match t.get("generate") {
        None => {
            d.report(
                value.span(),
                &loc.key("generate"),
                "a json generator needs `generate`, the generator for its field",
                "add generate = { type = \"password\", length = 32 }",
            );
            None
        }
        Some(v) => spec(d, v, &loc.key("generate"), true),
    };
    Some(JsonSpec {
        template: template?,
        field: field?.to_owned(),
        generate: Box::new(generate?),
    })
}

/// Converts a TOML table to a JSON object, reporting every value JSON cannot hold.
fn json_object(d: &mut Diags<'_>, t: &Table<'_>, loc: &Loc<'_>) -> Option<Map<String, Json>> {
    let mut map = Map::new();
    let mut ok = true;
    for (k, v) in t.iter() {
        let key: &str = k.get_ref();
        match json_value(d, v, &loc.key(key)) {
            Some(j) => {
                map.insert(key.to_owned(), j);
            }
            None => ok = false,
        }
    }
    ok.then_some(map)
}

fn json_value(d: &mut Diags<'_>, v: &Value<'_>, loc: &Loc<'_>) -> Option<Json> {
    match v.get_ref() {
        DeValue::String(s) => Some(Json::String(s.to_string())),
        DeValue::Boolean(b) => Some(Json::Bool(*b)),
        DeValue::Integer(_) => {
            let hint = "JSON integers here fit in 64 bits";
            integer(d, v, loc, i64::MIN..=i64::MAX, hint).map(|n| Json::Number(n.into()))
        }
        DeValue::Float(f) => match f.as_str().parse::<f64>().ok().and_then(Number::from_f64) {
            Some(n) => Some(Json::Number(n)),
            None => {
                d.report(
                    v.span(),
                    loc,
                    format!("{f} has no JSON form"),
                    "JSON numbers are finite; write it as a string",
                );
                None
            }
        },
        DeValue::Datetime(_) => {
            wrong_type(
                d,
                v,
                loc,
                "a JSON value (string, number, boolean, array or table)",
                "JSON has no datetime type; quote it to keep it as a string",
            );
            None
        }
        DeValue::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            let mut ok = true;
            for (i, item) in items.iter().enumerate() {
                match json_value(d, item, &loc.index(i)) {
                    Some(j) => out.push(j),
                    None => ok = false,
                }
            }
            ok.then_some(Json::Array(out))
        }
        DeValue::Table(t) => json_object(d, t, loc).map(Json::Object),
    }
}
