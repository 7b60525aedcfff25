//! The durable outbox: one file per notification in `<state_dir>/outbox/queue/`, written
//! temp + fsync + link before the rotation step that triggers it counts as done, and moved
//! to `done/` with its outcome once delivered or given up.
//!
//! A crash or restart loses nothing: what is in `queue/` is sent again with the same id
//! (at-least-once; receivers deduplicate on `webhook-id`), and what has a `done/` record is
//! never sent again. Files are plain JSON so an operator can read what is pending.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::event::{EventType, valid_id};
use crate::temp_file;

/// A rotation some gate waits on: the pending event to a target that must confirm.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateRef {
    /// The secret.
    pub secret: String,
    /// The pending version.
    pub version: String,
    /// The stored value's audit fingerprint: a 2xx confirms this value, not a later one
    /// stored under the same version id.
    #[serde(default)]
    pub fingerprint: String,
}

/// One queued notification to one target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `webhook-id`: the same on every attempt and after every restart.
    pub id: String,
    /// The notify target's name.
    pub target: String,
    /// The event type.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The exact body that is signed and sent.
    pub body: String,
    /// When it was queued (give-up deadlines count from here).
    pub created_at: DateTime<Utc>,
    /// The secrets it is about (for audit entries and metrics).
    pub secrets: Vec<String>,
    /// The version it is about (absent for batches).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Set on pending events whose 2xx confirms a gated promotion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<GateRef>,
    /// May be batched with others for a target that has a coalescing window.
    #[serde(default)]
    pub coalesce: bool,
    /// For a batch: the ids of the messages it replaced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<String>,
    /// Attempts made so far.
    #[serde(default)]
    pub attempts: u32,
    /// Not before this time (backoff, `Retry-After`, coalescing window).
    pub next_attempt_at: DateTime<Utc>,
    /// The process that delivers it while it runs; others take over once it has stopped.
    pub owner_pid: u32,
    /// That process's host.
    pub owner_host: String,
    /// When that process took the message (queued or adopted it). A process under the
    /// same pid that started later is not the owner (pids are handed out again). Absent in
    /// messages written before it was recorded: the pid alone is checked then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owned_since: Option<DateTime<Utc>>,
}

impl Message {
    /// Whether `host` and `pid` name this message's owner.
    pub fn owned_by(&self, pid: u32, host: &str) -> bool {
        self.owner_pid == pid && self.owner_host == host
    }

    /// True while the process that owns the message may still deliver it: it runs on this
    /// machine (`my_host`), and is the process that took it, not a later one given its pid.
    pub fn owner_alive(&self, my_host: &str) -> bool {
        self.owner_host == my_host
            && match self.owned_since {
                Some(since) => crate::process::running_since(self.owner_pid, since),
                None => crate::process::running(self.owner_pid),
            }
    }
}

/// How a message left the queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Finished {
    /// The receiver answered 2xx.
    Delivered {
        /// The status code.
        status: u16,
    },
    /// No more attempts will be made.
    GivenUp {
        /// Why.
        reason: String,
    },
    /// It was sent inside a batch.
    Coalesced {
        /// The batch's id.
        into: String,
    },
    /// The rotation it belonged to was abandoned before it was delivered.
    Cancelled {
        /// Why.
        reason: String,
    },
}

/// The record left in `done/`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done {
    /// The message id.
    pub id: String,
    /// The target.
    pub target: String,
    /// The event type.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The secrets it was about.
    pub secrets: Vec<String>,
    /// Attempts made.
    pub attempts: u32,
    /// When it left the queue.
    pub at: DateTime<Utc>,
    /// How.
    #[serde(flatten)]
    pub finished: Finished,
}

/// What [`Outbox::load`] found.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Messages still to deliver.
    pub messages: Vec<Message>,
    /// Files that could not be read, set aside as `*.corrupt`.
    pub corrupt: Vec<String>,
}

/// The outbox directory.
#[derive(Clone, Debug)]
pub struct Outbox {
    dir: PathBuf,
}

