//! `[backends.NAME]` tables with `type = "vault"`: the HashiCorp Vault backend's settings,
//! checked with the same positioned diagnostics as the rest of the policy.
//!
//! Credentials (tokens, AppRole secret ids, service-account tokens) are never written in
//! the policy: it only names the environment variable or file that holds them.

use std::path::{Path, PathBuf};

use super::diagnostic::{Diags, Loc};
use super::parse::{Table, Value, check_keys, env_name, integer, non_empty, table, unknown_key};

/// `type = "vault"`: secrets in a Vault KV engine.
#[derive(Clone, Debug, PartialEq)]
pub struct VaultBackendConfig {
    /// The server, e.g. `https://vault.internal:8200`.
    pub address: String,
    /// The KV engine's mount path, without slashes (`secret`).
    pub mount: String,
    /// Which KV engine version the mount runs.
    pub kv_version: KvVersion,
    /// A Vault Enterprise / HCP namespace, sent as `X-Vault-Namespace`.
    pub namespace: Option<String>,
    /// A PEM file with the CA certificate(s) that sign the server's certificate.
    pub ca_cert: Option<PathBuf>,
    /// How rekeyd logs in.
    pub auth: VaultAuth,
    /// KV v2: how many versions Vault keeps per secret (at least 2, so the previous version
    /// stays readable). `None` leaves the mount's setting alone.
    pub max_versions: Option<u32>,
}

/// The KV secrets engine version of a mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvVersion {
    /// KV v1: one value per path, no versions.
    V1,
    /// KV v2: versioned, with check-and-set and custom metadata.
    V2,
}

/// How rekeyd authenticates to Vault.
#[derive(Clone, Debug, PartialEq)]
pub enum VaultAuth {
    /// A token read from an environment variable or a file (e.g. one Vault Agent renders).
    Token {
        /// Where the token is.
        token: CredentialSource,
    },
    /// AppRole login.
    AppRole {
        /// The auth method's mount path (`approle`).
        mount: String,
        /// The role id (an identifier, not a secret).
        role_id: CredentialSource,
        /// Where the secret id is.
        secret_id: CredentialSource,
    },
    /// Kubernetes service-account login.
    Kubernetes {
        /// The auth method's mount path (`kubernetes`).
        mount: String,
        /// The Vault role to log in as.
        role: String,
        /// The service-account token file.
        jwt_file: PathBuf,
    },
}

/// Where a credential comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CredentialSource {
    /// Written in the policy: only for identifiers that are not secret (an AppRole role id).
    Literal(String),
    /// An environment variable.
    Env(String),
    /// A file; surrounding whitespace is trimmed.
    File(PathBuf),
}

const VAULT_KEYS: &[&str] = &[
    "type",
    "address",
    "mount",
    "kv_version",
    "namespace",
    "ca_cert",
    "auth",
    "max_versions",
];
const METHODS: &[&str] = &["token", "approle", "kubernetes"];
const TOKEN_KEYS: &[&str] = &["method", "token_env", "token_file"];
const APPROLE_KEYS: &[&str] = &[
    "method",
    "mount",
    "role_id",
    "role_id_env",
    "role_id_file",
    "secret_id_env",
    "secret_id_file",
];
const KUBERNETES_KEYS: &[&str] = &["method", "mount", "role", "jwt_file"];
/// Literal credentials people may try to write; each gets its own "use a variable" hint.
const LITERAL_SECRETS: &[(&str, &str)] = &[
    ("token", "token_env or token_file"),
    ("secret_id", "secret_id_env or secret_id_file"),
    ("jwt", "jwt_file"),
];
const DEFAULT_JWT_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
const PATH_HINT: &str =
    "a file system path; relative paths resolve against the policy file's directory";

