//! The embedded encrypted file store: one JSON file per secret in one directory, every
//! value sealed with AES-256-GCM.
//!
//! Durability and concurrency come from the file system: each change is a
//! read-modify-write under an exclusive `flock` on the secret's lock file (so two rekeyd
//! processes never interleave) that appends the new state as one self-checking record
//! (`record.rs`) and fdatasyncs it. A secret's first file is written to a temporary file,
//! fsynced, renamed into place and the directory fsynced. Readers take no lock: they take
//! the last intact record, so a racing append shows the old state or the new one. The
//! format is described in `docs/adr/0004-file-store-format.md` and
//! `docs/adr/0006-file-store-append-records.md`.

mod key;
mod record;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::Utc;
use ring::aead::{Aad, NONCE_LEN, Nonce};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use super::versions::{self, Promoted, PutDecision, StoredVersion};
use super::{
    Backend, Capabilities, Error, ErrorStatus, PutOutcome, Result, SecretDescription, Selector,
};
use crate::policy::FileBackendConfig;
use crate::secret::{SecretName, SecretValue, Stage, VersionId};
use record::Layout;

/// A write that would take a secret's file past this many bytes rewrites it whole, as one
/// record, instead of appending. 64 KiB bounds what every read reads and scans (one small
/// read), and with a typical record of under 1 KiB (a few versions) compaction is about one
/// write in a hundred, so its extra fsync and rename cost about 1% amortised. A state
/// bigger than the bound is written whole every time, as format 1 was.
const COMPACT_AT: u64 = 64 * 1024;

/// The encrypted file store.
#[derive(Clone, Debug)]
pub struct FileBackend {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    name: String,
    dir: PathBuf,
    key: key::StoreKey,
    rng: SystemRandom,
}

/// One secret's file.
#[derive(Serialize, Deserialize)]
struct SecretFile {
    format: u32,
    name: SecretName,
    key_id: String,
    versions: Vec<StoredVersion<Sealed>>,
}

/// A sealed value: AES-256-GCM under the store key, bound by AAD to secret and version.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Sealed {
    nonce: String,
    ciphertext: String,
}

impl FileBackend {
    /// Opens (creating if needed, mode 0700) the store described by `config`, loading or
    /// creating its key. Says so in the log when it creates a key.
    pub fn open(name: &str, config: &FileBackendConfig) -> Result<Self> {
        let generic = |message: String| Error::Generic {
            backend: name.to_owned(),
            message,
            status: ErrorStatus::Permanent,
            source: None,
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&config.path)
            .map_err(|e| {
                generic(format!(
                    "cannot create store directory {}: {e}",
                    config.path.display()
                ))
            })?;
        let env = config
            .key_env
            .as_deref()
            .map(|var| (var, std::env::var(var).ok()));
        // A fresh key over a store that already holds secrets would orphan every one of
        // them: that is a lost or unmounted key, never a first start.
        let no_key = !config.key_file.exists() && env.as_ref().is_none_or(|(_, v)| v.is_none());
        if no_key {
            let sealed = fs::read_dir(&config.path)
                .map(|entries| {
                    entries
                        .filter_map(|e| e.ok())
                        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                        .count()
                })
                .unwrap_or(0);
            if sealed > 0 {
                let var = config
                    .key_env
                    .as_deref()
                    .map(|v| format!(" and {v} is unset"))
                    .unwrap_or_default();
                return Err(generic(format!(
                    "store {} holds {sealed} secrets but its key file {} is missing{var}: restore the key from backup (a new key could not read them)",
                    config.path.display(),
                    config.key_file.display()
                )));
            }
        }
        let (key, source) = key::load(&config.key_file, env).map_err(generic)?;
        // Writes a killed process left half-done (never renamed into place): litter only.
        if let Err(e) = crate::temp_file::sweep(&config.path) {
            tracing::warn!(backend = name, error = %e, "could not clean the store's temporary files");
        }
        match source {
            key::KeySource::CreatedFile => tracing::warn!(
                backend = name,
                key_file = %config.key_file.display(),
                key_id = %key.id,
                "created a new store key file (mode 0600); back it up: without it the store cannot be read"
            ),
            key::KeySource::ExistingFile => {
                tracing::debug!(backend = name, key_file = %config.key_file.display(), "loaded store key")
            }
            key::KeySource::Env => {
                tracing::debug!(backend = name, "loaded store key from the environment")
            }
        }
        Ok(Self {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                dir: config.path.clone(),
                key,
                rng: SystemRandom::new(),
            }),
        })
    }

    /// Runs file work (a rotation's reads and fsync'd writes, step after step) on this
    /// thread where the runtime allows (`crate::blocking`): no hand-off to the blocking pool
    /// and back, which cost two thread wake-ups per step (benches/store_rotation.rs).
    async fn on_file<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Inner) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = Arc::clone(&self.inner);
        crate::blocking::run(move || work(&inner))
            .await
            .map_err(|e| self.inner.io_error("file store task", e))?
    }
}