impl Outbox {
    /// The outbox under `state_dir` (created on first write).
    pub fn new(state_dir: &Path) -> Self {
        Self {
            dir: state_dir.join("outbox"),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn queue(&self) -> PathBuf {
        self.dir.join("queue")
    }

    /// A watch for messages other processes add to the queue (its directory is created
    /// first when missing).
    pub(crate) fn watch(&self) -> io::Result<super::queue_watch::QueueWatch> {
        let queue = self.queue();
        make_dir(&queue)?;
        super::queue_watch::QueueWatch::new(&queue)
    }

    fn done_dir(&self) -> PathBuf {
        self.dir.join("done")
    }

    fn queued_path(&self, id: &str) -> PathBuf {
        self.queue().join(format!("{id}.json"))
    }

    fn done_path(&self, id: &str) -> PathBuf {
        self.done_dir().join(format!("{id}.json"))
    }

    /// Persists a new message; returns `false` (and writes nothing) when a message with
    /// this id is queued or done already. Durable when it returns.
    pub fn put(&self, message: &Message) -> io::Result<bool> {
        Ok(self.put_all(std::slice::from_ref(message))?[0])
    }

    /// Persists new messages as [`Outbox::put`] does each, and says for each whether it
    /// was written. Durable when it returns.
    ///
    /// One event for many targets is many files: their fsyncs run side by side (a disk
    /// takes about as long for several as for one), and one directory fsync makes all
    /// their names durable, instead of two fsyncs in a row per message. Every file is
    /// fsynced before it is linked into the queue, and the links before this returns, so
    /// what a crash can leave is what it could before: a message wholly queued or absent.
    pub fn put_all(&self, messages: &[Message]) -> io::Result<Vec<bool>> {
        if let Some(bad) = messages.iter().find(|m| !valid_id(&m.id)) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{:?} is not a message id", bad.id),
            ));
        }
        let mut written = vec![false; messages.len()];
        let fresh: Vec<usize> = (0..messages.len())
            .filter(|&i| !self.done_path(&messages[i].id).exists())
            .collect();
        if fresh.is_empty() {
            return Ok(written);
        }
        let queue = self.queue();
        make_dir(&queue)?;
        let mut files = Vec::with_capacity(fresh.len());
        for &i in &fresh {
            let id = &messages[i].id;
            let temp = temp_file::path_for(&self.queued_path(id));
            files.push((temp, to_json(&messages[i])?));
        }
        if let Err(e) = write_synced_all(&files) {
            for (temp, _) in &files {
                let _ = fs::remove_file(temp);
            }
            return Err(e);
        }
        let mut failed = None;
        for (&i, (temp, _)) in fresh.iter().zip(&files) {
            let id = &messages[i].id;
            // A hard link fails if the name exists: two writers of one derived id make one
            // file.
            let linked = match failed {
                None => fs::hard_link(temp, self.queued_path(id)),
                Some(_) => Ok(()),
            };
            let _ = fs::remove_file(temp);
            if failed.is_some() {
                continue;
            }
            match linked {
                // `finish` records done before it unlinks the queued file, so if the link
                // got in after a concurrent finish, the done record is visible now: take it
                // back.
                Ok(()) if self.done_path(id).exists() => {
                    let _ = fs::remove_file(self.queued_path(id));
                }
                Ok(()) => written[i] = true,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => failed = Some(e),
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        if written.contains(&true) {
            sync_dir(&queue)?;
        }
        Ok(written)
    }

    /// Rewrites a queued message (attempt count, next attempt, owner). Losing this to a
    /// crash only means an extra attempt, so the directory is not synced.
    pub fn update(&self, message: &Message) -> io::Result<()> {
        let temp = temp_file::path_for(&self.queued_path(&message.id));
        write_synced(&temp, &to_json(message)?)?;
        fs::rename(&temp, self.queued_path(&message.id))
    }

    /// Takes over a queued message for this process (rewriting its owner). Returns `false`
    /// when it was finished meanwhile (the rewrite is then taken back), so the caller does
    /// not send a delivered message again.
    pub fn adopt(&self, message: &Message) -> io::Result<bool> {
        self.update(message)?;
        if self.done_path(&message.id).exists() {
            let _ = fs::remove_file(self.queued_path(&message.id));
            return Ok(false);
        }
        Ok(true)
    }

    /// Records how a message left the queue, then removes it from the queue. A crash in
    /// between leaves both; [`Outbox::load`] finishes the removal.
    pub fn finish(&self, message: &Message, finished: Finished) -> io::Result<Done> {
        let mut done = self.finish_all(&[(message.clone(), finished)])?;
        Ok(done.remove(0))
    }

    /// [`Outbox::finish`] for several messages: the records' fsyncs run side by side, and
    /// each directory is fsynced once for the batch. As for one message, every record is
    /// durable before any queued file is removed.
    pub fn finish_all(&self, batch: &[(Message, Finished)]) -> io::Result<Vec<Done>> {
        let at = Utc::now();
        let dones: Vec<Done> = batch
            .iter()
            .map(|(message, finished)| Done {
                id: message.id.clone(),
                target: message.target.clone(),
                kind: message.kind,
                secrets: message.secrets.clone(),
                attempts: message.attempts,
                at,
                finished: finished.clone(),
            })
            .collect();
        if dones.is_empty() {
            return Ok(dones);
        }
        let dir = self.done_dir();
        make_dir(&dir)?;
        let mut files = Vec::with_capacity(dones.len());
        for done in &dones {
            let temp = temp_file::path_for(&self.done_path(&done.id));
            files.push((temp, to_json(done)?));
        }
        let renamed = write_synced_all(&files).and_then(|()| {
            files
                .iter()
                .zip(&dones)
                .try_for_each(|((temp, _), done)| fs::rename(temp, self.done_path(&done.id)))
        });
        if let Err(e) = renamed {
            for (temp, _) in &files {
                let _ = fs::remove_file(temp);
            }
            return Err(e);
        }
        sync_dir(&dir)?;
        let mut removed = false;
        for done in &dones {
            match fs::remove_file(self.queued_path(&done.id)) {
                Ok(()) => removed = true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        if removed {
            sync_dir(&self.queue())?;
        }
        Ok(dones)
    }

    /// When the queue directory last changed (a message added, rewritten or removed);
    /// `None` while there is no queue directory. A cheap check before a [`Outbox::load`].
    pub fn queue_modified(&self) -> Option<std::time::SystemTime> {
        fs::metadata(self.queue()).and_then(|m| m.modified()).ok()
    }

    /// A queued message, read from disk.
    pub fn queued(&self, id: &str) -> Option<Message> {
        if !valid_id(id) {
            return None;
        }
        let bytes = fs::read(self.queued_path(id)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// A queued message read again from disk, or `None` once it is finished (a `done/`
    /// record) or gone. A stopped process's messages are confirmed this way after its
    /// liveness check: one it finished between being listed and stopping is not taken
    /// over and sent again.
    pub fn still_queued(&self, id: &str) -> Option<Message> {
        let message = self.queued(id)?;
        (!self.done_path(id).exists()).then_some(message)
    }

    /// The outcome of a message that left the queue.
    pub fn done(&self, id: &str) -> Option<Done> {
        if !valid_id(id) {
            return None;
        }
        let text = fs::read(self.done_path(id)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Every queued message, oldest first. Finishes what a crash interrupted: a queued
    /// file with a `done/` record is removed, and parts of a queued batch are marked
    /// coalesced. Unreadable files are renamed `*.corrupt` and reported.
    pub fn load(&self) -> io::Result<Loaded> {
        let mut loaded = Loaded::default();
        // What writers killed mid-write left (the done/ records are swept by `prune`).
        temp_file::sweep(&self.queue())?;
        temp_file::sweep(&self.dir.join("disabled"))?;
        let entries = match fs::read_dir(self.queue()) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(loaded),
            Err(e) => return Err(e),
        };
        let mut messages = Vec::new();
        for entry in entries {
            let path = entry?.path();
            let Some(id) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
            else {
                continue;
            };
            if !valid_id(id) {
                continue;
            }
            if self.done_path(id).exists() {
                let _ = fs::remove_file(&path);
                continue;
            }
            match fs::read(&path)
                .ok()
                .and_then(|bytes| serde_json::from_slice::<Message>(&bytes).ok())
                .filter(|m| m.id == id)
            {
                Some(message) => messages.push(message),
                None => {
                    let aside = path.with_extension("json.corrupt");
                    let _ = fs::rename(&path, &aside);
                    loaded.corrupt.push(aside.display().to_string());
                }
            }
        }
        let batched: HashMap<String, String> = messages
            .iter()
            .flat_map(|m| m.parts.iter().map(|p| (p.clone(), m.id.clone())))
            .collect();
        for message in messages {
            match batched.get(&message.id) {
                Some(batch) => {
                    let into = batch.clone();
                    self.finish(&message, Finished::Coalesced { into })?;
                }
                None => loaded.messages.push(message),
            }
        }
        loaded
            .messages
            .sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(loaded)
    }

    /// Deletes `done/` records older than `age` (they only guard against resending).
    pub fn prune(&self, age: Duration) -> io::Result<usize> {
        super::prune_older_than(&self.done_dir(), age)
    }

    /// Targets disabled by a 410, with the URL that answered it (a new URL re-enables).
    pub fn disabled(&self) -> HashMap<String, String> {
        let mut out = HashMap::new();
        let Ok(entries) = fs::read_dir(self.dir.join("disabled")) else {
            return out;
        };
        for entry in entries.flatten() {
            #[derive(Deserialize)]
            struct Disabled {
                target: String,
                url: String,
            }
            if let Some(d) = fs::read(entry.path())
                .ok()
                .and_then(|b| serde_json::from_slice::<Disabled>(&b).ok())
            {
                out.insert(d.target, d.url);
            }
        }
        out
    }

    /// Remembers that `target` at `url` answered 410 Gone.
    pub fn disable(&self, target: &str, url: &str, status: u16) -> io::Result<()> {
        let dir = self.dir.join("disabled");
        make_dir(&dir)?;
        let path = dir.join(format!("{target}.json"));
        let temp = temp_file::path_for(&path);
        let record = serde_json::json!({
            "target": target,
            "url": url,
            "status": status,
            "at": Utc::now(),
            "note": "delete this file, or change the target's url, to send to it again",
        });
        write_synced(&temp, &serde_json::to_vec_pretty(&record)?)?;
        fs::rename(&temp, path)?;
        sync_dir(&dir)
    }

    /// Queued messages matching `pick`, read from disk (other processes' too).
    pub fn scan(&self, pick: impl Fn(&Message) -> bool) -> io::Result<Vec<Message>> {
        Ok(self
            .load()?
            .messages
            .into_iter()
            .filter(|m| pick(m))
            .collect())
    }
}

fn to_json<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    serde_json::to_vec_pretty(value).map_err(io::Error::other)
}

/// Creates `dir` (0700) and its missing parents.
fn make_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Writes `bytes` to a new file (0600) and fsyncs it.
fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// At most this many files are written and fsynced at once by [`write_synced_all`].
const PARALLEL_FSYNCS: usize = 16;

/// [`write_synced`] for every `(path, bytes)`, several at once.
fn write_synced_all(files: &[(PathBuf, Vec<u8>)]) -> io::Result<()> {
    if let [(path, bytes)] = files {
        return write_synced(path, bytes);
    }
    let share = files.len().div_ceil(PARALLEL_FSYNCS);
    std::thread::scope(|scope| {
        let writers: Vec<_> = files
            .chunks(share)
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .try_for_each(|(path, bytes)| write_synced(path, bytes))
                })
            })
            .collect();
        writers.into_iter().try_for_each(|w| {
            w.join()
                .unwrap_or_else(|_| Err(io::Error::other("an outbox writer panicked")))
        })
    })
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::event::random_id;
    use ring::rand::SystemRandom;

    fn message(id: &str) -> Message {
        Message {
            id: id.to_owned(),
            target: "hooks".into(),
            kind: EventType::Rotated,
            body: "{}".into(),
            created_at: Utc::now(),
            secrets: vec!["s".into()],
            version: Some("v".into()),
            gate: None,
            coalesce: false,
            parts: Vec::new(),
            attempts: 0,
            next_attempt_at: Utc::now(),
            owner_pid: 1,
            owner_host: "h".into(),
            owned_since: None,
        }
    }

    #[test]
    fn a_message_is_queued_once_and_never_again_after_it_is_done() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::new(dir.path());
        let id = random_id(&SystemRandom::new());
        let mut m = message(&id);
        assert!(outbox.put(&m).unwrap());
        assert!(
            !outbox.put(&m).unwrap(),
            "a second put of one id writes nothing"
        );
        m.attempts = 3;
        outbox.update(&m).unwrap();
        assert_eq!(outbox.load().unwrap().messages, [m.clone()]);

        let done = outbox
            .finish(&m, Finished::Delivered { status: 204 })
            .unwrap();
        assert_eq!(done.attempts, 3);
        assert!(outbox.load().unwrap().messages.is_empty());
        assert_eq!(
            outbox.done(&id).unwrap().finished,
            Finished::Delivered { status: 204 }
        );
        assert!(
            !outbox.put(&m).unwrap(),
            "done messages are not queued again"
        );
        // No temporary files are left behind.
        let left: Vec<_> = fs::read_dir(outbox.queue()).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn a_batch_is_queued_and_finished_like_single_messages() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::new(dir.path());
        let rng = SystemRandom::new();
        let batch: Vec<Message> = (0..40).map(|_| message(&random_id(&rng))).collect();
        // One of them was delivered by an earlier run, one is queued already.
        outbox.put(&batch[0]).unwrap();
        outbox
            .finish(&batch[0], Finished::Delivered { status: 200 })
            .unwrap();
        outbox.put(&batch[1]).unwrap();

        let written = outbox.put_all(&batch).unwrap();
        assert_eq!(written[..2], [false, false]);
        assert!(written[2..].iter().all(|w| *w));
        let mut queued: Vec<String> = outbox
            .load()
            .unwrap()
            .messages
            .into_iter()
            .map(|m| m.id)
            .collect();
        queued.sort();
        let mut expected: Vec<String> = batch[1..].iter().map(|m| m.id.clone()).collect();
        expected.sort();
        assert_eq!(queued, expected);

        let finished: Vec<(Message, Finished)> = batch[1..]
            .iter()
            .map(|m| (m.clone(), Finished::Delivered { status: 204 }))
            .collect();
        assert_eq!(outbox.finish_all(&finished).unwrap().len(), 39);
        assert!(outbox.load().unwrap().messages.is_empty());
        for m in &batch[1..] {
            assert_eq!(
                outbox.done(&m.id).unwrap().finished,
                Finished::Delivered { status: 204 }
            );
        }
        assert_eq!(outbox.put_all(&batch).unwrap(), vec![false; 40]);
        // No temporary files are left behind.
        for sub in ["queue", "done"] {
            let left: Vec<_> = fs::read_dir(dir.path().join("outbox").join(sub))
                .unwrap()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
                .collect();
            assert!(left.is_empty(), "{sub}: {left:?}");
        }
    }

