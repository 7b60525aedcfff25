//! Which secrets AWS rotates itself (a rotation Lambda), so rekeyd does not fight it.
//!
//! The check costs no call per rotation: one `ListSecrets` sweep (100 secrets a page)
//! learns `RotationEnabled` and `RotationLambdaARN` for every secret in the region, and its
//! answer is kept for [`SWEEP_TTL`]. The first write to any secret after that runs the
//! next sweep. A secret whose native rotation is switched on while rekeyd runs is
//! therefore refused from the next sweep on, at most [`SWEEP_TTL`] later.
//!
//! `ListSecrets` cannot be scoped to resources in IAM, so a least-privilege policy may
//! deny it. Then each secret is checked on its own with `DescribeSecret`, once per
//! [`SWEEP_TTL`] per secret: one extra call per rotation for secrets rotated less often.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aws_sdk_secretsmanager::Client;

use super::error::{Failure, Kind};

/// How long one sweep's answer is used.
pub(super) const SWEEP_TTL: Duration = Duration::from_secs(10 * 60);

/// The last sweep: secrets with native rotation on, by name, with their Lambda's ARN.
#[derive(Debug, Default)]
pub(super) struct Sweep {
    at: Option<Instant>,
    rotating: HashMap<String, String>,
    /// Set when `ListSecrets` was denied: per-secret answers and when each was learnt.
    one_by_one: Option<HashMap<String, (Instant, Option<String>)>>,
}

/// What the guard decided for one secret.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Native {
    /// AWS does not rotate it.
    Off,
    /// AWS rotates it with this Lambda (empty when AWS did not say which).
    On(String),
}

impl Sweep {
    /// Whether AWS rotates `name`, sweeping first when the last sweep is too old.
    pub(super) async fn check(&mut self, client: &Client, name: &str) -> Result<Native, Failure> {
        if self.one_by_one.is_none() && self.at.is_none_or(|at| at.elapsed() > SWEEP_TTL) {
            match sweep(client).await {
                Ok(rotating) => {
                    self.rotating = rotating;
                    self.at = Some(Instant::now());
                }
                Err(f) if f.kind == Kind::AccessDenied => {
                    tracing::info!(
                        "ListSecrets is not allowed: checking each secret for AWS-native rotation with DescribeSecret instead"
                    );
                    self.one_by_one = Some(HashMap::new());
                }
                Err(f) => return Err(f),
            }
        }
        if let Some(known) = &mut self.one_by_one {
            let fresh = known
                .get(name)
                .filter(|(at, _)| at.elapsed() <= SWEEP_TTL)
                .map(|(_, lambda)| lambda.clone());
            let lambda = match fresh {
                Some(lambda) => lambda,
                None => {
                    let lambda = describe(client, name).await?;
                    known.insert(name.to_owned(), (Instant::now(), lambda.clone()));
                    lambda
                }
            };
            return Ok(lambda.map_or(Native::Off, Native::On));
        }
        Ok(match self.rotating.get(name) {
            Some(lambda) => Native::On(lambda.clone()),
            None => Native::Off,
        })
    }

    /// Records that AWS no longer rotates `name` (rekeyd turned it off).
    pub(super) fn turned_off(&mut self, name: &str) {
        self.rotating.remove(name);
        if let Some(known) = &mut self.one_by_one {
            known.insert(name.to_owned(), (Instant::now(), None));
        }
    }
}

/// One secret's rotation setting: its Lambda's ARN (empty if none) when rotation is on.
/// A secret that does not exist yet is not rotated.
async fn describe(client: &Client, name: &str) -> Result<Option<String>, Failure> {
    match client.describe_secret().secret_id(name).send().await {
        Ok(out) => Ok((out.rotation_enabled() == Some(true))
            .then(|| out.rotation_lambda_arn().unwrap_or_default().to_owned())),
        Err(e) => {
            let failure = Failure::new("DescribeSecret", e);
            if failure.kind == Kind::NotFound {
                Ok(None)
            } else {
                Err(failure)
            }
        }
    }
}

async fn sweep(client: &Client) -> Result<HashMap<String, String>, Failure> {
    let mut rotating = HashMap::new();
    let mut token: Option<String> = None;
    loop {
        let page = client
            .list_secrets()
            .max_results(100)
            .set_next_token(token.take())
            .send()
            .await
            .map_err(|e| Failure::new("ListSecrets", e))?;
        for entry in page.secret_list() {
            if entry.rotation_enabled() == Some(true)
                && let Some(name) = entry.name()
            {
                let lambda = entry.rotation_lambda_arn().unwrap_or_default().to_owned();
                rotating.insert(name.to_owned(), lambda);
            }
        }
        match page.next_token() {
            Some(next) if !next.is_empty() => token = Some(next.to_owned()),
            _ => break,
        }
    }
    tracing::debug!(
        natively_rotated = rotating.len(),
        "swept Secrets Manager for native rotation"
    );
    Ok(rotating)
}
