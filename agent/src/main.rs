//! `steward`: one binary that replaces a host's exporters, log/trace shipper
//! and backup scripts. This file wires the modules together and runs the
//! command line (cli.rs) through `commands::dispatch`.

mod cli;
mod commands;
mod config;
mod daemon;
mod exit_code;
mod generation;
mod grafana;
mod logging;
mod memory;
mod scheduled_drills;
mod scheduler;
mod self_metrics;
mod server;
mod spans;
mod telemetry;
mod web;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    memory::limit_malloc_arenas();
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
