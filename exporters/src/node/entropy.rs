//! The entropy collector: the kernel's available entropy and pool size.

use super::read::{num, read_text};
use super::{gauge, Settings};
use crate::collector::CollectError;
use crate::metrics::MetricFamily;

pub(crate) fn entropy(s: &Settings) -> Result<Vec<MetricFamily>, CollectError> {
    let avail = read_text(&s.proc_path("sys/kernel/random/entropy_avail"))?;
    let pool = read_text(&s.proc_path("sys/kernel/random/poolsize"))?;
    Ok(vec![
        gauge(
            "node_entropy_available_bits",
            "Bits of available entropy.",
            num(avail.trim()),
        ),
        gauge(
            "node_entropy_pool_size_bits",
            "Bits of entropy pool.",
            num(pool.trim()),
        ),
    ])
}
