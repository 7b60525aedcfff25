//! Bearer tokens: loaded from a file, compared in constant time, each with a role.
//!
//! The file (a Kubernetes Secret or a 0600 file) is TOML:
//! `[[token]] name = "runbook-bot"  role = "rotate"  token = "…"` — or `sha256 = "<hex>"`
//! instead of `token`, so the file need not hold the token itself. `confirms = ["payments"]`
//! lets a token answer gated rotations for those notify targets (a consumer's own token). Tokens are kept only as
//! SHA-256 digests in memory; a presented token is hashed and compared in constant time.

use std::path::Path;

use ring::digest;
use serde::Deserialize;

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read status.
    Read,
    /// Read status and trigger rotations.
    Rotate,
}

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The token's name, recorded in audit entries as `api:<name>`.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// The notify targets it may confirm or refuse pending versions for.
    pub confirms: Vec<String>,
}

struct Entry {
    name: String,
    role: Role,
    confirms: Vec<String>,
    digest: [u8; 32],
}

/// The loaded tokens.
pub struct Tokens {
    entries: Vec<Entry>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field(
                "names",
                &self.entries.iter().map(|e| &e.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    name: String,
    role: Role,
    #[serde(default)]
    confirms: Vec<String>,
    token: Option<String>,
    sha256: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    #[serde(default)]
    token: Vec<FileEntry>,
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    digest::digest(&digest::SHA256, bytes)
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

impl Tokens {
    /// Reads the token file. Errors name the file and the entry, never a token.
    /// A file readable by every user is refused; group-readable is allowed, because
    /// Kubernetes mounts Secrets root-owned with the pod's group (`fsGroup`).
    pub fn load(path: &Path) -> Result<Self, String> {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|e| format!("cannot read token file {}: {e}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o004 != 0 {
            return Err(format!(
                "token file {} is readable by every user (mode {:o}): chmod o-r it",
                path.display(),
                mode & 0o777
            ));
        }
        let text = zeroize::Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read token file {}: {e}", path.display()))?,
        );
        Self::parse(&text).map_err(|e| format!("token file {}: {e}", path.display()))
    }

    /// Parses token-file text.
    pub fn parse(text: &str) -> Result<Self, String> {
        // toml's own error messages quote the offending line, which may hold a token.
        let file: TokenFile = toml::from_str(text).map_err(|e| {
            let at = e
                .span()
                .map(|s| format!(" at byte {}", s.start))
                .unwrap_or_default();
            format!("not a valid token file{at}: expected [[token]] tables with name, role and token or sha256")
        })?;
        let mut entries = Vec::with_capacity(file.token.len());
        for entry in file.token {
            let digest = match (entry.token, entry.sha256) {
                (Some(token), None) => {
                    let token = zeroize::Zeroizing::new(token);
                    if token.len() < 16 {
                        return Err(format!(
                            "token {:?} is shorter than 16 characters",
                            entry.name
                        ));
                    }
                    sha256(token.as_bytes())
                }
                (None, Some(hex)) => crate::hex::decode(&hex)
                    .and_then(|d| <[u8; 32]>::try_from(d).ok())
                    .ok_or_else(|| {
                        format!("token {:?}: sha256 must be 64 hex digits", entry.name)
                    })?,
                _ => {
                    return Err(format!(
                        "token {:?} needs exactly one of token or sha256",
                        entry.name
                    ));
                }
            };
            if entries.iter().any(|e: &Entry| e.name == entry.name) {
                return Err(format!("token name {:?} appears twice", entry.name));
            }
            entries.push(Entry {
                name: entry.name,
                role: entry.role,
                confirms: entry.confirms,
                digest,
            });
        }
        Ok(Self { entries })
    }

    /// The caller a presented token belongs to. Every entry is compared, in constant time,
    /// so timing reveals neither which entry matched nor how much of a digest did.
    pub fn authenticate(&self, presented: &str) -> Option<Caller> {
        let digest = sha256(presented.as_bytes());
        let mut found = None;
        for entry in &self.entries {
            let same = ring_constant_eq(&digest, &entry.digest);
            if same && found.is_none() {
                found = Some(Caller {
                    name: entry.name.clone(),
                    role: entry.role,
                    confirms: entry.confirms.clone(),
                });
            }
        }
        found
    }
}

fn ring_constant_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[[token]]
name = "dashboard"
role = "read"
token = "read-token-0123456789"

[[token]]
name = "runbook-bot"
role = "rotate"
sha256 = "REPLACE"

[[token]]
name = "payments"
role = "read"
confirms = ["payments", "payments-canary"]
token = "payments-token-0123456789"
"#;

    fn tokens() -> Tokens {
        let hash = crate::hex::encode(&sha256(b"rotate-token-0123456789"));
        Tokens::parse(&FILE.replace("REPLACE", &hash)).expect("valid file")
    }

    #[test]
    fn tokens_authenticate_with_their_role() {
        let t = tokens();
        assert_eq!(
            t.authenticate("read-token-0123456789"),
            Some(Caller {
                name: "dashboard".into(),
                role: Role::Read,
                confirms: Vec::new(),
            })
        );
        assert_eq!(
            t.authenticate("payments-token-0123456789")
                .map(|c| c.confirms),
            Some(vec!["payments".to_owned(), "payments-canary".to_owned()])
        );
        assert_eq!(
            t.authenticate("rotate-token-0123456789").map(|c| c.role),
            Some(Role::Rotate)
        );
        assert_eq!(t.authenticate("read-token-012345678"), None);
        assert_eq!(t.authenticate(""), None);
    }

    #[test]
    fn an_empty_file_accepts_no_token_and_a_world_readable_one_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        std::fs::write(&path, "# no tokens yet\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o440)).unwrap();
        let tokens = Tokens::load(&path).expect("empty is valid");
        assert_eq!(tokens.authenticate("anything-at-all-123"), None);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(Tokens::load(&path).unwrap_err().contains("chmod o-r"));
    }

    #[test]
    fn bad_files_say_why_without_quoting_tokens() {
        let short = "[[token]]\nname = \"x\"\nrole = \"read\"\ntoken = \"short-canary\"\n";
        let err = Tokens::parse(short).expect_err("too short");
        assert!(
            err.contains("16 characters") && !err.contains("short-canary"),
            "{err}"
        );
        let broken =
            "[[token]]\nname = \"x\"\nrole = \"admin\"\ntoken = \"secret-canary-123456\"\n";
        let err = Tokens::parse(broken).expect_err("bad role");
        assert!(!err.contains("secret-canary"), "{err}");
        let both = "[[token]]\nname = \"x\"\nrole = \"read\"\n";
        assert!(Tokens::parse(both).err().unwrap().contains("exactly one"));
        assert!(!format!("{:?}", tokens()).contains("read-token"));
    }
}
