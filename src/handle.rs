//! The [`Handle`]: what other threads may do with a running server.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use log::warn;
use mio::Waker;

use crate::stats::{Counters, Stats};

// The changes other threads ask for at run time (`add_fault`, `refuse`,
// ...): with the `control` feature; without it, a stand-in with none.
#[cfg_attr(not(feature = "control"), path = "off/changes.rs")]
mod changes;

#[cfg(feature = "control")]
pub use changes::CHANGE_TIMEOUT;
pub(crate) use changes::{Changes, InTurn};

/// What other threads share with the loop.
pub(crate) struct Shared {
    /// Wakes the loop's poll (one `Waker` per `Poll`).
    pub waker: Waker,
    /// A shutdown was asked for; the loop reads it when woken.
    pub stop_requested: AtomicBool,
    pub counters: Counters,
    /// Changes asked for by other threads, applied by the loop when woken
    /// (with the `control` feature; without it there are none).
    pub changes: Changes,
}

impl Shared {
    /// The loop will take no more changes: answers those waiting, and
    /// every later one at once, with an error.
    pub fn stop_taking_changes(&self) {
        self.changes.stop_taking();
    }
}

/// A handle to a running server, for other threads: ask it to stop, read
/// its counters and (with the `control` feature) change its faults, its
/// reply and its listener as live control does. Cheap to clone.
///
/// # Examples
///
/// ```
/// let mut server = ackloop::Server::bind(ackloop::Config::loopback())?;
/// let handle = server.handle();
/// let thread = std::thread::spawn(move || server.run());
/// handle.shutdown();
/// let stats = thread.join().unwrap()?;
/// assert_eq!(stats.accepted, 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Handle {
    pub(crate) shared: Arc<Shared>,
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("stats", &self.stats())
            .finish()
    }
}

impl Handle {
    /// Asks the loop to stop: it stops accepting, finishes the replies it
    /// owes (for at most five seconds), closes everything and returns from
    /// [`Server::run`](crate::Server::run). Returns at once; calling it again does nothing.
    pub fn shutdown(&self) {
        self.shared.stop_requested.store(true, Ordering::SeqCst);
        if let Err(e) = self.shared.waker.wake() {
            warn!("cannot wake the loop: {e}");
        }
    }

    /// The counters as they are now.
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }
}
