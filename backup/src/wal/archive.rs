//! The WAL archive of a `postgres_pitr` job: `archive_command` pushes each
//! file through the pipeline (zstd -> age -> every target), and
//! `restore_command` fetches it back into `pg_wal`.
//!
//! Keys are content-addressed by the plaintext's hash ([`crate::wal::keys`]:
//! BLAKE3, or sha256 in archives written before December 2026, matched by
//! its own algorithm). A push of content already archived
//! under that name finds its own key and succeeds without writing; a push
//! of different content under an archived name finds another hash and
//! fails. No key is ever written twice, so nothing archived can be
//! overwritten, and the hash in the key is what a fetch checks the
//! decrypted bytes against (the pushing host has no key to read back what
//! it stored).

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::error::{Error, Result};
use crate::layout;
use crate::manifest::{PlaintextHash, PlaintextHasher};
use crate::pipeline::{store_object, ByteCounters, PipelineSettings, StoredHash};
use crate::restore::Identities;
use crate::source::memory::MemorySource;
use crate::target::StorageTarget;
use crate::wal::keys::{parse_wal_key, wal_key};
use crate::wal::names::WalName;

/// The largest WAL file a fetch writes (PostgreSQL's largest segment size);
/// more from one object is damage, not WAL.
pub const MAX_WAL_BYTES: u64 = 1024 * 1024 * 1024;

/// One file in the archive.
#[derive(Debug, Clone)]
pub struct ArchivedWal {
    pub name: WalName,
    /// The plaintext's hash, from the key.
    pub hash: PlaintextHash,
    pub key: String,
    /// Stored (encrypted) size.
    pub stored_bytes: u64,
    pub modified: Option<DateTime<Utc>>,
}

/// Every archived file of `host`/`job` on `target`, sorted by key (so by
/// timeline, then position).
pub async fn list(target: &dyn StorageTarget, host: &str, job: &str) -> Result<Vec<ArchivedWal>> {
    list_prefix(target, host, job, "").await
}

async fn list_prefix(
    target: &dyn StorageTarget,
    host: &str,
    job: &str,
    name_prefix: &str,
) -> Result<Vec<ArchivedWal>> {
    let prefix = layout::wal_prefix(host, job);
    let objects = target.list(&format!("{prefix}{name_prefix}")).await?;
    Ok(objects
        .into_iter()
        .filter_map(|o| {
            let (name, hash) = parse_wal_key(&prefix, &o.key)?;
            Some(ArchivedWal {
                name,
                hash,
                key: o.key,
                stored_bytes: o.size,
                modified: o.modified,
            })
        })
        .collect())
}

/// The copies of `name` on `target` (normally zero or one).
async fn copies(
    target: &dyn StorageTarget,
    host: &str,
    job: &str,
    name: &WalName,
) -> Result<Vec<ArchivedWal>> {
    let found = list_prefix(target, host, job, &format!("{name}.")).await?;
    Ok(found.into_iter().filter(|w| w.name == *name).collect())
}

/// What one push did on one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pushed {
    /// Stored now (stored bytes).
    Stored(u64),
    /// The same content was already archived (an earlier push whose exit
    /// status PostgreSQL did not see).
    AlreadyThere,
}

/// The result of a push that succeeded on every target.
#[derive(Debug, Clone)]
pub struct PushReport {
    pub name: String,
    pub plaintext_bytes: u64,
    pub hash: PlaintextHash,
    pub targets: Vec<(String, Pushed)>,
}

/// Archives the file at `path` (what PostgreSQL passes as `%p`) for
/// `host`/`job` on every target. `Ok` only when every target holds this
/// exact content, durably (a local target fsyncs before the rename, S3
/// acknowledges a complete object); any target that failed or already
/// holds different content under this name makes it an error naming each
/// failure, and PostgreSQL keeps the file and retries.
pub async fn push(
    path: &Path,
    host: &str,
    job: &str,
    targets: &[(String, Result<Arc<dyn StorageTarget>>)],
    settings: &PipelineSettings,
) -> Result<PushReport> {
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::Config(format!("{}: no file name", path.display())))?;
    let name = WalName::parse(file_name)?;
    let data = tokio::fs::read(path).await.map_err(|e| Error::Local {
        doing: format!("job {job}: reading WAL file {name} at"),
        path: path.to_path_buf(),
        source: e,
        hint: "; archive_command must be given %p and run in the data directory".into(),
    })?;
    if data.len() as u64 > MAX_WAL_BYTES {
        return Err(Error::Source(format!(
            "job {job}: {} holds {} bytes, more than any WAL file",
            path.display(),
            data.len()
        )));
    }
    push_bytes(&name, data, host, job, targets, settings).await
}

