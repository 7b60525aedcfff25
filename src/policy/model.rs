//! The validated policy: what the rest of rekeyd reads once parsing and checks succeeded.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::generate::GeneratorSpec;
use crate::schedule::Schedule;
use crate::secret::SecretName;

/// A whole policy file, validated.
#[derive(Clone, Debug)]
pub struct Policy {
    /// The file it came from.
    pub source: PathBuf,
    /// SHA-256 (hex) of the file's bytes, recorded in the audit log.
    pub digest: String,
    /// Daemon-wide settings.
    pub daemon: DaemonSettings,
    /// Backend instances by name.
    pub backends: BTreeMap<String, BackendConfig>,
    /// Webhook targets by name.
    pub notify: BTreeMap<String, NotifyTarget>,
    /// The secrets, in file order.
    pub secrets: Vec<SecretPolicy>,
    /// The HTTP API (`[api]`); off when absent.
    pub api: Option<ApiSettings>,
}

impl Policy {
    /// The secret with this name.
    pub fn secret(&self, name: &str) -> Option<&SecretPolicy> {
        self.secrets.iter().find(|s| s.name.as_str() == name)
    }
}

/// The `[daemon]` table.
#[derive(Clone, Debug, PartialEq)]
pub struct DaemonSettings {
    /// The directory that relative defaults live in (`audit.jsonl`, keys, file stores).
    pub state_dir: PathBuf,
    /// Where the audit log lives.
    pub audit_log: PathBuf,
    /// The key for value fingerprints in the audit log.
    pub audit_key_file: PathBuf,
    /// An environment variable holding the fingerprint key (64 hex digits), used instead of
    /// the file when set, so replicas share one key and their fingerprints compare.
    pub audit_key_env: Option<String>,
    /// How many rotations may run at once.
    pub concurrency: usize,
    /// The shortest schedule interval the policy accepts.
    pub min_interval: Duration,
    /// Longest wait between retries of a failed rotation.
    pub max_retry_backoff: Duration,
}

/// The `[api]` table.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiSettings {
    /// Address and port to listen on.
    pub listen: std::net::SocketAddr,
    /// Bearer tokens for `/v1` (required beyond loopback).
    pub tokens_file: Option<PathBuf>,
    /// Certificate and key (PEM) to serve HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Longest a request may take.
    pub request_timeout: Duration,
    /// Rotation requests a client may make at once.
    pub rotate_burst: u32,
    /// One more rotation request is allowed per client this often.
    pub rotate_every: Duration,
}

/// One backend instance.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum BackendConfig {
    /// The embedded encrypted file store.
    File(FileBackendConfig),
    /// A HashiCorp Vault KV engine.
    Vault(super::vault::VaultBackendConfig),
    /// AWS Secrets Manager.
    Aws(AwsBackendConfig),
}

/// `type = "file"`.
#[derive(Clone, Debug, PartialEq)]
pub struct FileBackendConfig {
    /// The store's directory.
    pub path: PathBuf,
    /// Where the 32-byte key lives (created 0600 if absent and `key_env` is unset).
    pub key_file: PathBuf,
    /// An environment variable holding the key (base64), used instead of the file when set.
    pub key_env: Option<String>,
}

/// `type = "aws"`: AWS Secrets Manager through the AWS SDK.
///
/// Holds no credentials: static keys are named by environment variable, read at start-up.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AwsBackendConfig {
    /// The region; unset: the SDK's chain (`AWS_REGION`, the profile, instance metadata).
    pub region: Option<String>,
    /// An endpoint instead of AWS's (LocalStack, moto, a VPC endpoint).
    pub endpoint_url: Option<String>,
    /// A role to assume with the base credentials.
    pub assume_role: Option<AssumeRole>,
    /// The KMS key for secrets rekeyd creates (unset: the account's `aws/secretsmanager` key).
    pub kms_key_id: Option<String>,
    /// Tags for secrets rekeyd creates.
    pub tags: BTreeMap<String, String>,
    /// Create a missing secret on its first rotation (off: a missing secret is an error).
    pub create_missing: bool,
    /// Rotate secrets that have AWS-native rotation (a rotation Lambda) enabled, turning
    /// that rotation off (off: such secrets are refused).
    pub take_over_native_rotation: bool,
    /// Static credentials from environment variables instead of the SDK's chain.
    pub credentials_env: Option<CredentialsEnv>,
}

