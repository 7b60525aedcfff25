//! Walking the spanned TOML tree: typed reads that report wrong types, unknown keys and
//! bad durations at the value's position, then let the caller carry on.

use std::time::Duration;

use toml::Spanned;
use toml::de::{DeString, DeTable, DeValue};

use super::diagnostic::{Diags, Loc, closest, list};
use crate::schedule::parse_duration;

/// A value with its byte span.
pub(super) type Value<'i> = Spanned<DeValue<'i>>;
/// A table; keys carry their spans too.
pub(super) type Table<'i> = DeTable<'i>;

/// What a duration looks like, for hints.
pub(super) const DURATION_HINT: &str = "write a number and a unit (s, m, h, d or w) in quotes, \
     e.g. \"45s\", \"90m\", \"12h\", \"30d\", \"2w\"";

/// "a string", "an integer", … for "expected …, found …" messages.
pub(super) fn found(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a datetime",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// Reports that `value` has the wrong type.
pub(super) fn wrong_type(
    d: &mut Diags<'_>,
    value: &Value<'_>,
    loc: &Loc<'_>,
    expected: &str,
    hint: &str,
) {
    let message = format!("expected {expected}, found {}", found(value.get_ref()));
    d.report(value.span(), loc, message, hint);
}

/// Reports every key of `table` not in `known`, suggesting the closest known key.
pub(super) fn check_keys(d: &mut Diags<'_>, table: &Table<'_>, known: &[&str], loc: &Loc<'_>) {
    for (key, _) in table.iter() {
        unknown_key(d, key, known, loc);
    }
}

/// Reports `key` (of the table at `loc`) unless it is in `known`.
pub(super) fn unknown_key(
    d: &mut Diags<'_>,
    key: &Spanned<DeString<'_>>,
    known: &[&str],
    loc: &Loc<'_>,
) {
    let name: &str = key.get_ref();
    if known.contains(&name) {
        return;
    }
    let mut message = format!("unknown key `{name}` {}", loc.place());
    if let Some(close) = closest(name, known) {
        message.push_str(&format!("; did you mean `{close}`?"));
    }
    let hint = format!("valid keys here: {}", list(known));
    d.report(key.span(), &loc.key(name), message, hint);
}

/// The string in `value`, or a type error.
pub(super) fn string<'v>(
    d: &mut Diags<'_>,
    value: &'v Value<'_>,
    loc: &Loc<'_>,
    expected: &str,
    hint: &str,
) -> Option<&'v str> {
    match value.get_ref() {
        DeValue::String(s) => Some(s),
        _ => {
            wrong_type(d, value, loc, expected, hint);
            None
        }
    }
}

/// A string that must not be empty.
pub(super) fn non_empty<'v>(
    d: &mut Diags<'_>,
    value: &'v Value<'_>,
    loc: &Loc<'_>,
    expected: &str,
    hint: &str,
) -> Option<&'v str> {
    let s = string(d, value, loc, expected, hint)?;
    if s.is_empty() {
        d.report(value.span(), loc, "must not be empty", hint);
        return None;
    }
    Some(s)
}

/// The table in `value`, or a type error.
pub(super) fn table<'v, 'i>(
    d: &mut Diags<'_>,
    value: &'v Value<'i>,
    loc: &Loc<'_>,
    expected: &str,
    hint: &str,
) -> Option<&'v Table<'i>> {
    match value.get_ref() {
        DeValue::Table(t) => Some(t),
        _ => {
            wrong_type(d, value, loc, expected, hint);
            None
        }
    }
}

/// The elements of the array in `value`, or a type error.
pub(super) fn array<'v, 'i>(
    d: &mut Diags<'_>,
    value: &'v Value<'i>,
    loc: &Loc<'_>,
    expected: &str,
    hint: &str,
) -> Option<&'v [Value<'i>]> {
    match value.get_ref() {
        DeValue::Array(a) => Some(a),
        _ => {
            wrong_type(d, value, loc, expected, hint);
            None
        }
    }
}

/// The boolean in `value`, or a type error.
pub(super) fn boolean(d: &mut Diags<'_>, value: &Value<'_>, loc: &Loc<'_>) -> Option<bool> {
    match value.get_ref() {
        DeValue::Boolean(b) => Some(*b),
        _ => {
            wrong_type(
                d,
                value,
                loc,
                "true or false",
                "write true or false, without quotes",
            );
            None
        }
    }
}

/// The integer in `value` within `range`, or a type or range error.
pub(super) fn integer(
    d: &mut Diags<'_>,
    value: &Value<'_>,
    loc: &Loc<'_>,
    range: std::ops::RangeInclusive<i64>,
    hint: &str,
) -> Option<i64> {
    let DeValue::Integer(int) = value.get_ref() else {
        wrong_type(d, value, loc, "an integer", hint);
        return None;
    };
    match i64::from_str_radix(int.as_str(), int.radix()) {
        Ok(n) if range.contains(&n) => Some(n),
        _ => {
            let message = format!(
                "{int} is out of range: must be between {} and {}",
                range.start(),
                range.end()
            );
            d.report(value.span(), loc, message, hint);
            None
        }
    }
}

/// A duration written as `"30d"`; the parser's own error text is the message.
pub(super) fn duration(d: &mut Diags<'_>, value: &Value<'_>, loc: &Loc<'_>) -> Option<Duration> {
    let text = string(d, value, loc, "a string like \"30d\"", DURATION_HINT)?;
    match parse_duration(text) {
        Ok(duration) => Some(duration),
        Err(message) => {
            d.report(value.span(), loc, message, DURATION_HINT);
            None
        }
    }
}

/// An environment variable name: letters, digits and `_`, not starting with a digit.
pub(super) fn env_name<'v>(
    d: &mut Diags<'_>,
    value: &'v Value<'_>,
    loc: &Loc<'_>,
) -> Option<&'v str> {
    const HINT: &str =
        "name an environment variable with letters, digits and `_`, e.g. \"REKEYD_LOCAL_KEY\"";
    let name = string(d, value, loc, "a string", HINT)?;
    let valid = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        d.report(
            value.span(),
            loc,
            format!("`{name}` is not a valid environment variable name"),
            HINT,
        );
        return None;
    }
    Some(name)
}
