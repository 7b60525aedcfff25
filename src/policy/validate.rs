//! The whole-file pass: syntax, top-level keys, `[daemon]`, `[backends.*]`, `[notify.*]`
//! (in `notify.rs`), then the secrets; builds the [`Policy`] only when nothing was reported.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ring::digest;
use toml::de::DeTable;

use super::diagnostic::{Diags, Loc, did_you_mean};
use super::parse::{Table, boolean, check_keys, duration, env_name, integer, non_empty, table};
use super::secrets::SecretWalk;
use super::{
    ApiSettings, AssumeRole, AwsBackendConfig, BackendConfig, CredentialsEnv, DaemonSettings,
    Diagnostic, FileBackendConfig, NotifyTarget, Policy, SecretPolicy,
};

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
const AWS_BACKEND_KEYS: &[&str] = &[
    "type",
    "region",
    "endpoint_url",
    "role_arn",
    "external_id",
    "session_name",
    "kms_key_id",
    "tags",
    "create_missing",
    "take_over_native_rotation",
    "access_key_id_env",
    "secret_access_key_env",
    "session_token_env",
];
const BACKEND_TYPES: &[&str] = &["file", "aws", "vault"];
const TYPE_HINT: &str = "the supported types are \"file\", \"aws\" and \"vault\"";
const REGION_HINT: &str =
    "an AWS region such as \"eu-central-1\"; leave it out to use AWS_REGION or the profile";
const ENDPOINT_HINT: &str =
    "an http:// or https:// URL, e.g. \"http://127.0.0.1:5000\" for moto or a VPC endpoint's URL";
const ROLE_HINT: &str = "an IAM role ARN, e.g. \"arn:aws:iam::123456789012:role/rekeyd\"";
const EXTERNAL_ID_HINT: &str =
    "the external id the role's trust policy requires (2 to 1224 characters)";
const SESSION_HINT: &str =
    "2 to 64 letters, digits or _+=,.@- (shown in CloudTrail as the role session name)";
const KMS_HINT: &str = "a KMS key id, ARN, alias name (\"alias/NAME\") or alias ARN";

const PATH_HINT: &str =
    "a file system path; relative paths resolve against the policy file's directory";

/// Checks `text` and builds the policy, or returns every problem, sorted by position.
///
/// A large policy is first read in parts, in parallel (`parts.rs`); whenever that does not
/// give a policy, the whole file is read here in one piece, which is what reports problems.
pub(super) fn policy(file: &Path, text: &str) -> Result<Policy, Vec<Diagnostic>> {
    if let Some(policy) = super::parts::policy(file, text, &super::parts::Sizes::DEFAULT) {
        return Ok(policy);
    }
    whole(file, text)
}

/// Reads the whole file in one piece.
pub(super) fn whole(file: &Path, text: &str) -> Result<Policy, Vec<Diagnostic>> {
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
    let header = header(&mut d, root, file);
    let secrets = SecretWalk::new(
        text,
        &header.backend_names,
        &header.notify_names,
        header.min_interval,
    )
    .run(&mut d, root);

    if !d.is_clean() {
        return Err(d.finish());
    }
    Ok(header.into_policy(file, digest(text), secrets))
}

/// SHA-256 of the policy text, in hex, as recorded in the audit log.
pub(super) fn digest(text: &str) -> String {
    crate::hex::encode(digest::digest(&digest::SHA256, text.as_bytes()).as_ref())
}

/// Everything but the secrets: top-level keys, `[daemon]`, `[backends.*]`, `[notify.*]`,
/// `[api]`, and the names secrets may refer to.
pub(super) struct Header<'a> {
    daemon: DaemonSettings,
    /// `[daemon] min_interval`, or `None` when it was invalid.
    pub(super) min_interval: Option<Duration>,
    backends: BTreeMap<String, BackendConfig>,
    /// Every backend name defined (valid or not, so a bad backend does not cascade).
    pub(super) backend_names: Vec<&'a str>,
    notify: BTreeMap<String, NotifyTarget>,
    /// Every notify target name defined.
    pub(super) notify_names: Vec<&'a str>,
    api: Option<ApiSettings>,
}

/// Checks everything in `root` but `[defaults]` and `[[secrets]]`.
pub(super) fn header<'a>(d: &mut Diags<'_>, root: &'a Table<'a>, file: &Path) -> Header<'a> {
    check_keys(d, root, TOP_KEYS, &Loc::Root);
    // Relative paths resolve against the policy file's directory, not the working directory.
    let base = file.parent().unwrap_or(Path::new(""));
    let (daemon, min_interval) = daemon(d, root, base);
    let (backends, backend_names) = backends(d, root, base, &daemon.state_dir);
    let (notify, notify_names) = super::notify::targets(d, root, base);
    let api = super::api::api(d, root, base);
    Header {
        daemon,
        min_interval,
        backends,
        backend_names,
        notify,
        notify_names,
        api,
    }
}

