//! The edac collector: correctable and uncorrectable memory error counts
//! of each EDAC memory controller and chip-select row.

use std::path::Path;

use super::read::{numbered, sorted_names, AttrDir};
use super::Settings;
use crate::collector::CollectError;
use crate::metrics::MetricFamily;

pub(crate) fn edac(s: &Settings) -> Result<Vec<MetricFamily>, CollectError> {
    edac_from(&s.sys_path("devices/system/edac/mc"))
}

/// Leading decimal digits of `s` (the controller or csrow number).
fn leading_digits(s: &str) -> &str {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    &s[..end]
}

/// Memory error counters of each EDAC controller `mcN` and its chip-select
/// rows `csrowM`; errors the driver could not attribute to a row are the
/// `csrow="unknown"` series.
pub(crate) fn edac_from(dir: &Path) -> Result<Vec<MetricFamily>, CollectError> {
    let Some(entries) = sorted_names(dir)? else {
        return Ok(Vec::new());
    };
    let mut ce = MetricFamily::counter(
        "node_edac_correctable_errors_total",
        "Correctable memory errors of the controller.",
    );
    let mut ue = MetricFamily::counter(
        "node_edac_uncorrectable_errors_total",
        "Uncorrectable memory errors of the controller.",
    );
    let mut row_ce = MetricFamily::counter(
        "node_edac_csrow_correctable_errors_total",
        "Correctable memory errors of the chip-select row.",
    );
    let mut row_ue = MetricFamily::counter(
        "node_edac_csrow_uncorrectable_errors_total",
        "Uncorrectable memory errors of the chip-select row.",
    );
    for name in &entries {
        let Some(rest) = numbered(name, "mc") else {
            continue;
        };
        let controller = leading_digits(rest);
        let path = dir.join(name);
        let Some(d) = AttrDir::open(&path) else {
            continue;
        };
        let series = |csrow: &str| {
            [
                ("controller", controller.to_string()),
                ("csrow", csrow.into()),
            ]
        };
        if let Some(v) = d.uint("ce_count") {
            ce.push([("controller", controller)], v as f64);
        }
        if let Some(v) = d.uint("ce_noinfo_count") {
            row_ce.push(series("unknown"), v as f64);
        }
        if let Some(v) = d.uint("ue_count") {
            ue.push([("controller", controller)], v as f64);
        }
        if let Some(v) = d.uint("ue_noinfo_count") {
            row_ue.push(series("unknown"), v as f64);
        }
        for row in sorted_names(&path)?.unwrap_or_default() {
            let Some(rest) = numbered(&row, "csrow") else {
                continue;
            };
            let Some(r) = AttrDir::open(&path.join(&row)) else {
                continue;
            };
            let csrow = leading_digits(rest);
            if let Some(v) = r.uint("ce_count") {
                row_ce.push(series(csrow), v as f64);
            }
            if let Some(v) = r.uint("ue_count") {
                row_ue.push(series(csrow), v as f64);
            }
        }
    }
    Ok(vec![ce, ue, row_ce, row_ue])
}
