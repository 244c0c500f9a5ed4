//! The filefd collector: allocated and maximum file handles, from
//! /proc/sys/fs/file-nr.

use super::read::{num, read_text};
use super::{gauge, Settings};
use crate::collector::CollectError;
use crate::metrics::MetricFamily;

pub(crate) fn filefd(s: &Settings) -> Result<Vec<MetricFamily>, CollectError> {
    filefd_from(&read_text(&s.proc_path("sys/fs/file-nr"))?)
}

pub(crate) fn filefd_from(text: &str) -> Result<Vec<MetricFamily>, CollectError> {
    let f: Vec<&str> = text.split_ascii_whitespace().collect();
    if f.len() < 3 {
        return Err(CollectError::failed(format!(
            "unexpected /proc/sys/fs/file-nr: {text:?}"
        )));
    }
    Ok(vec![
        gauge(
            "node_filefd_allocated",
            "File descriptor statistics: allocated.",
            num(f[0]),
        ),
        gauge(
            "node_filefd_maximum",
            "File descriptor statistics: maximum.",
            num(f[2]),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::test_support::text;

    #[test]
    fn filefd_allocated_and_maximum() {
        let out = text(&filefd_from("589\t0\t2466174\n").unwrap());
        assert!(out.contains("node_filefd_allocated 589\n"));
        assert!(out.contains("node_filefd_maximum 2.466174e+06\n"));
        assert!(filefd_from("1").is_err());
    }
}
