//! A source whose bytes are already in memory and hashed: a WAL segment or
//! a streamed WAL delta, read whole because its sha256 is part of its key
//! before anything is stored.

use async_trait::async_trait;
use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::Source;
use crate::error::{Error, Result};
use crate::target::ByteReader;

/// Bytes and the sha256 (hex) computed from exactly those bytes.
#[derive(Debug, Clone)]
pub struct InMemory {
    pub bytes: Bytes,
    pub sha256: String,
}

/// A [`Source`] over [`InMemory`] content. The hash is computed here, from
/// the bytes the pipeline will store, so the key made from [`sha256`] and
/// the stored object cannot disagree.
///
/// [`sha256`]: MemorySource::sha256
pub struct MemorySource {
    what: String,
    content: Option<InMemory>,
    sha256: String,
}

impl MemorySource {
    /// `what` names the content in messages (`job db: WAL file 0000...`).
    pub fn new(what: String, bytes: Bytes) -> MemorySource {
        let sha256 = hex::encode(Sha256::digest(&bytes));
        MemorySource {
            what,
            content: Some(InMemory {
                bytes,
                sha256: sha256.clone(),
            }),
            sha256,
        }
    }

    /// sha256 (hex) of the bytes.
    pub fn sha256(&self) -> &str {
        &self.sha256
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
        assert_eq!(
            s.sha256(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(s.len(), 3);
        let taken = s.take_in_memory().unwrap();
        assert_eq!(&taken.bytes[..], b"abc");
        assert_eq!(taken.sha256, s.sha256());
        assert!(s.take_in_memory().is_none());
        assert!(s.is_empty());
    }
}
