//! The writer: [`AuditLog`] handles queue their entries, and whichever caller finds no commit
//! under way leads one: it takes everything queued and commits it as one batch (one lock,
//! one `write_all`, one `sync_data`), answers everyone, and passes the lead to the next
//! waiter if more arrived meanwhile.
//!
//! The caller commits on its own thread ([`crate::blocking::run`]) rather than handing the
//! batch to a writer thread: a rotation appends four entries one after another, and a
//! hand-off there and back cost two thread wake-ups each (benches/store_rotation.rs).
//! Concurrent appends still share commits: they queue while one is in flight.
//!
//! Every batch is written under an exclusive `flock`, and the chain is re-read from the file
//! whenever its length is not what this writer last left, so several processes (or several
//! handles in one process) appending to one file still produce one valid chain.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::Utc;
use tokio::sync::oneshot;

use super::entry::{self, GENESIS};
use super::{AuditError, AuditEvent};

/// Handle to an open audit log; cheap to clone, shared by every task.
///
/// The file is closed when every handle is dropped, or at [`AuditLog::close`].
#[derive(Clone)]
pub struct AuditLog {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.shared.path)
            .finish_non_exhaustive()
    }
}

/// Where an appended entry landed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// The entry's sequence number.
    pub seq: u64,
    /// The entry's hash (hex).
    pub hash: String,
}

/// Counters of one open log since it was opened (for metrics, and to see group commit work).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuditStats {
    /// `append` calls queued for a commit.
    pub submitted: u64,
    /// Entries written and fsynced.
    pub appended: u64,
    /// `sync_data` calls made; below `appended` when appends shared a commit.
    pub fsyncs: u64,
}

/// State shared by the handles.
struct Shared {
    path: PathBuf,
    submitted: AtomicU64,
    appended: AtomicU64,
    fsyncs: AtomicU64,
    /// Told of every event once it is durable (metrics count what the log records).
    observer: std::sync::OnceLock<Observer>,
    queue: Mutex<Queue>,
}

/// A callback told of each event once it is durable.
pub type Observer = Arc<dyn Fn(&AuditEvent) + Send + Sync>;

/// What is waiting to be written, and who may write it.
struct Queue {
    /// The open file; `None` once closed (or after a writer panic).
    writer: Option<Writer>,
    /// Someone is committing, or has been told to: nobody else starts.
    leading: bool,
    requests: Vec<Request>,
    /// Numbers the requests, so a leader finds its own.
    next_ticket: u64,
}

struct Request {
    ticket: u64,
    kind: Kind,
    /// Whom to answer; `None` for the leader's own request (it takes its result directly)
    /// and for a waiter that went away.
    reply: Option<oneshot::Sender<Turn>>,
}

enum Kind {
    Append(AuditEvent),
    /// Write what was queued before this, then close the file.
    Close,
}

/// What a waiting caller is told.
enum Turn {
    /// Its request is done.
    Done(Result<Receipt, AuditError>),
    /// Its request is still queued and nobody is committing: it leads the next commit.
    Lead,
}

impl AuditLog {
    /// Opens (creating if absent, 0600) the log at `path`.
    ///
    /// Creates missing parent directories (0700), repairs a torn tail (a last line without
    /// `\n` was never acknowledged, so it is cut off with a warning), and refuses a log whose
    /// last complete line is not an intact entry: appending after damage would bury it.
    pub async fn open(path: &Path) -> Result<Self, AuditError> {
        let owned = path.to_path_buf();
        let writer = crate::blocking::run(move || Writer::open(owned))
            .await
            .map_err(|e| io_error(path, e))??;
        Ok(Self {
            shared: Arc::new(Shared {
                path: path.to_path_buf(),
                submitted: AtomicU64::new(0),
                appended: AtomicU64::new(0),
                fsyncs: AtomicU64::new(0),
                observer: std::sync::OnceLock::new(),
                queue: Mutex::new(Queue {
                    writer: Some(writer),
                    leading: false,
                    requests: Vec::new(),
                    next_ticket: 0,
                }),
            }),
        })
    }

    /// Appends one event; returns once it is durable (fsynced).
    pub async fn append(&self, event: AuditEvent) -> Result<Receipt, AuditError> {
        let observed = self
            .shared
            .observer
            .get()
            .map(|o| (o.clone(), event.clone()));
        let receipt = self.request(Kind::Append(event)).await?;
        if let Some((observer, event)) = observed {
            observer(&event);
        }
        Ok(receipt)
    }

