//! A per-secret lease lock on KV v1, which has no check-and-set.
//!
//! With plain reads and writes, no protocol can make two writers agree without an
//! assumption about time (read/write registers cannot solve consensus). This lock makes
//! the assumption explicit and checks it on every attempt (Fischer's mutual exclusion):
//!
//! 1. Read `<name>__rekeyd/lock`. If another owner holds it, wait; a holder that stays the
//!    same for longer than the lease (measured on the waiter's own monotonic clock, so
//!    clocks of different hosts never matter) is taken to have died.
//! 2. Write our own random owner id. If the read and this write took longer than
//!    [`MAX_WRITE_DELAY`] together, give up this attempt: a rival's write could land after
//!    our check.
//! 3. Wait [`SETTLE`] (longer than [`MAX_WRITE_DELAY`]), read again: still ours means any
//!    rival that saw the lock free has written already and lost; rivals that read after
//!    our write see it held.
//!
//! The holder stops writing once half the lease has passed (writes then fail as `Busy` and
//! the engine retries later), so a waiter never takes over while the holder can still
//! write. A process stopped (SIGSTOP, a VM paused) for longer than the lease between its
//! check and a write breaks the assumption; `docs/vault.md` says so.

use std::time::Duration;

use ring::rand::{SecureRandom, SystemRandom};
use serde_json::json;
use tokio::time::Instant;

use super::Conn;
use super::api::{Method, Request};
use super::error::VaultError;

/// How long a lock is good for, from the moment its holder read it free.
pub(crate) const LEASE: Duration = Duration::from_secs(60);
/// Longest read-then-write that still counts as one step (see the module doc).
const MAX_WRITE_DELAY: Duration = Duration::from_millis(200);
/// Wait between writing the lock and checking it.
const SETTLE: Duration = Duration::from_millis(300);
/// Give up waiting for the lock after this long.
const WAIT_LIMIT: Duration = Duration::from_secs(120);

/// The lock record: who holds it. No value, no secret.
#[derive(serde::Serialize, serde::Deserialize)]
struct Record {
    owner: String,
    #[serde(default)]
    holder: String,
}

/// A held lock; release it with [`Held::release`].
pub(crate) struct Held {
    path: String,
    owner: String,
    since: Instant,
}

impl Held {
    /// Fails once half the lease has passed: the caller must not write any more.
    pub(crate) fn check(&self) -> Result<(), VaultError> {
        if self.since.elapsed() < LEASE / 2 {
            Ok(())
        } else {
            Err(VaultError::Busy(format!(
                "rekeyd held the lock `{}` for over {}s without finishing (Vault is slow to answer): stopped before writing more; it retries",
                self.path,
                (LEASE / 2).as_secs()
            )))
        }
    }

    /// Removes the lock if it is still ours.
    pub(crate) async fn release(self, conn: &Conn) {
        let still_ours = match conn.get(&self.path).await {
            Ok(Some(reply)) => reply
                .data::<Record>()
                .map(|r| r.owner == self.owner)
                .unwrap_or(false),
            _ => false,
        };
        if still_ours && let Err(e) = conn.send(&Request::new(Method::Delete, &self.path)).await {
            tracing::warn!(lock = %self.path, error = %e, "could not release a KV v1 lock; it expires by itself");
        }
    }
}

/// Takes the lock at `path`.
pub(crate) async fn acquire(conn: &Conn, path: &str) -> Result<Held, VaultError> {
    let rng = SystemRandom::new();
    let started = Instant::now();
    // The rival we are waiting out, and since when (our clock) we have seen it.
    let mut waiting_on: Option<(String, Instant)> = None;
    let mut last_holder = String::new();
    loop {
        if started.elapsed() > WAIT_LIMIT {
            return Err(VaultError::Busy(format!(
                "the lock `{path}` stayed held for {}s (by {last_holder}): another rekeyd is working on this secret, or one died holding it and the lock expires {}s after that; it retries",
                WAIT_LIMIT.as_secs(),
                LEASE.as_secs()
            )));
        }
        let owner = nonce(&rng)?;
        let attempt = Instant::now();
        let record = read(conn, path).await?;
        if let Some(record) = record {
            let expired = match &waiting_on {
                Some((seen, since)) if *seen == record.owner => since.elapsed() > LEASE + SETTLE,
                _ => {
                    waiting_on = Some((record.owner.clone(), Instant::now()));
                    false
                }
            };
            if !expired {
                last_holder = record.holder;
                pause(&rng).await;
                continue;
            }
            tracing::warn!(lock = %path, holder = %record.holder, "taking over a KV v1 lock whose holder stopped renewing it");
        }
        let mine = Record {
            owner: owner.clone(),
            holder: holder(),
        };
        conn.send(&Request::post(path, &json!(mine))).await?;
        if attempt.elapsed() > MAX_WRITE_DELAY {
            // Too slow to be sure no rival slipped in: leave our record to expire.
            tracing::debug!(lock = %path, "lock attempt too slow to be safe; trying again");
            waiting_on = None;
            pause(&rng).await;
            continue;
        }
        tokio::time::sleep(SETTLE).await;
        match read(conn, path).await? {
            Some(record) if record.owner == owner => {
                return Ok(Held {
                    path: path.to_owned(),
                    owner,
                    since: attempt,
                });
            }
            _ => {
                waiting_on = None;
                pause(&rng).await;
            }
        }
    }
}

async fn read(conn: &Conn, path: &str) -> Result<Option<Record>, VaultError> {
    match conn.get(path).await? {
        None => Ok(None),
        // An unreadable record is treated like a held lock of an unknown owner.
        Some(reply) => Ok(Some(reply.data::<Record>().unwrap_or(Record {
            owner: "unreadable".to_owned(),
            holder: "unknown".to_owned(),
        }))),
    }
}

fn nonce(rng: &SystemRandom) -> Result<String, VaultError> {
    let mut bytes = [0u8; 16];
    rng.fill(&mut bytes)
        .map_err(|_| VaultError::Config("the system random number generator failed".to_owned()))?;
    Ok(crate::hex::encode(&bytes))
}

/// Which process holds a lock, for operators reading it.
fn holder() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned());
    format!("rekeyd pid {} on {host}", std::process::id())
}

/// A short random pause between attempts, so rivals fall out of step.
async fn pause(rng: &SystemRandom) {
    let mut b = [0u8; 1];
    let _ = rng.fill(&mut b);
    tokio::time::sleep(Duration::from_millis(50 + u64::from(b[0]) / 2)).await;
}
