//! `rekeyd exec`: read secrets, then replace this process with a command that has them in
//! its environment (the way chamber or envconsul serve container entrypoints). Values go
//! from the backend into the child's environment only: never to disk, a log or stdout.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::sync::Arc;

use super::exit::{self, Failure};
use crate::backend::{self, Backend, Selector};
use crate::policy;
use crate::secret::{SecretValue, Stage};

/// One `--secret NAME[#FIELD]=VAR` mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// The secret's name in the policy.
    pub secret: String,
    /// A top-level field of a JSON secret, when only that field is wanted.
    pub field: Option<String>,
    /// The environment variable that receives the value.
    pub var: String,
}

impl std::str::FromStr for Mapping {
    type Err = String;

    /// `NAME=VAR` or `NAME#FIELD=VAR`; `#` cannot occur in a secret name, so the split is
    /// unambiguous.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (source, var) = text
            .rsplit_once('=')
            .ok_or_else(|| format!("{text:?}: expected NAME=ENV_VAR or NAME#FIELD=ENV_VAR"))?;
        let valid_var = !var.is_empty()
            && !var.starts_with(|c: char| c.is_ascii_digit())
            && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_var {
            return Err(format!(
                "{var:?} is not an environment variable name (letters, digits and _, not starting with a digit)"
            ));
        }
        let (secret, field) = match source.split_once('#') {
            Some((secret, field)) if !field.is_empty() => (secret, Some(field.to_owned())),
            Some(_) => return Err(format!("{text:?}: the field after # is empty")),
            None => (source, None),
        };
        if secret.is_empty() {
            return Err(format!("{text:?}: the secret name is empty"));
        }
        Ok(Self {
            secret: secret.to_owned(),
            field,
            var: var.to_owned(),
        })
    }
}

/// Reads every mapped secret, then execs `command`. Returns only on failure: nothing is
/// run unless every value was read.
pub async fn exec(
    policy_path: &Path,
    mappings: &[Mapping],
    stage: Stage,
    command: &[OsString],
) -> Result<(), Failure> {
    let policy = policy::load(policy_path)?;
    let mut opened: BTreeMap<String, Arc<dyn Backend>> = BTreeMap::new();
    let mut env: Vec<(String, SecretValue)> = Vec::with_capacity(mappings.len());
    for mapping in mappings {
        let secret = policy.secret(&mapping.secret).ok_or_else(|| {
            Failure::new(
                exit::NOT_FOUND,
                format!(
                    "secret {:?} is not in the policy {}",
                    mapping.secret,
                    policy_path.display()
                ),
            )
        })?;
        let backend = match opened.get(&secret.backend) {
            Some(b) => Arc::clone(b),
            None => {
                let config = policy.backends.get(&secret.backend).ok_or_else(|| {
                    Failure::new(
                        exit::FAILED,
                        format!("backend {} is not defined", secret.backend),
                    )
                })?;
                let b = backend::open(&secret.backend, config).await?;
                opened.insert(secret.backend.clone(), Arc::clone(&b));
                b
            }
        };
        let value = backend.read(&secret.name, &Selector::Stage(stage)).await?;
        let value = match &mapping.field {
            None => value,
            Some(field) => super::commands::json_field(&value, &mapping.secret, field)?,
        };
        if value.expose().contains(&0) || value.expose_str().is_none() {
            return Err(Failure::new(
                exit::FAILED,
                format!(
                    "{} is not text without NUL bytes, so it cannot go into the environment variable {}",
                    mapping.secret, mapping.var
                ),
            ));
        }
        env.push((mapping.var.clone(), value));
    }
    let (program, args) = command
        .split_first()
        .ok_or_else(|| Failure::new(2, "no command given after --"))?;
    let mut child = std::process::Command::new(program);
    child.args(args);
    for (var, value) in &env {
        child.env(var, value.expose_str().expect("checked above"));
    }
    // exec only returns on failure; on success the values live on in the new program only.
    let error = child.exec();
    Err(Failure::new(
        126,
        format!("cannot run {}: {error}", Path::new(program).display()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mappings_parse() {
        assert_eq!(
            "prod/db=DB_PASSWORD".parse::<Mapping>(),
            Ok(Mapping {
                secret: "prod/db".into(),
                field: None,
                var: "DB_PASSWORD".into()
            })
        );
        assert_eq!(
            "prod/db.creds#password=PW"
                .parse::<Mapping>()
                .unwrap()
                .field
                .as_deref(),
            Some("password")
        );
        for bad in ["prod/db", "prod/db=", "=X", "a=1X", "a=B-C", "a#=X"] {
            assert!(bad.parse::<Mapping>().is_err(), "{bad} should be refused");
        }
    }
}
