//! One configuration generation: the subsystems it runs, its scraper, and
//! the state the HTTP server reads. A leaf module, so the daemon, the scheduler, the
//! server and the telemetry wiring can all name these types without
//! importing one another.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use steward_exporters::{Collector, Scraper};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::self_metrics::ProcessCollector;

/// A running part of the daemon (scheduler, telemetry) for one
/// configuration generation: its self-metric collectors and its tasks.
#[derive(Default)]
pub struct Subsystem {
    pub collectors: Vec<Arc<dyn Collector>>,
    pub tasks: Vec<JoinHandle<()>>,
}

/// State shared with the HTTP handlers; replaced whole on reload.
pub struct Generation {
    pub config: Arc<Config>,
    pub scraper: Arc<Scraper>,
    /// Which subsystems run and which failed to start (`/health`).
    pub health: Arc<SubsystemHealth>,
}

/// What the HTTP server reads.
pub struct Shared {
    pub current: RwLock<Arc<Generation>>,
}

impl Shared {
    pub fn generation(&self) -> Arc<Generation> {
        match self.current.read() {
            Ok(g) => Arc::clone(&g),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }
}

/// Builds the scraper for a configuration: the collectors of every kind's
/// section (config/collectors.rs), Steward's own process metrics, and the
/// collectors of running subsystems.
pub fn build_scraper(config: &Config, extra: Vec<Arc<dyn Collector>>) -> Scraper {
    let mut collectors: Vec<Arc<dyn Collector>> = config
        .collectors
        .iter()
        .flat_map(|section| section.collectors())
        .collect();
    collectors.push(Arc::new(ProcessCollector));
    if config.grafana.url.is_some() {
        collectors.push(Arc::new(crate::grafana::AnnotationCollector));
    }
    if !config.notify.is_empty() {
        let names = config.notify.iter().map(|n| n.name.clone()).collect();
        collectors.push(Arc::new(crate::notify::NotifyCollector::new(names)));
    }
    collectors.extend(extra);
    Scraper::new(collectors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scraper_has_each_sections_collectors_in_table_order() {
        let text = "[node]\nenabled = false\n[[probe]]\nname = \"up\"\n\
                    url = \"http://127.0.0.1/\"\n[[nginx]]\nname = \"web\"\n";
        let config = crate::config::parse(text, "t", &|_| None).unwrap();
        let names = build_scraper(&config, Vec::new()).collector_names();
        assert_eq!(names, ["nginx", "probe", "process"]);
        let defaults = build_scraper(&Config::default(), Vec::new()).collector_names();
        assert!(defaults.len() > 10, "{defaults:?}");
        assert!(defaults.iter().any(|n| n == "cpu"), "{defaults:?}");
        assert_eq!(defaults.last().map(String::as_str), Some("process"));
    }
}

/// Each subsystem's state in this generation: `None` when running, the
/// start error while it is not.
#[derive(Default)]
pub struct SubsystemHealth {
    states: Mutex<BTreeMap<&'static str, Option<String>>>,
}

/// One subsystem as `/health` shows it.
#[derive(Debug, serde::Serialize)]
pub struct SubsystemState {
    pub subsystem: &'static str,
    pub up: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl SubsystemHealth {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<&'static str, Option<String>>> {
        match self.states.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    pub(crate) fn set(&self, name: &'static str, error: Option<String>) {
        self.lock().insert(name, error);
    }

    pub fn states(&self) -> Vec<SubsystemState> {
        self.lock()
            .iter()
            .map(|(name, error)| SubsystemState {
                subsystem: name,
                up: error.is_none(),
                error: error.clone(),
            })
            .collect()
    }
}
