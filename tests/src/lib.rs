//! Test harness: starts real services (PostgreSQL, MariaDB, nginx, PHP-FPM,
//! Redis, moto S3, Prometheus, the Debian exporters) on free loopback ports in
//! temporary directories, and runs the real `steward` binary against them.
//! Every child process is killed when its guard drops.

pub mod backup_env;
pub mod binlog_support;
pub mod grafana_api;
pub mod mariadb;
pub mod nginx;
pub mod node_exporter;
pub mod notify_receivers;
pub mod otlp_sink;
pub mod phpfpm;
pub mod pitr;
pub mod pki;
pub mod postgres;
pub mod process;
pub mod promtext;
pub mod redis;
pub mod s3;
pub mod switch_proxy;

pub use process::{
    free_port, http_get, steward_bin, wait_for_http, wait_for_tcp, ChildGuard, StewardAgent,
};
