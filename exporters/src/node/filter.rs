//! The name filters of the node configuration (`*_exclude`, `*_fields`),
//! compiled once and memoised because a scrape tests hundreds of names.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// A name filter from the config (`*_exclude`, `*_fields`, ...) that
/// remembers its answers. The names it sees (kernel fields, devices, mount
/// points, file system types) rarely change while the agent runs, yet a
/// node scrape tests some 550 of them: after the first scrape each costs a
/// hash lookup instead of a regex search (the searches were about a tenth
/// of a scrape's user CPU). The patterns compile with `regex-lite`, whose
/// programs and search state are a few KiB where `regex`'s lazy DFAs kept
/// hundreds of KiB resident for searches that now run once per name.
#[derive(Debug)]
pub(crate) struct NameFilter {
    regex: regex_lite::Regex,
    answers: Mutex<HashMap<String, bool, BuildHasherDefault<Fnv1a>>>,
}

/// Names remembered at most; a source that keeps inventing names (a
/// container host mounting and unmounting) falls back to searching for the
/// names past the cap, and memory stays bounded.
const MAX_REMEMBERED_NAMES: usize = 4096;

impl NameFilter {
    pub(crate) fn new(pattern: &str) -> Result<NameFilter, regex_lite::Error> {
        Ok(NameFilter {
            regex: regex_lite::Regex::new(pattern)?,
            answers: Mutex::new(HashMap::default()),
        })
    }

    pub(crate) fn is_match(&self, name: &str) -> bool {
        self.pass().is_match(name)
    }

    /// One pass over a file: the lock is taken once, not per name.
    pub(crate) fn pass(&self) -> NamePass<'_> {
        NamePass {
            regex: &self.regex,
            answers: self.answers.lock().unwrap_or_else(PoisonError::into_inner),
        }
    }
}

/// See [`NameFilter::pass`].
pub(crate) struct NamePass<'a> {
    regex: &'a regex_lite::Regex,
    answers: MutexGuard<'a, HashMap<String, bool, BuildHasherDefault<Fnv1a>>>,
}

impl NamePass<'_> {
    pub(crate) fn is_match(&mut self, name: &str) -> bool {
        if let Some(&hit) = self.answers.get(name) {
            return hit;
        }
        let hit = self.regex.is_match(name);
        if self.answers.len() < MAX_REMEMBERED_NAMES {
            self.answers.insert(name.to_owned(), hit);
        }
        hit
    }
}

/// FNV-1a: a few multiplications for a short name where SipHash costs
/// dozens. Collision resistance is not needed here: the table is capped,
/// so crafted names can at worst make some lookups linear in a small set.
#[derive(Default)]
pub(crate) struct Fnv1a(u64);

impl Hasher for Fnv1a {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_filter_remembers_answers_and_stays_bounded() {
        let filter = NameFilter::new("^(Tcp_.*|Ip_Forwarding)$").unwrap();
        for _ in 0..2 {
            let mut pass = filter.pass();
            assert!(pass.is_match("Tcp_InErrs"));
            assert!(!pass.is_match("Udp_InErrors"));
            assert!(pass.is_match("Ip_Forwarding"));
            assert!(!pass.is_match("Ip_ForwardingX"));
        }
        let mut pass = filter.pass();
        for i in 0..MAX_REMEMBERED_NAMES {
            assert!(pass.is_match(&format!("Tcp_{i}")));
            assert!(!pass.is_match(&format!("Udp_{i}")));
        }
        assert_eq!(pass.answers.len(), MAX_REMEMBERED_NAMES);
        assert!(pass.is_match("Tcp_new"), "past the cap it still answers");
    }
}
