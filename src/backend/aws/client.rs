//! Building the Secrets Manager client from a backend's policy configuration.
//!
//! The SDK's standard chains resolve whatever the policy leaves out (region from
//! `AWS_REGION` or the profile, credentials from the environment, profile, SSO, web
//! identity, ECS or instance metadata). What the policy sets wins. With `region` and
//! static credentials both set, nothing is resolved over the network: building the
//! client reads no metadata service and makes no call at all (`tests/aws.rs` checks it).

use std::fmt;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::sts::AssumeRoleProvider;
use aws_sdk_secretsmanager::config::retry::RetryConfig;
use aws_sdk_secretsmanager::config::timeout::TimeoutConfig;
use aws_sdk_secretsmanager::config::{Credentials, Region};

use super::super::{Error, ErrorStatus, Result};
use crate::policy::{AwsBackendConfig, CredentialsEnv};

/// Attempts per SDK call: the first plus retries with exponential backoff and jitter,
/// for throttling, 5xx answers, timeouts and dropped connections.
pub(super) const MAX_ATTEMPTS: u32 = 5;
/// The first retry waits up to this long; each further one up to twice as long.
const INITIAL_BACKOFF: Duration = Duration::from_millis(200);
/// One attempt of one call may take this long (a stuck connection is retried).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);
/// One call, retries included, may take this long.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Static credentials read from the environment variables the policy names.
struct EnvCredentials(Credentials);

impl fmt::Debug for EnvCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnvCredentials")
            .field("access_key_id", &self.0.access_key_id())
            .finish_non_exhaustive()
    }
}

fn startup_error(backend: &str, message: String) -> Error {
    Error::Generic {
        backend: backend.to_owned(),
        message,
        status: ErrorStatus::Permanent,
        source: None,
    }
}

/// Reads the credentials the policy points at; every missing variable is named.
fn env_credentials(
    backend: &str,
    env: &CredentialsEnv,
    get: impl Fn(&str) -> Option<String>,
) -> Result<EnvCredentials> {
    let read = |var: &str, key: &str| {
        get(var).filter(|v| !v.is_empty()).ok_or_else(|| {
            startup_error(
                backend,
                format!(
                    "environment variable {var} (named by {key} of backend {backend}) is not set"
                ),
            )
        })
    };
    let access_key_id = read(&env.access_key_id, "access_key_id_env")?;
    let secret_access_key = read(&env.secret_access_key, "secret_access_key_env")?;
    let session_token = env
        .session_token
        .as_deref()
        .map(|var| read(var, "session_token_env"))
        .transpose()?;
    Ok(EnvCredentials(Credentials::new(
        access_key_id,
        secret_access_key,
        session_token,
        None,
        "rekeyd-policy-env",
    )))
}

/// The Secrets Manager client configuration for one backend, ready to build.
///
/// Public so that a caller can add to it (the benchmark adds a call-counting interceptor)
/// before building the client it hands to [`super::AwsBackend::with_client`].
pub async fn client_config(
    backend: &str,
    config: &AwsBackendConfig,
) -> Result<aws_sdk_secretsmanager::config::Builder> {
    let credentials = config
        .credentials_env
        .as_ref()
        .map(|env| env_credentials(backend, env, |var| std::env::var(var).ok()))
        .transpose()?;
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(region) = &config.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(EnvCredentials(credentials)) = credentials {
        loader = loader.credentials_provider(credentials);
    }
    let shared = loader.load().await;
    if shared.region().is_none() {
        return Err(startup_error(
            backend,
            format!(
                "no AWS region: set region in [backends.{backend}], or AWS_REGION, or a region in the AWS profile"
            ),
        ));
    }
    let mut builder = aws_sdk_secretsmanager::config::Builder::from(&shared)
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(MAX_ATTEMPTS)
                .with_initial_backoff(INITIAL_BACKOFF),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                .operation_timeout(OPERATION_TIMEOUT)
                .build(),
        );
    if let Some(url) = &config.endpoint_url {
        // Secrets Manager only: STS (for role_arn) keeps its own endpoint, which the
        // standard AWS_ENDPOINT_URL_STS variable can change.
        builder = builder.endpoint_url(url);
    }
    if let Some(role) = &config.assume_role {
        let mut assume = AssumeRoleProvider::builder(&role.role_arn)
            .session_name(role.session_name.as_deref().unwrap_or("rekeyd"))
            .configure(&shared);
        if let Some(id) = &role.external_id {
            assume = assume.external_id(id);
        }
        // Lazy: the role is assumed on the first call, and again before it expires.
        builder = builder.credentials_provider(assume.build().await);
    }
    Ok(builder)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> CredentialsEnv {
        CredentialsEnv {
            access_key_id: "A_KEY".into(),
            secret_access_key: "A_SECRET".into(),
            session_token: None,
        }
    }

    #[test]
    fn missing_variables_are_named() {
        let err = env_credentials("aws", &env(), |v| (v == "A_KEY").then(|| "AKIA".into()))
            .expect_err("secret variable unset");
        let text = err.to_string();
        assert!(text.contains("A_SECRET"), "{text}");
        assert!(
            text.contains("secret_access_key_env of backend aws"),
            "{text}"
        );
    }

    #[test]
    fn debug_masks_the_secret_key() {
        let creds = env_credentials("aws", &env(), |v| {
            Some(
                if v == "A_KEY" {
                    "AKIAEXAMPLE"
                } else {
                    "canary-9f2c"
                }
                .into(),
            )
        })
        .expect("both set");
        let text = format!("{creds:?}");
        assert!(text.contains("AKIAEXAMPLE"), "{text}");
        assert!(!text.contains("canary-9f2c"), "{text}");
    }
}
