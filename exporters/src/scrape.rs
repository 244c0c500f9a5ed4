//! One scrape: run the selected collectors concurrently, each under its own
//! deadline, merge their families by name, drop duplicate series, and add
//! the per-collector `*_scrape_collector_{success,duration_seconds}` metrics.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::future::join_all;
use serde::Serialize;

use crate::collector::{CollectContext, CollectError, Collector};
use crate::metrics::{MetricFamily, Sample};

/// Which collectors to run and how long they may take.
#[derive(Debug, Clone, Default)]
pub struct ScrapeOptions {
    /// node_exporter's `collect[]`: when non-empty, only these collectors.
    pub include: Vec<String>,
    /// node_exporter's `exclude[]`: never these collectors.
    pub exclude: Vec<String>,
    /// The whole scrape's budget; each collector gets it as its deadline.
    pub timeout: Duration,
}

/// The last outcome of one collector, shown on `/health`.
#[derive(Debug, Clone, Serialize)]
pub struct CollectorStatus {
    pub collector: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    pub success: bool,
    pub duration_seconds: f64,
    /// Unix seconds of the last scrape that ran this collector.
    pub last_scrape_timestamp_seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a scrape returns: merged families ready to encode.
#[derive(Debug, Default)]
pub struct ScrapeOutput {
    pub families: Vec<MetricFamily>,
}

/// Runs a fixed set of collectors. Cheap to share: the agent keeps one per
/// loaded configuration and swaps it on reload.
pub struct Scraper {
    collectors: Vec<Arc<dyn Collector>>,
    statuses: Mutex<BTreeMap<String, CollectorStatus>>,
}

impl std::fmt::Debug for Scraper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scraper")
            .field(
                "collectors",
                &self.collectors.iter().map(|c| c.name()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Scraper {
    pub fn new(collectors: Vec<Arc<dyn Collector>>) -> Self {
        Scraper {
            collectors,
            statuses: Mutex::new(BTreeMap::new()),
        }
    }

    /// Names of all collectors, for `/health` and `--help` texts.
    pub fn collector_names(&self) -> Vec<String> {
        self.collectors
            .iter()
            .map(|c| c.name().to_string())
            .collect()
    }

    /// The last status of every collector that has run at least once.
    pub fn statuses(&self) -> Vec<CollectorStatus> {
        self.statuses
            .lock()
            .map(|s| s.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Runs one scrape. Never fails: a failing or slow collector is reported
    /// through its success metric and status, the rest are returned.
    pub async fn scrape(&self, options: &ScrapeOptions) -> ScrapeOutput {
        let selected: Vec<&Arc<dyn Collector>> = self
            .collectors
            .iter()
            .filter(|c| {
                let name = c.name();
                (options.include.is_empty() || options.include.iter().any(|n| n == name))
                    && !options.exclude.iter().any(|n| n == name)
            })
            .collect();

        let timeout = if options.timeout.is_zero() {
            Duration::from_secs(10)
        } else {
            options.timeout
        };
        let runs = selected.iter().map(|collector| {
            let collector = Arc::clone(collector);
            async move {
                let ctx = CollectContext::with_timeout(timeout);
                let started = Instant::now();
                let result = tokio::time::timeout(timeout, collector.collect(ctx)).await;
                let elapsed = started.elapsed();
                let (families, error) = match result {
                    Ok(Ok(collected)) => (collected.families, collected.error),
                    Ok(Err(e)) => (Vec::new(), Some(e)),
                    Err(_) => (Vec::new(), Some(CollectError::Timeout(timeout))),
                };
                (collector, families, error, elapsed)
            }
        });
        let results = join_all(runs).await;

        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let mut all = Vec::new();
        // Self-metrics grouped by namespace so node's match node_exporter.
        let mut success: BTreeMap<String, MetricFamily> = BTreeMap::new();
        let mut duration: BTreeMap<String, MetricFamily> = BTreeMap::new();
        let mut new_statuses = Vec::with_capacity(results.len());
        for (collector, families, error, elapsed) in results {
            let ns = collector.namespace().to_string();
            let name = collector.name().to_string();
            let instance = collector.instance().map(str::to_string);
            let ok = error.is_none();
            if let Some(e) = &error {
                tracing::warn!(collector = %name, instance = instance.as_deref().unwrap_or(""), error = %e, "collector failed");
            }
            let mut labels = vec![(std::borrow::Cow::Borrowed("collector"), name.clone())];
            if let Some(i) = &instance {
                labels.push((std::borrow::Cow::Borrowed("instance"), i.clone()));
            }
            success
                .entry(ns.clone())
                .or_insert_with(|| {
                    MetricFamily::gauge(
                        format!("{ns}_scrape_collector_success"),
                        format!("{ns}_exporter: Whether a collector succeeded."),
                    )
                })
                .push_owned(labels.clone(), if ok { 1.0 } else { 0.0 });
            duration
                .entry(ns.clone())
                .or_insert_with(|| {
                    MetricFamily::gauge(
                        format!("{ns}_scrape_collector_duration_seconds"),
                        format!("{ns}_exporter: Duration of a collector scrape."),
                    )
                })
                .push_owned(labels, elapsed.as_secs_f64());
            new_statuses.push(CollectorStatus {
                collector: name,
                instance,
                success: ok,
                duration_seconds: elapsed.as_secs_f64(),
                last_scrape_timestamp_seconds: now,
                error: error.map(|e| e.to_string()),
            });
            all.extend(families);
        }
        for (_, f) in duration {
            all.push(f);
        }
        for (_, f) in success {
            all.push(f);
        }
        if let Ok(mut statuses) = self.statuses.lock() {
            for status in new_statuses {
                let key = match &status.instance {
                    Some(i) => format!("{}/{}", status.collector, i),
                    None => status.collector.clone(),
                };
                statuses.insert(key, status);
            }
        }
        ScrapeOutput {
            families: merge_families(all),
        }
    }
}

/// Merges families with the same name (keeping the first help and type),
/// drops series whose name+labels were already seen (a duplicate series makes
/// Prometheus reject the whole scrape), drops families whose type conflicts
/// with an earlier one, and sorts by name for stable output.
pub fn merge_families(families: Vec<MetricFamily>) -> Vec<MetricFamily> {
    let mut by_name: HashMap<String, usize> = HashMap::with_capacity(families.len());
    let mut merged: Vec<MetricFamily> = Vec::with_capacity(families.len());
    for family in families {
        match by_name.get(&family.name) {
            Some(&i) => {
                if merged[i].kind != family.kind {
                    tracing::debug!(family = %family.name, "dropping family with conflicting type");
                    continue;
                }
                merged[i].samples.extend(family.samples);
            }
            None => {
                by_name.insert(family.name.clone(), merged.len());
                merged.push(family);
            }
        }
    }
    for family in &mut merged {
        drop_duplicate_series(&mut family.samples);
    }
    merged.sort_by(|a, b| a.name.cmp(&b.name));
    merged
}

/// Keeps the first sample of each series (suffix + label set, in any label
/// order). Series are told apart by a fingerprint, compared in full only
/// when fingerprints collide, so the common no-duplicate case allocates
/// one table per family and no string per sample.
fn drop_duplicate_series(samples: &mut Vec<Sample>) {
    if samples.len() < 2 {
        return;
    }
    let mut first_by_fingerprint: HashMap<u64, usize, BuildHasherDefault<Prehashed>> =
        HashMap::with_capacity_and_hasher(samples.len(), Default::default());
    let all = std::mem::take(samples);
    samples.reserve(all.len());
    for sample in all {
        let fingerprint = series_fingerprint(&sample);
        let duplicate = match first_by_fingerprint.get(&fingerprint) {
            None => false,
            Some(&i) => {
                same_series(&samples[i], &sample)
                    // A collision of two different series: look at all.
                    || samples.iter().any(|kept| same_series(kept, &sample))
            }
        };
        if !duplicate {
            first_by_fingerprint
                .entry(fingerprint)
                .or_insert(samples.len());
            samples.push(sample);
        }
    }
}

/// FNV-1a over the suffix, plus an order-independent sum over the label
/// pairs so `{a,b}` and `{b,a}` give the same fingerprint.
fn series_fingerprint(sample: &Sample) -> u64 {
    fn fnv(mut hash: u64, bytes: &[u8]) -> u64 {
        for &b in bytes {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        hash
    }
    const SEED: u64 = 0xcbf2_9ce4_8422_2325;
    let mut fingerprint = fnv(SEED, sample.suffix.as_bytes());
    for (name, value) in &sample.labels {
        let pair = fnv(fnv(fnv(SEED, name.as_bytes()), &[0xff]), value.as_bytes());
        fingerprint = fingerprint.wrapping_add(pair.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    }
    fingerprint
}

fn same_series(a: &Sample, b: &Sample) -> bool {
    a.suffix == b.suffix
        && a.labels.len() == b.labels.len()
        && a.labels.iter().all(|pair| b.labels.contains(pair))
}

/// A `Hasher` for keys that are already hashes.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::Collected;
    use async_trait::async_trait;

    struct Fixed(&'static str, f64);
    #[async_trait]
    impl Collector for Fixed {
        fn name(&self) -> &str {
            self.0
        }
        fn namespace(&self) -> &str {
            "node"
        }
        async fn collect(&self, _ctx: CollectContext) -> Result<Collected, CollectError> {
            Ok(vec![MetricFamily::gauge("node_x", "x").with([("k", self.0)], self.1)].into())
        }
    }

    struct Slow;
    #[async_trait]
    impl Collector for Slow {
        fn name(&self) -> &str {
            "slow"
        }
        async fn collect(&self, _ctx: CollectContext) -> Result<Collected, CollectError> {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(Collected::default())
        }
    }

    #[tokio::test]
    async fn slow_collector_times_out_alone() {
        let scraper = Scraper::new(vec![Arc::new(Fixed("a", 1.0)), Arc::new(Slow)]);
        let out = scraper
            .scrape(&ScrapeOptions {
                timeout: Duration::from_millis(100),
                ..Default::default()
            })
            .await;
        let text = crate::exposition::encode(&out.families);
        assert!(text.contains("node_x{k=\"a\"} 1"));
        assert!(text.contains("steward_scrape_collector_success{collector=\"slow\"} 0"));
        assert!(text.contains("node_scrape_collector_success{collector=\"a\"} 1"));
        let statuses = scraper.statuses();
        let slow = statuses.iter().find(|s| s.collector == "slow").unwrap();
        assert!(!slow.success);
        assert!(slow.error.as_deref().unwrap().contains("timed out"));
    }

    #[tokio::test]
    async fn include_and_exclude_filter() {
        let scraper = Scraper::new(vec![Arc::new(Fixed("a", 1.0)), Arc::new(Fixed("b", 2.0))]);
        let out = scraper
            .scrape(&ScrapeOptions {
                include: vec!["a".into(), "b".into()],
                exclude: vec!["b".into()],
                timeout: Duration::from_secs(1),
            })
            .await;
        let text = crate::exposition::encode(&out.families);
        assert!(text.contains("k=\"a\""));
        assert!(!text.contains("k=\"b\""));
    }

    #[test]
    fn duplicates_are_dropped_and_families_merged() {
        let a = MetricFamily::gauge("m", "h").with([("x", "1")], 1.0);
        let b = MetricFamily::gauge("m", "h").with([("x", "1")], 2.0);
        let c = MetricFamily::gauge("m", "h").with([("x", "2")], 3.0);
        let d = MetricFamily::counter("m", "h").with([("x", "3")], 3.0);
        let merged = merge_families(vec![a, b, c, d]);
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].samples.len(), 2);
        assert_eq!(merged[0].samples[0].value, 1.0);
    }

    #[test]
    fn duplicates_are_found_whatever_the_label_order_and_suffix() {
        let mut f = MetricFamily::gauge("m", "h");
        f.push([("a", "1"), ("b", "2")], 1.0);
        f.push([("b", "2"), ("a", "1")], 2.0);
        f.push([("a", "2"), ("b", "1")], 3.0);
        f.push([("a", "1")], 4.0);
        f.push([("a", "12")], 5.0);
        f.push([("a1", "2")], 6.0);
        f.samples.push(Sample {
            suffix: "_sum",
            labels: vec![("a".into(), "1".to_string())],
            value: 7.0,
        });
        let merged = merge_families(vec![f]);
        let values: Vec<f64> = merged[0].samples.iter().map(|s| s.value).collect();
        assert_eq!(values, vec![1.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
    }
}
