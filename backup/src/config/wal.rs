//! The keys of async WAL archiving on `postgres_pitr` jobs
//! (`archive_async`, `spool_dir`, `spool_max_bytes`) and their checks.

use super::JobConfig;
use crate::manifest::JobKind;

/// The smallest spool: one 16 MiB segment (the default segment size).
pub const MIN_SPOOL_BYTES: u64 = 16 * 1024 * 1024;

pub(super) fn validate_async_archive(at: &str, job: &JobConfig, errors: &mut Vec<String>) {
    if job.kind != JobKind::PostgresPitr {
        if job.archive_async {
            errors.push(format!(
                "{at}.archive_async: not used by kind = \"{}\" (WAL archiving is for postgres_pitr jobs)",
                job.kind
            ));
        }
        if job.spool_dir.is_some() {
            errors.push(format!(
                "{at}.spool_dir: not used by kind = \"{}\"",
                job.kind
            ));
        }
        return;
    }
    match (&job.spool_dir, job.archive_async) {
        (None, true) => errors.push(format!(
            "{at}.spool_dir: archive_async needs a spool directory that archive_command's user (postgres) can write and the agent can empty, e.g. /var/lib/steward/wal-spool/{}; see README, asynchronous archiving",
            at.trim_start_matches("jobs.")
        )),
        (Some(_), false) => errors.push(format!(
            "{at}.spool_dir: only used with archive_async = true"
        )),
        (Some(d), true) if !d.is_absolute() => errors.push(format!(
            "{at}.spool_dir: {} is not an absolute path",
            d.display()
        )),
        _ => {}
    }
    if job.archive_async && job.spool_max_bytes < MIN_SPOOL_BYTES {
        errors.push(format!(
            "{at}.spool_max_bytes: {} is less than one 16 MiB WAL segment ({MIN_SPOOL_BYTES}); every push would fail",
            job.spool_max_bytes
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::super::BackupConfig;

    const RECIPIENT: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";

    fn problems(job: &str) -> Vec<String> {
        let c: BackupConfig =
            toml::from_str(&format!("recipients = [\"{RECIPIENT}\"]\n[jobs.pg]\n{job}")).unwrap();
        c.validate()
    }

    #[test]
    fn async_archiving_needs_an_absolute_spool_and_room_for_a_segment() {
        let pitr = "kind = \"postgres_pitr\"\n";
        assert_eq!(
            problems(&format!(
                "{pitr}archive_async = true\nspool_dir = \"/var/lib/steward/wal-spool/pg\"\n"
            )),
            Vec::<String>::new()
        );
        let cases = [
            (
                "archive_async = true\n",
                "jobs.pg.spool_dir: archive_async needs",
            ),
            (
                "spool_dir = \"/s\"\n",
                "jobs.pg.spool_dir: only used with archive_async",
            ),
            (
                "archive_async = true\nspool_dir = \"s\"\n",
                "jobs.pg.spool_dir: s is not an absolute path",
            ),
            (
                "archive_async = true\nspool_dir = \"/s\"\nspool_max_bytes = 1000\n",
                "jobs.pg.spool_max_bytes: 1000 is less than one",
            ),
        ];
        for (keys, want) in cases {
            let got = problems(&format!("{pitr}{keys}"));
            assert!(got.iter().any(|e| e.starts_with(want)), "{keys}: {got:?}");
        }
        let got = problems("kind = \"postgres\"\narchive_async = true\n");
        assert!(
            got.iter()
                .any(|e| e.starts_with("jobs.pg.archive_async: not used")),
            "{got:?}"
        );
    }
}