    /// Sets the callback told of every event once it is durable (for all clones of this
    /// handle). Only the first call takes effect.
    pub fn observe(&self, observer: Observer) {
        let _ = self.shared.observer.set(observer);
    }

    /// Writes what is queued and closes the file. Later appends through any handle fail
    /// with [`AuditError::Closed`].
    pub async fn close(&self) {
        // An error only means the log was closed already, which is what was asked.
        let _ = self.request(Kind::Close).await;
    }

    /// Counters since this log was opened (shared by all clones of the handle).
    pub fn stats(&self) -> AuditStats {
        AuditStats {
            submitted: self.shared.submitted.load(Ordering::Relaxed),
            appended: self.shared.appended.load(Ordering::Relaxed),
            fsyncs: self.shared.fsyncs.load(Ordering::Relaxed),
        }
    }

    /// The file this handle appends to.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Queues `kind`; leads a commit if nobody is committing, else waits to be answered
    /// (or to be handed the lead).
    async fn request(&self, kind: Kind) -> Result<Receipt, AuditError> {
        let (ticket, waiting) = {
            let mut queue = self.shared.lock();
            if queue.writer.is_none() && !queue.leading {
                return Err(AuditError::Closed);
            }
            let ticket = queue.next_ticket;
            queue.next_ticket += 1;
            let (reply, answer) = oneshot::channel();
            let waiting = if queue.leading {
                Some(Waiting {
                    shared: Arc::clone(&self.shared),
                    answer: Some(answer),
                })
            } else {
                queue.leading = true;
                None
            };
            if matches!(kind, Kind::Append(_)) {
                self.shared.submitted.fetch_add(1, Ordering::Relaxed);
            }
            queue.requests.push(Request {
                ticket,
                kind,
                reply: waiting.is_some().then_some(reply),
            });
            (ticket, waiting)
        };
        if let Some(mut waiting) = waiting {
            match waiting.turn().await {
                Turn::Done(result) => return result,
                Turn::Lead => {}
            }
        }
        let shared = Arc::clone(&self.shared);
        crate::blocking::run(move || shared.lead(Some(ticket)))
            .await
            .map_err(|_| AuditError::Closed)?
            .unwrap_or(Err(AuditError::Closed))
    }
}

/// A caller waiting for its answer. If it goes away after being handed the lead, the lead
/// is not lost: the commit it was to make is made without it.
struct Waiting {
    shared: Arc<Shared>,
    answer: Option<oneshot::Receiver<Turn>>,
}

impl Waiting {
    async fn turn(&mut self) -> Turn {
        let answer = self.answer.as_mut().expect("awaited once");
        let turn = answer.await.unwrap_or(Turn::Done(Err(AuditError::Closed)));
        self.answer = None;
        turn
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let Some(mut answer) = self.answer.take() else {
            return;
        };
        if let Ok(Turn::Lead) = answer.try_recv() {
            let shared = Arc::clone(&self.shared);
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn_blocking(move || shared.lead(None))),
                Err(_) => drop(shared.lead(None)),
            }
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // The queue is only pushed to and taken from; a panic elsewhere leaves it usable.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Commits everything queued, as the one caller allowed to (`leading` is set), then
    /// hands the lead to the next waiter or gives it up. Returns the result of request
    /// `mine`, if it was among those committed.
    fn lead(&self, mine: Option<u64>) -> Option<Result<Receipt, AuditError>> {
        let (mut writer, requests) = {
            let mut queue = self.lock();
            (queue.writer.take(), std::mem::take(&mut queue.requests))
        };
        let mut own = None;
        let mut answer = |request: Request, result: Result<Receipt, AuditError>| {
            if Some(request.ticket) == mine {
                own = Some(result);
            } else if let Some(reply) = request.reply {
                let _ = reply.send(Turn::Done(result));
            }
        };

        // Appends up to the first close are one batch; everything after a close is refused.
        let mut batch = Vec::new();
        let mut rest = Vec::new();
        for request in requests {
            if writer.is_some() && rest.is_empty() && matches!(request.kind, Kind::Append(_)) {
                batch.push(request);
            } else {
                rest.push(request);
            }
        }
        if !batch.is_empty() {
            let events: Vec<&AuditEvent> = batch
                .iter()
                .map(|r| match &r.kind {
                    Kind::Append(event) => event,
                    Kind::Close => unreachable!("only appends are batched"),
                })
                .collect();
            let committed = writer.as_mut().map(|w| {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.commit(&events)))
            });
            match committed {
                Some(Ok(Ok(receipts))) => {
                    self.fsyncs.fetch_add(1, Ordering::Relaxed);
                    self.appended
                        .fetch_add(receipts.len() as u64, Ordering::Relaxed);
                    for (request, receipt) in batch.into_iter().zip(receipts) {
                        answer(request, Ok(receipt));
                    }
                }
                Some(Ok(Err(error))) => {
                    for request in batch {
                        answer(request, Err(copy_error(&error)));
                    }
                }
                _ => {
                    // The writer's state is unknown after a panic; nothing more is written.
                    tracing::error!(path = %self.path.display(), "audit writer failed");
                    writer = None;
                    for request in batch {
                        answer(request, Err(AuditError::Closed));
                    }
                }
            }
        }
        for request in rest {
            // A close (or a request after one) finds the file closed, which it asked for or
            // must be told.
            let closing = matches!(request.kind, Kind::Close);
            if closing {
                writer = None;
            }
            answer(request, Err(AuditError::Closed));
        }

        let mut queue = self.lock();
        queue.writer = writer;
        // Pass the lead to the first waiter still there; its request stays queued for it.
        for request in queue.requests.iter_mut() {
            if let Some(reply) = request.reply.take()
                && reply.send(Turn::Lead).is_ok()
            {
                return own;
            }
        }
        queue.leading = false;
        own
    }
}