impl Header<'_> {
    pub(super) fn into_policy(
        self,
        file: &Path,
        digest: String,
        secrets: Vec<SecretPolicy>,
    ) -> Policy {
        Policy {
            source: file.to_path_buf(),
            digest,
            daemon: self.daemon,
            backends: self.backends,
            notify: self.notify,
            secrets,
            api: self.api,
        }
    }
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

/// True for an `http://` or `https://` URL with a host.
fn http_url(url: &str) -> bool {
    url.strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .is_some_and(|r| !r.is_empty() && !r.starts_with('/') && !r.contains(char::is_whitespace))
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
                "add type = \"file\" (the encrypted file store), \"aws\" (AWS Secrets Manager) or \"vault\" (HashiCorp Vault)",
            );
            continue;
        };
        let hint = TYPE_HINT;
        let Some(kind) = non_empty(d, kind_value, &type_loc, "a string like \"file\"", hint) else {
            continue;
        };
        let config = match kind {
            "file" => file_backend(d, t, &loc, name, span, base, state_dir, &mut store_paths),
            "aws" => aws_backend(d, t, &loc).map(BackendConfig::Aws),
            "vault" => {
                super::vault::backend(d, t, &loc, span.clone(), base).map(BackendConfig::Vault)
            }
            _ => {
                let message = format!(
                    "unknown backend type `{kind}`{}",
                    did_you_mean(kind, BACKEND_TYPES)
                );
                d.report(kind_value.span(), &type_loc, message, hint);
                continue;
            }
        };
        if let Some(config) = config {
            configs.insert((*name).to_owned(), config);
        }
    }
    (configs, tables.iter().map(|(name, _)| *name).collect())
}

/// `type = "file"`.
#[allow(clippy::too_many_arguments)]
fn file_backend<'a>(
    d: &mut Diags<'_>,
    t: &Table<'_>,
    loc: &Loc<'_>,
    name: &'a str,
    span: &std::ops::Range<usize>,
    base: &Path,
    state_dir: &Path,
    store_paths: &mut Vec<(PathBuf, &'a str)>,
) -> Option<BackendConfig> {
    check_keys(d, t, FILE_BACKEND_KEYS, loc);
    let path = |d: &mut Diags<'_>, key: &str| -> Option<Option<PathBuf>> {
        match t.get(key) {
            None => Some(None),
            Some(v) => non_empty(d, v, &loc.key(key), "a path string", PATH_HINT)
                .map(|p| Some(base.join(p))),
        }
    };
    let store = path(d, "path");
    let key_file = path(d, "key_file");
    let key_env = optional_env(d, t, loc, "key_env");
    let (Some(store), Some(key_file), Some(key_env)) = (store, key_file, key_env) else {
        return None;
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
    Some(BackendConfig::File(FileBackendConfig {
        path: store,
        key_file,
        key_env,
    }))
}

/// An optional environment variable name: `Some(None)` when absent, `None` when invalid.
fn optional_env(
    d: &mut Diags<'_>,
    t: &Table<'_>,
    loc: &Loc<'_>,
    key: &str,
) -> Option<Option<String>> {
    match t.get(key) {
        None => Some(None),
        Some(v) => env_name(d, v, &loc.key(key)).map(|s| Some(s.to_owned())),
    }
}

