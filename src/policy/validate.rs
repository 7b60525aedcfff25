//! The whole-file pass: syntax, top-level keys, `[daemon]`, `[backends.*]`, `[notify.*]`
//! (in `notify.rs`), then the secrets; builds the [`Policy`] only when nothing was reported.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ring::digest;
use toml::de::DeTable;

use super::diagnostic::{Diags, Loc, did_you_mean};
use super::parse::{Table, check_keys, duration, env_name, integer, non_empty, table};
use super::secrets::SecretWalk;
use super::{BackendConfig, DaemonSettings, Diagnostic, FileBackendConfig, Policy};

const TOP_KEYS: &[&str] = &["daemon", "api", "defaults", "backends", "notify", "secrets"];
const DAEMON_KEYS: &[&str] = &[
    "state_dir",
    "audit_log",
    "audit_key_file",
    "audit_key_env",
    "concurrency",
    "min_interval",
    "max_retry_backoff",
];
const FILE_BACKEND_KEYS: &[&str] = &["type", "path", "key_file", "key_env"];
const BACKEND_TYPES: &[&str] = &["file", "vault"];
/// Backend types on the roadmap: named as such rather than "unknown".
const PLANNED_BACKEND_TYPES: &[&str] = &["aws"];

const PATH_HINT: &str =
    "a file system path; relative paths resolve against the policy file's directory";

/// Checks `text` and builds the policy, or returns every problem, sorted by position.
pub(super) fn policy(file: &Path, text: &str) -> Result<Policy, Vec<Diagnostic>> {
    let mut d = Diags::new(file.display().to_string(), text);
    let doc = match DeTable::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            // The tree is unusable past a syntax error: report it alone.
            let span = e.span().unwrap_or(0..0);
            d.report(
                span,
                &Loc::Root,
                format!("invalid TOML: {}", e.message()),
                "fix the TOML syntax here (quotes, brackets, commas, one value per key)",
            );
            return Err(d.finish());
        }
    };
    let root = doc.get_ref();
    check_keys(&mut d, root, TOP_KEYS, &Loc::Root);

    // Relative paths resolve against the policy file's directory, not the working directory.
    let base = file.parent().unwrap_or(Path::new(""));
    let (daemon, min_interval) = daemon(&mut d, root, base);
    let (backends, backend_names) = backends(&mut d, root, base, &daemon.state_dir);
    let (notify, notify_names) = super::notify::targets(&mut d, root, base);
    let api = super::api::api(&mut d, root, base);
    let secrets = SecretWalk::new(&backend_names, &notify_names, min_interval).run(&mut d, root);

    if !d.is_clean() {
        return Err(d.finish());
    }
    Ok(Policy {
        source: file.to_path_buf(),
        digest: crate::hex::encode(digest::digest(&digest::SHA256, text.as_bytes()).as_ref()),
        daemon,
        backends,
        notify,
        secrets,
        api,
    })
}

/// `[daemon]` with defaults applied; also returns `min_interval` if it was valid.
fn daemon(d: &mut Diags<'_>, root: &Table<'_>, base: &Path) -> (DaemonSettings, Option<Duration>) {
    let top = Loc::Root;
    let loc = top.key("daemon");
    let empty = Table::new();
    let t = match root.get("daemon") {
        Some(v) => {
            table(d, v, &loc, "a table", "write [daemon] settings as a table").unwrap_or(&empty)
        }
        None => &empty,
    };
    check_keys(d, t, DAEMON_KEYS, &loc);

    let path = |d: &mut Diags<'_>, key: &str| -> Option<PathBuf> {
        let v = t.get(key)?;
        non_empty(d, v, &loc.key(key), "a path string", PATH_HINT).map(|p| base.join(p))
    };
    let state_dir = path(d, "state_dir").unwrap_or_else(|| base.join("state"));
    let audit_log = path(d, "audit_log").unwrap_or_else(|| state_dir.join("audit.jsonl"));
    let audit_key_file = path(d, "audit_key_file").unwrap_or_else(|| state_dir.join("audit.key"));
    let audit_key_env = t
        .get("audit_key_env")
        .and_then(|v| env_name(d, v, &loc.key("audit_key_env")).map(str::to_owned));

    let concurrency = t.get("concurrency").map_or(Some(8), |v| {
        let hint = "how many rotations may run at once, 1 to 1024";
        integer(d, v, &loc.key("concurrency"), 1..=1024, hint).map(|n| n as usize)
    });

    let at_least_a_second = |d: &mut Diags<'_>, key: &str, default: Duration| {
        let Some(v) = t.get(key) else {
            return Some(default);
        };
        let key_loc = loc.key(key);
        let value = duration(d, v, &key_loc)?;
        if value < Duration::from_secs(1) {
            d.report(
                v.span(),
                &key_loc,
                format!("{key} must be at least 1s"),
                "use a duration of 1s or more, e.g. \"1m\"",
            );
            return None;
        }
        Some(value)
    };
    let min_interval = at_least_a_second(d, "min_interval", Duration::from_secs(3600));
    let max_retry_backoff = at_least_a_second(d, "max_retry_backoff", Duration::from_secs(900));

    let settings = DaemonSettings {
        state_dir,
        audit_log,
        audit_key_file,
        audit_key_env,
        concurrency: concurrency.unwrap_or(8),
        min_interval: min_interval.unwrap_or(Duration::from_secs(3600)),
        max_retry_backoff: max_retry_backoff.unwrap_or(Duration::from_secs(900)),
    };
    (settings, min_interval)
}

