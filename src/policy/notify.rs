//! `[notify.NAME]` webhook targets: the endpoint, where its signing keys come from, and how
//! deliveries time out, retry, trip the breaker and coalesce.
//!
//! Signing keys are named (an environment variable or a file), never written here: the
//! policy is not a secret store.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use toml::de::DeValue;

use super::diagnostic::{Diags, Loc, human};
use super::parse::{Table, Value, check_keys, env_name, integer, non_empty, string, wrong_type};
use super::validate::named_tables;
use super::{KeySource, NotifyTarget};

const NOTIFY_KEYS: &[&str] = &[
    "url",
    "secret_env",
    "secret_file",
    "timeout",
    "max_attempts",
    "give_up_after",
    "backoff",
    "max_backoff",
    "breaker_failures",
    "breaker_cooldown",
    "window",
    "max_in_flight",
];

/// How many signing keys a target may have: the new one and the old one during a rollover.
const MAX_KEYS: usize = 2;

const URL_HINT: &str = "an http:// or https:// URL, e.g. \"https://hooks.internal/rekeyd\"";
const KEY_HINT: &str = "add secret_env = \"HOOK_WHSEC\" (an environment variable holding \
     whsec_<base64>) or secret_file = \"/etc/rekeyd/hook.whsec\"; during a key rollover list \
     two, newest first: secret_env = [\"NEW_WHSEC\", \"OLD_WHSEC\"]";
const TIMING_HINT: &str = "a number and a unit (ms, s, m, h or d) in quotes, e.g. \"500ms\", \
     \"15s\", \"1h\"";

/// Built-in settings of a target that leaves them out.
const DEFAULTS: NotifyTarget = NotifyTarget {
    url: String::new(),
    keys: Vec::new(),
    timeout: Duration::from_secs(15),
    max_attempts: 30,
    give_up_after: Duration::from_secs(3 * 86_400),
    backoff: Duration::from_secs(5),
    max_backoff: Duration::from_secs(3600),
    breaker_failures: 5,
    breaker_cooldown: Duration::from_secs(60),
    window: None,
    max_in_flight: 4,
};

/// Reads every `[notify.NAME]`; returns the valid targets and every name (so references to
/// a broken target are not reported a second time).
pub(super) fn targets<'a>(
    d: &mut Diags<'_>,
    root: &'a Table<'a>,
    base: &Path,
) -> (BTreeMap<String, NotifyTarget>, Vec<&'a str>) {
    let top = Loc::Root;
    let section = top.key("notify");
    let tables = named_tables(
        d,
        root,
        "notify",
        "[notify.payments] with url = \"https://…\"",
    );
    let mut targets = BTreeMap::new();
    for (name, t) in &tables {
        let Some((t, span)) = t else { continue };
        let loc = section.key(name);
        if let Some(target) = target(d, t, span.clone(), &loc, base) {
            targets.insert((*name).to_owned(), target);
        }
    }
    (targets, tables.iter().map(|(name, _)| *name).collect())
}

fn target(
    d: &mut Diags<'_>,
    t: &Table<'_>,
    span: std::ops::Range<usize>,
    loc: &Loc<'_>,
    base: &Path,
) -> Option<NotifyTarget> {
    check_keys(d, t, NOTIFY_KEYS, loc);
    let url = match t.get("url") {
        None => {
            d.report(
                span.clone(),
                &loc.key("url"),
                "a notify target needs a `url`",
                URL_HINT,
            );
            None
        }
        Some(v) => url(d, v, &loc.key("url")),
    };
    let keys = keys(d, t, span, loc, base);

    let mut ok = true;
    let ms = Duration::from_millis(1);
    let mut timed = |d: &mut Diags<'_>, key: &str| -> Option<Duration> {
        let got = t.get(key).map(|v| timing(d, v, &loc.key(key), ms));
        ok &= !matches!(got, Some(None));
        got.flatten()
    };
    let timeout = timed(d, "timeout").unwrap_or(DEFAULTS.timeout);
    let give_up_after = timed(d, "give_up_after").unwrap_or(DEFAULTS.give_up_after);
    let backoff = timed(d, "backoff").unwrap_or(DEFAULTS.backoff);
    let max_backoff = timed(d, "max_backoff").unwrap_or(DEFAULTS.max_backoff);
    let breaker_cooldown = timed(d, "breaker_cooldown").unwrap_or(DEFAULTS.breaker_cooldown);
    let window = timed(d, "window");
    let mut count = |d: &mut Diags<'_>, key: &str, default: u32, hint: &str| -> u32 {
        let Some(v) = t.get(key) else { return default };
        match integer(d, v, &loc.key(key), 1..=10_000, hint) {
            Some(n) => n as u32,
            None => {
                ok = false;
                default
            }
        }
    };
    let max_attempts = count(
        d,
        "max_attempts",
        DEFAULTS.max_attempts,
        "how many delivery attempts before a notification is given up, 1 to 10000",
    );
    let breaker_failures = count(
        d,
        "breaker_failures",
        DEFAULTS.breaker_failures,
        "how many failed attempts in a row open the circuit breaker, 1 to 10000",
    );
    let max_in_flight = match t.get("max_in_flight") {
        None => DEFAULTS.max_in_flight,
        Some(v) => match integer(
            d,
            v,
            &loc.key("max_in_flight"),
            1..=256,
            "how many deliveries to this target may be under way at once, 1 to 256",
        ) {
            Some(n) => n as u32,
            None => {
                ok = false;
                DEFAULTS.max_in_flight
            }
        },
    };
    if ok
        && max_backoff < backoff
        && let Some(v) = t.get("max_backoff")
    {
        d.report(
            v.span(),
            &loc.key("max_backoff"),
            format!(
                "max_backoff {} is shorter than backoff {}",
                human(max_backoff),
                human(backoff)
            ),
            "set max_backoff to at least backoff: retry delays grow from backoff up to max_backoff",
        );
        ok = false;
    }
    Some(NotifyTarget {
        url: url?,
        keys: keys?,
        timeout,
        max_attempts,
        give_up_after,
        backoff,
        max_backoff,
        breaker_failures,
        breaker_cooldown,
        window,
        max_in_flight,
    })
    .filter(|_| ok)
}

