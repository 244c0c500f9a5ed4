//! Structured logs to stderr: plain text for journald and terminals, or one
//! JSON object per line with `--log-format json`; and Steward's own spans to
//! the telemetry pipeline (see spans.rs).

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Installs the global subscriber. `RUST_LOG` overrides `level`.
pub fn init(format: &str, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    let fmt: Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync> = if format == "json" {
        Box::new(builder.json().flatten_event(true))
    } else {
        // journald adds its own timestamps; keep lines short and ANSI-free
        // when stderr is not a terminal.
        Box::new(builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())))
    };
    let result = tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(crate::spans::span_layer())
        .try_init();
    let _ = result;
}
