//! `steward backup run|list|show|prune`: on-demand runs (the pre-deployment
//! hook), the catalog, and retention. Each subcommand is one variant of
//! [`BackupCommand`] with its own args struct, so adding one (`verify`) is
//! one variant and one match arm.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use steward_backup::catalog::{self, Filter, SnapshotEntry};
use steward_backup::report::{RunReport, RunStatus};
use steward_backup::run::{self, RunOptions};

use crate::commands::progress::human_bytes;
use crate::config::Loaded;
use crate::notify::{random_uuid, Event, Notifications};

#[derive(Debug, Args)]
pub struct BackupArgs {
    #[command(subcommand)]
    pub command: BackupCommand,
}

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Run a job now (e.g. before a deployment) and wait for it.
    Run(RunArgs),
    /// List the snapshots on the configured targets.
    List(ListArgs),
    /// Show one snapshot's manifest.
    Show(ShowArgs),
    /// Apply retention now; with --dry-run, only say what would be removed.
    Prune(PruneArgs),
    /// Download, decrypt, decompress and check snapshots (hashes and the
    /// format's own check); writes nothing.
    // Boxed: the snapshot-source flags make it several times the others.
    Verify(Box<crate::commands::verify::VerifyArgs>),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The job name (`[backup.jobs.NAME]`).
    pub job: String,
    /// Why: recorded in the manifest and report (e.g. `pre-deploy`).
    #[arg(long, default_value = "manual")]
    pub reason: String,
    /// No progress line, even on a terminal.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Print the run report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub notify: NotifyArgs,
}

/// How a command run by hand or from cron uses `[[notify]]`.
#[derive(Debug, Clone, Args)]
pub struct NotifyArgs {
    /// Send no `[[notify]]` notification for this run.
    #[arg(long)]
    pub no_notify: bool,
    /// The most time spent sending notifications after the run, before
    /// exiting (what is still unsent is logged and dropped).
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub notify_wait_secs: f64,
}

impl NotifyArgs {
    /// The notifiers of `config`, or none with `--no-notify`.
    pub fn start(&self, config: &crate::config::Config) -> Notifications {
        if self.no_notify {
            Notifications::default()
        } else {
            Notifications::start(&config.notify)
        }
    }

    /// Waits (bounded) for the notifications to go out; the command's exit
    /// status never depends on them.
    pub async fn finish(&self, notifications: Notifications) {
        let limit = Duration::from_secs_f64(self.notify_wait_secs.clamp(0.0, 3600.0));
        let unfinished = notifications.finish(limit).await;
        if unfinished > 0 {
            eprintln!(
                "warning: {unfinished} notifier(s) still sending after --notify-wait-secs {}; their notifications are dropped",
                self.notify_wait_secs
            );
        }
    }
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this job.
    #[arg(long)]
    pub job: Option<String>,
    /// Only this target.
    #[arg(long)]
    pub target: Option<String>,
    /// Snapshots of another host (default: this one).
    #[arg(long)]
    pub host: Option<String>,
    /// Every host found on the targets.
    #[arg(long, conflicts_with = "host")]
    pub all_hosts: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The snapshot id (from `steward backup list`).
    pub id: String,
    /// Look only on this target.
    #[arg(long)]
    pub target: Option<String>,
    /// Snapshot of another host (default: this one).
    #[arg(long)]
    pub host: Option<String>,
    /// Print the manifest as stored (JSON).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Only these jobs (default: all).
    #[arg(long = "job")]
    pub jobs: Vec<String>,
    /// Print the decisions without removing anything.
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: BackupArgs, loaded: &Loaded) -> anyhow::Result<ExitCode> {
    match args.command {
        BackupCommand::Run(a) => run_now(a, loaded).await,
        BackupCommand::List(a) => list(a, loaded).await,
        BackupCommand::Show(a) => show(a, loaded).await,
        BackupCommand::Prune(a) => prune(a, loaded).await,
        BackupCommand::Verify(a) => crate::commands::verify::run(*a, loaded).await,
    }
}

