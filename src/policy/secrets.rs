//! `[defaults]` and `[[secrets]]`: per-secret fields, defaults, schedules (with a cron
//! cache), duplicate names, references, and the cross-field timing checks.
//!
//! A field set in `[defaults]` is read and checked once; secrets that omit the field get a
//! clone. Cross-field checks run where the combination is decided: once in `[defaults]`
//! when every field involved comes from there, otherwise per secret, pointing at the
//! secret's own field.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::diagnostic::{Diags, Loc, did_you_mean, human, list};
use super::generator;
use super::parse::{
    DURATION_HINT, Table, Value, array, boolean, check_keys, duration, non_empty, string, table,
    unknown_key,
};
use super::{Confirm, SecretPolicy, SecretSettings};
use crate::schedule::{Schedule, ScheduleError};
use crate::secret::SecretName;

/// Every key a secret may have.
/// Every key a `[[secrets]]` table takes; `name` must stay first (see `DEFAULT_KEYS`).
const SECRET_KEYS: &[&str] = &[
    "name",
    "backend",
    "schedule",
    "generator",
    "grace",
    "window",
    "max_age",
    "notify",
    "confirm",
    "confirm_timeout",
    "owner",
    "tags",
    "enabled",
];
/// `[defaults]` takes every secret key except `name`, which `SECRET_KEYS` lists first: one
/// list, so a new secret key is never forgotten in `[defaults]`.
const DEFAULT_KEYS: &[&str] = SECRET_KEYS.split_at(1).1;
const SCHEDULE_KEYS: &[&str] = &["cron", "every", "timezone"];
/// How long a gated promotion waits for confirmations when `confirm_timeout` is unset.
const DEFAULT_CONFIRM_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Grace when neither the secret nor `[defaults]` sets one.
const DEFAULT_GRACE: Duration = Duration::from_secs(24 * 3600);

const SCHEDULE_HINT: &str = "write schedule = { every = \"30d\" } or schedule = { cron = \"30 2 * * *\", timezone = \"UTC\" }";
const CRON_HINT: &str =
    "five fields: minute hour day-of-month month day-of-week, e.g. \"30 2 * * *\"";
const TZ_HINT: &str = "an IANA time zone name, e.g. \"Europe/Berlin\" or \"UTC\"";

/// Where a field's value came from; decides where a cross-field problem is reported.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Origin {
    Secret,
    Defaults,
    /// rekeyd's own default (only `grace` has one that matters for checks).
    Builtin,
}

/// A field's value, its span and origin.
#[derive(Clone, Debug)]
struct Src<T> {
    value: T,
    span: Range<usize>,
    origin: Origin,
}

/// A field after reading: absent, present but already reported, or valid.
#[derive(Clone, Copy, Debug)]
enum Got<T> {
    Absent,
    Invalid,
    Valid(T),
}

impl<T: Clone> Got<T> {
    /// The secret's own value, or else the default's.
    fn or_default(self, default: &Got<T>) -> Got<T> {
        match self {
            Got::Absent => default.clone(),
            got => got,
        }
    }
}

impl<T> Got<T> {
    fn from_option(option: Option<T>) -> Self {
        option.map_or(Got::Invalid, Got::Valid)
    }

    fn as_ref(&self) -> Got<&T> {
        match self {
            Got::Absent => Got::Absent,
            Got::Invalid => Got::Invalid,
            Got::Valid(v) => Got::Valid(v),
        }
    }
}

/// The secret's own value, or else the default's, without copying either.
fn pick<'x, T>(own: &'x Got<T>, default: &'x Got<T>) -> Got<&'x T> {
    match own {
        Got::Absent => default.as_ref(),
        got => got.as_ref(),
    }
}

const SECRETS_HINT: &str = "add secrets as [[secrets]] tables";

/// The `[[secrets]]` tables, or `None` (reported) when `secrets` is not an array.
pub(super) fn secrets_array<'v, 'i>(
    d: &mut Diags<'_>,
    root: &'v Table<'i>,
) -> Option<&'v [Value<'i>]> {
    let value = root.get("secrets")?;
    let top = Loc::Root;
    let loc = top.key("secrets");
    array(
        d,
        value,
        &loc,
        "an array of tables ([[secrets]])",
        SECRETS_HINT,
    )
}

/// A parsed schedule; `every` schedules get their per-secret phase when a name is known.
#[derive(Clone, Debug)]
enum Kind {
    Cron(Schedule),
    Every(Duration),
}

/// A schedule as read from a table.
#[derive(Clone, Debug)]
struct ParsedSchedule<'a> {
    kind: Kind,
    /// The shortest gap between two slots.
    gap: Duration,
    /// As written, for display.
    text: Written<'a>,
    /// `cron` or `every`, and the span of its value: where interval problems point.
    key: &'static str,
    key_span: Range<usize>,
}

