//! The loadavg collector: the 1, 5 and 15 minute load averages of
//! /proc/loadavg.

use super::read::read_text;
use super::{gauge, Settings};
use crate::collector::CollectError;
use crate::metrics::MetricFamily;

pub(crate) fn loadavg(s: &Settings) -> Result<Vec<MetricFamily>, CollectError> {
    loadavg_from(&read_text(&s.proc_path("loadavg"))?)
}

pub(crate) fn loadavg_from(text: &str) -> Result<Vec<MetricFamily>, CollectError> {
    let mut f = text.split_ascii_whitespace();
    let mut next = || {
        f.next()
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| CollectError::failed(format!("unexpected /proc/loadavg: {text:?}")))
    };
    let (l1, l5, l15) = (next()?, next()?, next()?);
    Ok(vec![
        gauge("node_load1", "1m load average.", l1),
        gauge("node_load5", "5m load average.", l5),
        gauge("node_load15", "15m load average.", l15),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::test_support::text;

    #[test]
    fn loadavg_parses_and_rejects_garbage() {
        let out = text(&loadavg_from("0.29 0.50 0.29 1/234 5678\n").unwrap());
        assert!(out.contains("node_load1 0.29\nnode_load15") || out.contains("node_load1 0.29\n"));
        assert!(out.contains("node_load5 0.5\n"));
        assert!(loadavg_from("garbage").is_err());
    }
}
