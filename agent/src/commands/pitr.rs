//! The `steward restore` flags of `postgres_pitr` jobs: the recovery
//! target, and the `restore_command` written into the restored data
//! directory (this binary's `wal fetch`, reaching the archive the way this
//! restore did).

use std::path::PathBuf;

use clap::Args;
use steward_backup::restore::Located;
use steward_backup::wal::names::Lsn;
use steward_backup::wal::recovery::RecoveryTarget;

use crate::commands::source::SourceArgs;
use crate::config::Loaded;

/// The `steward restore` flags of `postgres_pitr` jobs.
#[derive(Debug, Clone, Default, Args)]
pub struct PitrArgs {
    /// postgres_pitr: replay WAL up to this LSN (e.g. 0/3000148).
    #[arg(long, value_name = "LSN")]
    pub to_lsn: Option<String>,

    /// postgres_pitr: replay WAL up to this restore point
    /// (`pg_create_restore_point`).
    #[arg(long, value_name = "NAME")]
    pub to_name: Option<String>,

    /// postgres_pitr: start the restored server on 127.0.0.1:PORT, wait
    /// until recovery has ended and it was promoted, and leave it running.
    #[arg(long, value_name = "PORT")]
    pub start_port: Option<u16>,

    /// postgres_pitr: directory of pg_ctl and postgres (default:
    /// /usr/lib/postgresql/<the backup's major>/bin, else PATH).
    #[arg(long, value_name = "DIR")]
    pub pg_bin: Option<PathBuf>,
}

impl PitrArgs {
    /// Whether any point-in-time flag was given.
    pub fn asked(&self) -> bool {
        self.to_lsn.is_some() || self.to_name.is_some() || self.start_port.is_some()
    }

    /// `--to-time` (shared with MySQL binlog replay) / `--to-lsn` /
    /// `--to-name`, or the end of the archive.
    pub fn recovery_target(&self, to_time: Option<&str>) -> anyhow::Result<RecoveryTarget> {
        Ok(match (to_time, &self.to_lsn, &self.to_name) {
            (Some("latest"), None, None) => RecoveryTarget::Latest,
            (Some(t), None, None) => RecoveryTarget::parse_time(t)?,
            (None, Some(l), None) => RecoveryTarget::Lsn(Lsn::parse(l)?),
            (None, None, Some(n)) => RecoveryTarget::Name(n.clone()),
            (None, None, None) => RecoveryTarget::Latest,
            _ => anyhow::bail!("give one of --to-time, --to-lsn and --to-name"),
        })
    }
}

/// `'text'` for sh: the server runs restore_command through the shell.
fn sh_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// The restore_command for `located`: this binary, `wal fetch`, the same
/// `--from` (with its S3 options) or configuration file and target, the
/// host and the key file. Secrets are never part of it: S3 credentials and
/// `STEWARD_IDENTITY` come from the server's environment (`--start-port`
/// passes this process's own while recovery runs).
pub fn restore_command(
    source: &SourceArgs,
    loaded: &Loaded,
    located: &Located,
) -> anyhow::Result<String> {
    let exe = std::env::current_exe()
        .map_err(|e| anyhow::anyhow!("cannot tell where this steward binary is: {e}"))?;
    let mut args: Vec<String> = vec![exe.display().to_string(), "wal".into(), "fetch".into()];
    let mut flag = |name: &str, value: &str| {
        args.push(name.to_string());
        args.push(value.to_string());
    };
    if let Some(from) = &source.from {
        let from = match from.strip_prefix("s3://") {
            Some(_) => from.clone(),
            None => absolute(from.strip_prefix("file://").unwrap_or(from))?,
        };
        flag("--from", &from);
        if let Some(e) = &source.endpoint {
            flag("--endpoint", e);
        }
        if let Some(r) = &source.region {
            flag("--region", r);
        }
        if let Some(p) = &source.profile {
            flag("--profile", p);
        }
    } else {
        if let Some(p) = &loaded.path {
            flag("--config", &absolute(&p.display().to_string())?);
        }
        flag("--target", located.target.name());
    }
    flag("--host", &located.manifest.host);
    if let Some(id) = &source.identity {
        flag("--identity", &absolute(&id.display().to_string())?);
    }
    if source.from.is_some() && source.path_style {
        args.push("--path-style".into());
    }
    args.push(located.manifest.job.clone());
    let mut command: Vec<String> = args.iter().map(|a| sh_quote(a)).collect();
    command.push("%f".into());
    command.push("%p".into());
    Ok(command.join(" "))
}

fn absolute(path: &str) -> anyhow::Result<String> {
    let p = std::path::Path::new(path);
    Ok(if p.is_absolute() {
        path.to_string()
    } else {
        std::env::current_dir()?.join(p).display().to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting_keeps_every_argument_whole() {
        assert_eq!(sh_quote("/srv/my key's"), "'/srv/my key'\\''s'");
        assert_eq!(sh_quote("s3://b/p"), "'s3://b/p'");
    }
}
