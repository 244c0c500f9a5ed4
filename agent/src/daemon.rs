//! `steward agent`: starts a configuration generation (its subsystems and
//! scraper, generation.rs), serves HTTP, and handles signals (SIGTERM/SIGINT
//! stop, SIGHUP reloads; a bad new configuration keeps the old one running),
//! telling systemd each step (sd_notify.rs) when it runs as a notify unit.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{self, Config, Loaded};
use crate::generation::SubsystemHealth;
use crate::generation::{build_scraper, Generation, Shared};
use crate::sd_notify::Notifier;
use crate::supervise::{start_or_retry, StartFn, SubsystemCollector};

#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// Listen address of the HTTP server (overrides agent.listen).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// exporter-toolkit web-config file: TLS, client certificates, basic
    /// auth (overrides agent.web_config_file; re-read on SIGHUP).
    #[arg(long = "web.config.file", value_name = "FILE")]
    pub web_config_file: Option<PathBuf>,
}

struct Running {
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    async fn stop(self) {
        self.cancel.cancel();
        // Subsystems flush and close on cancel; don't wait forever. One
        // deadline for all of them, so a reload (during which the main
        // loop sends no watchdog ping) takes at most 10 s however many
        // tasks hang, well within the unit's WatchdogSec=30s.
        let all = futures::future::join_all(self.tasks);
        if tokio::time::timeout(Duration::from_secs(10), all)
            .await
            .is_err()
        {
            tracing::warn!("a subsystem did not stop within 10s");
        }
    }
}

