//! AWS Secrets Manager, through `aws-sdk-secretsmanager`, mapped one to one onto the
//! backend contract with AWS's own rotation protocol.
//!
//! | Contract | Secrets Manager |
//! |---|---|
//! | `describe` | `ListSecretVersionIds`: every labelled version with its labels and creation date, in one call |
//! | `put_pending(id)` | `PutSecretValue(ClientRequestToken = id, VersionStages = [AWSPENDING])`; the same token and value again is a no-op, a different value `ResourceExistsException` → `Conflict` |
//! | `promote(id, expected)` | `UpdateSecretVersionStage(AWSCURRENT, MoveToVersionId = id, RemoveFromVersionId = expected)`: AWS's own compare-and-swap; AWS moves `AWSPREVIOUS` itself |
//! | `discard_pending(id)` | `UpdateSecretVersionStage(AWSPENDING, RemoveFromVersionId = id)` |
//! | `read` | `GetSecretValue` with `VersionStage` or `VersionId`, always |
//! | `retire` | nothing: AWS keeps and expires unlabelled versions itself |
//!
//! `labels` says how the two label states AWS creates on its own are read. `native`
//! keeps rekeyd off secrets AWS rotates with a Lambda. `docs/aws.md` lists the calls a
//! rotation makes and why each is needed.

mod client;
mod error;
mod labels;
mod native;

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::primitives::Blob;
use chrono::{DateTime, Utc};

pub use client::client_config;
use error::{Failure, Kind};
use labels::{CURRENT, Labels, PENDING, UNPROMOTED};

use super::{
    Backend, Capabilities, Error, ErrorStatus, PutOutcome, Result, SecretDescription, Selector,
    VersionInfo,
};
use crate::policy::AwsBackendConfig;
use crate::secret::{SecretName, SecretValue, Stage, VersionId};

/// A Secrets Manager backend instance.
pub struct AwsBackend {
    name: String,
    client: Client,
    create_missing: bool,
    take_over_native_rotation: bool,
    kms_key_id: Option<String>,
    tags: Vec<(String, String)>,
    native: tokio::sync::Mutex<native::Sweep>,
    /// Per secret, the version this process last saw holding `AWSPENDING` (from a describe
    /// or its own put) and whether it carries [`UNPROMOTED`]. Only a hint: it lets a
    /// rotation's promote skip a read, and a repeated put report `AlreadyPresent`; any
    /// doubt falls back to asking AWS.
    pending: Mutex<HashMap<SecretName, (VersionId, bool)>>,
}

impl std::fmt::Debug for AwsBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsBackend")
            .field("name", &self.name)
            .field("create_missing", &self.create_missing)
            .field("take_over_native_rotation", &self.take_over_native_rotation)
            .finish_non_exhaustive()
    }
}

/// One version as `ListSecretVersionIds` reports it.
#[derive(Debug)]
struct RawVersion {
    id: VersionId,
    created_at: DateTime<Utc>,
    labels: Labels,
}

fn secret_target(name: &SecretName) -> String {
    format!("secret {name:?}")
}

impl AwsBackend {
    /// Builds the client for `config`. Makes no network call: credentials (and an assumed
    /// role) are resolved on the first request.
    pub async fn open(name: &str, config: &AwsBackendConfig) -> Result<Self> {
        let client = Client::from_conf(client_config(name, config).await?.build());
        Ok(Self::with_client(name, client, config))
    }

    /// A backend over a client built elsewhere (from [`client_config`], e.g. with an
    /// interceptor added); `config` supplies everything but the connection.
    pub fn with_client(name: &str, client: Client, config: &AwsBackendConfig) -> Self {
        Self {
            name: name.to_owned(),
            client,
            create_missing: config.create_missing,
            take_over_native_rotation: config.take_over_native_rotation,
            kms_key_id: config.kms_key_id.clone(),
            tags: config
                .tags
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            native: tokio::sync::Mutex::new(native::Sweep::default()),
            pending: Mutex::new(HashMap::new()),
        }
    }

