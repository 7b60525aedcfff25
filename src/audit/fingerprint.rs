//! Keyed fingerprints of secret values: HMAC-SHA256 under a local key, so two entries can be
//! compared ("the same value was stored twice") without the log disclosing or allowing a
//! dictionary attack on the value. Owns the key file.

use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use super::AuditError;
use crate::secret::SecretValue;

/// Key length in bytes (the HMAC-SHA256 block-size-safe, full-strength choice).
const KEY_LEN: usize = 32;

/// Keyed HMAC-SHA256 fingerprints of values.
#[derive(Clone)]
pub struct Fingerprinter {
    key: hmac::Key,
}

impl std::fmt::Debug for Fingerprinter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fingerprinter([REDACTED])")
    }
}

impl Fingerprinter {
    /// Loads the key from `path`, creating it (32 random bytes, 0600) if absent.
    /// Returns whether it was created.
    ///
    /// Refuses a key file that group or others may access: with the key, anyone holding the
    /// log could test guesses of a value against its fingerprint.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), AuditError> {
        let created = match Self::create(path) {
            Ok(()) => true,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => false,
            Err(e) => return Err(io_error(path, e)),
        };
        Ok((Self::load(path)?, created))
    }

    /// A fingerprinter from raw key bytes (tests, and keys kept elsewhere).
    pub fn from_key(key: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
        }
    }

    /// `hmac-sha256:<hex>` of the value.
    pub fn fingerprint(&self, value: &SecretValue) -> String {
        let tag = hmac::sign(&self.key, value.expose());
        format!("hmac-sha256:{}", crate::hex::encode(tag.as_ref()))
    }

    /// Writes a new key without ever replacing one: the key goes to a private temporary
    /// file first and is then hard-linked into place, which fails if `path` exists, so two
    /// processes starting at once agree on one key and nobody reads a half-written file.
    fn create(path: &Path) -> std::io::Result<()> {
        if path.exists() {
            return Err(ErrorKind::AlreadyExists.into());
        }
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        SystemRandom::new()
            .fill(&mut key[..])
            .map_err(|_| std::io::Error::other("the system random generator failed"))?;
        let text = Zeroizing::new(format!("{}\n", crate::hex::encode(&key[..])));

        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        // A leftover from a crash of an earlier process with our pid would block create_new.
        let _ = std::fs::remove_file(&temp);
        let result = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temp)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            std::fs::hard_link(&temp, path)?;
            std::fs::File::open(dir)?.sync_all()
        })();
        let _ = std::fs::remove_file(&temp);
        result
    }

    fn load(path: &Path) -> Result<Self, AuditError> {
        let key_error = |message: &str| AuditError::Key {
            path: path.display().to_string(),
            message: message.to_string(),
        };
        let metadata = std::fs::metadata(path).map_err(|e| io_error(path, e))?;
        let mode = metadata.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(key_error(&format!(
                "mode {:o} lets group or others read it; chmod 600 it",
                mode & 0o777
            )));
        }
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| io_error(path, e))?);
        let key = crate::hex::decode(text.trim())
            .map(Zeroizing::new)
            .filter(|key| key.len() == KEY_LEN)
            .ok_or_else(|| key_error("expected 64 hex digits (a 32-byte key)"))?;
        Ok(Self::from_key(&key))
    }
}

fn io_error(path: &Path, source: std::io::Error) -> AuditError {
    AuditError::Io {
        path: path.display().to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str) -> SecretValue {
        SecretValue::from_string(text.to_string())
    }

    #[test]
    fn key_is_created_once_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/audit.key");
        let (first, created) = Fingerprinter::load_or_create(&path).unwrap();
        assert!(created);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.trim().len(), 64);

        let (second, created) = Fingerprinter::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        assert_eq!(
            first.fingerprint(&value("hunter2")),
            second.fingerprint(&value("hunter2"))
        );
        // No temporary file is left beside the key.
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
    }

    #[test]
    fn fingerprints_are_stable_per_key_and_differ_across_keys() {
        let a = Fingerprinter::from_key(&[1; 32]);
        let b = Fingerprinter::from_key(&[2; 32]);
        let fp = a.fingerprint(&value("s3cret"));
        assert!(fp.starts_with("hmac-sha256:"));
        assert_eq!(fp.len(), "hmac-sha256:".len() + 64);
        assert_eq!(fp, a.fingerprint(&value("s3cret")));
        assert_ne!(fp, a.fingerprint(&value("s3creT")));
        assert_ne!(fp, b.fingerprint(&value("s3cret")));
        assert!(!fp.contains(&crate::hex::encode(b"s3cret")));

        // Two freshly created keys differ.
        let dir = tempfile::tempdir().unwrap();
        let (x, _) = Fingerprinter::load_or_create(&dir.path().join("x")).unwrap();
        let (y, _) = Fingerprinter::load_or_create(&dir.path().join("y")).unwrap();
        assert_ne!(x.fingerprint(&value("v")), y.fingerprint(&value("v")));
    }

    #[test]
    fn key_readable_by_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.key");
        Fingerprinter::load_or_create(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Fingerprinter::load_or_create(&path).unwrap_err();
        assert!(matches!(err, AuditError::Key { .. }), "{err}");
        assert!(err.to_string().contains("chmod 600"));
    }

    #[test]
    fn malformed_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.key");
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .unwrap();
        file.write_all(b"abcd\n").unwrap();
        assert!(matches!(
            Fingerprinter::load_or_create(&path),
            Err(AuditError::Key { .. })
        ));
    }

    #[test]
    fn debug_does_not_show_the_key() {
        let fp = Fingerprinter::from_key(&[0xab; 32]);
        let shown = format!("{fp:?}");
        assert_eq!(shown, "Fingerprinter([REDACTED])");
    }
}
