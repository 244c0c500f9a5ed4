//! Collectors built on system calls: filesystem (statfs, isolated on a
//! blocking thread with a timeout), uname, timex (adjtimex) and time.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{gauge, read_attr, read_text, Settings};
use crate::collector::{CollectContext, CollectError, Collected};
use crate::metrics::MetricFamily;

// ------------------------------------------------------------- filesystem

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

// ------------------------------------------------------------------ uname

pub(crate) fn uname() -> Result<Vec<MetricFamily>, CollectError> {
    let u = rustix::system::uname();
    let s = |c: &std::ffi::CStr| c.to_string_lossy().into_owned();
    Ok(vec![MetricFamily::gauge(
        "node_uname_info",
        "Labeled system information as provided by the uname system call.",
    )
    .with(
        [
            ("domainname", s(u.domainname())),
            ("machine", s(u.machine())),
            ("nodename", s(u.nodename())),
            ("release", s(u.release())),
            ("sysname", s(u.sysname())),
            ("version", s(u.version())),
        ],
        1.0,
    )])
}

// ------------------------------------------------------------------ timex

pub(crate) fn timex() -> Result<Vec<MetricFamily>, CollectError> {
    const STA_NANO: i32 = 0x2000;
    const TIME_ERROR: i32 = 5;
    // adjtimex(2) scales frequencies as ppm with a 16-bit fraction.
    const PPM16: f64 = 1_000_000.0 * 65536.0;
    const MICRO: f64 = 1e6;
    let mut tx = rtime_clock::adjtime::Timex::new();
    // modes = 0: read only.
    let state = rtime_clock::adjtime::adjtimex(&mut tx)
        .map_err(|e| CollectError::failed(format!("adjtimex failed: {e}")))?;
    let t = &tx.0;
    let divisor = if t.status & STA_NANO != 0 { 1e9 } else { MICRO };
    let sync = if state == TIME_ERROR { 0.0 } else { 1.0 };
    let g = gauge;
    Ok(vec![
        g(
            "node_timex_sync_status",
            "Is clock synchronized to a reliable server (1 = yes, 0 = no).",
            sync,
        ),
        g(
            "node_timex_offset_seconds",
            "Time offset in between local system and reference clock.",
            t.offset as f64 / divisor,
        ),
        g(
            "node_timex_frequency_adjustment_ratio",
            "Local clock frequency adjustment.",
            1.0 + t.freq as f64 / PPM16,
        ),
        g(
            "node_timex_maxerror_seconds",
            "Maximum error in seconds.",
            t.maxerror as f64 / MICRO,
        ),
        g(
            "node_timex_estimated_error_seconds",
            "Estimated error in seconds.",
            t.esterror as f64 / MICRO,
        ),
        g(
            "node_timex_status",
            "Value of the status array bits.",
            t.status as f64,
        ),
        g(
            "node_timex_loop_time_constant",
            "Phase-locked loop time constant.",
            t.constant as f64,
        ),
        g(
            "node_timex_tick_seconds",
            "Seconds between clock ticks.",
            t.tick as f64 / MICRO,
        ),
        g(
            "node_timex_pps_frequency_hertz",
            "Pulse per second frequency.",
            t.ppsfreq as f64 / PPM16,
        ),
        g(
            "node_timex_pps_jitter_seconds",
            "Pulse per second jitter.",
            t.jitter as f64 / divisor,
        ),
        g(
            "node_timex_pps_shift_seconds",
            "Pulse per second interval duration.",
            t.shift as f64,
        ),
        g(
            "node_timex_pps_stability_hertz",
            "Pulse per second stability, average of recent frequency changes.",
            t.stabil as f64 / PPM16,
        ),
        super::counter(
            "node_timex_pps_jitter_total",
            "Pulse per second count of jitter limit exceeded events.",
            t.jitcnt as f64,
        ),
        super::counter(
            "node_timex_pps_calibration_total",
            "Pulse per second count of calibration intervals.",
            t.calcnt as f64,
        ),
        super::counter(
            "node_timex_pps_error_total",
            "Pulse per second count of calibration errors.",
            t.errcnt as f64,
        ),
        super::counter(
            "node_timex_pps_stability_exceeded_total",
            "Pulse per second count of stability limit exceeded events.",
            t.stbcnt as f64,
        ),
        g(
            "node_timex_tai_offset_seconds",
            "International Atomic Time (TAI) offset.",
            t.tai as f64,
        ),
    ])
}

// ------------------------------------------------------------------- time

