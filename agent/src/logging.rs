//! Structured logs to stderr: plain text for journald and terminals, or one
//! JSON object per line with `--log-format json`.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `RUST_LOG` overrides `level`.
pub fn init(format: &str, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let result = if format == "json" {
        builder.json().flatten_event(true).try_init()
    } else {
        // journald adds its own timestamps; keep lines short and ANSI-free
        // when stderr is not a terminal.
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init()
    };
    let _ = result;
}
