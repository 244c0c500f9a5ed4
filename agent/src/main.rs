//! `steward`: one binary that replaces a host's exporters, log/trace shipper
//! and backup scripts. This file wires the modules together and runs the
//! command line (cli.rs) through `commands::dispatch`.

mod binlog;
mod cli;
mod commands;
mod config;
mod daemon;
mod exit_code;
mod generation;
mod grafana;
mod logging;
mod memory;
mod notify;
mod scheduled_drills;
mod scheduler;
mod sd_notify;
mod self_metrics;
mod server;
mod spans;
mod supervise;
mod telemetry;
mod wal_stream;
mod walspool;
mod walwatch;
mod web;

use std::process::ExitCode;

use clap::Parser;

/// Sets the umask to 0o077 before anything is created. The agent runs as
/// root and writes plaintext logs (the telemetry queue), checkpoints,
/// snapshots on a local target, restore spools and scratch trees, and
/// reports; under the usual inherited 0o022 all of that would be readable
/// by every local user, the web application's among them. The libraries
/// also ask for 0o700/0o600 where they create their own files; this covers
/// the rest and the tools run as children (pg_restore spools, tar).
fn private_by_default() {
    let _inherited = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

fn main() -> ExitCode {
    memory::limit_malloc_arenas();
    private_by_default();
    let cli = cli::Cli::parse();
    match commands::dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            // One clear line (plus causes), never a backtrace.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