    fn fail(&self, failure: Failure, target: &str) -> Error {
        failure.into_backend(&self.name, target)
    }

    fn not_found(&self, what: String) -> Error {
        Error::NotFound {
            backend: self.name.clone(),
            what,
        }
    }

    fn hint(&self, name: &SecretName) -> Option<(VersionId, bool)> {
        self.pending
            .lock()
            .expect("pending hints lock poisoned")
            .get(name)
            .cloned()
    }

    fn set_hint(&self, name: &SecretName, hint: Option<(VersionId, bool)>) {
        let mut hints = self.pending.lock().expect("pending hints lock poisoned");
        match hint {
            Some(h) => hints.insert(name.clone(), h),
            None => hints.remove(name),
        };
    }

    /// Refuses writes to a secret AWS rotates itself, unless the policy takes it over (then
    /// AWS's rotation is turned off first, once). No call in the common case: see `native`.
    async fn guard(&self, name: &SecretName) -> Result<()> {
        let mut sweep = self.native.lock().await;
        let lambda = match sweep.check(&self.client, name.as_str()).await {
            Ok(native::Native::Off) => return Ok(()),
            Ok(native::Native::On(lambda)) => lambda,
            Err(f) => return Err(self.fail(f, "the secrets of the region")),
        };
        let lambda_text = if lambda.is_empty() {
            "a rotation schedule".to_owned()
        } else {
            format!("the Lambda {lambda}")
        };
        if !self.take_over_native_rotation {
            return Err(Error::Generic {
                backend: self.name.clone(),
                message: format!(
                    "secret {name:?} is rotated by AWS itself ({lambda_text}); rekeyd does not \
                     rotate it alongside. Turn AWS's rotation off (aws secretsmanager \
                     cancel-rotate-secret --secret-id {name}), or set \
                     take_over_native_rotation = true in [backends.{}] to let rekeyd turn it \
                     off and take over",
                    self.name
                ),
                status: ErrorStatus::Permanent,
                source: None,
            });
        }
        self.client
            .cancel_rotate_secret()
            .secret_id(name.as_str())
            .send()
            .await
            .map_err(|e| self.fail(Failure::new("CancelRotateSecret", e), &secret_target(name)))?;
        tracing::warn!(backend = %self.name, secret = %name, lambda = %lambda, "turned off AWS-native rotation: rekeyd takes this secret over (take_over_native_rotation)");
        sweep.turned_off(name.as_str());
        Ok(())
    }

