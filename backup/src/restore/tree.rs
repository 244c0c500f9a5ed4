//! A restored tree as a comparable list of records (path, type, mode,
//! owner, mtime, content hash): what the archive says and what the disk
//! holds, read back without following links, and their differences.
//!
//! Reading a file's content back costs a second pass over every restored
//! byte. It is skipped for a file whose path still names the very inode
//! the unpack created and wrote, unchanged since: see `Written`.

use std::collections::BTreeSet;
use std::path::{Component, Path};

use rustix::fs::OFlags;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// The hash of a file's content in a [`TreeRecord`] and in a diff: both
/// sides of every comparison are hashed in the same run (the archive
/// entry's bytes as they are written, the file read back from disk), and
/// the value is never stored or compared with a manifest, so it need not
/// be the manifest's sha256. BLAKE3 is as collision-resistant and, with the
/// SIMD it detects at run time, ~3.6x faster on the same core (6.2 against
/// 1.7 GB/s with SHA-NI on the benchmark machine): on a 2 GB restore that
/// is ~0.9 s of CPU less.
pub(crate) type ContentHasher = blake3::Hasher;

/// Hex of a finished `ContentHasher`.
pub(crate) fn content_hex(hasher: &ContentHasher) -> String {
    hasher.finalize().to_hex().to_string()
}

/// One entry of a tree as compared: metadata and content hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TreeRecord {
    /// Archive path (no leading `/`, no trailing `/`).
    pub path: String,
    /// `f`ile, `d`irectory or `l`ink.
    pub kind: char,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Seconds (tar keeps whole seconds); directories and links excluded
    /// from mtime comparison only where the OS cannot keep them.
    pub mtime: u64,
    pub size: u64,
    /// `ContentHasher` hex of the content (files), or the link target
    /// (links).
    pub content: String,
}

impl TreeRecord {
    pub(crate) fn from_header(
        path: &Path,
        h: &tar::Header,
        content_sha: Option<String>,
    ) -> std::io::Result<Self> {
        let kind = h.entry_type();
        let (kind, content) = if kind.is_dir() {
            ('d', String::new())
        } else if kind.is_symlink() {
            let link = h
                .link_name()?
                .map(|l| l.to_string_lossy().into_owned())
                .unwrap_or_default();
            ('l', link)
        } else {
            ('f', content_sha.unwrap_or_default())
        };
        Ok(TreeRecord {
            path: normalize(path),
            kind,
            mode: if kind == 'l' {
                0
            } else {
                h.mode().unwrap_or(0) & 0o7777
            },
            uid: h.uid().unwrap_or(0),
            gid: h.gid().unwrap_or(0),
            mtime: if kind == 'l' {
                0
            } else {
                h.mtime().unwrap_or(0)
            },
            size: if kind == 'f' {
                h.size().unwrap_or(0)
            } else {
                0
            },
            content,
        })
    }
}