/// A schedule's display text in pieces: it is put together once per distinct settings,
/// not once per secret.
#[derive(Clone, Copy, Debug)]
enum Written<'a> {
    /// `every = "30d"`.
    Every(&'a str),
    /// `every` given as a number of seconds.
    EveryFor(Duration),
    /// `cron = "30 2 * * *"` and its time zone, if any.
    Cron(&'a str, Option<&'a str>),
}

impl Written<'_> {
    fn render(self) -> String {
        match self {
            Written::Every(text) => format!("every {text}"),
            Written::EveryFor(period) => format!("every {}", human(period)),
            Written::Cron(expr, Some(tz)) => format!("cron \"{expr}\" ({tz})"),
            Written::Cron(expr, None) => format!("cron \"{expr}\""),
        }
    }
}

/// Target names as written, with their spans.
type Refs = Vec<(String, Range<usize>)>;

/// Fields shared by `[defaults]` and a secret.
#[derive(Clone, Debug)]
pub(super) struct Fields<'a> {
    backend: Got<&'a str>,
    schedule: Got<Src<ParsedSchedule<'a>>>,
    generator: Got<crate::generate::GeneratorSpec>,
    grace: Got<Src<Duration>>,
    window: Got<Src<Duration>>,
    max_age: Got<Src<Duration>>,
    notify: Got<Src<Vec<String>>>,
    confirm: Got<Src<Refs>>,
    confirm_timeout: Got<Src<Duration>>,
    owner: Got<String>,
    tags: Got<BTreeMap<String, String>>,
    enabled: Got<bool>,
    /// Where each field this table sets is written (in `DEFAULT_KEYS` order).
    sources: [Option<Range<usize>>; DEFAULT_KEYS.len()],
}

impl Fields<'_> {
    fn absent() -> Self {
        Fields {
            backend: Got::Absent,
            schedule: Got::Absent,
            generator: Got::Absent,
            grace: Got::Absent,
            window: Got::Absent,
            max_age: Got::Absent,
            notify: Got::Absent,
            confirm: Got::Absent,
            confirm_timeout: Got::Absent,
            owner: Got::Absent,
            tags: Got::Absent,
            enabled: Got::Absent,
            sources: Default::default(),
        }
    }
}

/// Secret names seen so far, with the byte offset of their first definition.
type NameSet<'a> = HashMap<&'a str, usize, BuildHasherDefault<NameHasher>>;

/// A word-at-a-time multiply-xorshift hash for names and settings keys: SipHash's flood
/// resistance buys nothing for text from a local file, and with 100,000 secrets the
/// hashing shows up (a byte-at-a-time FNV-1a did too).
#[derive(Default)]
pub(super) struct NameHasher(u64);

impl NameHasher {
    const MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;

    fn mix(&mut self, word: u64) {
        let hash = (self.0 ^ word).wrapping_mul(Self::MULTIPLIER);
        // Fold the well-mixed high half into the low bits, which pick the bucket.
        self.0 = hash ^ (hash >> 32);
    }
}

impl Hasher for NameHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            self.mix(u64::from_le_bytes(word.try_into().expect("8 bytes")));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.mix(u64::from_le_bytes(last));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.mix(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.mix(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.mix(n as u64);
    }

    fn write_isize(&mut self, n: isize) {
        self.mix(n as u64);
    }
}

type CronResult = Result<(Schedule, Duration), (bool, String)>;

/// The source text of each field a secret sets itself (in `DEFAULT_KEYS` order): two
/// secrets whose own fields read the same, under the same `[defaults]`, end up with the
/// same settings, so this keys the settings they share.
type SettingsKey<'a> = [Option<&'a str>; DEFAULT_KEYS.len()];

/// Settings shared between the walks over the parts of one policy (see `parts`), keyed
/// like [`SettingsKey`] but by owned text. A walk looks here only for settings it has not
/// met yet, so each part takes a lock about once per distinct settings.
pub(super) type SharedSettings = Mutex<
    HashMap<
        [Option<Box<str>>; DEFAULT_KEYS.len()],
        Arc<SecretSettings>,
        BuildHasherDefault<NameHasher>,
    >,
>;

/// A secret that passed every check, its name still in the walk's name buffer.
struct Checked {
    name: Range<usize>,
    schedule: Schedule,
    settings: Arc<SecretSettings>,
}

