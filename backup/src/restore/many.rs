//! Reading several objects of a snapshot at once: up to `permits` objects
//! are downloaded, checked and consumed concurrently, and all their ranged
//! part buffers are paid from one shared [`Budget`], so the memory bound
//! of a single object's ranged read holds for all of them together.
//!
//! An object counts as done only when its consumer succeeded *and* its
//! checked stream reached the end (stored sha256, plaintext hash, sizes and
//! age authentication all matched the manifest): a consumer that stops
//! early has the rest read for it, and a fault found there fails the
//! object, whatever the consumer made of the bytes it saw.

use std::sync::Arc;

use futures::StreamExt;

use crate::manifest::ObjectEntry;
use crate::restore::identity::Identities;
use crate::restore::ranged::Budget;
use crate::restore::stream::{open_object_within, take_fault, ObjectFault, ObjectReader, Progress};
use crate::restore::Located;

/// What became of one object.
#[derive(Debug)]
pub enum Fetched<T> {
    /// The consumer's result; every check of the object passed.
    Done(T),
    /// The object is missing, truncated, corrupt, unreadable or needs
    /// another key: what the consumer made of it must not be used.
    Fault(ObjectFault),
    /// The consumer failed on its own (a full disk, a tool that refused):
    /// its message.
    Failed(String),
}

impl<T> Fetched<T> {
    pub fn is_done(&self) -> bool {
        matches!(self, Fetched::Done(_))
    }
}

/// Reads `entries` of `located` with `consume`, up to `budget.permits()`
/// objects at once, and returns one outcome per entry in the same order.
/// `consume` runs on a blocking thread per object; it must not wait for
/// another object's consumer (each holds part buffers of the shared budget
/// only its own reader gives back).
pub async fn fetch_objects<T, F>(
    located: &Located,
    entries: &[ObjectEntry],
    identities: &Identities,
    progress: Arc<dyn Progress>,
    budget: &Budget,
    consume: F,
) -> Vec<Fetched<T>>
where
    T: Send + 'static,
    F: Fn(&ObjectEntry, &mut ObjectReader) -> Result<T, String> + Send + Sync + 'static,
{
    let consume = Arc::new(consume);
    futures::stream::iter(entries.iter().cloned())
        .map(|entry| {
            let consume = Arc::clone(&consume);
            let progress = Arc::clone(&progress);
            async move { fetch_one(located, entry, identities, progress, budget, consume).await }
        })
        .buffered(budget.permits())
        .collect()
        .await
}

