//! The private key (age X25519 identity) for restores, verification and
//! drills: from a file that only its owner can read, or from the
//! environment. The host that makes backups never needs it.

use std::path::Path;
use std::str::FromStr;

use crate::error::{Error, Result};

/// Environment variable holding the identity itself (`AGE-SECRET-KEY-1...`),
/// for runners that inject secrets as variables.
pub const IDENTITY_ENV: &str = "STEWARD_IDENTITY";

/// Parsed identities and where they came from (never the key itself).
#[derive(Clone)]
pub struct Identities {
    keys: Vec<age::x25519::Identity>,
    /// `file /path` or `$STEWARD_IDENTITY`, for messages.
    pub origin: String,
}

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identities")
            .field("count", &self.keys.len())
            .field("origin", &self.origin)
            .finish()
    }
}

impl Identities {
    /// Reads an identity file as `age-keygen` writes it, refusing one that
    /// group or others can read or write.
    pub fn from_file(path: &Path) -> Result<Self> {
        check_private(path)?;
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Config(format!(
                "cannot read the identity file {}: {e}",
                path.display()
            ))
        })?;
        Self::parse(&text, format!("identity file {}", path.display()))
    }

    /// Parses identity text (one `AGE-SECRET-KEY-1...` per line, `#`
    /// comments). `origin` names the source in errors; the text itself is
    /// never repeated.
    pub fn parse(text: &str, origin: String) -> Result<Self> {
        let mut keys = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match age::x25519::Identity::from_str(line) {
                Ok(k) => keys.push(k),
                Err(_) => {
                    return Err(Error::Config(format!(
                        "{origin} line {}: not an age X25519 identity (expected AGE-SECRET-KEY-1..., as written by `age-keygen`)",
                        n + 1
                    )))
                }
            }
        }
        if keys.is_empty() {
            return Err(Error::Config(format!(
                "{origin} holds no identity (AGE-SECRET-KEY-1...)"
            )));
        }
        Ok(Identities { keys, origin })
    }

    /// `--identity FILE` if given, else `$STEWARD_IDENTITY`.
    pub fn from_file_or_env(path: Option<&Path>) -> Result<Self> {
        if let Some(p) = path {
            return Self::from_file(p);
        }
        match std::env::var(IDENTITY_ENV) {
            Ok(text) if !text.trim().is_empty() => Self::parse(&text, format!("${IDENTITY_ENV}")),
            _ => Err(Error::Config(format!(
                "no private key: pass --identity FILE (the age identity whose public key the backups are encrypted to) or set {IDENTITY_ENV}"
            ))),
        }
    }

    pub fn as_dyn(&self) -> impl Iterator<Item = &dyn age::Identity> {
        self.keys.iter().map(|k| k as &dyn age::Identity)
    }

    /// Fingerprints of the matching public keys, as manifests record them,
    /// to tell which snapshots this key can open.
    pub fn recipient_fingerprints(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|k| crate::manifest::recipient_fingerprint(&k.to_public().to_string()))
            .collect()
    }
}

/// Refuses a key file that group or others may read or write: a backup key
/// lying around readable by the web server is a leak of every backup.
pub fn check_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| {
        Error::Config(format!(
            "cannot read the identity file {}: {e}",
            path.display()
        ))
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::Config(format!(
            "identity file {} is accessible by group or others (mode {mode:04o}); a private key must be readable by its owner only: run `chmod 600 {}` and try again",
            path.display(),
            shell_quote(path)
        )));
    }
    Ok(())
}

fn shell_quote(path: &Path) -> String {
    let s = path.display().to_string();
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+@%:".contains(c))
    {
        s
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn refuses_group_readable_key_and_says_how_to_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.txt");
        let id = age::x25519::Identity::generate();
        use age::secrecy::ExposeSecret;
        std::fs::write(
            &path,
            format!("# test\n{}\n", id.to_string().expose_secret()),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Identities::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("mode 0644"), "{err}");
        assert!(
            err.contains(&format!("chmod 600 {}", path.display())),
            "{err}"
        );
        assert!(!err.contains("AGE-SECRET-KEY"), "{err}");

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let ids = Identities::from_file(&path).unwrap();
        assert_eq!(ids.recipient_fingerprints().len(), 1);
    }

    #[test]
    fn bad_key_text_is_named_not_echoed() {
        let err = Identities::parse("AGE-SECRET-KEY-1NOPE\n", "$X".into())
            .unwrap_err()
            .to_string();
        assert!(err.contains("$X line 1"), "{err}");
        assert!(!err.contains("NOPE"), "{err}");
    }
}