/// The state of one pass over `[defaults]` and `[[secrets]]`.
pub(super) struct SecretWalk<'a, 'n> {
    /// The text the tree was parsed from (spans point into it).
    text: &'a str,
    /// Defined backend names (valid or not, so a bad backend does not cascade).
    pub(super) backends: &'n [&'a str],
    /// Defined notify target names.
    pub(super) notify: &'n [&'a str],
    /// `[daemon] min_interval`, or `None` when it was invalid (then its check is skipped).
    pub(super) min_interval: Option<Duration>,
    /// Parsed cron schedules by (expression, time zone); errors are cached too.
    cron_cache: HashMap<(&'a str, Option<&'a str>), CronResult, BuildHasherDefault<NameHasher>>,
    /// Settings built so far, shared by every secret whose own fields read the same.
    settings: HashMap<SettingsKey<'a>, Arc<SecretSettings>, BuildHasherDefault<NameHasher>>,
    /// Settings built by the walks over other parts of the same policy.
    shared: Option<&'n SharedSettings>,
    /// The valid secrets' names, back to back (one allocation for all of them).
    names: String,
    checked: Vec<Checked>,
    /// First definition of each name: its byte offset, for "also defined at line N";
    /// `None` when the caller checks names itself.
    seen: Option<NameSet<'a>>,
}