/// `role_arn` with its optional `external_id` and `session_name`.
#[derive(Clone, Debug, PartialEq)]
pub struct AssumeRole {
    /// The role's ARN.
    pub role_arn: String,
    /// The external id the role's trust policy requires, if any.
    pub external_id: Option<String>,
    /// The session name CloudTrail shows (default `rekeyd`).
    pub session_name: Option<String>,
}

/// The names of the environment variables that hold static credentials.
#[derive(Clone, Debug, PartialEq)]
pub struct CredentialsEnv {
    /// Holds the access key id.
    pub access_key_id: String,
    /// Holds the secret access key.
    pub secret_access_key: String,
    /// Holds a session token, for temporary credentials.
    pub session_token: Option<String>,
}

/// One webhook target: where rekeyd posts signed notifications, and how it retries.
#[derive(Clone, Debug, PartialEq)]
pub struct NotifyTarget {
    /// The endpoint.
    pub url: String,
    /// Where the `whsec_` signing keys come from, newest first (two during a rollover).
    pub keys: Vec<KeySource>,
    /// How long one delivery attempt may take.
    pub timeout: Duration,
    /// Attempts before a notification is given up.
    pub max_attempts: u32,
    /// A notification not delivered this long after it was queued is given up.
    pub give_up_after: Duration,
    /// The first retry delay; it doubles per attempt.
    pub backoff: Duration,
    /// The longest retry delay (a `Retry-After` may ask for more).
    pub max_backoff: Duration,
    /// Consecutive failed attempts that open the circuit breaker.
    pub breaker_failures: u32,
    /// How long an open breaker holds deliveries before one probe is let through.
    pub breaker_cooldown: Duration,
    /// Notifications queued within this window are sent as one batch (off when `None`).
    pub window: Option<Duration>,
    /// Most deliveries to this target at once (its breaker closed).
    pub max_in_flight: u32,
}

/// Where a signing key is read from. Keys are never written in the policy itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// An environment variable holding `whsec_<base64>`.
    Env(String),
    /// A file holding `whsec_<base64>` (surrounding whitespace ignored).
    File(PathBuf),
}

/// A secret's promotion gate: targets that must confirm a pending version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Confirm {
    /// Notify targets whose confirmation is required (each is also in `notify`).
    pub targets: Vec<String>,
    /// How long to wait for every confirmation before the pending version is discarded.
    pub timeout: Duration,
}

/// One secret's rotation rules, with defaults applied.
///
/// Only the name and the schedule (an interval schedule's phase comes from the name) are
/// the secret's own; the rest ([`SecretSettings`]) is shared by every secret that ends up
/// with the same settings, which in a large policy is most of them: holding 100,000
/// secrets, a copy per secret was most of the daemon's memory. Settings read as fields
/// (`secret.grace`, through `Deref`); writing one gives this secret its own copy.
#[derive(Clone, Debug)]
pub struct SecretPolicy {
    /// The secret's name in its backend.
    pub name: SecretName,
    /// When it rotates.
    pub schedule: Schedule,
    settings: Arc<SecretSettings>,
}