/// `type = "aws"`: every key checked, each problem reported where it is.
fn aws_backend(d: &mut Diags<'_>, t: &Table<'_>, loc: &Loc<'_>) -> Option<AwsBackendConfig> {
    check_keys(d, t, AWS_BACKEND_KEYS, loc);
    let mut ok = true;
    // A string key checked by `valid`; `Some(None)` when absent.
    let mut text = |d: &mut Diags<'_>,
                    key: &str,
                    hint: &str,
                    valid: &dyn Fn(&str) -> Result<(), String>|
     -> Option<String> {
        let v = t.get(key)?;
        let key_loc = loc.key(key);
        let s = non_empty(d, v, &key_loc, "a string", hint);
        let checked = s.and_then(|s| match valid(s) {
            Ok(()) => Some(s.to_owned()),
            Err(message) => {
                d.report(v.span(), &key_loc, message, hint);
                None
            }
        });
        ok &= checked.is_some();
        checked
    };
    let region = text(d, "region", REGION_HINT, &|s| {
        let valid = s
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && s.contains('-');
        if valid {
            Ok(())
        } else {
            Err(format!("`{s}` is not an AWS region name"))
        }
    });
    let endpoint_url = text(d, "endpoint_url", ENDPOINT_HINT, &|s| {
        if http_url(s) {
            Ok(())
        } else {
            Err(format!(
                "`{s}` is not an http:// or https:// URL with a host"
            ))
        }
    });
    let role_arn = text(d, "role_arn", ROLE_HINT, &|s| {
        let parts: Vec<&str> = s.splitn(6, ':').collect();
        if parts.len() == 6
            && parts[0] == "arn"
            && parts[2] == "iam"
            && parts[5].starts_with("role/")
        {
            Ok(())
        } else {
            Err(format!("`{s}` is not an IAM role ARN"))
        }
    });
    let external_id = text(d, "external_id", EXTERNAL_ID_HINT, &|s| {
        if (2..=1224).contains(&s.len()) {
            Ok(())
        } else {
            Err("an external id has 2 to 1224 characters".to_owned())
        }
    });
    let session_name = text(d, "session_name", SESSION_HINT, &|s| {
        let valid = (2..=64).contains(&s.len())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c));
        if valid {
            Ok(())
        } else {
            Err(format!("`{s}` is not a valid role session name"))
        }
    });
    let kms_key_id = text(d, "kms_key_id", KMS_HINT, &|_| Ok(()));
    for key in ["external_id", "session_name"] {
        if role_arn.is_none()
            && t.get("role_arn").is_none()
            && let Some(v) = t.get(key)
        {
            d.report(
                v.span(),
                &loc.key(key),
                format!("`{key}` is only used with `role_arn`"),
                "add role_arn = \"arn:aws:iam::ACCOUNT:role/NAME\", or remove this key",
            );
            ok = false;
        }
    }

    let tags = match t.get("tags") {
        None => Some(BTreeMap::new()),
        Some(v) => {
            let tags_loc = loc.key("tags");
            super::secrets::tags(d, v, &tags_loc).and_then(|tags| aws_tags(d, v, &tags_loc, tags))
        }
    };
    ok &= tags.is_some();

    let mut flag = |d: &mut Diags<'_>, key: &str| -> bool {
        match t.get(key) {
            None => false,
            Some(v) => match boolean(d, v, &loc.key(key)) {
                Some(b) => b,
                None => {
                    ok = false;
                    false
                }
            },
        }
    };
    let create_missing = flag(d, "create_missing");
    let take_over_native_rotation = flag(d, "take_over_native_rotation");

    let access = optional_env(d, t, loc, "access_key_id_env");
    let secret = optional_env(d, t, loc, "secret_access_key_env");
    let token = optional_env(d, t, loc, "session_token_env");
    let credentials_env = match (access, secret, token) {
        (Some(Some(access_key_id)), Some(Some(secret_access_key)), Some(session_token)) => {
            Some(CredentialsEnv {
                access_key_id,
                secret_access_key,
                session_token,
            })
        }
        (Some(None), Some(None), Some(None)) => None,
        (Some(a), Some(s), Some(tok)) => {
            // Some of the three are set, but not both required ones.
            let (present, missing) = if a.is_some() {
                ("access_key_id_env", "secret_access_key_env")
            } else if s.is_some() {
                ("secret_access_key_env", "access_key_id_env")
            } else {
                debug_assert!(tok.is_some());
                ("session_token_env", "access_key_id_env")
            };
            let at = t.get(present).map(|v| v.span()).unwrap_or_default();
            d.report(
                at,
                &loc.key(present),
                format!("`{present}` needs `{missing}` too"),
                "static credentials need both access_key_id_env and secret_access_key_env \
                 (session_token_env is optional); or remove them to use the SDK's credential chain",
            );
            ok = false;
            None
        }
        _ => {
            ok = false;
            None
        }
    };

    ok.then(|| AwsBackendConfig {
        region,
        endpoint_url,
        assume_role: role_arn.map(|role_arn| AssumeRole {
            role_arn,
            external_id,
            session_name,
        }),
        kms_key_id,
        tags: tags.unwrap_or_default(),
        create_missing,
        take_over_native_rotation,
        credentials_env,
    })
}

/// AWS's limits on tags: at most 50, keys up to 128 characters and values up to 256, and
/// the `aws:` prefix is reserved.
fn aws_tags(
    d: &mut Diags<'_>,
    v: &super::parse::Value<'_>,
    loc: &Loc<'_>,
    tags: BTreeMap<String, String>,
) -> Option<BTreeMap<String, String>> {
    const HINT: &str = "AWS allows up to 50 tags, keys of 1 to 128 characters not starting with `aws:`, values up to 256 characters";
    let mut ok = true;
    if tags.len() > 50 {
        d.report(
            v.span(),
            loc,
            format!("{} tags, AWS allows at most 50", tags.len()),
            HINT,
        );
        ok = false;
    }
    for (key, value) in &tags {
        let problem = if key.is_empty() || key.chars().count() > 128 {
            Some(format!("tag key `{key}` must have 1 to 128 characters"))
        } else if key.to_ascii_lowercase().starts_with("aws:") {
            Some(format!("tag key `{key}` uses the reserved prefix `aws:`"))
        } else if value.chars().count() > 256 {
            Some(format!(
                "the value of tag `{key}` has more than 256 characters"
            ))
        } else {
            None
        };
        if let Some(message) = problem {
            d.report(v.span(), &loc.key(key), message, HINT);
            ok = false;
        }
    }
    ok.then_some(tags)
}