async fn run_now(args: RunArgs, loaded: &Loaded) -> anyhow::Result<ExitCode> {
    let config = &loaded.config;
    let mut options = RunOptions::new(
        config.agent.effective_hostname(),
        config.agent.state_dir.clone(),
        args.reason.clone(),
    );
    options.steward_version = env!("CARGO_PKG_VERSION").to_string();
    let counters = Arc::clone(&options.counters);
    let show_progress = !args.quiet && std::io::stderr().is_terminal();
    let ticker = show_progress.then(|| {
        let job = args.job.clone();
        tokio::spawn(async move {
            let start = std::time::Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let secs = start.elapsed().as_secs_f64().max(0.001);
                let read = counters.source();
                eprint!(
                    "\r\x1b[2K{job}: {} read, {} stored, {}/s, {:.0}s",
                    human_bytes(read),
                    human_bytes(counters.stored()),
                    human_bytes((read as f64 / secs) as u64),
                    secs
                );
                let _ = std::io::stderr().flush();
            }
        })
    });
    let spans = crate::spans::CommandSpans::start(config);
    // Notified like the daemon's runs (a cron'ed or pre-deploy run fails
    // as loudly), but only for a job that exists.
    let notifications = if config.backup.jobs.contains_key(&args.job) {
        args.notify.start(config)
    } else {
        Notifications::default()
    };
    let (host, run_id) = (config.agent.effective_hostname(), random_uuid());
    notifications.notify(Event::backup_start(&host, &args.job, &args.reason, &run_id));
    let span = crate::spans::backup_span(&args.job, &args.reason);
    let result = tracing::Instrument::instrument(
        run::run_job(&config.backup, &args.job, &options),
        span.clone(),
    )
    .await;
    notifications.notify(match &result {
        Ok(report) => Event::backup_finished(&run_id, report),
        Err(e) => Event::backup_not_run(&host, &args.job, &args.reason, &run_id, &e.to_string()),
    });
    crate::spans::record_backup(&span, Some(&result));
    drop(span);
    if let Some(spans) = spans {
        spans.finish().await;
    }
    if let Some(t) = ticker {
        t.abort();
        eprint!("\r\x1b[2K");
    }
    args.notify.finish(notifications).await;
    let report = result.map_err(|e| anyhow::anyhow!("{e}"))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(match report.status {
        RunStatus::Success | RunStatus::Unchanged => ExitCode::SUCCESS,
        RunStatus::Partial | RunStatus::Failed => {
            eprintln!(
                "error: backup job {} {}: {}",
                report.job,
                report.status.as_str(),
                report.error.as_deref().unwrap_or("see the report")
            );
            ExitCode::FAILURE
        }
    })
}

fn print_report(r: &RunReport) {
    match r.status {
        RunStatus::Unchanged => println!(
            "job {}: content unchanged since the latest snapshot; no new snapshot ({:.1}s)",
            r.job, r.duration_seconds
        ),
        _ => println!(
            "job {}: {} snapshot {} ({} read, {} stored, {:.1}s)",
            r.job,
            r.status.as_str(),
            r.snapshot_id,
            human_bytes(r.source_bytes),
            human_bytes(r.stored_bytes),
            r.duration_seconds
        ),
    }
    for t in &r.targets {
        match (&t.error, t.committed) {
            (None, true) => println!("  {}: stored in {}", t.target, t.location),
            (Some(e), _) => println!("  {}: FAILED: {e}", t.target),
            (None, false) => println!("  {}: nothing stored", t.target),
        }
        let removed = t.retention.iter().filter(|d| d.removed()).count();
        if removed > 0 {
            println!("  {}: retention removed {removed} snapshot(s)", t.target);
        }
        for d in t.retention.iter().filter(|d| d.locked.is_some()) {
            println!(
                "  {}: retention kept {}: {}",
                t.target,
                d.id,
                d.locked.as_deref().unwrap_or_default()
            );
        }
        if let Some(e) = &t.retention_error {
            println!("  {}: retention failed: {e}", t.target);
        }
        if let Some(why) = &t.retention_refused {
            println!("  {}: retention removed nothing: {why}", t.target);
        }
    }
}