/// The archive path of `path`: its normal components joined by `/`.
pub(crate) fn normalize(path: &Path) -> String {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// A file as the unpack left it: the inode it created (`O_EXCL`, so empty
/// and its own) and filled, with size and times as `fstat` on the written
/// descriptor reported after the last change the unpack made (content,
/// owner, mode, mtime, and the rename into place, which also sets ctime).
///
/// What the read-back proves, before and after this shortcut:
/// - Before, for every file: the path (not followed if a link) names a
///   regular file whose bytes, read from the kernel now, hash to the
///   archive's content hash, with the archive's size, mode, mtime and owner.
/// - Now, for a file whose `lstat` shows the same device, inode, size,
///   mtime and ctime (nanoseconds): the path names the inode the unpack
///   created, every byte written to it was hashed on the way in and equals
///   the archive's (the tar entry's bytes; `write` acknowledged each one),
///   and nothing changed it since: any write, truncate, chmod, chown or
///   utimes sets ctime to the current time, which userspace cannot set
///   back, and a replaced file has another inode. Size, mode, mtime and
///   owner are still compared from the `lstat`.
/// - Anything else (a file replaced, touched, or an inode reused) is read
///   back in full as before, so a difference is still found and named.
///
/// What re-reading never proved either: durability (the bytes come from
/// the page cache, not the disk) and anything after the check. What is no
/// longer re-checked: a kernel returning other bytes than it acknowledged
/// writing, and a change by someone with write access to the file within
/// the same ctime clock tick as the unpack's last change (only the
/// restoring user, root, or for `--in-place` the file's owner, who can as
/// well change it right after a re-read). `--reread` restores the full
/// second pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Written {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Written {
    pub(crate) fn of(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Written {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// A tree as a sorted list of records, with a digest over them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TreeDigest {
    pub records: Vec<TreeRecord>,
    /// Files the unpack wrote, by archive path (not part of the digest).
    #[serde(skip)]
    pub(crate) written: std::collections::BTreeMap<String, Written>,
    /// Files whose content [`TreeDigest::read_back`] read from disk again.
    #[serde(skip)]
    pub contents_read: usize,
}

impl TreeDigest {
    /// The recorded mtime of each directory, by archive path.
    pub fn dir_mtimes(&self) -> std::collections::BTreeMap<String, u64> {
        self.records
            .iter()
            .filter(|r| r.kind == 'd')
            .map(|r| (r.path.clone(), r.mtime))
            .collect()
    }

    /// Every archive path, and the directories among them.
    pub fn names_and_dirs(&self) -> (BTreeSet<String>, Vec<String>) {
        let names = self.records.iter().map(|r| r.path.clone()).collect();
        let dirs = self
            .records
            .iter()
            .filter(|r| r.kind == 'd')
            .map(|r| r.path.clone())
            .collect();
        (names, dirs)
    }

    /// sha256 over every record (owners included only when `owners`).
    pub fn digest(&self, owners: bool) -> String {
        let mut h = Sha256::new();
        for r in &self.records {
            let (uid, gid) = if owners { (r.uid, r.gid) } else { (0, 0) };
            h.update(
                format!(
                    "{}\0{}\0{:o}\0{uid}\0{gid}\0{}\0{}\0{}\n",
                    r.path, r.kind, r.mode, r.mtime, r.size, r.content
                )
                .as_bytes(),
            );
        }
        hex::encode(h.finalize())
    }

    /// Reads the same paths back from the disk under `dest`; the content of
    /// a file the unpack wrote and nothing changed since is not read again
    /// (see `Written` for what that proves).
    pub fn read_back(&self, dest: &Path) -> std::io::Result<TreeDigest> {
        self.read_back_with(dest, false)
    }

    /// [`TreeDigest::read_back`], reading every file's content again when
    /// `reread`.
    pub fn read_back_with(&self, dest: &Path, reread: bool) -> std::io::Result<TreeDigest> {
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
        let mut records = Vec::new();
        let mut contents_read = 0;
        for r in &self.records {
            let p = dest.join(&r.path);
            let meta = match std::fs::symlink_metadata(&p) {
                Ok(m) => m,
                Err(_) => continue,
            };
            let ft = meta.file_type();
            let (kind, content, size) = if ft.is_dir() {
                ('d', String::new(), 0)
            } else if ft.is_symlink() {
                (
                    'l',
                    std::fs::read_link(&p)?.to_string_lossy().into_owned(),
                    0,
                )
            } else if !reread
                && ft.is_file()
                && self.written.get(&r.path) == Some(&Written::of(&meta))
            {
                // The inode the unpack filled, untouched since: its content
                // is the bytes hashed while writing.
                ('f', r.content.clone(), meta.len())
            } else {
                // Not through a link swapped in since, and never blocking
                // on a fifo: such an entry reads as a different type.
                let mut file = match std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags((OFlags::NOFOLLOW | OFlags::NONBLOCK).bits() as i32)
                    .open(&p)
                {
                    Ok(f) if f.metadata()?.is_file() => f,
                    _ => {
                        records.push(TreeRecord {
                            path: r.path.clone(),
                            kind: '?',
                            mode: 0,
                            uid: 0,
                            gid: 0,
                            mtime: 0,
                            size: 0,
                            content: String::new(),
                        });
                        continue;
                    }
                };
                let mut h = ContentHasher::new();
                std::io::copy(&mut file, &mut h)?;
                contents_read += 1;
                ('f', content_hex(&h), meta.len())
            };
            records.push(TreeRecord {
                path: r.path.clone(),
                kind,
                mode: if kind == 'l' { 0 } else { meta.mode() & 0o7777 },
                uid: u64::from(meta.uid()),
                gid: u64::from(meta.gid()),
                mtime: if kind == 'l' {
                    0
                } else {
                    meta.mtime().max(0) as u64
                },
                size,
                content,
            });
        }
        Ok(TreeDigest {
            records,
            written: Default::default(),
            contents_read,
        })
    }

    /// The first few differences with `other`, for a message.
    pub fn differences(&self, other: &TreeDigest, owners: bool, limit: usize) -> Vec<String> {
        let mut out = Vec::new();
        let find = |path: &str| other.records.iter().find(|r| r.path == path);
        for r in &self.records {
            if out.len() >= limit {
                break;
            }
            match find(&r.path) {
                None => out.push(format!("/{} is missing", r.path)),
                Some(o) => {
                    let mut what = Vec::new();
                    if o.kind != r.kind {
                        what.push("type".to_string());
                    }
                    if o.mode != r.mode {
                        what.push(format!("mode {:04o} (archive {:04o})", o.mode, r.mode));
                    }
                    if o.mtime != r.mtime {
                        what.push(format!("mtime {} (archive {})", o.mtime, r.mtime));
                    }
                    if o.content != r.content || o.size != r.size {
                        what.push("content".to_string());
                    }
                    if owners && (o.uid != r.uid || o.gid != r.gid) {
                        what.push(format!(
                            "owner {}:{} (archive {}:{})",
                            o.uid, o.gid, r.uid, r.gid
                        ));
                    }
                    if !what.is_empty() {
                        out.push(format!("/{}: {}", r.path, what.join(", ")));
                    }
                }
            }
        }
        out
    }
}