/// How much of a store file's end a read starts with: a few records of a secret with its
/// current, previous and pending versions.
const FIRST_READ: u64 = 8 * 1024;

/// The last record of the store file at `path`, reading from its end only as much as it
/// takes (a file holds up to [`COMPACT_AT`] bytes of older records nobody needs).
fn read_last_record(path: &Path) -> std::io::Result<std::result::Result<record::Parsed, String>> {
    use std::os::unix::fs::FileExt;
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut want = FIRST_READ.min(len);
    // The first read goes to the stack: a heap buffer per read, made on whichever thread
    // calls, fragments the heap the daemon keeps when it reads 100,000 files at start-up.
    let mut first = [0u8; FIRST_READ as usize];
    let mut grown = Vec::new();
    loop {
        let base = len - want;
        let tail = if want <= FIRST_READ {
            &mut first[..want as usize]
        } else {
            grown.resize(want as usize, 0);
            &mut grown[..]
        };
        match file.read_exact_at(tail, base) {
            Ok(()) => {}
            // A writer cut a torn end off meanwhile (it holds the lock, readers do not):
            // read again at the new length.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return read_last_record(path);
            }
            Err(e) => return Err(e),
        }
        if let Some(parsed) = record::parse_tail(tail, base, len) {
            return Ok(parsed);
        }
        want = (want * 4).min(len);
    }
}

/// File names: `[A-Za-z0-9_-]` kept, every other byte `%XX`, so names map one to one and
/// `/` never makes a subdirectory.
fn encode_name(name: &SecretName) -> String {
    let mut out = String::new();
    for b in name.as_str().bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn decode_name(stem: &str) -> Option<SecretName> {
    let mut bytes = Vec::new();
    let mut rest = stem.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'%' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(b);
            rest = tail;
        }
    }
    SecretName::new(String::from_utf8(bytes).ok()?).ok()
}

impl Inner {
    fn io_error(&self, what: &str, source: std::io::Error) -> Error {
        let status = match source.kind() {
            std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock => {
                ErrorStatus::Temporary
            }
            _ => ErrorStatus::Permanent,
        };
        Error::Generic {
            backend: self.name.clone(),
            message: format!("{what} failed"),
            status,
            source: Some(Box::new(source)),
        }
    }

    fn corrupt(&self, message: String) -> Error {
        Error::Generic {
            backend: self.name.clone(),
            message,
            status: ErrorStatus::Permanent,
            source: None,
        }
    }

    fn not_found(&self, what: String) -> Error {
        Error::NotFound {
            backend: self.name.clone(),
            what,
        }
    }

    fn path(&self, name: &SecretName) -> PathBuf {
        self.dir.join(format!("{}.json", encode_name(name)))
    }