/// Each waiter of a failed batch gets its own copy of the error.
fn copy_error(error: &AuditError) -> AuditError {
    match error {
        AuditError::Io { path, source } => AuditError::Io {
            path: path.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        AuditError::Corrupt { path, message } => AuditError::Corrupt {
            path: path.clone(),
            message: message.clone(),
        },
        AuditError::Key { path, message } => AuditError::Key {
            path: path.clone(),
            message: message.clone(),
        },
        AuditError::Closed => AuditError::Closed,
    }
}

fn io_error(path: &Path, source: std::io::Error) -> AuditError {
    AuditError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The file and where the chain stands; owned by the writer thread.
struct Writer {
    path: PathBuf,
    file: File,
    host: String,
    pid: u32,
    /// The file's length after this writer's last write; `None` when unknown (after an
    /// error), which forces a re-read of the tail before the next batch.
    known_len: Option<u64>,
    last_seq: u64,
    last_hash: String,
}

impl Writer {
    fn open(path: PathBuf) -> Result<Self, AuditError> {
        let io = |e| io_error(&path, e);
        let parent = parent_or_cwd(&path);
        let created_dirs = create_dirs(parent).map_err(io)?;

        let mut options = OpenOptions::new();
        options.read(true).append(true).mode(0o600);
        let (file, created) = match options.clone().create_new(true).open(&path) {
            Ok(file) => (file, true),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                (options.open(&path).map_err(io)?, false)
            }
            Err(e) => return Err(io(e)),
        };
        if created {
            // The new directory entries must be durable before any entry is acknowledged.
            sync_dir(parent).map_err(io)?;
            for dir in &created_dirs {
                sync_dir(parent_or_cwd(dir)).map_err(io)?;
            }
        } else {
            let mode = file.metadata().map_err(io)?.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = format_args!("{:o}", mode & 0o777),
                    "the audit log is accessible to group or others; chmod 600 it"
                );
            }
        }

        let mut writer = Writer {
            path: path.clone(),
            file,
            host: crate::process::hostname(),
            pid: std::process::id(),
            known_len: None,
            last_seq: 0,
            last_hash: GENESIS.to_string(),
        };
        writer.file.lock().map_err(io)?;
        let result = writer.catch_up();
        writer.unlock();
        result?;
        Ok(writer)
    }

    fn io(&self, e: std::io::Error) -> AuditError {
        io_error(&self.path, e)
    }

    fn unlock(&self) {
        if let Err(e) = self.file.unlock() {
            // Closing the file releases the lock anyway; other writers wait until then.
            tracing::warn!(path = %self.path.display(), error = %e, "cannot unlock the audit log");
        }
    }

    /// Under the lock: if someone else wrote since our last batch, continue from the file's
    /// true last entry (repairing a torn tail first).
    fn catch_up(&mut self) -> Result<(), AuditError> {
        let len = self.file.metadata().map_err(|e| self.io(e))?.len();
        if self.known_len == Some(len) {
            return Ok(());
        }
        if let Some(known) = self.known_len
            && len < known
        {
            // Only someone outside rekeyd shrinks the log; the chain will go on from what
            // is left, so say so loudly (an anchored verify will also report it).
            tracing::warn!(
                path = %self.path.display(),
                was = known,
                now = len,
                "the audit log shrank since rekeyd last wrote to it"
            );
        }
        let (len, last) = read_tail(&self.file, &self.path, len)?;
        self.known_len = Some(len);
        (self.last_seq, self.last_hash) = last;
        Ok(())
    }

    /// Writes one batch: one lock, one `write_all`, one `sync_data`.
    fn commit(&mut self, events: &[&AuditEvent]) -> Result<Vec<Receipt>, AuditError> {
        self.file.lock().map_err(|e| self.io(e))?;
        let result = self.commit_locked(events);
        self.unlock();
        if result.is_err() {
            // Part of the batch may be in the file: learn the truth from it next time.
            self.known_len = None;
        }
        result
    }

    fn commit_locked(&mut self, events: &[&AuditEvent]) -> Result<Vec<Receipt>, AuditError> {
        self.catch_up()?;
        let mut seq = self.last_seq;
        let mut prev = self.last_hash.clone();
        let mut batch = Vec::with_capacity(events.len() * 256);
        let mut receipts = Vec::with_capacity(events.len());
        for event in events {
            seq += 1;
            let sealed = entry::seal(seq, Utc::now(), &self.host, self.pid, &prev, event)
                .map_err(|e| self.io(std::io::Error::other(e)))?;
            batch.extend_from_slice(&sealed.line);
            receipts.push(Receipt {
                seq,
                hash: sealed.hash.clone(),
            });
            prev = sealed.hash;
        }
        self.file.write_all(&batch).map_err(|e| self.io(e))?;
        self.file.sync_data().map_err(|e| self.io(e))?;
        self.known_len = self.known_len.map(|len| len + batch.len() as u64);
        self.last_seq = seq;
        self.last_hash = prev;
        Ok(receipts)
    }
}