async fn fetch_one<T, F>(
    located: &Located,
    entry: ObjectEntry,
    identities: &Identities,
    progress: Arc<dyn Progress>,
    budget: &Budget,
    consume: Arc<F>,
) -> Fetched<T>
where
    T: Send + 'static,
    F: Fn(&ObjectEntry, &mut ObjectReader) -> Result<T, String> + Send + Sync + 'static,
{
    let opened = open_object_within(
        Arc::clone(&located.target),
        &located.manifest,
        &entry,
        identities,
        progress,
        Some(budget),
    )
    .await;
    let mut reader = match opened {
        Ok(r) => r,
        Err(f) => return Fetched::Fault(f),
    };
    let slot = reader.fault_slot();
    let joined = tokio::task::spawn_blocking(move || {
        let out = consume(&entry, &mut reader);
        // Even after a consumer error: the fault, if any, says why.
        let end = reader.finish();
        (out, end)
    })
    .await;
    if let Some(f) = take_fault(&slot) {
        return Fetched::Fault(f);
    }
    match joined {
        Err(e) => Fetched::Failed(format!("internal: {e}")),
        Ok((Err(e), _)) => Fetched::Failed(e),
        // No fault recorded but the end was not reached cleanly.
        Ok((Ok(_), Err(e))) => Fetched::Failed(e.to_string()),
        Ok((Ok(v), Ok(()))) => Fetched::Done(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{ObjectRole, PlaintextHash};
    use crate::restore::stream::{FaultKind, Silent};
    use crate::target::local::LocalTarget;
    use crate::target::{RangedReads, StorageTarget};
    use age::secrecy::ExposeSecret;
    use sha2::{Digest, Sha256};
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    fn bytes(n: usize, seed: u64) -> Vec<u8> {
        let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ seed.wrapping_mul(0x1234_5678_9ABC_DEF1);
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// zstd then age, as the backup pipeline stores an object.
    fn seal(plain: &[u8], to: &age::x25519::Recipient) -> Vec<u8> {
        let packed = zstd::encode_all(plain, 1).unwrap();
        let enc =
            age::Encryptor::with_recipients(std::iter::once(to as &dyn age::Recipient)).unwrap();
        let mut out = Vec::new();
        let mut w = enc.wrap_output(&mut out).unwrap();
        w.write_all(&packed).unwrap();
        w.finish().unwrap();
        out
    }

    struct Snapshot {
        _dir: tempfile::TempDir,
        located: Located,
        ids: Identities,
        plain: Vec<Vec<u8>>,
        root: std::path::PathBuf,
    }

    /// `count` objects of a few ranges each on a local target read in
    /// ranges of `plan`.
    fn snapshot(count: usize, plan: RangedReads) -> Snapshot {
        let dir = tempfile::tempdir().unwrap();
        let key = age::x25519::Identity::generate();
        let ids = Identities::parse(key.to_string().expose_secret(), "test".into()).unwrap();
        let mut manifest = crate::manifest::tests::sample();
        manifest.objects.clear();
        let mut plain = Vec::new();
        for i in 0..count {
            // Incompressible, so the stored object spans several ranges.
            let data = bytes(150_000 + i * 7_919, i as u64);
            let stored = seal(&data, &key.to_public());
            let entry = ObjectEntry {
                name: format!("part{i}.bin.zst.age"),
                role: ObjectRole::Tar,
                database: None,
                plaintext_bytes: data.len() as u64,
                // Both kinds a manifest holds: format 2's BLAKE3 and
                // format 1's sha256 (older snapshots).
                plaintext_hash: if i % 2 == 0 {
                    PlaintextHash::Blake3(blake3::hash(&data).to_hex().to_string())
                } else {
                    PlaintextHash::Sha256(hex::encode(Sha256::digest(&data)))
                },
                stored_bytes: stored.len() as u64,
                stored_sha256: hex::encode(Sha256::digest(&stored)),
                compression: "zstd".into(),
                encryption: "age".into(),
                binlog: None,
            };
            let path = dir.path().join(manifest.object_key(&entry));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &stored).unwrap();
            manifest.objects.push(entry);
            plain.push(data);
        }
        let target: Arc<dyn StorageTarget> =
            Arc::new(LocalTarget::at("local", dir.path()).with_ranged_reads(plan));
        Snapshot {
            root: dir.path().to_path_buf(),
            _dir: dir,
            located: Located { target, manifest },
            ids,
            plain,
        }
    }

    /// Writes each object's plaintext to `out/<name>`, slowly, counting
    /// the consumers that run at once.
    fn writer(
        out: std::path::PathBuf,
        running: Arc<AtomicUsize>,
        peak: Arc<AtomicUsize>,
    ) -> impl Fn(&ObjectEntry, &mut ObjectReader) -> Result<std::path::PathBuf, String> {
        move |entry, reader| {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            let path = out.join(&entry.name);
            let mut file = std::fs::File::create(&path).map_err(|e| e.to_string())?;
            let mut buf = vec![0u8; 16 * 1024];
            let result = loop {
                match reader.read(&mut buf) {
                    Ok(0) => break Ok(path),
                    Ok(n) => {
                        file.write_all(&buf[..n]).map_err(|e| e.to_string())?;
                        // Slow enough that the readers overlap and the
                        // producers run ahead into the shared budget.
                        std::thread::sleep(std::time::Duration::from_micros(300));
                    }
                    Err(e) => break Err(e.to_string()),
                }
            };
            running.fetch_sub(1, Ordering::SeqCst);
            result
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_objects_come_back_byte_exact_within_one_shared_budget() {
        let plan = RangedReads {
            part_size: 32 * 1024,
            concurrency: 3,
        };
        let snap = snapshot(8, plan);
        let out = tempfile::tempdir().unwrap();
        let (running, peak) = (Arc::default(), Arc::new(AtomicUsize::new(0)));
        let budget = Budget::new(plan.concurrency);
        let results = fetch_objects(
            &snap.located,
            &snap.located.manifest.objects,
            &snap.ids,
            Arc::new(Silent),
            &budget,
            writer(out.path().to_path_buf(), running, Arc::clone(&peak)),
        )
        .await;
        assert_eq!(results.len(), 8);
        for (i, r) in results.into_iter().enumerate() {
            let Fetched::Done(path) = r else {
                panic!("object {i}: {r:?}");
            };
            assert!(
                std::fs::read(path).unwrap() == snap.plain[i],
                "object {i} differs"
            );
        }
        // Several objects were in flight at once, never more than the
        // budget's permits, and their part buffers together stayed within it.
        let objects = peak.load(Ordering::SeqCst);
        assert!((2..=3).contains(&objects), "{objects} objects at once");
        assert!(
            budget.gauge().peak() <= 3,
            "{} parts",
            budget.gauge().peak()
        );
        assert!(budget.gauge().peak() >= 2, "the budget was never shared");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_corrupt_object_among_many_is_named_and_not_done() {
        let plan = RangedReads {
            part_size: 32 * 1024,
            concurrency: 3,
        };
        let snap = snapshot(6, plan);
        // One byte flipped in the middle of object 4.
        let bad = &snap.located.manifest.objects[4];
        let path = snap.root.join(snap.located.manifest.object_key(bad));
        let mut stored = std::fs::read(&path).unwrap();
        let mid = stored.len() / 2;
        stored[mid] ^= 0x40;
        std::fs::write(&path, stored).unwrap();
        let out = tempfile::tempdir().unwrap();
        let written = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&written);
        let inner = writer(out.path().to_path_buf(), Arc::default(), Arc::default());
        let budget = Budget::new(plan.concurrency);
        let results = fetch_objects(
            &snap.located,
            &snap.located.manifest.objects,
            &snap.ids,
            Arc::new(Silent),
            &budget,
            move |entry, reader| {
                let r = inner(entry, reader);
                seen.lock().unwrap().push(entry.name.clone());
                r
            },
        )
        .await;
        for (i, r) in results.iter().enumerate() {
            if i == 4 {
                let Fetched::Fault(f) = r else {
                    panic!("the corrupt object was reported {r:?}");
                };
                assert_eq!(f.kind, FaultKind::Corrupt);
                assert_eq!(f.object, "part4.bin.zst.age");
                assert!(f.to_string().contains("part4.bin.zst.age"), "{f}");
            } else {
                assert!(r.is_done(), "object {i}: {r:?}");
            }
        }
        // Its consumer did run (the fault shows only at the end).
        assert!(written
            .lock()
            .unwrap()
            .iter()
            .any(|n| n == "part4.bin.zst.age"));
    }
}
