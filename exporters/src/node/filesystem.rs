//! The filesystem collector: size, free space and inodes of each mounted
//! file system. statfs on a stale NFS or FUSE mount can hang for minutes, so
//! the calls run on blocking threads under a timeout, and a mount whose call
//! has not returned is reported as an error and skipped until it does. That
//! is why this collector is the one that implements [`Collector`] itself.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::read::read_text;
use super::Settings;
use crate::collector::{CollectContext, CollectError, Collected, Collector};
use crate::metrics::MetricFamily;

/// One line of /proc/1/mounts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Mount {
    pub device: String,
    pub mount_point: String,
    pub fs_type: String,
    pub read_only: bool,
}

/// Undoes the kernel's octal escapes in /proc/mounts (`\040` is a space).
fn unescape_mount_field(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_string();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            if let Some(v) = s
                .get(i + 1..i + 4)
                .and_then(|o| u8::from_str_radix(o, 8).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) fn parse_mounts(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split_ascii_whitespace();
            let (device, mount_point, fs_type, options) =
                (f.next()?, f.next()?, f.next()?, f.next()?);
            Some(Mount {
                device: unescape_mount_field(device),
                mount_point: unescape_mount_field(mount_point),
                fs_type: fs_type.to_string(),
                read_only: options.split(',').any(|o| o == "ro"),
            })
        })
        .collect()
}

/// The result of one statfs, in node_exporter's units.
#[derive(Debug, Clone, Copy)]
struct FsStats {
    size: f64,
    free: f64,
    avail: f64,
    files: f64,
    files_free: f64,
}

fn statfs(path: &Path) -> std::io::Result<FsStats> {
    let s = rustix::fs::statfs(path)?;
    let bsize = s.f_bsize as f64;
    Ok(FsStats {
        size: s.f_blocks as f64 * bsize,
        free: s.f_bfree as f64 * bsize,
        avail: s.f_bavail as f64 * bsize,
        files: s.f_files as f64,
        files_free: s.f_ffree as f64,
    })
}

/// Runs statfs for `mounts` on one blocking thread, in order, and waits at
/// most `per_mount` for each answer. A mount that does not answer in time
/// is put in `stuck` (and left out of later scrapes until its statfs
/// returns); the mounts after it go to a fresh thread. Returns one entry
/// per mount: `None` for a stuck one.
async fn statfs_all(
    paths: Vec<PathBuf>,
    keys: Vec<String>,
    per_mount: Duration,
    stuck: Arc<Mutex<HashSet<String>>>,
    stat: fn(&Path) -> std::io::Result<FsStats>,
) -> Vec<Option<std::io::Result<FsStats>>> {
    let mut results: Vec<Option<std::io::Result<FsStats>>> =
        (0..paths.len()).map(|_| None).collect();
    let mut start = 0;
    while start < paths.len() {
        let batch: Vec<(usize, PathBuf, String)> = (start..paths.len())
            .map(|i| (i, paths[i].clone(), keys[i].clone()))
            .collect();
        // How many of this batch the thread has finished, updated under the
        // `stuck` lock so "timed out" and "just returned" cannot race.
        let finished = Arc::new(AtomicUsize::new(0));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        {
            let stuck = Arc::clone(&stuck);
            let finished = Arc::clone(&finished);
            tokio::task::spawn_blocking(move || {
                for (i, path, key) in batch {
                    let result = stat(&path);
                    if let Ok(mut set) = stuck.lock() {
                        // Recovered from an earlier hang: monitor it again.
                        set.remove(&key);
                        finished.fetch_add(1, Ordering::SeqCst);
                    }
                    // The receiver is gone when the scrape moved on past a
                    // hang: stop here, the next scrape stats again.
                    if tx.send((i, result)).is_err() {
                        break;
                    }
                }
            });
        }
        let mut received = 0;
        let mut next_start = paths.len();
        loop {
            match tokio::time::timeout(per_mount, rx.recv()).await {
                Ok(Some((i, result))) => {
                    results[i] = Some(result);
                    received += 1;
                }
                Ok(None) => break,
                Err(_) => {
                    let hung = start + received;
                    if let Ok(mut set) = stuck.lock() {
                        if finished.load(Ordering::SeqCst) <= received {
                            tracing::warn!(mount_point = %keys[hung], timeout = ?per_mount, "statfs did not answer; skipping this mount point until it does");
                            set.insert(keys[hung].clone());
                        }
                    }
                    next_start = hung + 1;
                    break;
                }
            }
        }
        start = next_start;
    }
    results
}

