//! Promotion gates: the durable record of which consumers confirmed (or refused) a pending
//! version, and the bounded wait for every required one.
//!
//! A record is one file per (secret, version, target) in `<state_dir>/confirmations/`,
//! written temp + fsync + rename, so a confirmation survives a crash and is seen by any
//! process: the delivery worker writes one for a 2xx to a gated pending event, `rekeyd
//! confirm` writes one by hand (and the HTTP API will), and the waiting engine polls.
//! Records older than the pending version they name are ignored: a rotation retried under
//! the same version id asks again.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use ring::digest;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

/// How often a waiting gate looks for records written by other processes.
const POLL: Duration = Duration::from_millis(100);

/// A consumer's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// The consumer can use the pending version: promote it.
    Confirmed,
    /// The consumer cannot: discard it.
    Refused,
}

impl Decision {
    /// `confirmed` or `refused`.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Confirmed => "confirmed",
            Decision::Refused => "refused",
        }
    }
}

/// One recorded answer. Ids and names only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    /// The secret.
    pub secret: String,
    /// The pending version.
    pub version: String,
    /// The notify target that answered.
    pub target: String,
    /// The answer.
    pub decision: Decision,
    /// How it came: `response` (to the pending webhook), `cli`, `api`.
    pub via: String,
    /// Who: `HTTP 200` for a response, the operator for the CLI.
    pub by: String,
    /// When it was recorded.
    pub at: DateTime<Utc>,
    /// For an answer to a webhook: the fingerprint of the stored value it answered for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

/// How a gate ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GateOutcome {
    /// Every required target confirmed.
    Confirmed(Vec<Confirmation>),
    /// A target refused.
    Refused(Confirmation),
    /// The deadline passed with these targets still silent.
    TimedOut {
        /// Targets with no confirmation.
        missing: Vec<String>,
    },
    /// An earlier run already gave this gate up (it stopped before discarding the version).
    Abandoned(String),
}

/// The confirmation records of one state directory.
#[derive(Debug)]
pub struct Confirmations {
    dir: PathBuf,
    changed: Notify,
}