/// Starts every subsystem of `config`. A subsystem that cannot start (a
/// taken port, an unreadable state file) does not stop the others: it is
/// retried with backoff and reported (supervise.rs), so backups keep
/// running when telemetry cannot, and the other way round.
fn start_generation(config: Config) -> (Generation, Running) {
    let cancel = CancellationToken::new();
    let config = Arc::new(config);
    let health = Arc::new(SubsystemHealth::default());
    let mut extra: Vec<Arc<dyn steward_exporters::Collector>> =
        vec![Arc::new(SubsystemCollector(Arc::clone(&health)))];
    let mut tasks = Vec::new();
    let subsystems: [(&'static str, StartFn); 6] = [
        ("scheduler", crate::scheduler::start),
        ("telemetry", crate::telemetry::start),
        ("binlog", crate::binlog::start),
        ("wal_spool", crate::walspool::start),
        ("wal_archive", crate::walwatch::start),
        ("wal_stream", crate::wal_stream::start),
    ];
    for (name, start) in subsystems {
        let sub = start_or_retry(name, start, &config, &cancel, &health);
        extra.extend(sub.collectors);
        tasks.extend(sub.tasks);
    }
    let scraper = Arc::new(build_scraper(&config, extra));
    (
        Generation {
            config,
            scraper,
            health,
        },
        Running { cancel, tasks },
    )
}

/// Waits for the next watchdog ping, or forever when systemd wants none.
/// The timer is driven by the runtime's worker threads (the main loop runs
/// on the thread that called `block_on`, which does not drive it): when
/// every worker is stuck (a blocking call in async code, a deadlock) the
/// pings stop and systemd restarts the agent after `WatchdogSec`.
async fn watchdog_tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Runs the daemon until SIGTERM/SIGINT.
pub async fn run(
    args: AgentArgs,
    loaded: Loaded,
    config_path: Option<PathBuf>,
    systemd: Option<Notifier>,
) -> anyhow::Result<ExitCode> {
    let mut initial = loaded.config;
    if let Some(listen) = args.listen {
        initial.agent.listen = listen;
    }
    let listen = initial.agent.listen;
    match &loaded.path {
        Some(p) => tracing::info!(config = %p.display(), "configuration loaded"),
        None => tracing::info!(
            "no configuration file at {}; running on embedded defaults",
            config::DEFAULT_CONFIG_PATH
        ),
    }

    let web = match crate::web::load(&initial, args.web_config_file.as_deref()) {
        Ok(w) => steward_web::WebHandle::new(w),
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(crate::exit_code::EXIT_CONFIG));
        }
    };
    let (generation, mut running) = start_generation(initial);
    let shared = Arc::new(Shared {
        current: RwLock::new(Arc::new(generation)),
    });

    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on {listen}: {e}; choose another address with --listen or agent.listen"
        )
    })?;
    let bound = listener.local_addr()?;
    tracing::info!(address = %bound, version = env!("CARGO_PKG_VERSION"), web = %web.current().describe(), "steward agent listening");

    let stop = CancellationToken::new();
    let server = tokio::spawn(crate::server::serve(
        listener,
        Arc::clone(&shared),
        web.clone(),
        stop.clone(),
    ));

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    // Signal handlers are in place and the listener is bound: a SIGHUP or
    // a scrape from now on is served.
    let status = format!("listening on {bound}");
    if let Some(n) = &systemd {
        n.ready(&status);
    }
    let mut watchdog = systemd
        .as_ref()
        .and_then(Notifier::watchdog_interval)
        .map(|every| {
            let mut i = tokio::time::interval(every);
            // After a stall, ping once, not a burst.
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM received, stopping"); break; }
            _ = int.recv() => { tracing::info!("SIGINT received, stopping"); break; }
            _ = watchdog_tick(&mut watchdog) => {
                if let Some(n) = &systemd { n.watchdog(); }
            }
            _ = hup.recv() => {
                tracing::info!("SIGHUP received, reloading configuration");
                if let Some(n) = &systemd { n.reloading(); }
                match config::load(config_path.as_deref()) {
                    Err(e) => {
                        tracing::error!("configuration reload failed; keeping the running configuration: {e}");
                        if let Some(n) = &systemd { n.ready(&format!("{status}; the last reload failed, running the previous configuration (see the log)")); }
                    }
                    Ok(new) => {
                        let mut new_config = new.config;
                        if let Some(l) = args.listen { new_config.agent.listen = l; }
                        if new_config.agent.listen != listen {
                            tracing::warn!("agent.listen changed; the new address takes effect after a restart");
                        }
                        // Rotated certificates serve new connections from now on.
                        match crate::web::load(&new_config, args.web_config_file.as_deref()) {
                            Ok(w) => { tracing::info!(web = %w.describe(), "web config applied to new connections"); web.replace(w); }
                            Err(e) => tracing::error!("web config reload failed; keeping the running one: {e}"),
                        }
                        running.stop().await;
                        // Never fails: a subsystem the new configuration
                        // cannot start is retried and shown in /health.
                        let (generation, r) = start_generation(new_config);
                        running = r;
                        if let Ok(mut cur) = shared.current.write() { *cur = Arc::new(generation); }
                        tracing::info!("configuration reloaded");
                        if let Some(n) = &systemd { n.ready(&status); }
                    }
                }
            }
        }
    }
    if let Some(n) = &systemd {
        n.stopping();
    }
    stop.cancel();
    running.stop().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;

    #[test]
    fn the_watchdog_timer_stops_while_every_worker_is_stuck() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut watchdog = Some(tokio::time::interval(Duration::from_millis(50)));
            watchdog_tick(&mut watchdog).await;
            // A blocking call in async code holds the only worker for 1.5 s.
            let stuck = Arc::new(AtomicBool::new(false));
            let flag = Arc::clone(&stuck);
            let task = tokio::spawn(async move {
                flag.store(true, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(1500));
            });
            while !stuck.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(5));
            }
            let since = Instant::now();
            watchdog_tick(&mut watchdog).await;
            assert!(
                since.elapsed() >= Duration::from_millis(1000),
                "pinged after {:?} while the runtime was stuck",
                since.elapsed()
            );
            task.await.unwrap();
            // Unstuck: pings resume at their pace.
            let since = Instant::now();
            watchdog_tick(&mut watchdog).await;
            watchdog_tick(&mut watchdog).await;
            assert!(since.elapsed() < Duration::from_millis(500));
        });
    }
}
