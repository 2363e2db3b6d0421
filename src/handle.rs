//! The [`Handle`]: what other threads may do with a running server.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use log::warn;
use mio::Waker;

use crate::fault::Fault;
use crate::stats::{Counters, Stats};

/// What other threads share with the loop.
pub(crate) struct Shared {
    /// Wakes the loop's poll (one `Waker` per `Poll`).
    pub waker: Waker,
    /// A shutdown was asked for; the loop reads it when woken.
    pub stop_requested: AtomicBool,
    pub counters: Counters,
    /// Changes asked for by other threads, applied by the loop when woken.
    pub changes: Mutex<Vec<Change>>,
}

/// A change another thread asks the loop to make.
#[derive(Debug)]
pub(crate) enum Change {
    AddFault(Fault),
    ClearFaults,
}

/// A handle to a running server, for other threads: ask it to stop, read
/// its counters. Cheap to clone.
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

    /// Adds a fault from now on, as `--fault` does at start: messages that
    /// arrive after the loop takes the change are judged by it, and its
    /// `first`/`after`/`every` count from then. Returns at once.
    ///
    /// # Examples
    ///
    /// ```
    /// use ackloop::testing::TestServer;
    /// let server = TestServer::start()?;
    /// let client = std::net::UdpSocket::bind("127.0.0.1:0")?;
    /// server.handle().add_fault("udp:drop".parse()?);
    /// server.handle().clear_faults();
    /// client.send_to(b"Hello, Server", server.udp_addr())?;
    /// let mut reply = [0; 16];
    /// // The clear came after the drop: this datagram is answered.
    /// let n = client.recv(&mut reply)?;
    /// assert_eq!(&reply[..n], b"Received");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn add_fault(&self, fault: Fault) {
        self.change(Change::AddFault(fault));
    }

    /// Removes every fault, from now on. Returns at once.
    pub fn clear_faults(&self) {
        self.change(Change::ClearFaults);
    }

    fn change(&self, change: Change) {
        let mut changes = self
            .shared
            .changes
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        changes.push(change);
        drop(changes);
        if let Err(e) = self.shared.waker.wake() {
            warn!("cannot wake the loop: {e}");
        }
    }
}