/// Parses one vault backend table (its `type` already checked), reporting every problem.
pub(super) fn backend(
    d: &mut Diags<'_>,
    t: &Table<'_>,
    loc: &Loc<'_>,
    span: std::ops::Range<usize>,
    base: &Path,
) -> Option<VaultBackendConfig> {
    check_keys(d, t, VAULT_KEYS, loc);
    let address = match t.get("address") {
        None => {
            d.report(
                span.clone(),
                &loc.key("address"),
                "a vault backend needs an `address`",
                "add address = \"https://vault.example:8200\"",
            );
            None
        }
        Some(v) => address(d, v, &loc.key("address")),
    };
    let mount = match t.get("mount") {
        None => Some("secret".to_owned()),
        Some(v) => mount_path(
            d,
            v,
            &loc.key("mount"),
            "the KV engine's mount, e.g. \"secret\"",
        ),
    };
    let kv_version = match t.get("kv_version") {
        None => Some(KvVersion::V2),
        Some(v) => integer(
            d,
            v,
            &loc.key("kv_version"),
            1..=2,
            "1 for a KV v1 mount, 2 (the default) for KV v2",
        )
        .map(|n| if n == 1 { KvVersion::V1 } else { KvVersion::V2 }),
    };
    let namespace = optional(t.get("namespace"), |v| {
        let hint = "the Vault Enterprise or HCP namespace, e.g. \"admin/team-a\"";
        let at = loc.key("namespace");
        let text = non_empty(d, v, &at, "a namespace string", hint)?;
        // It travels in an HTTP header: letters, digits, `_`, `-`, `.`, `/` only.
        let plain = text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./".contains(c));
        if !plain || text.trim_matches('/').is_empty() {
            d.report(
                v.span(),
                &at,
                format!("`{text}` is not a Vault namespace"),
                hint,
            );
            return None;
        }
        Some(text.trim_matches('/').to_owned())
    });
    let ca_cert = optional(t.get("ca_cert"), |v| {
        non_empty(d, v, &loc.key("ca_cert"), "a path string", PATH_HINT).map(|p| base.join(p))
    });
    let max_versions = optional(t.get("max_versions"), |v| {
        integer(
            d,
            v,
            &loc.key("max_versions"),
            2..=1_000_000,
            "at least 2, so the previous version stays readable during the grace period",
        )
        .map(|n| n as u32)
    });
    if let (Some(KvVersion::V1), Some(v)) = (kv_version, t.get("max_versions")) {
        d.report(
            v.span(),
            &loc.key("max_versions"),
            "max_versions applies to KV v2 only: a KV v1 mount keeps no versions",
            "remove max_versions, or set kv_version = 2 for a KV v2 mount",
        );
    }
    let auth = match t.get("auth") {
        None => Some(VaultAuth::Token {
            token: CredentialSource::Env("VAULT_TOKEN".to_owned()),
        }),
        Some(v) => auth(d, v, &loc.key("auth"), base),
    };
    Some(VaultBackendConfig {
        address: address?,
        mount: mount?,
        kv_version: kv_version?,
        namespace: namespace?,
        ca_cert: ca_cert?,
        auth: auth?,
        max_versions: max_versions?,
    })
}

/// `None` when the key is absent (`Some(None)`), the parsed value, or `None` on a problem.
fn optional<'v, T>(
    value: Option<&'v Value<'_>>,
    parse: impl FnOnce(&'v Value<'_>) -> Option<T>,
) -> Option<Option<T>> {
    match value {
        None => Some(None),
        Some(v) => parse(v).map(Some),
    }
}

fn address(d: &mut Diags<'_>, v: &Value<'_>, loc: &Loc<'_>) -> Option<String> {
    let hint = "the server's URL, e.g. \"https://vault.example:8200\"";
    let text = non_empty(d, v, loc, "a URL string", hint)?;
    match url::Url::parse(text) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => {
            Some(text.trim_end_matches('/').to_owned())
        }
        _ => {
            d.report(
                v.span(),
                loc,
                format!("`{text}` is not an http:// or https:// URL with a host"),
                hint,
            );
            None
        }
    }
}

/// A mount path: slashes at either end are dropped; no spaces.
fn mount_path(d: &mut Diags<'_>, v: &Value<'_>, loc: &Loc<'_>, hint: &str) -> Option<String> {
    let text = non_empty(d, v, loc, "a mount path string", hint)?;
    let trimmed = text.trim_matches('/');
    if trimmed.is_empty() || trimmed.contains(char::is_whitespace) || trimmed.contains("//") {
        d.report(v.span(), loc, format!("`{text}` is not a mount path"), hint);
        return None;
    }
    Some(trimmed.to_owned())
}

