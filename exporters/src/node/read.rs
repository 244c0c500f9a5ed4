//! Reading /proc and /sys: whole files, one-line attributes, attribute
//! directories held open, and the lenient number parsing the collectors
//! share (a garbled number reads as 0 instead of failing a collector).
//! These helpers exist because the obvious std calls cost a node scrape
//! hundreds of wasted system calls (see each one's comment).

use std::path::Path;

use crate::collector::CollectError;

/// Reads a whole /proc or /sys file, naming the path on failure.
pub(crate) fn read_text(path: &Path) -> Result<String, CollectError> {
    read_pseudo_file(std::fs::File::open(path), 4096)
        .map_err(|e| CollectError::failed(format!("cannot read {}: {e}", path.display())))
}

/// Reads an opened /proc or /sys file to its end. `std::fs::read_to_string`
/// asks for the file's size first, which these files report as 0 or 4096
/// whatever they hold: one wasted statx per file, hundreds per scrape.
pub(crate) fn read_pseudo_file(
    file: std::io::Result<std::fs::File>,
    capacity: usize,
) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::with_capacity(capacity);
    // `take` hides the size hint, so the read loop just reads.
    file?.take(u64::MAX).read_to_string(&mut text)?;
    Ok(text)
}

/// Reads a one-line sysfs/procfs attribute, trimmed; `None` when absent or
/// unreadable (sysfs answers EINVAL for attributes of a down interface).
pub(crate) fn read_attr(path: &Path) -> Option<String> {
    trim_attr(read_pseudo_file(std::fs::File::open(path), 64).ok()?)
}

fn trim_attr(mut s: String) -> Option<String> {
    let trimmed = s.trim_end_matches(['\n', ' ', '\0']).len();
    s.truncate(trimmed);
    Some(s)
}

/// A directory of attribute files (e.g. /sys/class/net/eth0) held open, so
/// each attribute is opened relative to it instead of walking the whole
/// path (and its symlinks) again: the path walk was the largest kernel cost
/// of a scrape.
pub(crate) struct AttrDir(rustix::fd::OwnedFd);

impl AttrDir {
    pub(crate) fn open(path: &Path) -> Option<AttrDir> {
        use rustix::fs::{Mode, OFlags};
        rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok()
        .map(AttrDir)
    }

    /// Opens a file of this directory for reading.
    fn open_file(&self, name: &str) -> std::io::Result<std::fs::File> {
        use rustix::fs::{Mode, OFlags};
        rustix::fs::openat(
            &self.0,
            name,
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map(std::fs::File::from)
        .map_err(std::io::Error::from)
    }

    /// [`read_attr`] for a file of this directory.
    pub(crate) fn attr(&self, name: &str) -> Option<String> {
        trim_attr(read_pseudo_file(self.open_file(name), 64).ok()?)
    }

    /// The attribute as text with invalid UTF-8 replaced (DMI strings come
    /// from firmware), trimmed at the end like [`AttrDir::attr`].
    pub(crate) fn attr_lossy(&self, name: &str) -> Option<String> {
        use std::io::Read;
        let mut bytes = Vec::with_capacity(64);
        self.open_file(name).ok()?.read_to_end(&mut bytes).ok()?;
        trim_attr(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The attribute with surrounding white space removed (Go's TrimSpace),
    /// as node_exporter's sysfs readers see it.
    pub(crate) fn trimmed(&self, name: &str) -> Option<String> {
        let v = self.attr(name)?;
        let t = v.trim();
        Some(if t.len() == v.len() { v } else { t.to_string() })
    }

    /// The attribute as a signed decimal integer.
    pub(crate) fn int(&self, name: &str) -> Option<i64> {
        self.attr(name)?.trim().parse().ok()
    }

    /// The attribute as an unsigned decimal integer.
    pub(crate) fn uint(&self, name: &str) -> Option<u64> {
        self.attr(name)?.trim().parse().ok()
    }

    /// Whether the directory has an entry `name`.
    pub(crate) fn has(&self, name: &str) -> bool {
        rustix::fs::accessat(
            &self.0,
            name,
            rustix::fs::Access::EXISTS,
            rustix::fs::AtFlags::empty(),
        )
        .is_ok()
    }
}

/// True when the error means the source does not exist on this host (no
/// md arrays, no hwmon chips, no netfilter): such a collector exports
/// nothing and still succeeds, so `/health` stays green on a VM.
pub(crate) fn is_absent(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
    )
}

/// Reads a file that may legitimately be missing: `Ok(None)` when absent.
pub(crate) fn read_optional(path: &Path) -> Result<Option<String>, CollectError> {
    match read_pseudo_file(std::fs::File::open(path), 4096) {
        Ok(s) => Ok(Some(s)),
        Err(e) if is_absent(&e) => Ok(None),
        Err(e) => Err(CollectError::failed(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

/// A decimal number of a /proc file; a garbled one reads as 0 rather than
/// failing the whole collector.
pub(crate) fn num(s: &str) -> f64 {
    s.parse::<f64>().unwrap_or(0.0)
}

/// A hexadecimal number of a /proc file (softnet, conntrack, udp queues);
/// 0 when garbled.
pub(crate) fn hex(s: &str) -> f64 {
    u64::from_str_radix(s, 16).map(|v| v as f64).unwrap_or(0.0)
}

/// Names in `dir`, sorted bytewise (Go's `os.ReadDir` and `filepath.Glob`
/// order, which decides RAPL's `index` label); `Ok(None)` when the
/// directory does not exist.
pub(crate) fn sorted_names(dir: &Path) -> Result<Option<Vec<String>>, CollectError> {
    let listing = match std::fs::read_dir(dir) {
        Ok(l) => l,
        Err(e) if is_absent(&e) => return Ok(None),
        Err(e) => {
            return Err(CollectError::failed(format!(
                "cannot list {}: {e}",
                dir.display()
            )))
        }
    };
    let mut out: Vec<String> = listing
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    out.sort_unstable();
    Ok(Some(out))
}

/// The part of `name` after `prefix` when it starts with a digit: the
/// glob `<prefix>[0-9]*` node_exporter uses for numbered entries.
pub(crate) fn numbered<'a>(name: &'a str, prefix: &str) -> Option<&'a str> {
    name.strip_prefix(prefix)
        .filter(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
}
