//! The library's own files and directories (snapshots on a local target,
//! reports, locks) are created private, 0o700/0o600, whatever umask the
//! process inherited: they hold dumps and names of what is backed up.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

/// Mode of the directories Steward creates.
pub const DIR_MODE: u32 = 0o700;
/// Mode of the files Steward creates.
pub const FILE_MODE: u32 = 0o600;

/// `create_dir_all` with every created directory [`DIR_MODE`] (existing
/// ones keep theirs: the operator chose them).
pub fn create_dir_all(path: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
}

/// Options that create (or truncate) a file for writing, [`FILE_MODE`]
/// when created.
pub fn create_options() -> std::fs::OpenOptions {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true).mode(FILE_MODE);
    o
}

/// `std::fs::write` that creates the file [`FILE_MODE`].
pub fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    create_options().open(path)?.write_all(bytes)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_private_even_when_the_umask_would_not() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b");
        super::create_dir_all(&nested).unwrap();
        super::write(&nested.join("f"), b"x").unwrap();
        for (p, want) in [
            (dir.path().join("a"), 0o700),
            (nested.clone(), 0o700),
            (nested.join("f"), 0o600),
        ] {
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, want, "{}", p.display());
        }
    }
}