pub(crate) fn time(s: &Settings) -> Result<Vec<MetricFamily>, CollectError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| CollectError::failed(format!("system clock before 1970: {e}")))?;
    let mut out = vec![gauge(
        "node_time_seconds",
        "System time in seconds since epoch (1970).",
        now.as_secs_f64(),
    )];
    let (zone, offset) = local_zone(now.as_secs() as i64);
    out.push(
        MetricFamily::gauge(
            "node_time_zone_offset_seconds",
            "System time zone offset in seconds.",
        )
        .with([("time_zone", zone)], offset as f64),
    );
    let mut available = MetricFamily::gauge(
        "node_time_clocksource_available_info",
        "Available clocksources read from '/sys/devices/system/clocksource'.",
    );
    let mut current = MetricFamily::gauge(
        "node_time_clocksource_current_info",
        "Current clocksource read from '/sys/devices/system/clocksource'.",
    );
    if let Ok(entries) = std::fs::read_dir(s.sys_path("devices/system/clocksource")) {
        let mut dirs: Vec<(String, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let id = name.strip_prefix("clocksource")?.to_string();
                id.bytes()
                    .all(|b| b.is_ascii_digit())
                    .then(|| (id, e.path()))
            })
            .collect();
        dirs.sort();
        for (id, dir) in dirs {
            if let Some(list) = read_attr(&dir.join("available_clocksource")) {
                for cs in list.split_ascii_whitespace() {
                    available.push([("clocksource", cs), ("device", id.as_str())], 1.0);
                }
            }
            if let Some(cs) = read_attr(&dir.join("current_clocksource")) {
                current.push([("clocksource", cs.as_str()), ("device", id.as_str())], 1.0);
            }
        }
    }
    out.push(available);
    out.push(current);
    Ok(out)
}

/// The local time zone's abbreviation and UTC offset at `now`, from `TZ`
/// or /etc/localtime (a TZif file), like Go's `time.Local`. Falls back to
/// UTC when neither can be read.
fn local_zone(now: i64) -> (String, i64) {
    let utc = ("UTC".to_string(), 0);
    let path = match std::env::var("TZ") {
        Ok(tz) if tz.is_empty() || tz == "UTC" || tz == ":UTC" => return utc,
        Ok(tz) => {
            let name = tz.trim_start_matches(':');
            if name.starts_with('/') {
                PathBuf::from(name)
            } else {
                Path::new("/usr/share/zoneinfo").join(name)
            }
        }
        Err(_) => PathBuf::from("/etc/localtime"),
    };
    std::fs::read(&path)
        .ok()
        .and_then(|data| tzif_zone_at(&data, now))
        .unwrap_or(utc)
}

/// Looks up the zone in effect at `now` in TZif data: the type of the last
/// transition at or before `now` (the 64-bit block when present).
pub(crate) fn tzif_zone_at(data: &[u8], now: i64) -> Option<(String, i64)> {
    fn be32(d: &[u8], at: usize) -> Option<u32> {
        Some(u32::from_be_bytes(d.get(at..at + 4)?.try_into().ok()?))
    }
    fn counts(d: &[u8], at: usize) -> Option<[usize; 6]> {
        if d.get(at..at + 4)? != b"TZif" {
            return None;
        }
        let mut c = [0usize; 6];
        for (i, slot) in c.iter_mut().enumerate() {
            *slot = be32(d, at + 20 + 4 * i)? as usize;
        }
        Some(c)
    }
    let [isut, isstd, leap, timecnt, typecnt, charcnt] = counts(data, 0)?;
    let version = *data.get(4)?;
    let (base, time_size, c) = if version >= b'2' {
        let v1_len = timecnt * 5 + typecnt * 6 + charcnt + leap * 8 + isstd + isut;
        let at = 44 + v1_len;
        (at + 44, 8, counts(data, at)?)
    } else {
        (44, 4, [isut, isstd, leap, timecnt, typecnt, charcnt])
    };
    let [_, _, _, timecnt, typecnt, charcnt] = c;
    let times_at = base;
    let idx_at = times_at + timecnt * time_size;
    let types_at = idx_at + timecnt;
    let chars_at = types_at + typecnt * 6;
    let chars = data.get(chars_at..chars_at + charcnt)?;
    let mut type_index = 0usize;
    for i in 0..timecnt {
        let t = if time_size == 8 {
            i64::from_be_bytes(
                data.get(times_at + 8 * i..times_at + 8 * i + 8)?
                    .try_into()
                    .ok()?,
            )
        } else {
            be32(data, times_at + 4 * i)? as i32 as i64
        };
        if t > now {
            break;
        }
        type_index = *data.get(idx_at + i)? as usize;
    }
    let ttinfo = data.get(types_at + type_index * 6..types_at + type_index * 6 + 6)?;
    let offset = i32::from_be_bytes(ttinfo[0..4].try_into().ok()?) as i64;
    let abbr_at = ttinfo[5] as usize;
    let abbr_bytes = chars.get(abbr_at..)?;
    let end = abbr_bytes
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(abbr_bytes.len());
    Some((
        String::from_utf8_lossy(&abbr_bytes[..end]).into_owned(),
        offset,
    ))
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

    #[test]
    fn utc_tzif_is_read() {
        // A minimal v1 TZif: no transitions, one type (offset 3600, "CET").
        let mut d = b"TZif".to_vec();
        d.push(0);
        d.extend([0u8; 15]);
        for c in [0u32, 0, 0, 0, 1, 4] {
            d.extend(c.to_be_bytes());
        }
        d.extend(3600i32.to_be_bytes());
        d.extend([0u8, 0u8]);
        d.extend(b"CET\0");
        assert_eq!(tzif_zone_at(&d, 1_700_000_000), Some(("CET".into(), 3600)));
        assert_eq!(tzif_zone_at(b"nope", 0), None);
        if let Ok(real) = std::fs::read("/usr/share/zoneinfo/Etc/UTC") {
            assert_eq!(tzif_zone_at(&real, 1_700_000_000), Some(("UTC".into(), 0)));
        }
    }
}
