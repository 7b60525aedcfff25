//! The file store's AES-256-GCM key: from an environment variable, or a key file that is
//! created (0600, 32 random bytes) on first start.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{AES_256_GCM, LessSafeKey, UnboundKey};
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

/// The store key with its public id (a digest prefix, stored beside ciphertexts so a wrong
/// key is reported as such instead of as corruption).
pub(crate) struct StoreKey {
    pub(crate) aead: LessSafeKey,
    pub(crate) id: String,
}

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Where the key came from, for the start-up log line.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum KeySource {
    Env,
    ExistingFile,
    CreatedFile,
}

/// Loads the key. `key_env` is the variable's name and value as read from the environment
/// (a parameter, so tests need not mutate the process environment).
pub(crate) fn load(
    key_file: &Path,
    key_env: Option<(&str, Option<String>)>,
) -> Result<(StoreKey, KeySource), String> {
    if let Some((var, Some(text))) = key_env {
        let text = Zeroizing::new(text);
        let bytes = Zeroizing::new(
            STANDARD
                .decode(text.trim())
                .map_err(|_| format!("environment variable {var} is not valid base64"))?,
        );
        return Ok((
            from_bytes(&bytes, &format!("environment variable {var}"))?,
            KeySource::Env,
        ));
    }
    match fs::read_to_string(key_file) {
        Ok(text) => {
            let mode = fs::metadata(key_file)
                .map(|m| m.permissions().mode() & 0o777)
                .unwrap_or(0);
            if mode & 0o077 != 0 {
                return Err(format!(
                    "key file {} is readable by other users (mode {mode:o}): run chmod 600 on it",
                    key_file.display()
                ));
            }
            let text = Zeroizing::new(text);
            let bytes = Zeroizing::new(STANDARD.decode(text.trim()).map_err(|_| {
                format!("key file {} does not hold a base64 key", key_file.display())
            })?);
            Ok((
                from_bytes(&bytes, &format!("key file {}", key_file.display()))?,
                KeySource::ExistingFile,
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let bytes = create(key_file)?;
            Ok((
                from_bytes(&bytes, &format!("key file {}", key_file.display()))?,
                KeySource::CreatedFile,
            ))
        }
        Err(e) => Err(format!("cannot read key file {}: {e}", key_file.display())),
    }
}

fn from_bytes(bytes: &[u8], origin: &str) -> Result<StoreKey, String> {
    if bytes.len() != 32 {
        return Err(format!(
            "{origin} holds {} bytes; an AES-256 key is 32 bytes (base64 of 32 random bytes)",
            bytes.len()
        ));
    }
    let unbound =
        UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| "invalid AES-256 key".to_owned())?;
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(b"rekeyd-store-key-id\0");
    ctx.update(bytes);
    let id = crate::hex::encode(&ctx.finish().as_ref()[..8]);
    Ok(StoreKey {
        aead: LessSafeKey::new(unbound),
        id,
    })
}

fn create(key_file: &Path) -> Result<Zeroizing<Vec<u8>>, String> {
    let mut bytes = Zeroizing::new(vec![0u8; 32]);
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "the system random number generator failed".to_owned())?;
    if let Some(dir) = key_file.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create directory {}: {e}", dir.display()))?;
    }
    let encoded = Zeroizing::new(STANDARD.encode(&bytes[..]));
    // create_new: two processes starting at once must not both create (and disagree on) a key.
    let result = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(key_file);
    match result {
        Ok(mut file) => {
            file.write_all(encoded.as_bytes())
                .and_then(|_| file.write_all(b"\n"))
                .and_then(|_| file.sync_all())
                .map_err(|e| format!("cannot write key file {}: {e}", key_file.display()))?;
            Ok(bytes)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            // Lost the race: use the winner's key.
            let text = Zeroizing::new(
                fs::read_to_string(key_file)
                    .map_err(|e| format!("cannot read key file {}: {e}", key_file.display()))?,
            );
            STANDARD
                .decode(text.trim())
                .map(Zeroizing::new)
                .map_err(|_| format!("key file {} does not hold a base64 key", key_file.display()))
        }
        Err(e) => Err(format!(
            "cannot create key file {}: {e}",
            key_file.display()
        )),
    }
}