impl<'a, 'n> SecretWalk<'a, 'n> {
    /// A walk over a tree parsed from `text` that checks references against these names.
    pub(super) fn new(
        text: &'a str,
        backends: &'n [&'a str],
        notify: &'n [&'a str],
        min_interval: Option<Duration>,
    ) -> Self {
        Self {
            text,
            backends,
            notify,
            min_interval,
            cron_cache: HashMap::default(),
            settings: HashMap::default(),
            shared: None,
            names: String::new(),
            checked: Vec::new(),
            seen: Some(HashMap::default()),
        }
    }

    /// A walk over one part of a policy read in parts (`parts`), under the same
    /// `[defaults]` as the others: it shares settings with the other parts' walks, so that
    /// secrets with the same settings share one copy whichever part they are in, and
    /// leaves duplicate names to the caller, which checks every part's names at once.
    pub(super) fn in_part(mut self, shared: &'n SharedSettings) -> Self {
        self.shared = Some(shared);
        self.seen = None;
        self
    }

    /// Reads `[defaults]` and every `[[secrets]]` entry; secrets come back only if all of
    /// theirs are valid (the caller still checks for problems elsewhere).
    pub(super) fn run(mut self, d: &mut Diags<'_>, root: &'a Table<'a>) -> Vec<SecretPolicy> {
        let defaults = self.defaults(d, root);
        if let Some(items) = secrets_array(d, root) {
            self.secrets(d, items, 0, &defaults);
        }
        self.finish()
    }

    /// Checks every `[[secrets]]` table of `items`, the first being `secrets[first]`.
    pub(super) fn secrets(
        &mut self,
        d: &mut Diags<'_>,
        items: &'a [Value<'a>],
        first: usize,
        defaults: &Fields<'a>,
    ) {
        let top = Loc::Root;
        let loc = top.key("secrets");
        self.checked.reserve(items.len());
        if let Some(seen) = &mut self.seen {
            seen.reserve(items.len());
        }
        for (i, item) in items.iter().enumerate() {
            let item_loc = loc.index(first + i);
            let Some(t) = table(d, item, &item_loc, "a table", SECRETS_HINT) else {
                continue;
            };
            if let Some(checked) = self.secret(d, item, t, &item_loc, defaults) {
                self.checked.push(checked);
            }
        }
    }

    /// The valid secrets, in order, their names in one shared buffer.
    pub(super) fn finish(self) -> Vec<SecretPolicy> {
        let buffer = Arc::new(self.names.into_boxed_str());
        self.checked
            .into_iter()
            .map(|c| {
                SecretPolicy::new(
                    SecretName::in_buffer(&buffer, c.name),
                    c.schedule,
                    c.settings,
                )
            })
            .collect()
    }

    /// Reads and checks `[defaults]`.
    pub(super) fn defaults(&mut self, d: &mut Diags<'_>, root: &'a Table<'a>) -> Fields<'a> {
        let top = Loc::Root;
        let loc = top.key("defaults");
        let hint = "write [defaults] with keys a secret takes (except name)";
        let Some(t) = root
            .get("defaults")
            .and_then(|v| table(d, v, &loc, "a table", hint))
        else {
            return Fields::absent();
        };
        let fields = self.fields(d, t, &loc, Origin::Defaults);
        // Combinations decided entirely by [defaults] are checked here, once.
        if let Got::Valid(schedule) = &fields.schedule {
            let schedule = schedule.clone();
            self.timing(
                d,
                &loc,
                Origin::Defaults,
                &schedule,
                &fields.grace,
                &fields.window,
                &fields.max_age,
            );
        }
        if let (Got::Valid(_), Got::Valid(_)) = (&fields.notify, &fields.confirm) {
            confirm_in_notify(
                d,
                &loc,
                Origin::Defaults,
                0..0,
                fields.notify.as_ref(),
                fields.confirm.as_ref(),
            );
        }
        fields
    }

    fn secret(
        &mut self,
        d: &mut Diags<'_>,
        item: &Value<'a>,
        t: &'a Table<'a>,
        loc: &Loc<'_>,
        defaults: &Fields<'a>,
    ) -> Option<Checked> {
        let name = match t.get("name") {
            None => {
                d.report(
                    item.span(),
                    &loc.key("name"),
                    "this secret has no `name`",
                    "add name = \"app/db/password\" (letters, digits and / _ + = . @ -)",
                );
                None
            }
            Some(v) => self.name(d, v, &loc.key("name")),
        };

        let own = self.fields(d, t, loc, Origin::Secret);
        // References, not copies: most secrets take most fields from [defaults], and are
        // built only once per distinct combination.
        let backend = pick(&own.backend, &defaults.backend);
        let schedule = pick(&own.schedule, &defaults.schedule);
        let generator = pick(&own.generator, &defaults.generator);
        // Unset, grace defaults to a day, shortened to the schedule's shortest gap: a daily
        // cron in a DST zone has a 23.5h gap on spring-forward day and must still validate.
        let grace = match own.grace.clone().or_default(&defaults.grace) {
            Got::Absent => Got::Valid(builtin_grace(match schedule {
                Got::Valid(s) => s.value.gap,
                _ => DEFAULT_GRACE,
            })),
            got => got,
        };
        let window = own.window.clone().or_default(&defaults.window);
        let max_age = own.max_age.clone().or_default(&defaults.max_age);

        // The hints are written only for a field that is missing: building them for every
        // secret of a large policy showed up in its load time.
        for (missing, key) in [
            (matches!(backend, Got::Absent), "backend"),
            (matches!(schedule, Got::Absent), "schedule"),
            (matches!(generator, Got::Absent), "generator"),
        ] {
            if missing {
                let message = format!("this secret has no `{key}` and [defaults] sets none");
                d.report(item.span(), &loc.key(key), message, self.missing_hint(key));
            }
        }

        if let Got::Valid(s) = schedule {
            self.timing(d, loc, Origin::Secret, s, &grace, &window, &max_age);
        }
        let notify = pick(&own.notify, &defaults.notify);
        let confirm = pick(&own.confirm, &defaults.confirm);
        let confirm_timeout = own
            .confirm_timeout
            .clone()
            .or_default(&defaults.confirm_timeout);
        confirm_in_notify(d, loc, Origin::Secret, item.span(), notify, confirm);

        // Build only a fully valid secret; anything else has been reported already.
        let (
            Some(name),
            Got::Valid(backend),
            Got::Valid(schedule),
            Got::Valid(generator),
            Got::Valid(grace),
        ) = (name, backend, schedule, generator, grace)
        else {
            return None;
        };
        let window = valid_or_none(window)?.map(|w| w.value);
        let max_age = valid_or_none(max_age)?.map(|m| m.value);
        let notify = valid_or_none(notify)?;
        let confirm_timeout = valid_or_none(confirm_timeout)?.map(|c| c.value);
        let confirm = valid_or_none(confirm)?;
        let owner = valid_or_none(pick(&own.owner, &defaults.owner))?;
        let tags = valid_or_none(pick(&own.tags, &defaults.tags))?;
        let enabled = valid_or_none(own.enabled.or_default(&defaults.enabled))?;
        let text = self.text;
        let key: SettingsKey<'a> = own.sources.map(|span| span.map(|span| &text[span]));
        let settings = match self.settings.get(&key) {
            Some(settings) => Arc::clone(settings),
            None => {
                let built = Arc::new(SecretSettings {
                    backend: (*backend).to_owned(),
                    schedule_text: schedule.value.text.render(),
                    generator: generator.clone(),
                    notify: notify.map(|n| n.value.clone()).unwrap_or_default(),
                    confirm: confirm
                        .map(|c| &c.value)
                        .filter(|targets| !targets.is_empty())
                        .map(|targets| Confirm {
                            targets: targets.iter().map(|(name, _)| name.clone()).collect(),
                            timeout: confirm_timeout.unwrap_or(DEFAULT_CONFIRM_TIMEOUT),
                        }),
                    grace: grace.value,
                    window,
                    max_age,
                    owner: owner.cloned(),
                    tags: tags.cloned().unwrap_or_default(),
                    enabled: enabled.unwrap_or(true),
                });
                // Another part may have built the same settings: share its copy.
                let settings = match self.shared {
                    Some(shared) => {
                        let owned = key.map(|text| text.map(Box::from));
                        let mut shared = shared.lock().expect("shared settings");
                        Arc::clone(shared.entry(owned).or_insert(built))
                    }
                    None => built,
                };
                self.settings.insert(key, Arc::clone(&settings));
                settings
            }
        };
        let schedule = match &schedule.value.kind {
            Kind::Cron(s) => s.clone(),
            Kind::Every(period) => Schedule::every(*period, &self.names[name.clone()]),
        };
        Some(Checked {
            name,
            schedule,
            settings,
        })
    }

    /// How to set `key` (`backend`, `schedule` or `generator`) that neither a secret nor
    /// `[defaults]` sets.
    fn missing_hint(&self, key: &str) -> String {
        match key {
            "backend" => match self.backends.first() {
                Some(first) => format!(
                    "add backend = \"{first}\" here or in [defaults]; defined backends: {}",
                    list(self.backends)
                ),
                None => "define one as [backends.local] with type = \"file\", then add \
                     backend = \"local\" here or in [defaults]"
                    .to_owned(),
            },
            "schedule" => format!("{SCHEDULE_HINT}, here or in [defaults]"),
            _ => "add generator = { type = \"password\" } here or in [defaults]; types: \
                 password, bytes, ed25519, ecdsa-p256, json"
                .to_owned(),
        }
    }

    /// A valid, unique secret name, appended to the name buffer (its range there).
    fn name(&mut self, d: &mut Diags<'_>, v: &'a Value<'a>, loc: &Loc<'_>) -> Option<Range<usize>> {
        let hint = "1 to 512 characters: letters, digits and / _ + = . @ -";
        let text = string(d, v, loc, "a string like \"prod/db/password\"", hint)?;
        if let Err(e) = SecretName::check(text) {
            d.report(v.span(), loc, e.to_string(), hint);
            return None;
        }
        match self.seen.as_mut().map(|seen| seen.entry(text)) {
            None => {}
            Some(Entry::Occupied(first)) => {
                let line = d.line(*first.get());
                d.report(
                    v.span(),
                    loc,
                    format!("secret `{text}` is defined twice; also defined at line {line}"),
                    "secret names must be unique: rename or remove one of them",
                );
                return None;
            }
            Some(Entry::Vacant(new)) => {
                new.insert(v.span().start);
            }
        }
        let start = self.names.len();
        self.names.push_str(text);
        Some(start..self.names.len())
    }

    /// Reads the fields a secret and `[defaults]` share, and reports unknown keys in the
    /// same loop (`name` is read by the caller).
    fn fields(
        &mut self,
        d: &mut Diags<'_>,
        t: &'a Table<'a>,
        loc: &Loc<'_>,
        origin: Origin,
    ) -> Fields<'a> {
        let mut f = Fields::absent();
        // Iterating the table once (instead of a lookup per field) keeps this linear in the
        // keys actually written.
        for (spanned_key, v) in t.iter() {
            let key: &str = spanned_key.get_ref();
            let here = loc.key(key);
            let span = v.span();
            if let Some(i) = DEFAULT_KEYS.iter().position(|k| *k == key) {
                f.sources[i] = Some(span.clone());
            }
            match key {
                "backend" => f.backend = Got::from_option(self.backend_ref(d, v, &here)),
                "schedule" => {
                    f.schedule = Got::from_option(self.schedule(d, v, &here).map(|value| Src {
                        value,
                        span,
                        origin,
                    }));
                }
                "generator" => {
                    f.generator = Got::from_option(generator::spec(d, v, &here, false));
                }
                "grace" => {
                    f.grace = Got::from_option(sourced(duration(d, v, &here), &span, origin))
                }
                "window" => {
                    f.window = Got::from_option(sourced(duration(d, v, &here), &span, origin))
                }
                "max_age" => {
                    f.max_age = Got::from_option(sourced(duration(d, v, &here), &span, origin))
                }
                "notify" => {
                    let refs = self
                        .notify_refs(d, v, &here)
                        .map(|r| r.into_iter().map(|(n, _)| n).collect());
                    f.notify = Got::from_option(sourced(refs, &span, origin));
                }
                "confirm" => {
                    f.confirm =
                        Got::from_option(sourced(self.notify_refs(d, v, &here), &span, origin));
                }
                "confirm_timeout" => {
                    let timeout = duration(d, v, &here).filter(|t| {
                        let fine = !t.is_zero();
                        if !fine {
                            d.report(
                                span.clone(),
                                &here,
                                "confirm_timeout must be longer than zero",
                                "give consumers time to check the pending version, e.g. \"5m\"",
                            );
                        }
                        fine
                    });
                    f.confirm_timeout = Got::from_option(sourced(timeout, &span, origin));
                }
                "owner" => {
                    let hint = "who to ask about this secret, e.g. owner = \"team-db\"";
                    f.owner = Got::from_option(
                        non_empty(d, v, &here, "a string", hint).map(str::to_owned),
                    );
                }
                "tags" => f.tags = Got::from_option(tags(d, v, &here)),
                "enabled" => f.enabled = Got::from_option(boolean(d, v, &here)),
                "name" if origin == Origin::Secret => {}
                "name" => d.report(
                    spanned_key.span(),
                    &here,
                    "`name` cannot have a default: every secret names itself",
                    "remove name from [defaults] and set it in each [[secrets]]",
                ),
                _ => {
                    let known = match origin {
                        Origin::Secret => SECRET_KEYS,
                        _ => DEFAULT_KEYS,
                    };
                    unknown_key(d, spanned_key, known, loc);
                }
            }
        }
        f
    }

    fn backend_ref(&self, d: &mut Diags<'_>, v: &'a Value<'a>, loc: &Loc<'_>) -> Option<&'a str> {
        let hint = reference_hint("backends", self.backends);
        let name = string(d, v, loc, "a backend name like \"local\"", &hint)?;
        if !self.backends.contains(&name) {
            let message = format!(
                "backend `{name}` is not defined{}",
                did_you_mean(name, self.backends)
            );
            d.report(v.span(), loc, message, hint);
            return None;
        }
        Some(name)
    }

    /// An array of defined notify target names, each once, with their spans.
    fn notify_refs(&self, d: &mut Diags<'_>, v: &Value<'_>, loc: &Loc<'_>) -> Option<Refs> {
        let hint = reference_hint("notify", self.notify);
        let items = array(d, v, loc, "an array of notify target names", &hint)?;
        let mut out: Refs = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let item_loc = loc.index(i);
            let Some(name) = string(d, item, &item_loc, "a notify target name", &hint) else {
                ok = false;
                continue;
            };
            if !self.notify.contains(&name) {
                let message = format!(
                    "notify target `{name}` is not defined{}",
                    did_you_mean(name, self.notify)
                );
                d.report(item.span(), &item_loc, message, &hint);
                ok = false;
            } else if out.iter().any(|(n, _)| n == name) {
                let message = format!("notify target `{name}` is listed twice");
                d.report(item.span(), &item_loc, message, "list each target once");
                ok = false;
            } else {
                out.push((name.to_owned(), item.span()));
            }
        }
        ok.then_some(out)
    }

    /// Reads `{ cron = …, timezone = … }` or `{ every = … }`.
    fn schedule(
        &mut self,
        d: &mut Diags<'_>,
        v: &'a Value<'a>,
        loc: &Loc<'_>,
    ) -> Option<ParsedSchedule<'a>> {
        let t = table(d, v, loc, "a schedule table", SCHEDULE_HINT)?;
        check_keys(d, t, SCHEDULE_KEYS, loc);
        let cron = t.get_key_value("cron");
        let every = t.get_key_value("every");
        let timezone = t.get_key_value("timezone");
        match (cron, every) {
            (Some(_), Some((k, _))) => {
                d.report(
                    k.span(),
                    &loc.key("every"),
                    "a schedule takes exactly one of `cron` and `every`, not both",
                    "remove cron or every",
                );
                None
            }
            (None, None) => {
                d.report(
                    v.span(),
                    loc,
                    "a schedule needs `cron` or `every`",
                    SCHEDULE_HINT,
                );
                None
            }
            (None, Some((_, ev))) => {
                if let Some((k, _)) = timezone {
                    d.report(
                        k.span(),
                        &loc.key("timezone"),
                        "`timezone` only applies to cron schedules",
                        "remove timezone: an every schedule is a fixed interval",
                    );
                }
                let every_loc = loc.key("every");
                let period = duration(d, ev, &every_loc)?;
                if period.is_zero() {
                    d.report(
                        ev.span(),
                        &every_loc,
                        "the interval must be longer than zero",
                        DURATION_HINT,
                    );
                    return None;
                }
                if timezone.is_some() {
                    return None;
                }
                let text = match ev.get_ref().as_str() {
                    Some(s) => Written::Every(s),
                    None => Written::EveryFor(period),
                };
                Some(ParsedSchedule {
                    kind: Kind::Every(period),
                    gap: period,
                    text,
                    key: "every",
                    key_span: ev.span(),
                })
            }
            (Some((_, cv)), None) => {
                let cron_loc = loc.key("cron");
                let tz_loc = loc.key("timezone");
                let expr = non_empty(d, cv, &cron_loc, "a cron expression string", CRON_HINT);
                let tz = match timezone {
                    None => Some(None),
                    Some((_, tv)) => {
                        non_empty(d, tv, &tz_loc, "a time zone name", TZ_HINT).map(Some)
                    }
                };
                let (expr, tz) = (expr?, tz?);
                let parsed = self.cron_cache.entry((expr, tz)).or_insert_with(|| {
                    match Schedule::cron(expr, tz) {
                        Ok(s) => {
                            let gap = s.min_gap();
                            Ok((s, gap))
                        }
                        Err(ScheduleError::TimeZone(m)) => Err((true, m)),
                        Err(ScheduleError::Cron(m)) => Err((false, m)),
                    }
                });
                match parsed {
                    Ok((schedule, gap)) => Some(ParsedSchedule {
                        kind: Kind::Cron(schedule.clone()),
                        gap: *gap,
                        text: Written::Cron(expr, tz),
                        key: "cron",
                        key_span: cv.span(),
                    }),
                    Err((true, message)) => {
                        // Only reachable with a time zone given.
                        let span = timezone.map_or(cv.span(), |(_, tv)| tv.span());
                        d.report(span, &tz_loc, message.clone(), TZ_HINT);
                        None
                    }
                    Err((false, message)) => {
                        d.report(cv.span(), &cron_loc, message.clone(), CRON_HINT);
                        None
                    }
                }
            }
        }
    }

    /// The interval floor and grace/window/max_age against the schedule's gap, for the
    /// combinations decided in `scope` (a secret, or `[defaults]`).
    ///
    /// Where a problem is reported: at the secret when any field involved is its own;
    /// at `[defaults]` when all of them are set there (checked once, in `[defaults]`
    /// scope). rekeyd's own default grace is cut to the gap, so it never fails here.
    #[allow(clippy::too_many_arguments)]
    fn timing(
        &mut self,
        d: &mut Diags<'_>,
        loc: &Loc<'_>,
        scope: Origin,
        schedule: &Src<ParsedSchedule<'_>>,
        grace: &Got<Src<Duration>>,
        window: &Got<Src<Duration>>,
        max_age: &Got<Src<Duration>>,
    ) {
        let s = &schedule.value;
        let sched_local = schedule.origin == scope;
        if let (true, Some(floor)) = (sched_local, self.min_interval)
            && s.gap < floor
        {
            let (gap, floor) = (human(s.gap), human(floor));
            d.report(
                s.key_span.clone(),
                &loc.key("schedule").key(s.key),
                format!(
                    "this schedule fires every {gap}; the floor is {floor} (raise the \
                     interval, or lower [daemon] min_interval)"
                ),
                format!(
                    "rotations must be at least {floor} apart, or set [daemon] min_interval \
                     = \"{gap}\" if this is intended"
                ),
            );
        }
        for (rule, got) in [(&GRACE, grace), (&WINDOW, window), (&MAX_AGE, max_age)] {
            let Got::Valid(field) = got else { continue };
            if (rule.fine)(field.value, s.gap) {
                continue;
            }
            let (at_field, where_loc) = if field.origin == scope {
                (true, loc)
            } else if sched_local {
                (false, loc)
            } else {
                // Decided in [defaults] and reported there, or already reported once.
                continue;
            };
            let gap = human(s.gap);
            let from = match (field.origin, scope) {
                (Origin::Defaults, Origin::Secret) => " (from [defaults])",
                (Origin::Builtin, _) => " (the default)",
                _ => "",
            };
            let what = format!("{} {}{from}", rule.field, human(field.value));
            let message = (rule.problem)(&what, &gap);
            if at_field {
                let fix = (rule.fix)(rule.field, "", &gap);
                d.report(field.span.clone(), &where_loc.key(rule.field), message, fix);
            } else {
                // The field comes from [defaults] but the secret's own schedule is what
                // conflicts with it: the fix is to set the field in this secret.
                let fix = (rule.fix)(rule.field, " in this secret", &gap);
                d.report(
                    schedule.span.clone(),
                    &where_loc.key("schedule"),
                    message,
                    fix,
                );
            }
        }
    }
}

