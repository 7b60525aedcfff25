//! Which secrets AWS rotates itself (a rotation Lambda), so rekeyd does not fight it.
//!
//! The check costs no call per rotation: one `ListSecrets` sweep (100 secrets a page)
//! learns `RotationEnabled` and `RotationLambdaARN` for every secret in the region, and its
//! answer is kept for [`SWEEP_TTL`]. The first write to any secret after that runs the
//! next sweep. A secret whose native rotation is switched on while rekeyd runs is
//! therefore refused from the next sweep on, at most [`SWEEP_TTL`] later.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aws_sdk_secretsmanager::Client;

use super::error::Failure;

/// How long one sweep's answer is used.
pub(super) const SWEEP_TTL: Duration = Duration::from_secs(10 * 60);

/// The last sweep: secrets with native rotation on, by name, with their Lambda's ARN.
#[derive(Debug, Default)]
pub(super) struct Sweep {
    at: Option<Instant>,
    rotating: HashMap<String, String>,
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
        if self.at.is_none_or(|at| at.elapsed() > SWEEP_TTL) {
            self.rotating = sweep(client).await?;
            self.at = Some(Instant::now());
        }
        Ok(match self.rotating.get(name) {
            Some(lambda) => Native::On(lambda.clone()),
            None => Native::Off,
        })
    }

    /// Records that AWS no longer rotates `name` (rekeyd turned it off).
    pub(super) fn turned_off(&mut self, name: &str) {
        self.rotating.remove(name);
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