fn url(d: &mut Diags<'_>, v: &Value<'_>, loc: &Loc<'_>) -> Option<String> {
    let url = non_empty(d, v, loc, "a URL string", URL_HINT)?;
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    let has_host = rest
        .is_some_and(|r| !r.is_empty() && !r.starts_with('/') && !r.contains(char::is_whitespace));
    if !has_host {
        d.report(
            v.span(),
            loc,
            format!("`{url}` is not an http:// or https:// URL with a host"),
            URL_HINT,
        );
        return None;
    }
    Some(url.to_owned())
}

/// `secret_env` or `secret_file` (exactly one), each a string or an array of one or two.
fn keys(
    d: &mut Diags<'_>,
    t: &Table<'_>,
    span: std::ops::Range<usize>,
    loc: &Loc<'_>,
    base: &Path,
) -> Option<Vec<KeySource>> {
    match (
        t.get_key_value("secret_env"),
        t.get_key_value("secret_file"),
    ) {
        (None, None) => {
            d.report(
                span,
                &loc.key("secret_env"),
                "a notify target needs a signing key: deliveries are signed (Standard Webhooks)",
                KEY_HINT,
            );
            None
        }
        (Some(_), Some((k, _))) => {
            d.report(
                k.span(),
                &loc.key("secret_file"),
                "set `secret_env` or `secret_file`, not both",
                "keep one of them; list two keys in it during a rollover",
            );
            None
        }
        (Some((_, v)), None) => {
            let here = loc.key("secret_env");
            key_list(d, v, &here, "environment variable names", |d, item, at| {
                env_name(d, item, at).map(|name| KeySource::Env(name.to_owned()))
            })
        }
        (None, Some((_, v))) => {
            let here = loc.key("secret_file");
            key_list(d, v, &here, "file paths", |d, item, at| {
                non_empty(d, item, at, "a path string", KEY_HINT)
                    .map(|p| KeySource::File(base.join(p)))
            })
        }
    }
}

fn key_list(
    d: &mut Diags<'_>,
    v: &Value<'_>,
    loc: &Loc<'_>,
    what: &str,
    mut one: impl FnMut(&mut Diags<'_>, &Value<'_>, &Loc<'_>) -> Option<KeySource>,
) -> Option<Vec<KeySource>> {
    let items: Vec<(&Value<'_>, Option<usize>)> = match v.get_ref() {
        DeValue::String(_) => vec![(v, None)],
        DeValue::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| (v, Some(i)))
            .collect(),
        _ => {
            wrong_type(
                d,
                v,
                loc,
                &format!("a string or an array of one or two {what}"),
                KEY_HINT,
            );
            return None;
        }
    };
    if items.is_empty() || items.len() > MAX_KEYS {
        d.report(
            v.span(),
            loc,
            format!("list one or two signing keys, found {}", items.len()),
            "one key normally; two (newest first) while receivers move to a new key",
        );
        return None;
    }
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for (item, index) in items {
        let at = match index {
            Some(i) => loc.index(i),
            None => *loc,
        };
        match one(d, item, &at) {
            Some(source) if out.contains(&source) => {
                d.report(
                    item.span(),
                    &at,
                    "the same signing key is listed twice",
                    "list the new key and the old key, newest first",
                );
                ok = false;
            }
            Some(source) => out.push(source),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// A webhook timing: the policy's durations, plus milliseconds (`"250ms"`), at least `floor`.
fn timing(d: &mut Diags<'_>, v: &Value<'_>, loc: &Loc<'_>, floor: Duration) -> Option<Duration> {
    let text = string(d, v, loc, "a string like \"15s\"", TIMING_HINT)?;
    let parsed = match text.trim().strip_suffix("ms") {
        Some(ms) if !ms.is_empty() && ms.bytes().all(|b| b.is_ascii_digit()) => ms
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| format!("duration \"{text}\" is too long")),
        _ => crate::schedule::parse_duration(text),
    };
    match parsed {
        Ok(value) if value < floor => {
            d.report(
                v.span(),
                loc,
                format!("must be at least {}", human(floor)),
                TIMING_HINT,
            );
            None
        }
        Ok(value) => Some(value),
        Err(message) => {
            d.report(v.span(), loc, message, TIMING_HINT);
            None
        }
    }
}
