//! The database-independent half of checking a restored database against
//! its manifest: the same set of tables, and the same row count in each.
//! Each engine only lists its tables and counts rows in its own SQL.

use crate::error::Result;
use crate::manifest::{DatabaseInfo, TableStat};
use crate::restore::Check;

/// Compares the tables found in the restored database (`actual`) with the
/// manifest's statistics, then asks `count_rows` for the row counts of the
/// tables present in both (one `(index into the slice, rows)` pair per
/// table; one query for all of them keeps a drill on a big schema fast).
pub fn compare_with_manifest(
    actual: &[String],
    expected: Option<&DatabaseInfo>,
    count_rows: impl FnOnce(&[&TableStat]) -> Result<Vec<(usize, u64)>>,
) -> Result<Vec<Check>> {
    let mut checks = Vec::new();
    let Some(expected) = expected.filter(|e| !e.tables.is_empty()) else {
        checks.push(Check::ok(
            "tables",
            format!(
                "{} tables restored (the manifest has no table statistics to compare)",
                actual.len()
            ),
        ));
        return Ok(checks);
    };
    let missing: Vec<&str> = expected
        .tables
        .iter()
        .map(|t| t.name.as_str())
        .filter(|name| !actual.iter().any(|a| a == name))
        .collect();
    let extra: Vec<&str> = actual
        .iter()
        .map(String::as_str)
        .filter(|a| !expected.tables.iter().any(|t| t.name == *a))
        .collect();
    if missing.is_empty() && extra.is_empty() {
        checks.push(Check::ok(
            "tables",
            format!("{} tables, as in the manifest", actual.len()),
        ));
    } else {
        checks.push(Check::failed(
            "tables",
            format!("missing {missing:?}, unexpected {extra:?}"),
        ));
    }
    let present: Vec<&TableStat> = expected
        .tables
        .iter()
        .filter(|t| actual.contains(&t.name))
        .collect();
    if present.is_empty() {
        return Ok(checks);
    }
    let mut mismatches = Vec::new();
    let mut rows_total = 0u64;
    for (i, rows) in count_rows(&present)? {
        rows_total += rows;
        if let Some(t) = present.get(i) {
            if t.rows != rows {
                mismatches.push(format!(
                    "{} has {rows} rows, the manifest records {}",
                    t.name, t.rows
                ));
            }
        }
    }
    if mismatches.is_empty() {
        checks.push(Check::ok(
            "row counts",
            format!(
                "{rows_total} rows in {} tables, as in the manifest",
                present.len()
            ),
        ));
    } else {
        checks.push(Check::failed("row counts", mismatches.join("; ")));
    }
    Ok(checks)
}

/// Parses the output of a `SELECT <index>, count(*) ... UNION ALL ...`
/// query printed by the engine's client as `<index><separator><count>`
/// lines; anything else (headers, blank lines) is skipped.
pub fn parse_counts(output: &str, separator: char) -> Vec<(usize, u64)> {
    output
        .lines()
        .filter_map(|line| {
            let (i, n) = line.split_once(separator)?;
            Some((i.trim().parse().ok()?, n.trim().parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(tables: &[(&str, u64)]) -> DatabaseInfo {
        DatabaseInfo {
            name: "app".to_string(),
            tables: tables
                .iter()
                .map(|(name, rows)| TableStat {
                    name: name.to_string(),
                    rows: *rows,
                })
                .collect(),
        }
    }

    #[test]
    fn same_tables_and_rows_pass() {
        let actual = vec!["a".to_string(), "b".to_string()];
        let checks = compare_with_manifest(&actual, Some(&info(&[("a", 1), ("b", 2)])), |p| {
            Ok(p.iter().enumerate().map(|(i, t)| (i, t.rows)).collect())
        })
        .unwrap();
        assert!(checks.iter().all(|c| c.ok), "{checks:?}");
        assert_eq!(checks[1].detail, "3 rows in 2 tables, as in the manifest");
    }

    #[test]
    fn missing_extra_and_wrong_counts_fail_with_names() {
        let actual = vec!["a".to_string(), "c".to_string()];
        let checks = compare_with_manifest(&actual, Some(&info(&[("a", 5), ("b", 2)])), |p| {
            assert_eq!(p.len(), 1, "only tables present in both are counted");
            Ok(vec![(0, 4)])
        })
        .unwrap();
        assert!(!checks[0].ok);
        assert!(checks[0].detail.contains("\"b\"") && checks[0].detail.contains("\"c\""));
        assert!(!checks[1].ok);
        assert_eq!(checks[1].detail, "a has 4 rows, the manifest records 5");
    }

    #[test]
    fn no_statistics_is_reported_not_failed() {
        let checks = compare_with_manifest(&["a".to_string()], None, |_| {
            panic!("nothing to count without statistics")
        })
        .unwrap();
        assert!(checks[0].ok && checks[0].detail.contains("no table statistics"));
    }

    #[test]
    fn counts_parse_with_either_separator() {
        assert_eq!(parse_counts("0\t3\n1\t4\n", '\t'), vec![(0, 3), (1, 4)]);
        assert_eq!(
            parse_counts("0|3\n\nx|y\n1|40\n", '|'),
            vec![(0, 3), (1, 40)]
        );
    }
}