    /// The secret's file as read, with where its next write goes; `None` if it has none.
    fn load(&self, name: &SecretName) -> Result<Option<record::Parsed>> {
        let path = self.path(name);
        let parsed = match read_last_record(&path) {
            Ok(parsed) => parsed,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io_error(&format!("reading {}", path.display()), e)),
        };
        let parsed = parsed.map_err(|e| {
            self.corrupt(format!("{} is not a valid store file: {e}", path.display()))
        })?;
        if parsed.file.key_id != self.key.id {
            return Err(self.corrupt(format!(
                "{} was sealed with key {} but the configured key is {}: wrong key file or key variable",
                path.display(),
                parsed.file.key_id,
                self.key.id
            )));
        }
        Ok(Some(parsed))
    }

    fn require_file(&self, name: &SecretName) -> Result<SecretFile> {
        Ok(self.require(name)?.0)
    }

    /// The secret's state and how its file lies; NotFound if it has no file.
    fn require(&self, name: &SecretName) -> Result<(SecretFile, Layout)> {
        let parsed = self
            .load(name)?
            .ok_or_else(|| self.not_found(format!("secret {name:?}")))?;
        Ok((parsed.file, parsed.layout))
    }

    /// Holds the secret's exclusive lock for one read-modify-write.
    fn lock(&self, name: &SecretName) -> Result<File> {
        let path = self.dir.join(format!("{}.lock", encode_name(name)));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| self.io_error(&format!("opening lock {}", path.display()), e))?;
        file.lock()
            .map_err(|e| self.io_error(&format!("locking {}", path.display()), e))?;
        Ok(file)
    }

    /// Persists `file` as the secret's new state, under its lock. `layout` is how its file
    /// lay when read under the same lock (`None`: there is no file yet).
    ///
    /// A format 2 file gets the record appended: one write and one fdatasync, no new inode
    /// and no directory update. A new file, a format 1 file and a file that would grow past
    /// [`COMPACT_AT`] are written whole.
    fn write_file(&self, file: &SecretFile, layout: Option<Layout>) -> Result<()> {
        let path = self.path(&file.name);
        let record = record::encode(file);
        match layout {
            Some(Layout::Records { end, len }) if end + record.len() as u64 <= COMPACT_AT => {
                self.append(&path, end, len, &record)
            }
            // Compaction: the file restarts from the current state alone.
            Some(Layout::Records { .. } | Layout::Legacy) | None => self.replace(&path, &record),
        }
    }

    /// Appends `record` after the last intact record, which ends at `end` of `len` bytes:
    /// a torn tail a crash left is cut off first, so nothing but records lies between them.
    fn append(&self, path: &Path, end: u64, len: u64, record: &[u8]) -> Result<()> {
        let mut out = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| self.io_error(&format!("opening {}", path.display()), e))?;
        let write = |out: &mut File| -> std::io::Result<()> {
            if len != end {
                tracing::warn!(
                    backend = %self.name,
                    file = %path.display(),
                    bytes = len - end,
                    "cutting off the torn end of a store file (a write a crash interrupted)"
                );
                out.set_len(end)?;
            }
            // One write_all: a reader sees the record whole or as a torn line it skips.
            out.write_all(record)?;
            crate::fault::point("store_after_append");
            out.sync_data()
        };
        write(&mut out).map_err(|e| {
            // Best effort: a failed write should not show (readers would take a record
            // that was never made durable for the caller's success).
            let _ = out.set_len(end);
            self.io_error(&format!("appending to {}", path.display()), e)
        })
    }

    /// Writes `record` as the whole file: to a temporary file, fsync, rename over, fsync
    /// the directory (the new directory entry must be durable too).
    fn replace(&self, path: &Path, record: &[u8]) -> Result<()> {
        let tmp = crate::temp_file::path_for(path);
        let write = || -> std::io::Result<()> {
            let mut out = OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .mode(0o600)
                .open(&tmp)?;
            out.write_all(record)?;
            out.sync_all()?;
            fs::rename(&tmp, path)?;
            File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            self.io_error(&format!("writing {}", path.display()), e)
        })
    }

    fn aad(name: &SecretName, version: &VersionId) -> Vec<u8> {
        let mut aad = b"rekeyd-file-v1\0".to_vec();
        aad.extend_from_slice(name.as_str().as_bytes());
        aad.push(0);
        aad.extend_from_slice(version.as_str().as_bytes());
        aad
    }

    fn seal(&self, name: &SecretName, version: &VersionId, value: &SecretValue) -> Result<Sealed> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| self.corrupt("the system random number generator failed".to_owned()))?;
        let mut buffer = zeroize::Zeroizing::new(value.expose().to_vec());
        self.key
            .aead
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(Self::aad(name, version)),
                &mut *buffer,
            )
            .map_err(|_| self.corrupt("encryption failed".to_owned()))?;
        Ok(Sealed {
            nonce: STANDARD.encode(nonce),
            ciphertext: STANDARD.encode(&buffer[..]),
        })
    }

    fn open(&self, name: &SecretName, version: &StoredVersion<Sealed>) -> Result<SecretValue> {
        let fail = || {
            self.corrupt(format!(
                "cannot decrypt version {} of {name:?}: the file was altered or moved",
                version.id
            ))
        };
        let nonce: [u8; NONCE_LEN] = STANDARD
            .decode(&version.value.nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or_else(fail)?;
        let mut buffer = zeroize::Zeroizing::new(
            STANDARD
                .decode(&version.value.ciphertext)
                .map_err(|_| fail())?,
        );
        let plain_len = self
            .key
            .aead
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(Self::aad(name, &version.id)),
                &mut buffer,
            )
            .map_err(|_| fail())?
            .len();
        Ok(SecretValue::new(buffer[..plain_len].to_vec()))
    }
}