/// True for names usable in file names and references: letters, digits, `_` and `-`.
fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A named table: its name, and the table with its span when it is one.
pub(super) type Named<'a> = (&'a str, Option<(&'a Table<'a>, std::ops::Range<usize>)>);

/// The named tables under `section` (`[backends.*]`, `[notify.*]`): each name with its
/// key span, and the table when it is one. Every name is returned, so references to a
/// broken table are not reported a second time.
pub(super) fn named_tables<'a>(
    d: &mut Diags<'_>,
    root: &'a Table<'a>,
    section: &'a str,
    example: &str,
) -> Vec<Named<'a>> {
    let top = Loc::Root;
    let loc = top.key(section);
    let Some(v) = root.get(section) else {
        return Vec::new();
    };
    let hint = format!("write each as its own table, e.g. {example}");
    let Some(t) = table(d, v, &loc, "a table of named tables", &hint) else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(t.len());
    for (k, v) in t.iter() {
        let name: &str = k.get_ref();
        let here = loc.key(name);
        if !plain_name(name) {
            d.report(
                k.span(),
                &here,
                format!("`{name}` is not a valid {section} name"),
                "use letters, digits, `_` and `-` (the name is used in file names and references)",
            );
        }
        let t = table(d, v, &here, "a table", &hint).map(|t| (t, v.span()));
        out.push((name, t));
    }
    out
}

fn backends<'a>(
    d: &mut Diags<'_>,
    root: &'a Table<'a>,
    base: &Path,
    state_dir: &Path,
) -> (BTreeMap<String, BackendConfig>, Vec<&'a str>) {
    let top = Loc::Root;
    let section = top.key("backends");
    let tables = named_tables(d, root, "backends", "[backends.local] with type = \"file\"");
    let mut configs = BTreeMap::new();
    // Two stores in one directory would overwrite each other's files.
    let mut store_paths: Vec<(PathBuf, &str)> = Vec::new();
    for (name, t) in &tables {
        let Some((t, span)) = t else { continue };
        let loc = section.key(name);
        let type_loc = loc.key("type");
        let Some(kind_value) = t.get("type") else {
            d.report(
                span.clone(),
                &type_loc,
                "a backend needs a `type`",
                "add type = \"file\" or type = \"vault\"",
            );
            continue;
        };
        let hint = "supported types are \"file\" and \"vault\"";
        let Some(kind) = non_empty(d, kind_value, &type_loc, "a string like \"file\"", hint) else {
            continue;
        };
        if PLANNED_BACKEND_TYPES.contains(&kind) {
            d.report(
                kind_value.span(),
                &type_loc,
                format!("backend type `{kind}` is planned but not supported yet"),
                "use type = \"file\" or \"vault\" for now",
            );
            continue;
        }
        if !BACKEND_TYPES.contains(&kind) {
            let mut candidates = BACKEND_TYPES.to_vec();
            candidates.extend_from_slice(PLANNED_BACKEND_TYPES);
            let message = format!(
                "unknown backend type `{kind}`{}",
                did_you_mean(kind, &candidates)
            );
            d.report(
                kind_value.span(),
                &type_loc,
                message,
                "supported types are \"file\" and \"vault\" (\"aws\" is planned)",
            );
            continue;
        }
        if kind == "vault" {
            if let Some(config) = super::vault::backend(d, t, &loc, span.clone(), base) {
                configs.insert((*name).to_owned(), BackendConfig::Vault(config));
            }
            continue;
        }
        check_keys(d, t, FILE_BACKEND_KEYS, &loc);
        let path = |d: &mut Diags<'_>, key: &str| -> Option<Option<PathBuf>> {
            match t.get(key) {
                None => Some(None),
                Some(v) => non_empty(d, v, &loc.key(key), "a path string", PATH_HINT)
                    .map(|p| Some(base.join(p))),
            }
        };
        let store = path(d, "path");
        let key_file = path(d, "key_file");
        let key_env = match t.get("key_env") {
            None => Some(None),
            Some(v) => env_name(d, v, &loc.key("key_env")).map(|s| Some(s.to_owned())),
        };
        let (Some(store), Some(key_file), Some(key_env)) = (store, key_file, key_env) else {
            continue;
        };
        let store = store.unwrap_or_else(|| state_dir.join(format!("store-{name}")));
        if let Some((_, other)) = store_paths.iter().find(|(p, _)| *p == store) {
            let at = t.get("path").map_or(span.clone(), |v| v.span());
            d.report(
                at,
                &loc.key("path"),
                format!("backend `{name}` uses the same store directory as backend `{other}`"),
                "give each file backend its own path",
            );
        }
        store_paths.push((store.clone(), name));
        let key_file = key_file.unwrap_or_else(|| state_dir.join(format!("{name}.key")));
        configs.insert(
            (*name).to_owned(),
            BackendConfig::File(FileBackendConfig {
                path: store,
                key_file,
                key_env,
            }),
        );
    }
    (configs, tables.iter().map(|(name, _)| *name).collect())
}