/// A secret's rules besides its name and schedule.
#[derive(Clone, Debug, PartialEq)]
pub struct SecretSettings {
    /// The backend instance's name (a key of [`Policy::backends`]).
    pub backend: String,
    /// The schedule as written, for display.
    pub schedule_text: String,
    /// How a new value is made.
    pub generator: GeneratorSpec,
    /// Webhook targets (keys of [`Policy::notify`]).
    pub notify: Vec<String>,
    /// Targets that must confirm a pending version before it is promoted.
    pub confirm: Option<Confirm>,
    /// How long the previous version must stay readable after a rotation.
    pub grace: Duration,
    /// Rotation happens at a stable random point this long after the slot.
    pub window: Option<Duration>,
    /// Rotate at once if the current version is older than this.
    pub max_age: Option<Duration>,
    /// Who owns it.
    pub owner: Option<String>,
    /// Free-form labels.
    pub tags: BTreeMap<String, String>,
    /// Disabled secrets are validated but never rotated.
    pub enabled: bool,
}

impl SecretPolicy {
    /// A secret with these settings (shared, not copied).
    pub fn new(name: SecretName, schedule: Schedule, settings: Arc<SecretSettings>) -> Self {
        Self {
            name,
            schedule,
            settings,
        }
    }

    /// The settings, as shared with other secrets.
    pub fn settings(&self) -> &Arc<SecretSettings> {
        &self.settings
    }
}

impl std::ops::Deref for SecretPolicy {
    type Target = SecretSettings;

    fn deref(&self) -> &SecretSettings {
        &self.settings
    }
}

impl std::ops::DerefMut for SecretPolicy {
    /// Copies the settings first if another secret shares them.
    fn deref_mut(&mut self) -> &mut SecretSettings {
        Arc::make_mut(&mut self.settings)
    }
}

#[cfg(test)]
impl SecretPolicy {
    /// A minimal enabled secret `app/db` on backend `local`, for tests elsewhere in the crate.
    pub(crate) fn example(schedule: Schedule, generator: GeneratorSpec) -> Self {
        Self::new(
            SecretName::new("app/db").expect("valid name"),
            schedule,
            Arc::new(SecretSettings {
                backend: "local".into(),
                schedule_text: String::new(),
                generator,
                notify: Vec::new(),
                confirm: None,
                grace: Duration::ZERO,
                window: None,
                max_age: None,
                owner: None,
                tags: BTreeMap::new(),
                enabled: true,
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// Secrets that end up with the same settings share one copy; a secret's own part is
    /// its name (in a buffer shared with the other names) and its schedule.
    #[test]
    fn secrets_share_their_settings_and_write_their_own_copy() {
        let policy = crate::policy::parse(
            Path::new("p.toml"),
            r#"
[backends.local]
type = "file"

[defaults]
backend = "local"
schedule = { every = "30d" }
generator = { type = "password", length = 32 }
tags = { managed_by = "rekeyd" }

[[secrets]]
name = "a"

[[secrets]]
name = "b"

[[secrets]]
name = "c"
owner = "team-c"

[[secrets]]
name = "d"
owner = "team-c"
"#,
        )
        .unwrap();
        let [a, b, c, d] = &policy.secrets[..] else {
            panic!("four secrets")
        };
        assert!(Arc::ptr_eq(a.settings(), b.settings()));
        assert!(Arc::ptr_eq(c.settings(), d.settings()));
        assert!(!Arc::ptr_eq(a.settings(), c.settings()));
        assert_eq!(c.owner.as_deref(), Some("team-c"));
        assert_eq!(a.owner, None);
        assert_eq!(a.tags["managed_by"], "rekeyd");
        // Each keeps its own schedule: interval phases come from the name.
        assert!(matches!(
            (&a.schedule, &b.schedule),
            (Schedule::Every(x), Schedule::Every(y)) if x.phase() != y.phase()
        ));

        let mut changed = a.clone();
        changed.grace = Duration::from_secs(60);
        assert_eq!(changed.grace, Duration::from_secs(60));
        assert_ne!(
            b.grace,
            Duration::from_secs(60),
            "b's settings are not touched"
        );
        assert!(Arc::ptr_eq(a.settings(), b.settings()));

        // What a secret of a large policy costs besides its name's bytes.
        assert_eq!(std::mem::size_of::<SecretPolicy>(), 48);
    }
}