#[async_trait]
impl Backend for FileBackend {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            creates_missing: true,
            keeps_unlabelled_versions: false,
            binary_values: true,
        }
    }

    async fn describe(&self, name: &SecretName) -> Result<SecretDescription> {
        let name = name.clone();
        self.on_file(move |inner| {
            let file = inner.require_file(&name)?;
            Ok(SecretDescription {
                versions: versions::describe(&file.versions),
                name,
            })
        })
        .await
    }

    async fn put_pending(
        &self,
        name: &SecretName,
        version: &VersionId,
        value: &SecretValue,
    ) -> Result<PutOutcome> {
        let (name, version, value) = (name.clone(), version.clone(), value.clone());
        self.on_file(move |inner| {
            let _lock = inner.lock(&name)?;
            let (mut file, layout) = match inner.load(&name)? {
                Some(parsed) => (parsed.file, Some(parsed.layout)),
                None => (
                    SecretFile {
                        format: record::FORMAT,
                        name: name.clone(),
                        key_id: inner.key.id.clone(),
                        versions: Vec::new(),
                    },
                    None,
                ),
            };
            match versions::decide_put(&file.versions, &version) {
                PutDecision::Exists(index) => {
                    if inner.open(&name, &file.versions[index])?.ct_eq(&value) {
                        Ok(PutOutcome::AlreadyPresent)
                    } else {
                        Err(Error::Conflict {
                            backend: inner.name.clone(),
                            secret: name.clone(),
                            version: version.clone(),
                        })
                    }
                }
                PutDecision::Insert => {
                    let sealed = inner.seal(&name, &version, &value)?;
                    file.versions.push(StoredVersion {
                        id: version.clone(),
                        created_at: Utc::now(),
                        stages: Vec::new(),
                        value: sealed,
                    });
                    let index = file.versions.len() - 1;
                    versions::move_stage(&mut file.versions, Stage::Pending, index);
                    inner.write_file(&file, layout)?;
                    Ok(PutOutcome::Created)
                }
            }
        })
        .await
    }

    async fn promote(
        &self,
        name: &SecretName,
        version: &VersionId,
        expected_current: Option<&VersionId>,
    ) -> Result<()> {
        let (name, version) = (name.clone(), version.clone());
        let expected = expected_current.cloned();
        self.on_file(move |inner| {
            let _lock = inner.lock(&name)?;
            let (mut file, layout) = inner.require(&name)?;
            let index = file
                .versions
                .iter()
                .position(|v| v.id == version)
                .ok_or_else(|| inner.not_found(format!("version {version} of {name:?}")))?;
            match versions::promote(&mut file.versions, index, expected.as_ref()) {
                Promoted::Moved => inner.write_file(&file, Some(layout)),
                Promoted::AlreadyCurrent => Ok(()),
                Promoted::Stale(found) => Err(versions::current_changed(
                    &inner.name,
                    &name,
                    expected.as_ref(),
                    found,
                )),
            }
        })
        .await
    }

    async fn discard_pending(&self, name: &SecretName, version: &VersionId) -> Result<()> {
        let (name, version) = (name.clone(), version.clone());
        self.on_file(move |inner| {
            let _lock = inner.lock(&name)?;
            let (mut file, layout) = inner.require(&name)?;
            if versions::unlabel_pending(&mut file.versions, &version) {
                versions::drop_unlabelled(&mut file.versions);
                inner.write_file(&file, Some(layout))?;
            }
            Ok(())
        })
        .await
    }

    async fn read(&self, name: &SecretName, selector: &Selector) -> Result<SecretValue> {
        let (name, selector) = (name.clone(), selector.clone());
        self.on_file(move |inner| {
            let file = inner.require_file(&name)?;
            let index = versions::find_index(&file.versions, &selector).ok_or_else(|| {
                inner.not_found(format!(
                    "{} of {name:?}",
                    versions::selector_text(&selector)
                ))
            })?;
            inner.open(&name, &file.versions[index])
        })
        .await
    }

    async fn list(&self) -> Result<Vec<SecretName>> {
        self.on_file(|inner| {
            let entries = fs::read_dir(&inner.dir)
                .map_err(|e| inner.io_error(&format!("listing {}", inner.dir.display()), e))?;
            let mut names = Vec::new();
            for entry in entries {
                let entry = entry.map_err(|e| inner.io_error("listing the store", e))?;
                let file_name = entry.file_name();
                if let Some(stem) = file_name.to_str().and_then(|n| n.strip_suffix(".json"))
                    && let Some(name) = decode_name(stem)
                {
                    names.push(name);
                }
            }
            names.sort();
            Ok(names)
        })
        .await
    }

    async fn retire(&self, name: &SecretName) -> Result<usize> {
        let name = name.clone();
        self.on_file(move |inner| {
            // After a rotation there is nearly always nothing to drop (promote drops the
            // version it takes the last stage from), so look without the lock first. A
            // version a concurrent writer unlabels after this look is the next retire's,
            // as if this one had run just before that writer.
            let unlabelled = |file: &SecretFile| file.versions.iter().any(|v| v.stages.is_empty());
            if !unlabelled(&inner.require_file(&name)?) {
                return Ok(0);
            }
            let _lock = inner.lock(&name)?;
            let (mut file, layout) = inner.require(&name)?;
            let removed = versions::drop_unlabelled(&mut file.versions);
            if removed > 0 {
                inner.write_file(&file, Some(layout))?;
            }
            Ok(removed)
        })
        .await
    }
}

/// Where the store keeps a secret, for tests and for operators reading the docs.
pub fn secret_file(dir: &Path, name: &SecretName) -> PathBuf {
    dir.join(format!("{}.json", encode_name(name)))
}

#[cfg(test)]
mod tests;