/// Every `confirm` target must also be in `notify`: the pending event is how it learns of
/// the version it is asked to confirm. Reported once in `[defaults]` when both come from
/// there, else at the secret (at its own `confirm` items, or at its `notify`).
fn confirm_in_notify(
    d: &mut Diags<'_>,
    loc: &Loc<'_>,
    scope: Origin,
    item_span: Range<usize>,
    notify: Got<&Src<Vec<String>>>,
    confirm: Got<&Src<Refs>>,
) {
    let Got::Valid(confirm) = confirm else { return };
    let (listed, notify_src): (&[String], Option<&Src<Vec<String>>>) = match notify {
        Got::Valid(n) => (&n.value, Some(n)),
        Got::Absent => (&[], None),
        Got::Invalid => return,
    };
    let notify_origin = notify_src.map_or(Origin::Builtin, |n| n.origin);
    if scope == Origin::Secret
        && confirm.origin == Origin::Defaults
        && notify_origin == Origin::Defaults
    {
        // Decided in [defaults] and reported there.
        return;
    }
    let confirm_loc = loc.key("confirm");
    let notify_loc = loc.key("notify");
    for (i, (name, span)) in confirm.value.iter().enumerate() {
        if listed.contains(name) {
            continue;
        }
        if confirm.origin == scope {
            d.report(
                span.clone(),
                &confirm_loc.index(i),
                format!("confirm target `{name}` is not in notify"),
                format!(
                    "add \"{name}\" to notify (the pending event is how it learns of the version), \
                     or remove it from confirm"
                ),
            );
        } else {
            let at = notify_src.map_or(item_span.clone(), |n| n.span.clone());
            d.report(
                at,
                &notify_loc,
                format!("confirm target `{name}` (from [defaults]) is not in notify"),
                format!("add \"{name}\" to notify here, or set confirm in this secret"),
            );
        }
    }
}

