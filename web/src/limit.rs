//! A bound on concurrent requests that refuses the excess at once instead
//! of queueing it: a queue of scrapes grows while each waits past its
//! timeout, which helps nobody.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Requests in flight on one endpoint.
#[derive(Debug, Default)]
pub struct InFlight {
    count: AtomicUsize,
}

/// Held while a request runs; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot(Arc<InFlight>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
    }
}

impl InFlight {
    /// A slot when fewer than `max` requests run; `max` is read per call so
    /// a reloaded configuration applies at once.
    pub fn try_enter(self: &Arc<Self>, max: usize) -> Option<Slot> {
        let before = self.count.fetch_add(1, Ordering::AcqRel);
        let slot = Slot(Arc::clone(self));
        (before < max).then_some(slot)
    }

    pub fn current(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_past_the_bound_and_frees_on_drop() {
        let f = Arc::new(InFlight::default());
        let a = f.try_enter(2).expect("first");
        let b = f.try_enter(2).expect("second");
        assert!(f.try_enter(2).is_none());
        assert_eq!(f.current(), 2);
        drop(a);
        let c = f.try_enter(2).expect("freed slot");
        drop((b, c));
        assert_eq!(f.current(), 0);
    }
}
