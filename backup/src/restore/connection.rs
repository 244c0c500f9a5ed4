//! Which database server a restore or drill writes to. One precedence for
//! `steward restore`, `steward drill` and scheduled drills: the command
//! line first, then the job's configuration (when this host has it), with
//! the client's environment for passwords (`MYSQL_PWD` before the job's;
//! `PGPASSWORD`/`~/.pgpass` when the job sets none). A host or user given
//! on the command line is another server or account, so the job's password
//! is not sent to it.

use crate::config::JobConfig;
use crate::restore::mysql::MysqlConnection;
use crate::restore::postgres::PgConnection;

/// Server and account given on the command line (`--db-host`,
/// `--db-port`, `--db-user`); all empty for scheduled drills.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionOverrides {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
}

impl ConnectionOverrides {
    /// The PostgreSQL connection. `PGPASSWORD` and `~/.pgpass` need no
    /// handling here: the PostgreSQL tools read them when the connection
    /// carries no password.
    pub fn postgres(&self, job: Option<&JobConfig>) -> PgConnection {
        PgConnection {
            host: self
                .host
                .clone()
                .or_else(|| job.and_then(|j| j.host.clone())),
            port: self.port.or_else(|| job.and_then(|j| j.port)),
            user: self
                .user
                .clone()
                .or_else(|| job.and_then(|j| j.user.clone())),
            password: if self.host.is_some() || self.user.is_some() {
                None
            } else {
                job.and_then(|j| j.password.clone())
            },
            bin_dir: job.and_then(|j| j.bin_dir.clone()),
        }
    }

    /// The MySQL/MariaDB connection, with `MYSQL_PWD` from the environment
    /// taking precedence over the job's password (the client tools are run
    /// with `--no-defaults`, so they would not read it themselves).
    pub fn mysql(&self, job: Option<&JobConfig>) -> MysqlConnection {
        self.mysql_with_env_password(job, std::env::var("MYSQL_PWD").ok())
    }

    /// [`Self::mysql`] with the environment's password passed in.
    pub fn mysql_with_env_password(
        &self,
        job: Option<&JobConfig>,
        env_password: Option<String>,
    ) -> MysqlConnection {
        // A host or port on the command line means TCP: the job's socket
        // belongs to the server it was configured for.
        let explicit_server = self.host.is_some() || self.port.is_some();
        MysqlConnection {
            host: self
                .host
                .clone()
                .or_else(|| job.and_then(|j| j.host.clone())),
            port: self.port.or_else(|| job.and_then(|j| j.port)),
            socket: if explicit_server {
                None
            } else {
                job.and_then(|j| j.socket.clone())
            },
            user: self
                .user
                .clone()
                .or_else(|| job.and_then(|j| j.user.clone())),
            password: env_password.or_else(|| {
                if explicit_server || self.user.is_some() {
                    None
                } else {
                    job.and_then(|j| j.password.clone())
                }
            }),
            bin_dir: job.and_then(|j| j.bin_dir.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> JobConfig {
        let mut j: JobConfig = toml::from_str(r#"kind = "mysql""#).unwrap();
        j.host = Some("db.internal".into());
        j.port = Some(3307);
        j.user = Some("backup".into());
        j.password = Some("job-secret".into());
        j.socket = Some("/run/mysqld/mysqld.sock".into());
        j
    }

    #[test]
    fn job_configuration_applies_without_flags() {
        let j = job();
        let none = ConnectionOverrides::default();
        let pg = none.postgres(Some(&j));
        assert_eq!(pg.host.as_deref(), Some("db.internal"));
        assert_eq!(pg.port, Some(3307));
        assert_eq!(pg.password.as_deref(), Some("job-secret"));
        let my = none.mysql_with_env_password(Some(&j), None);
        assert_eq!(my.password.as_deref(), Some("job-secret"));
        assert!(my.socket.is_some());
    }

    #[test]
    fn flags_win_and_keep_the_job_password_away_from_other_servers() {
        let j = job();
        let flags = ConnectionOverrides {
            host: Some("127.0.0.1".into()),
            port: Some(5999),
            user: Some("dba".into()),
        };
        let pg = flags.postgres(Some(&j));
        assert_eq!(pg.host.as_deref(), Some("127.0.0.1"));
        assert_eq!(pg.port, Some(5999));
        assert_eq!(pg.user.as_deref(), Some("dba"));
        assert_eq!(pg.password, None);
        let my = flags.mysql_with_env_password(Some(&j), None);
        assert_eq!(my.socket, None);
        assert_eq!(my.password, None);
        let port_only = ConnectionOverrides {
            port: Some(3399),
            ..Default::default()
        };
        let my = port_only.mysql_with_env_password(Some(&j), None);
        assert_eq!((my.socket, my.password), (None, None));
    }

    #[test]
    fn environment_password_beats_the_job_for_mysql() {
        let j = job();
        let none = ConnectionOverrides::default();
        let my = none.mysql_with_env_password(Some(&j), Some("env-secret".into()));
        assert_eq!(my.password.as_deref(), Some("env-secret"));
        let flags = ConnectionOverrides {
            user: Some("dba".into()),
            ..Default::default()
        };
        let my = flags.mysql_with_env_password(None, Some("env-secret".into()));
        assert_eq!(my.password.as_deref(), Some("env-secret"));
    }
}
