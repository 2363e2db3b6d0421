//! What other threads hold of a running lab server: the counters its
//! probes read and the means to stop it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use mio::Waker;

/// What the probes count, readable from their thread.
#[derive(Debug, Default)]
pub struct Counters {
    /// Readiness events handled.
    pub events: AtomicU64,
    /// Accepts that failed for want of a descriptor.
    pub out_of_descriptors: AtomicU64,
    /// Accepts that failed otherwise (not `WouldBlock`, not one client's
    /// trouble): with a pause between them, about one a second.
    pub accept_errors: AtomicU64,
    /// Bytes read from TCP clients.
    pub bytes_read: AtomicU64,
    /// The most reads one connection made in one turn: at most
    /// `READS_PER_TURN` when the still-ready list gives one budget a turn.
    pub most_reads_in_a_turn: AtomicU64,
}

/// Ends a running lab server from another thread.
#[derive(Clone)]
pub struct Stopper {
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl Stopper {
    pub fn new(stop: Arc<AtomicBool>, waker: Arc<Waker>) -> Stopper {
        Stopper { stop, waker }
    }

    pub fn stop(&self) {
        self.stop.store(true, Relaxed);
        let _ = self.waker.wake();
    }
}