    /// Every labelled version with its labels, oldest first (AWS's order among equals).
    async fn versions(&self, name: &SecretName) -> Result<Vec<RawVersion>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_secret_version_ids()
                .secret_id(name.as_str())
                .max_results(100)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| {
                    self.fail(
                        Failure::new("ListSecretVersionIds", e),
                        &secret_target(name),
                    )
                })?;
            for v in page.versions() {
                let Some(id) = v.version_id() else { continue };
                let created_at = v
                    .created_date()
                    .and_then(|d| DateTime::from_timestamp(d.secs(), d.subsec_nanos()))
                    .unwrap_or(DateTime::UNIX_EPOCH);
                out.push(RawVersion {
                    id: VersionId::new(id),
                    created_at,
                    labels: Labels(v.version_stages().to_vec()),
                });
            }
            match page.next_token() {
                Some(next) if !next.is_empty() => token = Some(next.to_owned()),
                _ => break,
            }
        }
        out.sort_by_key(|v| v.created_at);
        let hint = out
            .iter()
            .find(|v| v.labels.has(PENDING))
            .map(|v| (v.id.clone(), v.labels.has(UNPROMOTED)));
        self.set_hint(name, hint);
        Ok(out)
    }

    /// One label change: `label` moved to `to` and/or removed from `from`.
    async fn relabel(
        &self,
        name: &SecretName,
        label: &str,
        to: Option<&VersionId>,
        from: Option<&VersionId>,
    ) -> std::result::Result<(), Failure> {
        self.client
            .update_secret_version_stage()
            .secret_id(name.as_str())
            .version_stage(label)
            .set_move_to_version_id(to.map(|v| v.as_str().to_owned()))
            .set_remove_from_version_id(from.map(|v| v.as_str().to_owned()))
            .send()
            .await
            .map(drop)
            .map_err(|e| Failure::new("UpdateSecretVersionStage", e))
    }

    /// Removes `label` from `from`; already gone (another writer removed it) is fine.
    async fn unlabel(&self, name: &SecretName, label: &str, from: &VersionId) -> Result<()> {
        match self.relabel(name, label, None, Some(from)).await {
            Ok(()) => Ok(()),
            Err(f) if f.kind == Kind::InvalidParameter => Ok(()),
            Err(f) => Err(self.fail(f, &secret_target(name))),
        }
    }

    /// `CreateSecret` with no value (so no version is made current), the policy's KMS key
    /// and tags. Returns false when another writer created it first.
    async fn create(&self, name: &SecretName) -> Result<bool> {
        let tags: Vec<_> = self
            .tags
            .iter()
            .map(|(k, v)| {
                aws_sdk_secretsmanager::types::Tag::builder()
                    .key(k)
                    .value(v)
                    .build()
            })
            .collect();
        let created = self
            .client
            .create_secret()
            .name(name.as_str())
            .description("Rotated by rekeyd")
            .set_kms_key_id(self.kms_key_id.clone())
            .set_tags((!tags.is_empty()).then_some(tags))
            .send()
            .await;
        match created {
            Ok(_) => {
                tracing::info!(backend = %self.name, secret = %name, "created the secret (create_missing)");
                Ok(true)
            }
            Err(e) => {
                let failure = Failure::new("CreateSecret", e);
                if failure.kind == Kind::Exists {
                    Ok(false)
                } else {
                    Err(self.fail(failure, &secret_target(name)))
                }
            }
        }
    }

    /// The exact promote: reads the labels, then moves what must move.
    async fn promote_from_labels(
        &self,
        name: &SecretName,
        version: &VersionId,
        expected: Option<&VersionId>,
    ) -> Result<()> {
        let versions = self.versions(name).await?;
        let Some(target) = versions.iter().find(|v| &v.id == version) else {
            return Err(self.not_found(format!("version {version} of {name:?}")));
        };
        let holder = versions.iter().find(|v| v.labels.has(CURRENT));
        let current = holder.filter(|h| h.labels.is_current()).map(|h| &h.id);
        if current == Some(version) {
            return Ok(());
        }
        if current != expected {
            return Err(super::versions::current_changed(
                &self.name,
                name,
                expected,
                current.cloned(),
            ));
        }
        let target_text = secret_target(name);
        if holder.is_none_or(|h| &h.id != version) {
            match self
                .relabel(name, CURRENT, Some(version), holder.map(|h| &h.id))
                .await
            {
                Ok(()) => {}
                // Another writer moved AWSCURRENT since the read: say who.
                Err(f) if f.kind == Kind::InvalidParameter => {
                    let now = self.versions(name).await?;
                    let current = now.iter().find(|v| v.labels.is_current()).map(|v| &v.id);
                    if current == Some(version) {
                        return Ok(());
                    }
                    return Err(super::versions::current_changed(
                        &self.name,
                        name,
                        expected,
                        current.cloned(),
                    ));
                }
                Err(f) => return Err(self.fail(f, &target_text)),
            }
        }
        // Labels that must not outlive the move.
        if target.labels.has(UNPROMOTED) {
            self.unlabel(name, UNPROMOTED, version).await?;
        }
        if let Some(old) = holder.filter(|h| &h.id != version) {
            if old.labels.has(UNPROMOTED) {
                self.unlabel(name, UNPROMOTED, &old.id).await?;
            }
            // A rollback: the old current kept AWSPENDING from its own promotion. Left on
            // what is now AWSPREVIOUS it would block AWS's RotateSecret.
            if old.labels.has(PENDING) {
                self.unlabel(name, PENDING, &old.id).await?;
            }
        }
        Ok(())
    }
}