/// A rule between a duration field and the schedule's gap.
struct TimingRule {
    field: &'static str,
    fine: fn(Duration, Duration) -> bool,
    /// The complaint, given "grace 3h (from [defaults])" and the gap.
    problem: fn(&str, &str) -> String,
    /// The fix, given the field, where to set it (" in this secret" or "") and the gap.
    fix: fn(&str, &str, &str) -> String,
}

const GRACE: TimingRule = TimingRule {
    field: "grace",
    fine: |grace, gap| grace <= gap,
    problem: |what, gap| {
        format!(
            "{what} is longer than the {gap} between rotations: the previous version would be \
             replaced before its grace period ends"
        )
    },
    fix: |field, place, gap| format!("set {field}{place} to at most {gap}, or rotate less often"),
};

const WINDOW: TimingRule = TimingRule {
    field: "window",
    fine: |window, gap| window < gap,
    problem: |what, gap| {
        format!(
            "{what} is not shorter than the {gap} between rotations: a delayed rotation \
             would run into the next slot"
        )
    },
    fix: |field, place, gap| format!("set {field}{place} below {gap}, or rotate less often"),
};

const MAX_AGE: TimingRule = TimingRule {
    field: "max_age",
    fine: |max_age, gap| max_age >= gap,
    problem: |what, gap| {
        format!(
            "{what} is shorter than the {gap} between rotations: the secret would always be \
             overdue and rotate at once"
        )
    },
    fix: |field, place, gap| {
        format!("set {field}{place} to at least {gap} (a little more is typical)")
    },
};