/// Finds the last entry of a file of `len` bytes, cutting off a torn last line first.
/// Returns the (possibly shorter) length and the last entry's `(seq, hash)`.
fn read_tail(file: &File, path: &Path, len: u64) -> Result<(u64, (u64, String)), AuditError> {
    let io = |e| io_error(path, e);
    if len == 0 {
        return Ok((0, (0, GENESIS.to_string())));
    }
    let mut len = len;
    let last_newline = rfind_newline(file, len).map_err(io)?;
    if last_newline != Some(len - 1) {
        // Writes happen under the lock we hold, so nobody is mid-write: this line was cut
        // by a crash and never acknowledged.
        let keep = last_newline.map_or(0, |at| at + 1);
        tracing::warn!(
            path = %path.display(),
            bytes = len - keep,
            "cutting off a torn last line of the audit log (a write that never completed)"
        );
        file.set_len(keep).map_err(io)?;
        file.sync_data().map_err(io)?;
        len = keep;
        if len == 0 {
            return Ok((0, (0, GENESIS.to_string())));
        }
    }
    let start = rfind_newline(file, len - 1)
        .map_err(io)?
        .map_or(0, |at| at + 1);
    let mut line = vec![0; (len - 1 - start) as usize];
    file.read_exact_at(&mut line, start).map_err(io)?;
    let corrupt = |what: &str| AuditError::Corrupt {
        path: path.display().to_string(),
        message: format!(
            "the last line (at byte {start}) {what}; run `rekeyd audit verify` and move the damaged log aside"
        ),
    };
    let seal = entry::unseal(&line).ok_or_else(|| corrupt("is not a sealed audit entry"))?;
    if !seal.intact() {
        return Err(corrupt("does not match its hash"));
    }
    let head = entry::head(&line).ok_or_else(|| corrupt("has no seq"))?;
    Ok((len, (head.seq, seal.claimed.to_string())))
}