fn auth(d: &mut Diags<'_>, v: &Value<'_>, loc: &Loc<'_>, base: &Path) -> Option<VaultAuth> {
    let hint = "write auth = { method = \"token\" | \"approle\" | \"kubernetes\", … }";
    let t = table(d, v, loc, "a table", hint)?;
    for (key, value) in t.iter() {
        if let Some((_, instead)) = LITERAL_SECRETS.iter().find(|(k, _)| *k == key.get_ref()) {
            d.report(
                value.span(),
                &loc.key(key.get_ref()),
                format!(
                    "`{}` would put a credential in the policy file",
                    key.get_ref()
                ),
                format!("name where it is kept instead: {instead}"),
            );
        }
    }
    let method_loc = loc.key("method");
    let Some(method_value) = t.get("method") else {
        d.report(v.span(), &method_loc, "auth needs a `method`", hint);
        return None;
    };
    let method = non_empty(d, method_value, &method_loc, "a string", hint)?;
    let known: Vec<&str> = match method {
        "token" => TOKEN_KEYS.to_vec(),
        "approle" => APPROLE_KEYS.to_vec(),
        "kubernetes" => KUBERNETES_KEYS.to_vec(),
        other => {
            d.report(
                method_value.span(),
                &method_loc,
                format!(
                    "unknown auth method `{other}`{}",
                    super::diagnostic::did_you_mean(other, METHODS)
                ),
                "use \"token\", \"approle\" or \"kubernetes\"",
            );
            return None;
        }
    };
    for (key, _) in t.iter() {
        // Literal credentials were reported above, with a better message than "unknown key".
        if !LITERAL_SECRETS.iter().any(|(k, _)| *k == key.get_ref()) {
            unknown_key(d, key, &known, loc);
        }
    }
    let literal_found = LITERAL_SECRETS.iter().any(|(k, _)| t.get(*k).is_some());

    let auth = match method {
        "token" => source(
            d,
            t,
            v.span(),
            loc,
            base,
            Sources {
                literal: None,
                env: "token_env",
                file: Some("token_file"),
                what: "the token",
                default: Some(CredentialSource::Env("VAULT_TOKEN".to_owned())),
            },
        )
        .map(|token| VaultAuth::Token { token }),
        "approle" => {
            let mount = auth_mount(d, t, loc, "approle");
            let role_id = source(
                d,
                t,
                v.span(),
                loc,
                base,
                Sources {
                    literal: Some("role_id"),
                    env: "role_id_env",
                    file: Some("role_id_file"),
                    what: "the role id",
                    default: None,
                },
            );
            let secret_id = source(
                d,
                t,
                v.span(),
                loc,
                base,
                Sources {
                    literal: None,
                    env: "secret_id_env",
                    file: Some("secret_id_file"),
                    what: "the secret id",
                    default: None,
                },
            );
            match (mount, role_id, secret_id) {
                (Some(mount), Some(role_id), Some(secret_id)) => Some(VaultAuth::AppRole {
                    mount,
                    role_id,
                    secret_id,
                }),
                _ => None,
            }
        }
        _ => {
            let mount = auth_mount(d, t, loc, "kubernetes");
            let role = match t.get("role") {
                None => {
                    d.report(
                        v.span(),
                        &loc.key("role"),
                        "kubernetes auth needs a `role`",
                        "add role = \"rekeyd\" (the Vault role bound to rekeyd's service account)",
                    );
                    None
                }
                Some(r) => non_empty(
                    d,
                    r,
                    &loc.key("role"),
                    "a string",
                    "the Vault role bound to rekeyd's service account",
                )
                .map(str::to_owned),
            };
            let jwt_file = match t.get("jwt_file") {
                None => Some(PathBuf::from(DEFAULT_JWT_FILE)),
                Some(p) => non_empty(d, p, &loc.key("jwt_file"), "a path string", PATH_HINT)
                    .map(|p| base.join(p)),
            };
            match (mount, role, jwt_file) {
                (Some(mount), Some(role), Some(jwt_file)) => Some(VaultAuth::Kubernetes {
                    mount,
                    role,
                    jwt_file,
                }),
                _ => None,
            }
        }
    };
    if literal_found { None } else { auth }
}

fn auth_mount(d: &mut Diags<'_>, t: &Table<'_>, loc: &Loc<'_>, default: &str) -> Option<String> {
    match t.get("mount") {
        None => Some(default.to_owned()),
        Some(v) => mount_path(
            d,
            v,
            &loc.key("mount"),
            &format!("the auth method's mount path, e.g. \"{default}\""),
        ),
    }
}

/// The keys one credential may come from.
struct Sources {
    literal: Option<&'static str>,
    env: &'static str,
    file: Option<&'static str>,
    what: &'static str,
    default: Option<CredentialSource>,
}

/// Exactly one of the source keys, or the default.
fn source(
    d: &mut Diags<'_>,
    t: &Table<'_>,
    span: std::ops::Range<usize>,
    loc: &Loc<'_>,
    base: &Path,
    s: Sources,
) -> Option<CredentialSource> {
    let keys: Vec<&str> = s
        .literal
        .into_iter()
        .chain(Some(s.env))
        .chain(s.file)
        .collect();
    let present: Vec<(&str, &Value<'_>)> = keys
        .iter()
        .filter_map(|k| t.get(*k).map(|v| (*k, v)))
        .collect();
    let listed = keys
        .iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(" or ");
    match present.as_slice() {
        [] => {
            if s.default.is_none() {
                d.report(
                    span,
                    &loc.key(s.env),
                    format!("auth needs {} ({listed})", s.what),
                    format!("say where {} is kept: {listed}", s.what),
                );
            }
            s.default
        }
        [(key, value)] => {
            let at = loc.key(key);
            if Some(*key) == s.literal {
                non_empty(d, value, &at, "a string", "the role id, e.g. \"db7f…\"")
                    .map(|v| CredentialSource::Literal(v.to_owned()))
            } else if *key == s.env {
                env_name(d, value, &at).map(|v| CredentialSource::Env(v.to_owned()))
            } else {
                non_empty(d, value, &at, "a path string", PATH_HINT)
                    .map(|p| CredentialSource::File(base.join(p)))
            }
        }
        [_, (second, value), ..] => {
            d.report(
                value.span(),
                &loc.key(second),
                format!("{} can come from one place only", s.what),
                format!("keep one of {listed}"),
            );
            None
        }
    }
}