impl Confirmations {
    /// The records under `state_dir`.
    pub fn new(state_dir: &Path) -> Self {
        Self {
            dir: state_dir.join("confirmations"),
            changed: Notify::new(),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, secret: &str, version: &str, target: &str) -> PathBuf {
        let mut ctx = digest::Context::new(&digest::SHA256);
        for part in [secret, version, target] {
            ctx.update(part.as_bytes());
            ctx.update(&[0]);
        }
        let name = crate::hex::encode(&ctx.finish().as_ref()[..20]);
        self.dir.join(format!("{name}.json"))
    }

    /// Records an answer durably (replacing an earlier one) and wakes local waiters.
    pub fn record(&self, confirmation: &Confirmation) -> io::Result<()> {
        let path = self.path(
            &confirmation.secret,
            &confirmation.version,
            &confirmation.target,
        );
        self.write(&path, confirmation)?;
        self.changed.notify_waiters();
        Ok(())
    }

    /// temp + fsync + rename + fsync of the directory.
    fn write<T: Serialize>(&self, path: &Path, value: &T) -> io::Result<()> {
        if !self.dir.is_dir() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.dir)?;
        }
        let temp = crate::temp_file::path_for(path);
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(&serde_json::to_vec_pretty(value).map_err(io::Error::other)?)?;
        file.sync_all()?;
        fs::rename(&temp, path)?;
        File::open(&self.dir)?.sync_all()
    }

    /// The answer recorded for a target, if any.
    pub fn get(&self, secret: &str, version: &str, target: &str) -> Option<Confirmation> {
        let bytes = fs::read(self.path(secret, version, target)).ok()?;
        serde_json::from_slice::<Confirmation>(&bytes)
            .ok()
            .filter(|c| c.secret == secret && c.version == version && c.target == target)
    }

    /// Deletes records older than `age`: a gate waits minutes, not days.
    pub fn prune(&self, age: Duration) -> io::Result<usize> {
        super::prune_older_than(&self.dir, age)
    }

    /// Forgets the answers for a version (its rotation was abandoned).
    pub fn clear(&self, secret: &str, version: &str, targets: &[String]) -> io::Result<()> {
        for target in targets {
            match fs::remove_file(self.path(secret, version, target)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn abandoned_path(&self, secret: &str, version: &str) -> PathBuf {
        self.path(secret, version, "\0abandoned")
    }

    /// Records durably that the gate for this stored value (named by its fingerprint) was
    /// given up, so a run that resumes it after a crash finishes the discard at once.
    pub fn mark_abandoned(
        &self,
        secret: &str,
        version: &str,
        fingerprint: &str,
        reason: &str,
    ) -> io::Result<()> {
        let record = serde_json::json!({
            "secret": secret,
            "version": version,
            "fingerprint": fingerprint,
            "reason": reason,
            "at": Utc::now(),
        });
        self.write(&self.abandoned_path(secret, version), &record)
    }

    /// Why the gate for this stored value was given up, if it was.
    pub fn abandoned(&self, secret: &str, version: &str, fingerprint: &str) -> Option<String> {
        let bytes = fs::read(self.abandoned_path(secret, version)).ok()?;
        let record: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        (record["fingerprint"] == fingerprint)
            .then(|| record["reason"].as_str().map(str::to_owned))
            .flatten()
    }

    /// The answer that counts for this stored value: recorded after `since` (the pending
    /// version's creation) and, for an answer to a webhook, about this fingerprint.
    fn current(
        &self,
        secret: &str,
        version: &str,
        target: &str,
        since: DateTime<Utc>,
        fingerprint: &str,
    ) -> Option<Confirmation> {
        self.get(secret, version, target)
            .filter(|c| c.at >= since && c.fingerprint.as_deref().is_none_or(|f| f == fingerprint))
    }

    /// Where the gate stands now: `Some` once it is decided. Answers for an earlier value
    /// of this version id are ignored.
    pub fn decide(
        &self,
        secret: &str,
        version: &str,
        targets: &[String],
        since: DateTime<Utc>,
        fingerprint: &str,
    ) -> Option<GateOutcome> {
        let mut confirmed = Vec::with_capacity(targets.len());
        for target in targets {
            match self.current(secret, version, target, since, fingerprint) {
                Some(c) if c.decision == Decision::Refused => return Some(GateOutcome::Refused(c)),
                Some(c) => confirmed.push(c),
                None => {}
            }
        }
        (confirmed.len() == targets.len()).then_some(GateOutcome::Confirmed(confirmed))
    }

    /// Waits until every target confirmed, one refused, or `timeout` passed.
    pub async fn wait(
        &self,
        secret: &str,
        version: &str,
        targets: &[String],
        since: DateTime<Utc>,
        fingerprint: &str,
        timeout: Duration,
    ) -> GateOutcome {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Registered before looking, so a record written in between still wakes us.
            let changed = self.changed.notified();
            if let Some(outcome) = self.decide(secret, version, targets, since, fingerprint) {
                return outcome;
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                let missing = targets
                    .iter()
                    .filter(|t| {
                        self.current(secret, version, t, since, fingerprint)
                            .is_none()
                    })
                    .cloned()
                    .collect();
                return GateOutcome::TimedOut { missing };
            }
            let nap = POLL.min(deadline - now);
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep(nap) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(target: &str, decision: Decision) -> Confirmation {
        Confirmation {
            secret: "app/db".into(),
            version: "v1".into(),
            target: target.into(),
            decision,
            via: "cli".into(),
            by: "alice@host".into(),
            at: Utc::now(),
            fingerprint: None,
        }
    }

    #[tokio::test]
    async fn a_gate_opens_only_when_every_target_confirmed() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(Confirmations::new(dir.path()));
        let targets = vec!["a".to_owned(), "b".to_owned()];
        let since = Utc::now() - chrono::Duration::seconds(1);
        store.record(&answer("a", Decision::Confirmed)).unwrap();
        assert_eq!(store.decide("app/db", "v1", &targets, since, "fp"), None);

        let waiter = {
            let (store, targets) = (store.clone(), targets.clone());
            tokio::spawn(async move {
                store
                    .wait(
                        "app/db",
                        "v1",
                        &targets,
                        since,
                        "fp",
                        Duration::from_secs(30),
                    )
                    .await
            })
        };
        store.record(&answer("b", Decision::Confirmed)).unwrap();
        match waiter.await.unwrap() {
            GateOutcome::Confirmed(all) => assert_eq!(all.len(), 2),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_refusal_or_the_deadline_closes_it_and_old_answers_do_not_count() {
        let dir = tempfile::tempdir().unwrap();
        let store = Confirmations::new(dir.path());
        let targets = vec!["a".to_owned()];
        store.record(&answer("a", Decision::Confirmed)).unwrap();
        // The version was re-created after that answer: it counts for nothing.
        let since = Utc::now() + chrono::Duration::seconds(1);
        let outcome = store
            .wait(
                "app/db",
                "v1",
                &targets,
                since,
                "fp",
                Duration::from_millis(50),
            )
            .await;
        assert_eq!(
            outcome,
            GateOutcome::TimedOut {
                missing: targets.clone()
            }
        );

        store.record(&answer("a", Decision::Refused)).unwrap();
        let since = Utc::now() - chrono::Duration::seconds(5);
        assert!(matches!(
            store.decide("app/db", "v1", &targets, since, "fp"),
            Some(GateOutcome::Refused(c)) if c.via == "cli"
        ));
        // A webhook's answer counts only for the value it was sent about.
        let mut response = answer("a", Decision::Confirmed);
        response.fingerprint = Some("old-value".into());
        store.record(&response).unwrap();
        assert_eq!(
            store.decide("app/db", "v1", &targets, since, "new-value"),
            None
        );
        assert!(matches!(
            store.decide("app/db", "v1", &targets, since, "old-value"),
            Some(GateOutcome::Confirmed(_))
        ));
        store.clear("app/db", "v1", &targets).unwrap();
        assert_eq!(store.get("app/db", "v1", "a"), None);

        // An abandoned gate is remembered for the value it was about, not for a new one.
        assert_eq!(store.abandoned("app/db", "v1", "fp1"), None);
        store
            .mark_abandoned("app/db", "v1", "fp1", "refused")
            .unwrap();
        assert_eq!(
            store.abandoned("app/db", "v1", "fp1").as_deref(),
            Some("refused")
        );
        assert_eq!(store.abandoned("app/db", "v1", "fp2"), None);
    }
}
