//! The vmstat collector: the /proc/vmstat fields `vmstat_fields` selects
//! (paging, swapping, OOM kills by default), untyped as node_exporter has them.

use super::read::{num, read_text};
use super::{NameFilter, Settings};
use crate::collector::CollectError;
use crate::metrics::MetricFamily;

pub(crate) fn vmstat(s: &Settings) -> Result<Vec<MetricFamily>, CollectError> {
    Ok(vmstat_from(
        &read_text(&s.proc_path("vmstat"))?,
        &s.vmstat_fields,
    ))
}

/// Untyped `node_vmstat_<field>` for the fields the regex selects.
pub(crate) fn vmstat_from(text: &str, fields: &NameFilter) -> Vec<MetricFamily> {
    let mut fields = fields.pass();
    text.lines()
        .filter_map(|line| line.split_once(' '))
        .filter(|(k, _)| fields.is_match(k))
        .map(|(k, v)| {
            MetricFamily::untyped(
                format!("node_vmstat_{k}"),
                "/proc/vmstat information field.",
            )
            .value(num(v.trim()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::test_support::{re, text};

    #[test]
    fn vmstat_keeps_default_fields_untyped() {
        let fixture = "nr_free_pages 5\npgpgin 2178977\npgfault 8162838\npgmajfault 1815\noom_kill 0\npswpin 0\nworkingset 1\n";
        let out = text(&vmstat_from(
            fixture,
            &re(crate::node::DEFAULT_VMSTAT_FIELDS),
        ));
        assert!(
            out.contains("# TYPE node_vmstat_pgpgin untyped\nnode_vmstat_pgpgin 2.178977e+06\n"),
            "{out}"
        );
        assert!(out.contains("node_vmstat_pgmajfault 1815"));
        assert!(out.contains("node_vmstat_oom_kill 0"));
        assert!(!out.contains("nr_free_pages"));
        assert!(!out.contains("workingset"));
    }
}