/// [`push`] of a file already read (`data`, named `name`): what the
/// agent does with a spooled file (async archiving, `spool`).
pub async fn push_bytes(
    name: &WalName,
    data: Vec<u8>,
    host: &str,
    job: &str,
    targets: &[(String, Result<Arc<dyn StorageTarget>>)],
    settings: &PipelineSettings,
) -> Result<PushReport> {
    let name = name.clone();
    if data.len() as u64 > MAX_WAL_BYTES {
        return Err(Error::Source(format!(
            "job {job}: {name} holds {} bytes, more than any WAL file",
            data.len()
        )));
    }
    let mut source = MemorySource::new(format!("job {job}: WAL file {name}"), Bytes::from(data));
    let hash = source.hash().clone();
    let key = wal_key(host, job, name.as_str(), &hash);
    let plaintext_bytes = source.len();

    let mut failures = Vec::new();
    let mut done = Vec::new();
    let mut pending: Vec<Arc<dyn StorageTarget>> = Vec::new();
    for (target_name, opened) in targets {
        let target = match opened {
            Ok(t) => t,
            Err(e) => {
                failures.push(format!("target {target_name}: {e}"));
                continue;
            }
        };
        match copies(target.as_ref(), host, job, &name).await {
            Err(e) => failures.push(e.to_string()),
            Ok(found) => {
                // A copy archived before BLAKE3 keys is compared by its
                // own algorithm: the same content is there, not different.
                let different = found.iter().find_map(|w| {
                    let ours = source.hash_like(&w.hash)?;
                    (ours != w.hash).then_some((w, ours))
                });
                if let Some((other, ours)) = different {
                    failures.push(format!(
                        "target {} ({}): {name} is already archived with different content ({}, {} {}; this file's is {}); nothing was overwritten. Two servers may be archiving into job {job}: give each its own job (or host name)",
                        target.name(),
                        target.location(),
                        other.key,
                        other.hash.algorithm(),
                        other.hash.hex(),
                        ours.hex()
                    ));
                } else if found.is_empty() {
                    pending.push(Arc::clone(target));
                } else {
                    done.push((target.name().to_string(), Pushed::AlreadyThere));
                }
            }
        }
    }
    if !pending.is_empty() {
        let outcome = store_object(
            &mut source,
            settings,
            &pending,
            &key,
            Arc::new(ByteCounters::default()),
            // No manifest records WAL objects: the key holds their hash.
            StoredHash::Skip,
        )
        .await;
        if let Err(e) = &outcome.stream {
            failures.push(format!("job {job}: storing {name}: {e}"));
        }
        for (target_name, result) in outcome.targets {
            match result {
                Ok(n) if outcome.stream.is_ok() => done.push((target_name, Pushed::Stored(n))),
                Ok(_) => {}
                Err(e) => failures.push(format!("target {target_name}: {e}")),
            }
        }
    }
    if !failures.is_empty() {
        return Err(Error::Other(format!(
            "WAL file {name} is not archived on every target of job {job}: {}",
            failures.join("; ")
        )));
    }
    Ok(PushReport {
        name: name.to_string(),
        plaintext_bytes,
        hash,
        targets: done,
    })
}

/// What a fetch found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// Written to the destination: plaintext bytes and the target read.
    Restored { bytes: u64, target: String },
    /// No target holds the file: the end of the archive (or a timeline
    /// that never existed), which `restore_command` reports as exit 1.
    Absent,
}