async fn list(args: ListArgs, loaded: &Loaded) -> anyhow::Result<ExitCode> {
    let config = &loaded.config;
    let filter = Filter {
        host: if args.all_hosts {
            None
        } else {
            Some(
                args.host
                    .clone()
                    .unwrap_or_else(|| config.agent.effective_hostname()),
            )
        },
        job: args.job.clone(),
    };
    let mut entries: Vec<SnapshotEntry> = Vec::new();
    let mut failed = false;
    for (name, target) in run::open_targets(&config.backup, args.target.as_deref()).await {
        let result = match target {
            Ok(t) => catalog::list(t.as_ref(), &filter).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(mut e) => entries.append(&mut e),
            Err(e) => {
                // The implicit local target not existing yet is not an error.
                if !(name == steward_backup::config::DEFAULT_TARGET && args.target.is_none()) {
                    eprintln!("error: target {name}: {e}");
                    failed = true;
                }
            }
        }
    }
    entries.sort_by_key(|a| a.manifest.started_at);
    if args.json {
        let out: Vec<serde_json::Value> = entries
            .iter()
            .map(|e| {
                let mut v = serde_json::to_value(&e.manifest).unwrap_or_default();
                if let Some(o) = v.as_object_mut() {
                    o.insert("target".into(), e.target.clone().into());
                }
                v
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else if entries.is_empty() {
        println!("no snapshots");
    } else {
        println!(
            "{:<22} {:<12} {:<9} {:<10} {:<20} {:>8} {:>10} {:<12}",
            "ID", "JOB", "KIND", "TARGET", "STARTED (UTC)", "TOOK", "STORED", "REASON"
        );
        for e in &entries {
            let m = &e.manifest;
            println!(
                "{:<22} {:<12} {:<9} {:<10} {:<20} {:>7.0}s {:>10} {:<12}",
                m.snapshot_id,
                m.job,
                m.kind.as_str(),
                e.target,
                m.started_at.format("%Y-%m-%d %H:%M:%S"),
                (m.finished_at - m.started_at).num_milliseconds() as f64 / 1000.0,
                human_bytes(m.stored_bytes()),
                m.reason
            );
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

async fn show(args: ShowArgs, loaded: &Loaded) -> anyhow::Result<ExitCode> {
    let config = &loaded.config;
    let filter = Filter {
        host: Some(
            args.host
                .clone()
                .unwrap_or_else(|| config.agent.effective_hostname()),
        ),
        job: None,
    };
    let mut targets = Vec::new();
    let mut errors = Vec::new();
    for (name, t) in run::open_targets(&config.backup, args.target.as_deref()).await {
        match t {
            Ok(t) => targets.push(t),
            Err(e) => errors.push(format!("{name}: {e}")),
        }
    }
    let entry = catalog::find_anywhere(&targets, &filter, &args.id)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "{e}{}",
                if errors.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", errors.join("; "))
                }
            )
        })?;
    let m = &entry.manifest;
    if args.json {
        println!("{}", serde_json::to_string_pretty(m)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("snapshot   {}", m.snapshot_id);
    println!("job        {} ({})", m.job, m.kind);
    println!("host       {}", m.host);
    println!("target     {}", entry.target);
    println!("reason     {}", m.reason);
    println!("started    {}", m.started_at.to_rfc3339());
    println!("finished   {}", m.finished_at.to_rfc3339());
    println!(
        "size       {} plaintext, {} stored",
        human_bytes(m.plaintext_bytes()),
        human_bytes(m.stored_bytes())
    );
    for r in &m.recipients {
        println!("recipient  {} ({})", r.recipient, r.fingerprint);
    }
    for (tool, version) in &m.tools {
        println!("tool       {tool}: {version}");
    }
    println!("objects:");
    for o in &m.objects {
        println!(
            "  {}  {} -> {}  {}(plain) {}",
            o.name,
            human_bytes(o.plaintext_bytes),
            human_bytes(o.stored_bytes),
            o.plaintext_hash.algorithm(),
            o.plaintext_hash.hex()
        );
    }
    for d in &m.databases {
        let rows: u64 = d.tables.iter().map(|t| t.rows).sum();
        println!(
            "database   {} ({} tables, {rows} rows)",
            d.name,
            d.tables.len()
        );
    }
    if let Some(f) = &m.files {
        println!(
            "files      {} files, {} directories, {} symlinks, {}",
            f.files,
            f.directories,
            f.symlinks,
            human_bytes(f.bytes)
        );
        for s in &f.skipped {
            println!("skipped    {s}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn prune(args: PruneArgs, loaded: &Loaded) -> anyhow::Result<ExitCode> {
    let config = &loaded.config;
    let results = run::prune(
        &config.backup,
        &config.agent.effective_hostname(),
        &config.agent.state_dir,
        &args.jobs,
        args.dry_run,
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        for r in &results {
            println!(
                "job {} on target {}{}:",
                r.job,
                r.target,
                if args.dry_run {
                    " (dry run: nothing removed)"
                } else {
                    ""
                }
            );
            if let Some(e) = &r.error {
                println!("  error: {e}");
                continue;
            }
            if let Some(why) = &r.refused {
                println!("  {why}");
            }
            if r.decisions.is_empty() {
                println!("  no snapshots");
            }
            for d in &r.decisions {
                let verb = match (d.keep, args.dry_run) {
                    (true, _) => "keep",
                    _ if d.locked.is_some() => "locked",
                    _ if d.error.is_some() => "NOT REMOVED",
                    (false, true) => "would remove",
                    (false, false) => "removed",
                };
                // A snapshot that stays says why in one line: the lock's
                // date, or the store's error.
                let why = match (&d.locked, &d.error) {
                    (Some(lock), _) => format!("{}; not removed: {lock}", d.reasons.join("; ")),
                    (None, Some(e)) => format!("{}; deleting failed: {e}", d.reasons.join("; ")),
                    (None, None) => d.reasons.join("; "),
                };
                println!(
                    "  {verb:<12} {}  {}  {why}",
                    d.id,
                    d.time.format("%Y-%m-%d %H:%M"),
                );
            }
        }
    }
    // Locked snapshots are an expected outcome (exit 0); a delete that
    // failed is not, nor a refusal to prune (a wrong clock needs a person).
    let failed = results.iter().any(|r| {
        r.error.is_some() || r.refused.is_some() || r.decisions.iter().any(|d| d.error.is_some())
    });
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
