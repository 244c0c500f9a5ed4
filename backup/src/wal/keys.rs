//! The keys of a `postgres_pitr` job's archived WAL:
//! `<host>/<job>/wal/<file>.<hash>.zst.age`, content-addressed by the
//! plaintext's hash, written `b3-<blake3>`; archives written before
//! December 2026 hold a bare sha256 there, still read. Streamed deltas
//! ([`crate::wal::stream`]) write their hash the same way.

use crate::layout;
use crate::manifest::PlaintextHash;
use crate::wal::names::WalName;

/// Suffix of every archived WAL object.
const OBJECT_SUFFIX: &str = ".zst.age";

/// Marks a BLAKE3 hash in a key; a bare 64-hex hash is a sha256.
const BLAKE3_MARK: &str = "b3-";

/// How `hash` is written in a key (WAL files and streamed deltas).
pub(crate) fn key_hash_text(hash: &PlaintextHash) -> String {
    match hash {
        PlaintextHash::Blake3(hex) => format!("{BLAKE3_MARK}{hex}"),
        PlaintextHash::Sha256(hex) => hex.clone(),
    }
}

/// Reads [`key_hash_text`] back; `None` for anything else.
pub(crate) fn parse_key_hash(text: &str) -> Option<PlaintextHash> {
    let (hex, blake3) = match text.strip_prefix(BLAKE3_MARK) {
        Some(hex) => (hex, true),
        None => (text, false),
    };
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    Some(if blake3 {
        PlaintextHash::Blake3(hex.to_string())
    } else {
        PlaintextHash::Sha256(hex.to_string())
    })
}

/// The key of `name` with plaintext hash `hash`.
pub fn wal_key(host: &str, job: &str, name: &str, hash: &PlaintextHash) -> String {
    format!(
        "{}{name}.{}{OBJECT_SUFFIX}",
        layout::wal_prefix(host, job),
        key_hash_text(hash)
    )
}

/// Reads a key back into name and hash; `None` for keys that are not
/// archived WAL (left alone: someone else's).
pub fn parse_wal_key(prefix: &str, key: &str) -> Option<(WalName, PlaintextHash)> {
    let rest = key.strip_prefix(prefix)?.strip_suffix(OBJECT_SUFFIX)?;
    let (name, hash) = rest.rsplit_once('.')?;
    Some((WalName::parse(name).ok()?, parse_key_hash(hash)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_foreign_keys_are_ignored() {
        let b3 = PlaintextHash::Blake3("ab".repeat(32));
        let key = wal_key("h", "db", "000000010000000000000003", &b3);
        assert_eq!(
            key,
            format!(
                "h/db/wal/000000010000000000000003.b3-{}.zst.age",
                "ab".repeat(32)
            )
        );
        let prefix = layout::wal_prefix("h", "db");
        let (name, got) = parse_wal_key(&prefix, &key).unwrap();
        assert_eq!((name.as_str(), &got), ("000000010000000000000003", &b3));
        // A key written before BLAKE3: a bare sha256.
        let sha = "cd".repeat(32);
        let old = format!("h/db/wal/000000010000000000000004.{sha}.zst.age");
        let (name, got) = parse_wal_key(&prefix, &old).unwrap();
        assert_eq!(
            (name.as_str(), got),
            (
                "000000010000000000000004",
                PlaintextHash::Sha256(sha.clone())
            )
        );
        let backup = wal_key("h", "db", "000000010000000000000002.00000028.backup", &b3);
        assert!(parse_wal_key(&prefix, &backup).is_some());
        assert!(parse_wal_key(&prefix, "h/db/wal/notes.txt").is_none());
        assert!(parse_wal_key(&prefix, &format!("h/db/wal/../x.{sha}.zst.age")).is_none());
        for bad in [
            format!("b3-{}", "AB".repeat(32)),
            format!("b3-{}", "ab".repeat(31)),
            format!("b2-{sha}"),
            "b3-".into(),
        ] {
            let key = format!("h/db/wal/000000010000000000000005.{bad}.zst.age");
            assert!(parse_wal_key(&prefix, &key).is_none(), "{bad}");
        }
    }
}
