//! Putting a snapshot's data back, whatever its kind, in one place:
//! `steward restore` and drills describe what they want in a
//! [`RestoreRequest`] and call [`restore_snapshot`], so the choice between
//! `pg_restore`, the MySQL client, unpacking an archive and writing a
//! Redis `dump.rdb` is made once
//! (and a new job kind is one arm here).

use std::path::PathBuf;
use std::sync::Arc;

use crate::error::Result;
use crate::manifest::JobKind;
use crate::restore::files::{self, FilesRestoreOptions};
use crate::restore::mysql::{self, MysqlConnection, MysqlRestoreOptions};
use crate::restore::postgres::{self, PgConnection, PgRestoreOptions};
use crate::restore::{Identities, Located, Progress, RestoredItem};
use crate::wal::recovery::{self, PitrRestoreOptions};

/// What to restore from a snapshot and where to. The database fields
/// apply to database snapshots, `files` to files and config snapshots.
#[derive(Debug, Clone, Default)]
pub struct RestoreRequest {
    /// Databases of the snapshot to restore; every one when empty.
    pub databases: Vec<String>,
    /// Restore into this database name (exactly one database selected).
    pub into: Option<String>,
    /// Databases: allow one that already has tables. Files: allow a
    /// non-empty destination directory.
    pub force: bool,
    /// PostgreSQL: also restore roles and tablespaces from the globals dump.
    pub globals: bool,
    /// PostgreSQL: `pg_restore -j N`.
    pub parallel: Option<u32>,
    /// PostgreSQL: where dumps are spooled for parallel restores.
    pub spool_dir: Option<PathBuf>,
    pub pg: PgConnection,
    pub mysql: MysqlConnection,
    /// MySQL: after the dump, replay the shipped binlogs up to this point
    /// (`--to-time`, `--to-position`); the snapshot must have been picked
    /// by [`crate::binlog::replay::locate_base`].
    pub binlog_until: Option<crate::binlog::replay::Until>,
    pub files: FilesRestoreOptions,
    /// `postgres_pitr`: the data directory, the recovery target, ...
    pub pitr: PitrRestoreOptions,
}

/// Restores `located` as `request` says, by the kind its manifest records,
/// and returns what was restored with the checks made against the manifest.
pub async fn restore_snapshot(
    located: &Located,
    identities: &Identities,
    progress: Arc<dyn Progress>,
    request: &RestoreRequest,
) -> Result<Vec<RestoredItem>> {
    match located.manifest.kind {
        JobKind::Postgres => {
            let options = PgRestoreOptions {
                databases: request.databases.clone(),
                into: request.into.clone(),
                force: request.force,
                globals: request.globals,
                parallel: request.parallel,
                spool_dir: request.spool_dir.clone(),
            };
            postgres::restore(located, identities, progress, &request.pg, &options).await
        }
        JobKind::PostgresPitr => {
            recovery::restore(located, identities, progress, &request.pitr).await
        }
        JobKind::Mysql => {
            let options = MysqlRestoreOptions {
                databases: request.databases.clone(),
                into: request.into.clone(),
                force: request.force,
            };
            let mut items = mysql::restore(
                located,
                identities,
                Arc::clone(&progress),
                &request.mysql,
                &options,
            )
            .await?;
            if let Some(until) = &request.binlog_until {
                for item in &mut items {
                    let check = crate::binlog::replay::replay(
                        located,
                        identities,
                        Arc::clone(&progress),
                        &request.mysql,
                        &item.source,
                        &item.name,
                        until,
                    )
                    .await?;
                    item.checks.push(check);
                }
            }
            Ok(items)
        }
        JobKind::Files | JobKind::Config => {
            let item = files::restore(located, identities, progress, &request.files, request.force)
                .await?;
            Ok(vec![item])
        }
        JobKind::Redis => {
            // `--to DIR` is shared with files restores: DIR/dump.rdb.
            let item = crate::restore::redis::restore(
                located,
                identities,
                progress,
                request.files.to.as_deref(),
            )
            .await?;
            Ok(vec![item])
        }
    }
}
