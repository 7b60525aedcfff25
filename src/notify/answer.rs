//! Whether an answer for a pending version can be taken: the same rules for `rekeyd
//! confirm` and the API. Only the version pending now can be answered for, and only for a
//! target the secret waits on; an answer to anything else would lie in the store until it
//! was mistaken for one later.

use crate::policy::SecretPolicy;

/// Why an answer cannot be taken.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Unanswerable {
    /// The secret has no `confirm` in the policy.
    #[error("{secret} does not require confirmation (it has no `confirm` in the policy)")]
    NotGated {
        /// The secret.
        secret: String,
    },
    /// The target is not one the secret waits on.
    #[error("{target} is not one of the targets that confirm {secret}: {targets}")]
    NotATarget {
        /// The secret.
        secret: String,
        /// The target named.
        target: String,
        /// The targets that do confirm it, comma-separated.
        targets: String,
    },
    /// Another version is pending.
    #[error("{version} is not pending for {secret}; the pending version is {pending}")]
    NotPending {
        /// The secret.
        secret: String,
        /// The version named.
        version: String,
        /// The version that is pending.
        pending: String,
    },
    /// Nothing is pending.
    #[error("{secret} has no pending version: nothing waits for confirmation")]
    NothingPending {
        /// The secret.
        secret: String,
    },
}

impl Unanswerable {
    /// True when the policy rules the answer out (rather than the secret's state now).
    pub fn is_policy(&self) -> bool {
        matches!(self, Self::NotGated { .. } | Self::NotATarget { .. })
    }
}

/// Checks that `secret` waits on `target`'s answer.
pub fn check_target(secret: &SecretPolicy, target: &str) -> Result<(), Unanswerable> {
    let Some(gate) = &secret.confirm else {
        return Err(Unanswerable::NotGated {
            secret: secret.name.to_string(),
        });
    };
    if gate.targets.iter().any(|t| t == target) {
        Ok(())
    } else {
        Err(Unanswerable::NotATarget {
            secret: secret.name.to_string(),
            target: target.to_owned(),
            targets: gate.targets.join(", "),
        })
    }
}

/// Checks that `version` is `pending`, the secret's pending version as its backend
/// describes it now (`None`: nothing is pending).
pub fn check_pending(
    secret: &SecretPolicy,
    version: &str,
    pending: Option<&str>,
) -> Result<(), Unanswerable> {
    match pending {
        Some(pending) if pending == version => Ok(()),
        Some(pending) => Err(Unanswerable::NotPending {
            secret: secret.name.to_string(),
            version: version.to_owned(),
            pending: pending.to_owned(),
        }),
        None => Err(Unanswerable::NothingPending {
            secret: secret.name.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::GeneratorSpec;
    use crate::schedule::Schedule;

    #[test]
    fn only_the_version_pending_now_can_be_answered_for() {
        let secret = SecretPolicy::example(
            Schedule::every(std::time::Duration::from_secs(86_400), "app/db"),
            GeneratorSpec::Ed25519,
        );
        assert_eq!(check_pending(&secret, "v2", Some("v2")), Ok(()));
        let other = check_pending(&secret, "v1", Some("v2")).unwrap_err();
        assert!(matches!(&other, Unanswerable::NotPending { pending, .. } if pending == "v2"));
        assert!(!other.is_policy());
        let none = check_pending(&secret, "v1", None).unwrap_err();
        assert!(matches!(none, Unanswerable::NothingPending { .. }));
        // Without `confirm` in the policy nothing waits for an answer, whatever the target.
        let ungated = check_target(&secret, "payments").unwrap_err();
        assert!(matches!(ungated, Unanswerable::NotGated { .. }) && ungated.is_policy());
    }
}
