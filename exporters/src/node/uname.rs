//! The uname collector: `node_uname_info` from the uname system call.

use super::Settings;
use crate::collector::CollectError;
use crate::metrics::MetricFamily;

pub(crate) fn uname(_s: &Settings) -> Result<Vec<MetricFamily>, CollectError> {
    let u = rustix::system::uname();
    let s = |c: &std::ffi::CStr| c.to_string_lossy().into_owned();
    Ok(vec![MetricFamily::gauge(
        "node_uname_info",
        "Labeled system information as provided by the uname system call.",
    )
    .with(
        [
            ("domainname", s(u.domainname())),
            ("machine", s(u.machine())),
            ("nodename", s(u.nodename())),
            ("release", s(u.release())),
            ("sysname", s(u.sysname())),
            ("version", s(u.version())),
        ],
        1.0,
    )])
}