fn sourced<T>(value: Option<T>, span: &Range<usize>, origin: Origin) -> Option<Src<T>> {
    value.map(|value| Src {
        value,
        span: span.clone(),
        origin,
    })
}

fn builtin_grace(schedule_gap: Duration) -> Src<Duration> {
    Src {
        value: DEFAULT_GRACE.min(schedule_gap),
        span: 0..0,
        origin: Origin::Builtin,
    }
}

/// `Some(None)` when absent, `Some(Some(v))` when valid, `None` when invalid.
fn valid_or_none<T>(got: Got<T>) -> Option<Option<T>> {
    match got {
        Got::Absent => Some(None),
        Got::Valid(v) => Some(Some(v)),
        Got::Invalid => None,
    }
}

/// "defined backends: `a`, `b`" or how to define the first one.
fn reference_hint(section: &str, defined: &[&str]) -> String {
    if defined.is_empty() {
        format!("no [{section}.*] tables are defined; add one, e.g. [{section}.main]")
    } else {
        format!("defined {section}: {}", list(defined))
    }
}

pub(super) fn tags(
    d: &mut Diags<'_>,
    v: &Value<'_>,
    loc: &Loc<'_>,
) -> Option<BTreeMap<String, String>> {
    let hint = "write tags = { env = \"prod\" } with string values";
    let t = table(d, v, loc, "a table of strings", hint)?;
    let mut out = BTreeMap::new();
    let mut ok = true;
    for (k, value) in t.iter() {
        let key: &str = k.get_ref();
        match string(d, value, &loc.key(key), "a string", hint) {
            Some(s) => {
                out.insert(key.to_owned(), s.to_owned());
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
}