/// The value as AWS consumers expect it: text as `SecretString`, other bytes as `SecretBinary`.
enum Payload {
    Text(zeroize::Zeroizing<String>),
    Binary(Blob),
}

fn payload(value: &SecretValue) -> Payload {
    match value.expose_str() {
        Some(text) => Payload::Text(zeroize::Zeroizing::new(text.to_owned())),
        None => Payload::Binary(Blob::new(value.expose().to_vec())),
    }
}

#[async_trait]
impl Backend for AwsBackend {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            creates_missing: self.create_missing,
            // AWS keeps unlabelled versions (readable by id) until it expires them.
            keeps_unlabelled_versions: true,
            binary_values: true,
        }
    }

    async fn describe(&self, name: &SecretName) -> Result<SecretDescription> {
        let raw = self.versions(name).await?;
        let labels: Vec<&Labels> = raw.iter().map(|v| &v.labels).collect();
        let stages = labels::stages_of_all(&labels);
        Ok(SecretDescription {
            name: name.clone(),
            versions: raw
                .into_iter()
                .zip(stages)
                .map(|(v, stages)| VersionInfo {
                    id: v.id,
                    created_at: v.created_at,
                    stages,
                })
                .collect(),
        })
    }

    async fn put_pending(
        &self,
        name: &SecretName,
        version: &VersionId,
        value: &SecretValue,
    ) -> Result<PutOutcome> {
        self.guard(name).await?;
        let target = secret_target(name);
        let known = self.hint(name).is_some_and(|(v, _)| &v == version);
        let payload = payload(value);
        let mut created_secret = false;
        let mut tried_create = false;
        let output = loop {
            let mut stages = vec![PENDING.to_owned()];
            if created_secret {
                // The first version of a secret: AWS makes it AWSCURRENT itself.
                stages.push(UNPROMOTED.to_owned());
            }
            let request = self
                .client
                .put_secret_value()
                .secret_id(name.as_str())
                .client_request_token(version.as_str())
                .set_version_stages(Some(stages));
            let request = match &payload {
                // The SDK takes its own copy; ours is zeroized when dropped.
                Payload::Text(text) => request.secret_string(text.as_str()),
                Payload::Binary(blob) => request.secret_binary(blob.clone()),
            };
            match request.send().await {
                Ok(output) => break output,
                Err(e) => {
                    let failure = Failure::new("PutSecretValue", e);
                    match failure.kind {
                        Kind::NotFound if self.create_missing && !tried_create => {
                            tried_create = true;
                            // false: another writer created it first; store as for any secret.
                            created_secret = self.create(name).await?;
                        }
                        Kind::NotFound => {
                            return Err(self.not_found(format!(
                                "secret {name:?} (create it, or set create_missing = true in [backends.{}])",
                                self.name
                            )));
                        }
                        Kind::Exists => {
                            return Err(Error::Conflict {
                                backend: self.name.clone(),
                                secret: name.clone(),
                                version: version.clone(),
                            });
                        }
                        _ => return Err(self.fail(failure, &target)),
                    }
                }
            }
        };
        drop(payload);
        let labels = Labels(output.version_stages().to_vec());
        let mut marked = created_secret;
        let outcome = if known {
            PutOutcome::AlreadyPresent
        } else if created_secret || !(labels.has(CURRENT) || labels.has(labels::PREVIOUS)) {
            PutOutcome::Created
        } else if labels.has(CURRENT) && labels.has(PENDING) && !labels.has(UNPROMOTED) {
            // Either a repeat of a promoted version's put (a no-op) or the first version of
            // a secret created elsewhere without a value, which AWS made current itself.
            let versions = self.versions(name).await?;
            if versions.len() == 1 {
                self.relabel(name, UNPROMOTED, Some(version), None)
                    .await
                    .map_err(|f| self.fail(f, &target))?;
                marked = true;
                PutOutcome::Created
            } else {
                PutOutcome::AlreadyPresent
            }
        } else {
            PutOutcome::AlreadyPresent
        };
        if labels.has(PENDING) || created_secret {
            self.set_hint(name, Some((version.clone(), marked)));
        }
        Ok(outcome)
    }

    async fn promote(
        &self,
        name: &SecretName,
        version: &VersionId,
        expected_current: Option<&VersionId>,
    ) -> Result<()> {
        self.guard(name).await?;
        // A rotation's promote: `version` holds AWSPENDING (so the old current does not),
        // and one compare-and-swap call does it. Anything else reads the labels first.
        if let Some(expected) = expected_current
            && self.hint(name) == Some((version.clone(), false))
        {
            match self
                .relabel(name, CURRENT, Some(version), Some(expected))
                .await
            {
                Ok(()) => return Ok(()),
                Err(f) if matches!(f.kind, Kind::InvalidParameter | Kind::NotFound) => {}
                Err(f) => return Err(self.fail(f, &secret_target(name))),
            }
        }
        self.promote_from_labels(name, version, expected_current)
            .await
    }

    async fn discard_pending(&self, name: &SecretName, version: &VersionId) -> Result<()> {
        self.guard(name).await?;
        let versions = self.versions(name).await?;
        let Some(v) = versions.iter().find(|v| &v.id == version) else {
            return Ok(());
        };
        for label in [PENDING, UNPROMOTED] {
            if v.labels.has(label) {
                self.unlabel(name, label, version).await?;
            }
        }
        self.set_hint(name, None);
        Ok(())
    }

    async fn read(&self, name: &SecretName, selector: &Selector) -> Result<SecretValue> {
        let request = self.client.get_secret_value().secret_id(name.as_str());
        let (request, what) = match selector {
            Selector::Stage(stage) => (
                request.version_stage(match stage {
                    Stage::Current => CURRENT,
                    Stage::Previous => labels::PREVIOUS,
                    Stage::Pending => PENDING,
                }),
                format!("stage {stage} of {name:?}"),
            ),
            Selector::Version(id) => (
                request.version_id(id.as_str()),
                format!("version {id} of {name:?}"),
            ),
        };
        let mut output = request
            .send()
            .await
            .map_err(|e| self.fail(Failure::new("GetSecretValue", e), &what))?;
        if let Selector::Stage(stage) = selector
            && !Labels(output.version_stages().to_vec()).holds(*stage)
        {
            return Err(self.not_found(what));
        }
        if let Some(text) = output.secret_string.take() {
            return Ok(SecretValue::from_string(text));
        }
        match output.secret_binary.take() {
            Some(blob) => Ok(SecretValue::new(blob.into_inner())),
            None => Err(self.not_found(format!("{what} (the version has no value)"))),
        }
    }

    async fn list(&self) -> Result<Vec<SecretName>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_secrets()
                .max_results(100)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| {
                    self.fail(Failure::new("ListSecrets", e), "the secrets of the region")
                })?;
            out.extend(
                page.secret_list()
                    .iter()
                    .filter_map(|s| s.name())
                    .filter_map(|n| SecretName::new(n).ok()),
            );
            match page.next_token() {
                Some(next) if !next.is_empty() => token = Some(next.to_owned()),
                _ => break,
            }
        }
        Ok(out)
    }

    async fn retire(&self, _name: &SecretName) -> Result<usize> {
        // AWS keeps unlabelled versions for a while and deletes them itself.
        Ok(0)
    }
}