/// Fetches `name` into `dest` (PostgreSQL's `%p`): decrypts and
/// decompresses into a temporary file beside it, checks the plaintext
/// hash against the key, syncs, then renames, so `dest` only ever
/// appears whole. Targets are tried in order; a copy that is damaged or
/// unreadable on one is read from the next. An error (damaged everywhere,
/// wrong key, target unreachable) names the file, the target and the key.
pub async fn fetch(
    targets: &[Arc<dyn StorageTarget>],
    host: &str,
    job: &str,
    name: &WalName,
    dest: &Path,
    identities: &Identities,
) -> Result<Fetched> {
    let mut errors = Vec::new();
    let mut seen = false;
    for target in targets {
        let found = match copies(target.as_ref(), host, job, name).await {
            Ok(f) => f,
            Err(e) => {
                errors.push(e.to_string());
                continue;
            }
        };
        if differing_copies(&found) {
            let keys: Vec<&str> = found.iter().map(|w| w.key.as_str()).collect();
            errors.push(format!(
                "target {} ({}): {name} is archived with different contents ({}); two servers archived into job {job}: choose by hand",
                target.name(),
                target.location(),
                keys.join(", ")
            ));
            seen = true;
            continue;
        }
        // One copy per hash algorithm at most: a sha256 key beside a
        // BLAKE3 one (an older Steward pushed what a newer one had). The
        // BLAKE3 copy is read, and the bytes must match every key.
        let Some(wal) = found
            .iter()
            .find(|w| matches!(w.hash, PlaintextHash::Blake3(_)))
            .or(found.first())
            .cloned()
        else {
            continue;
        };
        let others: Vec<&ArchivedWal> = found.iter().filter(|w| w.key != wal.key).collect();
        seen = true;
        match fetch_one(Arc::clone(target), &wal, &others, dest, identities).await {
            Ok(bytes) => {
                return Ok(Fetched::Restored {
                    bytes,
                    target: target.name().to_string(),
                })
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    if !seen && errors.is_empty() {
        return Ok(Fetched::Absent);
    }
    Err(Error::Integrity(format!(
        "WAL file {name} of job {job} cannot be restored: {}",
        if errors.is_empty() {
            "no target holds it".to_string()
        } else {
            errors.join("; ")
        }
    )))
}

/// Whether copies of one name hold different content as far as their keys
/// tell: two keys with the same hash algorithm (keys with different
/// algorithms are checked against the bytes once read).
fn differing_copies(found: &[ArchivedWal]) -> bool {
    found.iter().enumerate().any(|(i, a)| {
        found[i + 1..].iter().any(|b| {
            std::mem::discriminant(&a.hash) == std::mem::discriminant(&b.hash) && a.hash != b.hash
        })
    })
}

/// Fetches `wal` into `dest`; its plaintext must also match the hash of
/// each of `others` (copies of the same name under another algorithm).
async fn fetch_one(
    target: Arc<dyn StorageTarget>,
    wal: &ArchivedWal,
    others: &[&ArchivedWal],
    dest: &Path,
    identities: &Identities,
) -> Result<u64> {
    let at = format!(
        "target {} ({}) key {}",
        target.name(),
        target.location(),
        wal.key
    );
    let raw = target.get(&wal.key).await?;
    let bridge =
        tokio_util::io::SyncIoBridge::new_with_handle(raw, tokio::runtime::Handle::current());
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let tmp = dir.join(format!(".{}.steward-fetch", wal.name));
    let dest = dest.to_path_buf();
    let ids = identities.clone();
    let expected = wal.hash.clone();
    let also: Vec<(String, PlaintextHash)> = others
        .iter()
        .map(|w| (w.key.clone(), w.hash.clone()))
        .collect();
    let job = tokio::task::spawn_blocking(move || -> std::result::Result<u64, String> {
        // Our own name: a leftover of a killed fetch is replaced, and
        // create_new never follows a symlink planted in its place.
        let _ = std::fs::remove_file(&tmp);
        let result = (|| {
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(crate::private_fs::FILE_MODE)
                .open(&tmp)
                .map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
            let bytes = decode(bridge, &ids, &expected, &also, &mut out)?;
            out.sync_all()
                .map_err(|e| format!("syncing {}: {e}", tmp.display()))?;
            std::fs::rename(&tmp, &dest)
                .map_err(|e| format!("renaming to {}: {e}", dest.display()))?;
            Ok(bytes)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    })
    .await
    .map_err(|e| Error::Internal(format!("fetch task failed: {e}")))?;
    job.map_err(|e| Error::Integrity(format!("{at}: {e}")))
}

/// age -> zstd -> `out`, hashing the plaintext; the error says whether the
/// key is wrong or the bytes are damaged. `also`: other copies' keys and
/// hashes (another algorithm) the plaintext must match as well.
pub(crate) fn decode<R: Read>(
    raw: R,
    ids: &Identities,
    expected: &PlaintextHash,
    also: &[(String, PlaintextHash)],
    out: &mut std::fs::File,
) -> std::result::Result<u64, String> {
    let decryptor = age::Decryptor::new_buffered(std::io::BufReader::new(raw))
        .map_err(|e| format!("corrupt: the age header is unreadable: {e}"))?;
    let plain = decryptor.decrypt(ids.as_dyn()).map_err(|e| match e {
        age::DecryptError::NoMatchingKeys => format!(
            "wrong key: no identity in {} matches the recipients this file was encrypted to",
            ids.origin
        ),
        other => format!("corrupt: the age header does not verify: {other}"),
    })?;
    let mut decoder = zstd::stream::read::Decoder::new(plain)
        .map_err(|e| format!("corrupt: zstd: {e}"))?
        .take(MAX_WAL_BYTES + 1);
    let mut hasher = PlaintextHasher::like(expected);
    let mut other_hashers: Vec<PlaintextHasher> =
        also.iter().map(|(_, h)| PlaintextHasher::like(h)).collect();
    let mut total = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match decoder.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(format!(
                    "corrupt: the stored bytes do not decrypt or decompress ({e})"
                ))
            }
        };
        hasher.update(&buf[..n]);
        for h in &mut other_hashers {
            h.update(&buf[..n]);
        }
        total += n as u64;
        out.write_all(&buf[..n])
            .map_err(|e| format!("writing the WAL file: {e}"))?;
    }
    if total > MAX_WAL_BYTES {
        return Err("corrupt: more bytes than any WAL file".into());
    }
    let got = hasher.finish();
    if &got != expected {
        return Err(format!(
            "corrupt: the plaintext's {} is {}, the archive recorded {}",
            got.algorithm(),
            got.hex(),
            expected.hex()
        ));
    }
    for ((key, recorded), h) in also.iter().zip(other_hashers) {
        let got = h.finish();
        if &got != recorded {
            return Err(format!(
                "another copy of this file, {key}, holds different content (its key records {} {}, this copy's plaintext has {}); two servers archived into this job: choose by hand",
                got.algorithm(),
                recorded.hex(),
                got.hex()
            ));
        }
    }
    Ok(total)
}

/// The WAL chain of one base backup on `target`, as a verify check: every
/// segment from its start to the newest archived one, or the first gap.
pub async fn chain_check(
    target: &dyn StorageTarget,
    host: &str,
    job: &str,
    base: &crate::manifest::PgBaseInfo,
) -> crate::restore::Check {
    const NAME: &str = "wal chain";
    let archived = match list(target, host, job).await {
        Ok(a) => a,
        Err(e) => return crate::restore::Check::failed(NAME, e.to_string()),
    };
    let names: Vec<WalName> = archived.into_iter().map(|w| w.name).collect();
    let chain = crate::wal::chain::check(base, &names);
    match &chain.missing {
        None => crate::restore::Check::ok(
            NAME,
            format!(
                "{} segment(s) from {} to {} without a gap",
                chain.segments,
                chain.first,
                chain.newest.as_deref().unwrap_or(&base.stop_wal)
            ),
        ),
        Some(missing) => crate::restore::Check::failed(
            NAME,
            format!(
                "segment {missing} is missing from target {} ({}): replay from this base backup stops before it ({} segment(s) from {} are there)",
                target.name(),
                target.location(),
                chain.segments,
                chain.first
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An archive written before BLAKE3 keys: its sha256-keyed segment is
    /// fetched and checked, the same content pushed again is found there
    /// (no second copy), and different content under its name is refused.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sha256_keys_of_older_archives_are_fetched_and_matched() {
        use age::secrecy::ExposeSecret;
        use sha2::{Digest, Sha256};

        let dir = tempfile::tempdir().unwrap();
        let identity = age::x25519::Identity::generate();
        let settings = PipelineSettings {
            zstd_level: 3,
            zstd_workers: 1,
            recipients: crate::crypto::Recipients::from_strings(&[identity
                .to_public()
                .to_string()])
            .unwrap(),
        };
        let ids = Identities::parse(identity.to_string().expose_secret(), "test".into()).unwrap();
        let local: Arc<dyn StorageTarget> =
            Arc::new(crate::target::local::LocalTarget::at("local", dir.path()));
        let targets = vec![("local".to_string(), Ok(Arc::clone(&local)))];
        let name = WalName::parse("000000010000000000000007").unwrap();
        let old: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let sha = PlaintextHash::Sha256(hex::encode(Sha256::digest(&old)));
        // Stores `data` under the key of `hash`, as whichever Steward
        // computed that hash would have.
        let store = |name: WalName, hash: PlaintextHash, data: Vec<u8>| {
            let key = wal_key("h", "db", name.as_str(), &hash);
            let local = Arc::clone(&local);
            let settings = settings.clone();
            async move {
                let mut source = MemorySource::new("copy".into(), Bytes::from(data));
                let out = store_object(
                    &mut source,
                    &settings,
                    std::slice::from_ref(&local),
                    &key,
                    Arc::new(ByteCounters::default()),
                    StoredHash::Skip,
                )
                .await;
                out.stream.unwrap();
            }
        };
        store(name.clone(), sha.clone(), old.clone()).await;

        let again = push_bytes(&name, old.clone(), "h", "db", &targets, &settings)
            .await
            .unwrap();
        assert_eq!(again.targets, [("local".to_string(), Pushed::AlreadyThere)]);
        let listed = list(local.as_ref(), "h", "db").await.unwrap();
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0].hash, sha);

        let mut other = old.clone();
        other[5] ^= 1;
        let refused = push_bytes(&name, other, "h", "db", &targets, &settings)
            .await
            .unwrap_err()
            .to_string();
        assert!(refused.contains("different content"), "{refused}");
        assert!(
            refused.contains(&format!("sha256 {}", sha.hex())),
            "{refused}"
        );

        let dest = dir.path().join("fetched");
        let got = fetch(std::slice::from_ref(&local), "h", "db", &name, &dest, &ids)
            .await
            .unwrap();
        assert!(matches!(got, Fetched::Restored { bytes, .. } if bytes == old.len() as u64));
        assert_eq!(std::fs::read(&dest).unwrap(), old);

        // A new push is keyed by BLAKE3 and reads back the same way.
        let next = WalName::parse("000000010000000000000008").unwrap();
        let report = push_bytes(&next, old.clone(), "h", "db", &targets, &settings)
            .await
            .unwrap();
        assert!(matches!(report.hash, PlaintextHash::Blake3(_)));
        let keys: Vec<String> = list(local.as_ref(), "h", "db")
            .await
            .unwrap()
            .into_iter()
            .map(|w| w.key)
            .collect();
        assert!(keys[1].contains(".b3-"), "{keys:?}");
        std::fs::remove_file(&dest).unwrap();
        fetch(std::slice::from_ref(&local), "h", "db", &next, &dest, &ids)
            .await
            .unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), old);

        // The same content under both algorithms (an older Steward pushed
        // after a newer one) restores; different content under the two
        // keys is refused and nothing is written.
        store(next.clone(), sha.clone(), old.clone()).await;
        std::fs::remove_file(&dest).unwrap();
        let got = fetch(std::slice::from_ref(&local), "h", "db", &next, &dest, &ids)
            .await
            .unwrap();
        assert!(matches!(got, Fetched::Restored { .. }));
        assert_eq!(std::fs::read(&dest).unwrap(), old);

        let third = WalName::parse("000000010000000000000009").unwrap();
        let mut other = old.clone();
        other[9] ^= 1;
        let other_b3 = PlaintextHash::Blake3(blake3::hash(&other).to_hex().to_string());
        store(third.clone(), sha.clone(), old.clone()).await;
        store(third.clone(), other_b3, other).await;
        std::fs::remove_file(&dest).unwrap();
        let refused = fetch(std::slice::from_ref(&local), "h", "db", &third, &dest, &ids)
            .await
            .unwrap_err()
            .to_string();
        assert!(refused.contains("holds different content"), "{refused}");
        let third_sha_key = wal_key("h", "db", third.as_str(), &sha);
        assert!(refused.contains(&third_sha_key), "{refused}");
        assert!(!dest.exists());
    }
}