    #[test]
    fn load_finishes_what_a_crash_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::new(dir.path());
        let rng = SystemRandom::new();
        // Delivered, but the crash came before the queue file was removed.
        let delivered = message(&random_id(&rng));
        outbox.put(&delivered).unwrap();
        outbox
            .finish(&delivered, Finished::Delivered { status: 200 })
            .unwrap();
        fs::write(
            outbox.queued_path(&delivered.id),
            to_json(&delivered).unwrap(),
        )
        .unwrap();
        // A batch was written but its parts were not yet marked.
        let (a, b) = (message(&random_id(&rng)), message(&random_id(&rng)));
        let mut batch = message(&random_id(&rng));
        batch.parts = vec![a.id.clone(), b.id.clone()];
        for m in [&a, &b, &batch] {
            outbox.put(m).unwrap();
        }
        // A torn file.
        let torn = random_id(&rng);
        fs::write(outbox.queued_path(&torn), b"{\"id\":").unwrap();

        let loaded = outbox.load().unwrap();
        assert_eq!(loaded.messages, [batch.clone()]);
        assert_eq!(loaded.corrupt.len(), 1);
        assert!(!outbox.queued_path(&delivered.id).exists());
        assert_eq!(
            outbox.done(&a.id).unwrap().finished,
            Finished::Coalesced {
                into: batch.id.clone()
            }
        );
    }

    #[test]
    fn bad_ids_are_refused_and_disabled_targets_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::new(dir.path());
        assert!(outbox.put(&message("msg_../../x")).is_err());
        assert!(outbox.disabled().is_empty());
        outbox.disable("hooks", "https://h.example/x", 410).unwrap();
        assert_eq!(outbox.disabled()["hooks"], "https://h.example/x");
    }
}