/// The offset of the last `\n` before offset `end`, reading backwards in chunks.
fn rfind_newline(file: &File, end: u64) -> std::io::Result<Option<u64>> {
    const CHUNK: u64 = 8192;
    let mut buf = vec![0; CHUNK as usize];
    let mut end = end;
    while end > 0 {
        let start = end.saturating_sub(CHUNK);
        let chunk = &mut buf[..(end - start) as usize];
        file.read_exact_at(chunk, start)?;
        if let Some(at) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(Some(start + at as u64));
        }
        end = start;
    }
    Ok(None)
}

/// The directory holding `path`; `.` for a bare relative name (whose parent is "").
fn parent_or_cwd(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Creates `dir` and missing ancestors (0700); returns those it created, outermost first.
fn create_dirs(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut missing = Vec::new();
    let mut cursor = Some(dir);
    while let Some(d) = cursor.filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        missing.push(d.to_path_buf());
        cursor = d.parent();
    }
    missing.reverse();
    if !missing.is_empty() {
        DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    Ok(missing)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::verify;

    fn started(n: usize) -> AuditEvent {
        AuditEvent::RotationStarted {
            secret: format!("app/secret-{n}"),
            backend: "file".into(),
            version: format!("v{n}"),
            slot: None,
            trigger: crate::audit::Trigger::Manual {
                by: "ops@host".into(),
            },
        }
    }

    /// Every event read back from the file, in file order.
    fn events_in(path: &Path) -> Vec<AuditEvent> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    fn seqs_in(path: &Path) -> Vec<u64> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|line| entry::head(line.as_bytes()).unwrap().seq)
            .collect()
    }

    /// A new log in `dir`, and its file's lock held from another open file description
    /// (as another process would hold it): commits wait until the holder lets go.
    async fn log_locked_elsewhere(dir: &Path) -> (AuditLog, PathBuf, File) {
        let path = dir.join("audit.jsonl");
        let log = AuditLog::open(&path).await.unwrap();
        let holder = File::open(&path).unwrap();
        holder.lock().unwrap();
        (log, path, holder)
    }

    /// Returns once `n` appends have been handed to the log.
    async fn until_submitted(log: &AuditLog, n: u64) {
        while log.stats().submitted < n {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn round_trip_verifies_and_head_is_the_last_receipt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/dir/audit.jsonl");
        let log = AuditLog::open(&path).await.unwrap();
        let events = vec![
            AuditEvent::DaemonStarted {
                version: "0.1.0".into(),
                pid: std::process::id(),
            },
            started(1),
            AuditEvent::RotationFailed {
                secret: "app/secret-1".into(),
                version: None,
                step: "generate".into(),
                error: "quote \" and newline \n survive".into(),
                will_retry: true,
            },
        ];
        let mut receipts = Vec::new();
        for event in &events {
            receipts.push(log.append(event.clone()).await.unwrap());
        }
        log.close().await;

        assert_eq!(
            receipts.iter().map(|r| r.seq).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(events_in(&path), events);
        let report = verify(&path).unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!(report.entries, 3);
        let last = receipts.last().unwrap();
        assert_eq!(report.head, Some((last.seq, last.hash.clone())));

        // Reopening continues the chain rather than starting a new one.
        let log = AuditLog::open(&path).await.unwrap();
        let receipt = log.append(started(2)).await.unwrap();
        assert_eq!(receipt.seq, 4);
        log.close().await;
        let report = verify(&path).unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!(report.head, Some((4, receipt.hash)));
    }

    #[tokio::test]
    async fn new_log_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path).await.unwrap();
        log.append(started(1)).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_appends_share_fsyncs_and_form_one_chain() {
        let dir = tempfile::tempdir().unwrap();
        // The first commit waits for the lock while all 64 appends queue up behind it.
        let (log, path, holder) = log_locked_elsewhere(dir.path()).await;
        let tasks: Vec<_> = (0..64)
            .map(|n| {
                let log = log.clone();
                tokio::spawn(async move { log.append(started(n)).await.unwrap() })
            })
            .collect();
        until_submitted(&log, 64).await;
        holder.unlock().unwrap();

        let mut seqs = Vec::new();
        for task in tasks {
            seqs.push(task.await.unwrap().seq);
        }
        seqs.sort();
        assert_eq!(seqs, (1..=64).collect::<Vec<_>>());

        let stats = log.stats();
        assert_eq!(stats.appended, 64);
        assert!(stats.fsyncs < 64, "no group commit: {stats:?}");
        // One commit may have started before the others queued; the rest shared one.
        assert!(stats.fsyncs <= 2, "{stats:?}");

        let report = verify(&path).unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!(report.entries, 64);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_waiter_that_goes_away_does_not_stall_the_queue() {
        let dir = tempfile::tempdir().unwrap();
        // The first append leads and waits for the file's lock; two more queue behind it.
        let (log, path, holder) = log_locked_elsewhere(dir.path()).await;
        let spawn = |n| {
            let log = log.clone();
            tokio::spawn(async move { log.append(started(n)).await })
        };
        let leader = spawn(1);
        until_submitted(&log, 1).await;
        let gone = spawn(2);
        let next = spawn(3);
        until_submitted(&log, 3).await;
        // The first waiter in line is cancelled: the lead must pass to the one after it.
        gone.abort();
        assert!(gone.await.unwrap_err().is_cancelled());
        holder.unlock().unwrap();

        assert_eq!(leader.await.unwrap().unwrap().seq, 1);
        // The cancelled append was queued before it went away, so it is written with the
        // next batch.
        let next = tokio::time::timeout(std::time::Duration::from_secs(10), next)
            .await
            .expect("the lead was lost with the cancelled waiter");
        assert_eq!(next.unwrap().unwrap().seq, 3);
        assert_eq!(log.append(started(4)).await.unwrap().seq, 4);
        log.close().await;
        assert_eq!(seqs_in(&path), [1, 2, 3, 4]);
        let report = verify(&path).unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_handles_on_one_file_keep_one_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let a = AuditLog::open(&path).await.unwrap();
        let b = AuditLog::open(&path).await.unwrap();

        // Strict alternation: each handle must notice the other's entry every time.
        for n in 0..6 {
            let log = if n % 2 == 0 { &a } else { &b };
            assert_eq!(log.append(started(n)).await.unwrap().seq, n as u64 + 1);
        }

        // And both at once.
        let tasks: Vec<_> = (0..64)
            .map(|n| {
                let log = if n % 2 == 0 { a.clone() } else { b.clone() };
                tokio::spawn(async move { log.append(started(n)).await.unwrap() })
            })
            .collect();
        let mut seqs = Vec::new();
        for task in tasks {
            seqs.push(task.await.unwrap().seq);
        }
        seqs.sort();
        assert_eq!(seqs, (7..=70).collect::<Vec<_>>());
        a.close().await;
        b.close().await;

        assert_eq!(seqs_in(&path), (1..=70).collect::<Vec<_>>());
        let report = verify(&path).unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!(report.entries, 70);
    }

    #[tokio::test]
    async fn torn_tail_is_cut_on_open_and_the_chain_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path).await.unwrap();
        log.append(started(1)).await.unwrap();
        let second = log.append(started(2)).await.unwrap();
        log.close().await;
        let intact = std::fs::read(&path).unwrap();

        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"{\"seq\":3,\"ts\":\"2030-01").unwrap();
        drop(file);
        assert!(!verify(&path).unwrap().problems.is_empty());

        let log = AuditLog::open(&path).await.unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), intact);
        let third = log.append(started(3)).await.unwrap();
        log.close().await;
        assert_eq!(third.seq, second.seq + 1);
        let report = verify(&path).unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!(report.head, Some((3, third.hash)));
    }

    #[tokio::test]
    async fn damaged_last_line_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path).await.unwrap();
        log.append(started(1)).await.unwrap();
        log.close().await;
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("secret-1", "secret-9")).unwrap();
        let err = AuditLog::open(&path).await.unwrap_err();
        assert!(matches!(err, AuditError::Corrupt { .. }), "{err}");
    }

    #[tokio::test]
    async fn dropping_every_handle_ends_the_writer_task() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(&dir.path().join("audit.jsonl"))
            .await
            .unwrap();
        let other = log.clone();
        log.append(started(1)).await.unwrap();
        // The task holds the shared state until it ends.
        let shared = Arc::downgrade(&log.shared);
        drop(log);
        drop(other);
        let ended = async {
            while shared.upgrade().is_some() {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), ended)
            .await
            .expect("the writer task outlived its handles");
    }

    #[tokio::test]
    async fn closed_log_refuses_appends_from_every_clone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path).await.unwrap();
        let other = log.clone();
        log.append(started(1)).await.unwrap();
        log.close().await;
        assert!(matches!(
            other.append(started(2)).await,
            Err(AuditError::Closed)
        ));
        assert_eq!(seqs_in(&path), [1]);
    }
}
