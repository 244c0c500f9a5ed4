//! A source whose bytes are already in memory and hashed: a WAL segment or
//! a streamed WAL delta, read whole because its plaintext hash is part of
//! its key before anything is stored.

use super::Source;
use crate::error::{Error, Result};
use crate::manifest::{PlaintextHash, PlaintextHasher};
use crate::target::ByteReader;
use async_trait::async_trait;
use bytes::Bytes;

/// Bytes and the hash computed from exactly those bytes.
#[derive(Debug, Clone)]
pub struct InMemory {
    pub bytes: Bytes,
    pub hash: PlaintextHash,
}

/// A [`Source`] over [`InMemory`] content. The hash (BLAKE3, what every new
/// object gets) is computed here, from the bytes the pipeline will store,
/// so the key made from [`hash`] and the stored object cannot disagree.
///
/// [`hash`]: MemorySource::hash
pub struct MemorySource {
    what: String,
    content: Option<InMemory>,
    hash: PlaintextHash,
}

impl MemorySource {
    /// `what` names the content in messages (`job db: WAL file 0000...`).
    pub fn new(what: String, bytes: Bytes) -> MemorySource {
        let mut hasher = PlaintextHasher::new();
        hasher.update(&bytes);
        let hash = hasher.finish();
        MemorySource {
            what,
            content: Some(InMemory {
                bytes,
                hash: hash.clone(),
            }),
            hash,
        }
    }

    /// The plaintext hash of the bytes.
    pub fn hash(&self) -> &PlaintextHash {
        &self.hash
    }

    /// The hash of the bytes with the algorithm of `other` (an archived
    /// copy's, which may predate BLAKE3), to compare content with it;
    /// `None` once the pipeline took the bytes.
    pub fn hash_like(&self, other: &PlaintextHash) -> Option<PlaintextHash> {
        if std::mem::discriminant(other) == std::mem::discriminant(&self.hash) {
            return Some(self.hash.clone());
        }
        let content = self.content.as_ref()?;
        let mut hasher = PlaintextHasher::like(other);
        hasher.update(&content.bytes);
        Some(hasher.finish())
    }

    /// Plaintext size in bytes (0 once the pipeline took them).
    pub fn len(&self) -> u64 {
        self.content.as_ref().map_or(0, |c| c.bytes.len() as u64)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl Source for MemorySource {
    fn describe(&self) -> String {
        self.what.clone()
    }

    async fn open(&mut self) -> Result<ByteReader> {
        match self.content.take() {
            Some(c) => Ok(Box::pin(std::io::Cursor::new(c.bytes))),
            None => Err(Error::Internal(format!(
                "{}: the bytes were already handed to the pipeline",
                self.what
            ))),
        }
    }

    async fn finish(&mut self) -> Result<()> {
        Ok(())
    }

    fn take_in_memory(&mut self) -> Option<InMemory> {
        self.content.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_of_the_bytes_handed_out_once() {
        let mut s = MemorySource::new("x".into(), Bytes::from_static(b"abc"));
        // BLAKE3 and sha256 of "abc", as `b3sum` and `sha256sum` print them.
        let blake3 = "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85";
        let sha256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(s.hash(), &PlaintextHash::Blake3(blake3.into()));
        assert_eq!(
            s.hash_like(&PlaintextHash::Sha256(String::new())),
            Some(PlaintextHash::Sha256(sha256.into()))
        );
        assert_eq!(
            s.hash_like(&PlaintextHash::Blake3(String::new())),
            Some(PlaintextHash::Blake3(blake3.into()))
        );
        assert_eq!(s.len(), 3);
        let taken = s.take_in_memory().unwrap();
        assert_eq!(&taken.bytes[..], b"abc");
        assert_eq!(&taken.hash, s.hash());
        assert_eq!(s.hash_like(&PlaintextHash::Sha256(String::new())), None);
        assert!(s.take_in_memory().is_none());
        assert!(s.is_empty());
    }
}
