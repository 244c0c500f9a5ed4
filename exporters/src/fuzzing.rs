//! Harnesses over the parsers that read what a monitored service or the
//! host hands over, one per fuzz target in `fuzz/`. They live here so the
//! fuzz targets and the seed regression test below run the same code.
//! Built for tests and with the `fuzzing` feature only.

use crate::metrics::MetricFamily;
use crate::mysql::families::{self as mysql, FamilySet, TextRows};
use crate::postgres::families as pg;
use crate::{exposition, nginx, phpfpm};

/// A harness's name (its fuzz target and seed folder) and the harness,
/// which takes any bytes and says whether they parsed; only a panic is a
/// finding. Every crate's `fuzzing` module lists its own.
pub type Harness = (&'static str, fn(&[u8]) -> bool);

pub const HARNESSES: [Harness; 5] = [
    ("stub_status", stub_status),
    ("phpfpm_status", phpfpm_status),
    ("fastcgi_response", fastcgi_response),
    ("node_proc", node_proc),
    ("sql_text", sql_text),
];

/// An nginx stub_status page: parse, and when it parses, the families built
/// from it encode with `nginx_up 1`.
pub fn stub_status(data: &[u8]) -> bool {
    let Ok(status) = nginx::parse_stub_status(data) else {
        return false;
    };
    let text = exposition::encode(&nginx::families(Some(&status), &Vec::new()));
    assert!(text.contains("nginx_up 1\n"), "a parsed page is up");
    true
}

/// A PHP-FPM `?json&full` status page: parse, and when it parses, build and
/// encode every family including the per-process ones.
pub fn phpfpm_status(data: &[u8]) -> bool {
    let Ok(status) = phpfpm::parse_status(data) else {
        return false;
    };
    let families = phpfpm::families(
        Some(&status),
        &status.pool,
        "unix:///x;/status",
        0,
        true,
        true,
    );
    exposition::encode(&families);
    true
}

/// What a FastCGI server answers, fed in two pieces at a split the first
/// byte chooses, then the CGI header split and the status parser.
pub fn fastcgi_response(data: &[u8]) -> bool {
    let split = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    let mut decoder = phpfpm::fastcgi::ResponseDecoder::new(1 << 20);
    let complete = match decoder.push(&data[..split]) {
        Ok(true) => true,
        Ok(false) => matches!(decoder.push(&data[split..]), Ok(true)),
        Err(_) => false,
    };
    let Some(response) = complete.then(|| decoder.finish().ok()).flatten() else {
        return false;
    };
    match phpfpm::fastcgi::split_cgi(&response.stdout) {
        Ok((_, body)) => phpfpm::parse_status(body).is_ok(),
        Err(_) => false,
    }
}

/// The first line and the rest: the parser to run and its input.
fn named(data: &[u8]) -> (String, String) {
    let text = String::from_utf8_lossy(data);
    match text.split_once('\n') {
        Some((name, rest)) => (name.to_string(), rest.to_string()),
        None => (text.into_owned(), String::new()),
    }
}

/// A node source file: the first line names the parser (`meminfo`,
/// `diskstats`, `textfile`, ...), the rest is the file. Parsed when the
/// parser knows the name and finds at least one family.
pub fn node_proc(data: &[u8]) -> bool {
    let (source, text) = named(data);
    let Some(families) = crate::node::fuzzing::parse(&source, &text) else {
        return false;
    };
    exposition::encode(&families);
    !families.is_empty()
}

/// Tab-separated rows as a client library hands them over: the first row
/// names the columns, `\N` is SQL NULL.
fn text_rows(text: &str) -> TextRows {
    let mut lines = text.lines();
    let columns = lines
        .next()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .unwrap_or_default();
    let rows = lines
        .map(|l| {
            l.split('\t')
                .map(|v| (v != "\\N").then(|| v.to_string()))
                .collect()
        })
        .collect();
    TextRows { columns, rows }
}

/// What MySQL/MariaDB or PostgreSQL answer, as text: the first line names
/// the query (`mysql_global_status`, `pg_stat_activity`, `pg_setting`,
/// ...), the rest is its rows (see [`text_rows`]) or, for `mysql_value`,
/// `pg_setting` and `pg_version`, one value or one tab-separated row.
/// Parsed when some family or value came out.
pub fn sql_text(data: &[u8]) -> bool {
    let (query, text) = named(data);
    let rows = text_rows(&text);
    let mut out = FamilySet::default();
    let namespace = |name: &str| {
        [
            pg::PG_STAT_DATABASE,
            pg::PG_STAT_DATABASE_CONFLICTS,
            pg::PG_LOCKS,
            pg::PG_STAT_REPLICATION,
            pg::PG_REPLICATION_SLOTS,
            pg::PG_STAT_ARCHIVER,
            pg::PG_STAT_ACTIVITY,
        ]
        .into_iter()
        .find(|ns| ns.name == name)
    };
    match query.as_str() {
        "mysql_global_status" => mysql::global_status(&rows, &mut out),
        "mysql_global_variables" => mysql::global_variables(&rows, &mut out),
        "mysql_slave_status" => mysql::slave_status(&rows, &mut out),
        "mysql_innodb_cmp" => mysql::innodb_cmp(&rows, &mut out),
        "mysql_innodb_cmpmem" => mysql::innodb_cmpmem(&rows, &mut out),
        "mysql_query_response_time" => mysql::query_response_time(
            &rows,
            "mysql_info_schema_query_response_time_seconds",
            "x",
            &mut out,
        ),
        "mysql_processlist" => mysql::processlist(&rows, &mut out),
        "mysql_value" => return mysql::parse_status(&text).is_some(),
        "pg_version" => return pg::short_version(&text).is_some(),
        "pg_setting" => {
            let f: Vec<&str> = text.trim_end_matches('\n').split('\t').collect();
            return match f[..] {
                [name, setting, unit, desc, vartype] => {
                    pg::setting(name, setting, unit, desc, vartype).is_some()
                }
                _ => false,
            };
        }
        name => match namespace(name) {
            Some(ns) => pg::map_namespace(&ns, &rows, "db:5432", &mut out),
            None => return false,
        },
    }
    let families: Vec<MetricFamily> = out.into_vec();
    exposition::encode(&families);
    !families.is_empty()
}

/// Runs every committed seed of each named harness (`fuzz/seeds/<name>/`)
/// and panics naming the first that does not parse, or a harness without
/// seeds: the fuzz corpora's starting points are regression tests that CI
/// runs. Each crate's test calls this with its own harnesses.
pub fn check_seeds(harnesses: &[Harness]) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds");
    for (target, harness) in harnesses {
        let dir = root.join(target);
        let mut seeds: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        seeds.sort();
        assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
        for seed in seeds {
            let data = std::fs::read(&seed).unwrap_or_else(|e| panic!("{}: {e}", seed.display()));
            assert!(harness(&data), "{} does not parse", seed.display());
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn committed_fuzz_seeds_parse() {
        super::check_seeds(&super::HARNESSES);
    }
}
