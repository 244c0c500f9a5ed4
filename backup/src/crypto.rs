//! age encryption: recipients (public keys, all the host needs) for
//! backups and identities (private keys, brought only to restores and
//! drills). Output is the standard age v1 format, so the stock `age` CLI
//! decrypts every stored object.

use std::path::Path;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::manifest::{recipient_fingerprint, RecipientInfo};

/// Parses one X25519 recipient (`age1...`).
pub fn parse_recipient(text: &str) -> Result<age::x25519::Recipient, String> {
    let text = text.trim();
    age::x25519::Recipient::from_str(text).map_err(|e| {
        let shown: String = text.chars().take(12).collect();
        format!(
            "{shown:?}... is not an age X25519 recipient ({e}); use the public key printed by `age-keygen -y KEYFILE` (age1...)"
        )
    })
}

/// Reads a recipients file: one recipient per line, `#` comments and blank
/// lines ignored (the format of `age -R`).
pub fn read_recipients_file(path: &Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read recipients file {}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        parse_recipient(line).map_err(|e| format!("{} line {}: {e}", path.display(), n + 1))?;
        out.push(line.to_string());
    }
    if out.is_empty() {
        return Err(format!(
            "recipients file {} holds no recipient",
            path.display()
        ));
    }
    Ok(out)
}

/// The recipients a backup is encrypted to, parsed, with what the manifest
/// records about them.
#[derive(Clone)]
pub struct Recipients {
    keys: Vec<age::x25519::Recipient>,
    pub info: Vec<RecipientInfo>,
}

impl std::fmt::Debug for Recipients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recipients")
            .field("info", &self.info)
            .finish()
    }
}

impl Recipients {
    /// Parses `texts` (`age1...` each); the configuration gathers them
    /// ([`crate::config::BackupConfig::recipients`]).
    pub fn from_strings(texts: &[String]) -> Result<Self> {
        if texts.is_empty() {
            return Err(Error::Config(
                "backup.recipients: no age recipient is configured, so nothing can be encrypted; add the public key of a key pair kept off this host (age-keygen)".into(),
            ));
        }
        let mut keys = Vec::new();
        let mut info = Vec::new();
        for (i, t) in texts.iter().enumerate() {
            keys.push(
                parse_recipient(t)
                    .map_err(|e| Error::Config(format!("backup.recipients[{i}]: {e}")))?,
            );
            info.push(RecipientInfo {
                recipient: t.clone(),
                fingerprint: recipient_fingerprint(t),
            });
        }
        Ok(Recipients { keys, info })
    }

    /// Wraps `output` in an age encryptor for these recipients. The caller
    /// must call `finish()` on the result, or the stream is truncated (and
    /// `age -d` will say so).
    pub fn encrypt<W: std::io::Write>(
        &self,
        output: W,
    ) -> std::io::Result<age::stream::StreamWriter<W>> {
        let encryptor =
            age::Encryptor::with_recipients(self.keys.iter().map(|k| k as &dyn age::Recipient))
                .map_err(|e| std::io::Error::other(format!("age: {e}")))?;
        encryptor.wrap_output(output)
    }
}

/// Loads identities (private keys) from an age identity file, for restores,
/// verification and drills.
pub fn load_identities(path: &Path) -> Result<Vec<Box<dyn age::Identity>>> {
    let file = age::IdentityFile::from_file(path.display().to_string()).map_err(|e| {
        Error::Config(format!(
            "cannot read age identity file {}: {e}",
            path.display()
        ))
    })?;
    file.into_identities().map_err(|e| {
        Error::Config(format!(
            "age identity file {} is not usable: {e}",
            path.display()
        ))
    })
}

/// Decrypts a stream (blocking reader) with `identities`.
pub fn decrypt<R: std::io::Read>(
    input: R,
    identities: &[Box<dyn age::Identity>],
) -> Result<age::stream::StreamReader<R>> {
    let decryptor = age::Decryptor::new(input)
        .map_err(|e| Error::Integrity(format!("not an age-encrypted stream: {e}")))?;
    decryptor
        .decrypt(identities.iter().map(|i| i.as_ref() as &dyn age::Identity))
        .map_err(|e| {
            Error::Config(format!(
                "cannot decrypt: {e}; the identity does not match any recipient of this snapshot (see its manifest's recipient fingerprints)"
            ))
        })
}