/// Builds the filesystem collector. It implements [`Collector`] itself, not
/// a read function, because it is the one node collector that awaits: its
/// statfs calls run on blocking threads bounded by the scrape's deadline,
/// so a hung mount never blocks the scrape task.
pub(super) fn collector(name: &'static str, settings: Arc<Settings>) -> Arc<dyn Collector> {
    Arc::new(FilesystemCollector { name, settings })
}

struct FilesystemCollector {
    name: &'static str,
    settings: Arc<Settings>,
}

#[async_trait]
impl Collector for FilesystemCollector {
    fn name(&self) -> &str {
        self.name
    }

    fn namespace(&self) -> &str {
        "node"
    }

    async fn collect(&self, ctx: CollectContext) -> Result<Collected, CollectError> {
        filesystem(Arc::clone(&self.settings), ctx).await
    }
}

pub(crate) async fn filesystem(
    settings: Arc<Settings>,
    ctx: CollectContext,
) -> Result<Collected, CollectError> {
    // node_exporter reads init's mount table (the host's view when running
    // in a container with the host's /proc) and falls back to our own.
    let text = match std::fs::read_to_string(settings.proc_path("1/mounts")) {
        Ok(t) => t,
        Err(_) => read_text(&settings.proc_path("mounts"))?,
    };
    let mut seen = HashSet::new();
    let mounts: Vec<Mount> = parse_mounts(&text)
        .into_iter()
        .filter(|m| !settings.mount_points_exclude.is_match(&m.mount_point))
        .filter(|m| !settings.fs_types_exclude.is_match(&m.fs_type))
        .filter(|m| seen.insert((m.device.clone(), m.mount_point.clone(), m.fs_type.clone())))
        .collect();

    let already_stuck: HashSet<String> = settings
        .stuck_mounts
        .lock()
        .map(|s| s.clone())
        .unwrap_or_default();
    let (to_stat, skipped): (Vec<&Mount>, Vec<&Mount>) = mounts
        .iter()
        .partition(|m| !already_stuck.contains(&m.mount_point));
    let paths = to_stat
        .iter()
        .map(|m| settings.rootfs.join(m.mount_point.trim_start_matches('/')))
        .collect();
    let keys = to_stat.iter().map(|m| m.mount_point.clone()).collect();
    // Leave a little of the scrape budget for encoding.
    let budget = ctx.remaining().saturating_sub(Duration::from_millis(100));
    let per_mount = settings
        .statfs_timeout
        .min(budget)
        .max(Duration::from_millis(1));
    let results = statfs_all(
        paths,
        keys,
        per_mount,
        Arc::clone(&settings.stuck_mounts),
        statfs,
    )
    .await;

    let labels = |m: &Mount| {
        [
            ("device", m.device.clone()),
            ("fstype", m.fs_type.clone()),
            ("mountpoint", m.mount_point.clone()),
        ]
    };
    let mut size = MetricFamily::gauge("node_filesystem_size_bytes", "Filesystem size in bytes.");
    let mut free = MetricFamily::gauge(
        "node_filesystem_free_bytes",
        "Filesystem free space in bytes.",
    );
    let mut avail = MetricFamily::gauge(
        "node_filesystem_avail_bytes",
        "Filesystem space available to non-root users in bytes.",
    );
    let mut files = MetricFamily::gauge("node_filesystem_files", "Filesystem total file nodes.");
    let mut files_free = MetricFamily::gauge(
        "node_filesystem_files_free",
        "Filesystem total free file nodes.",
    );
    let mut readonly =
        MetricFamily::gauge("node_filesystem_readonly", "Filesystem read-only status.");
    let mut device_error = MetricFamily::gauge(
        "node_filesystem_device_error",
        "Whether an error occurred while getting statistics for the given device.",
    );
    for m in skipped {
        device_error.push(labels(m), 1.0);
    }
    for (m, result) in to_stat.into_iter().zip(results) {
        match result {
            Some(Ok(st)) => {
                device_error.push(labels(m), 0.0);
                size.push(labels(m), st.size);
                free.push(labels(m), st.free);
                avail.push(labels(m), st.avail);
                files.push(labels(m), st.files);
                files_free.push(labels(m), st.files_free);
                readonly.push(labels(m), if m.read_only { 1.0 } else { 0.0 });
            }
            Some(Err(e)) => {
                tracing::debug!(mount_point = %m.mount_point, error = %e, "statfs failed");
                device_error.push(labels(m), 1.0);
            }
            None => {
                device_error.push(labels(m), 1.0);
            }
        }
    }
    Ok(vec![size, free, avail, files, files_free, readonly, device_error].into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_parse_with_escapes_and_ro() {
        let text = "/dev/vda / ext4 rw,relatime 0 0\nproc /proc proc rw 0 0\n/dev/sdb1 /mnt/my\\040disk vfat ro,noatime 0 0\nbroken\n";
        let m = parse_mounts(text);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].mount_point, "/");
        assert!(!m[0].read_only);
        assert_eq!(m[2].mount_point, "/mnt/my disk");
        assert!(m[2].read_only);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn statfs_reports_real_mounts_and_errors() {
        let stuck = Arc::new(Mutex::new(HashSet::new()));
        let results = statfs_all(
            vec![PathBuf::from("/"), PathBuf::from("/nonexistent/steward")],
            vec!["/".into(), "/nonexistent/steward".into()],
            Duration::from_secs(5),
            Arc::clone(&stuck),
            statfs,
        )
        .await;
        let root = results[0].as_ref().unwrap().as_ref().unwrap();
        assert!(root.size > 0.0 && root.avail <= root.size);
        assert!(results[1].as_ref().unwrap().is_err());
        assert!(stuck.lock().unwrap().is_empty());
    }

    /// Stands in for statfs on a stale NFS mount: `/hang` blocks for a while.
    fn hanging_stat(path: &Path) -> std::io::Result<FsStats> {
        if path == Path::new("/hang") {
            std::thread::sleep(Duration::from_millis(1500));
        }
        statfs(Path::new("/"))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hanging_statfs_is_skipped_without_blocking_the_rest() {
        let stuck = Arc::new(Mutex::new(HashSet::new()));
        let paths: Vec<PathBuf> = ["/a", "/hang", "/b", "/c"]
            .iter()
            .map(PathBuf::from)
            .collect();
        let keys: Vec<String> = ["/a", "/hang", "/b", "/c"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let started = std::time::Instant::now();
        let results = statfs_all(
            paths.clone(),
            keys.clone(),
            Duration::from_millis(200),
            Arc::clone(&stuck),
            hanging_stat,
        )
        .await;
        // One timeout, not one per mount, and the mounts after the hang
        // still answered.
        assert!(
            started.elapsed() < Duration::from_millis(1200),
            "{:?}",
            started.elapsed()
        );
        assert!(results[0].as_ref().is_some_and(|r| r.is_ok()));
        assert!(results[1].is_none());
        assert!(results[2].as_ref().is_some_and(|r| r.is_ok()));
        assert!(results[3].as_ref().is_some_and(|r| r.is_ok()));
        assert!(stuck.lock().unwrap().contains("/hang"));
        // Once the call returns, the mount is monitored again.
        tokio::time::sleep(Duration::from_millis(1600)).await;
        assert!(stuck.lock().unwrap().is_empty());
    }
}
