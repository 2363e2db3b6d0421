//! toxiproxy's HTTP API (SPEC 14) on the loop's own thread: `--api ADDR`
//! serves HTTP/1.1 with JSON bodies, keep-alive included, and manages
//! named proxies and their toxics with toxiproxy 2.x's routes, shapes,
//! status codes and errors, so toxiproxy's clients drive ackloop
//! unchanged.
//!
//! - [`http`]: a request out of bytes (`httparse`), an answer's bytes;
//! - [`conn`]: one connection (reads, answers in order, bounds);
//! - [`routes`]: the route table, a request to the registry's operation;
//! - [`registry`]: the proxies and their toxics, toxiproxy's semantics
//!   (the server holds it, with or without `--api`: `--config` fills it);
//! - [`model`] and [`toxic`]: the JSON shapes and their checks.
//!
//! Bounded like the control port (SPEC 9): at most [`MAX_API_CONNECTIONS`]
//! connections (one more is closed at once), one request's bytes held per
//! connection, answers past 64 KiB unsent stop its reading, and a
//! connection silent for [`IDLE_MS`] is closed.

use std::io::ErrorKind;

use log::{debug, warn};
use mio::Interest;
use mio::net::TcpListener;

use crate::table::Table;
use crate::timer::{ACCEPT_RETRY_MS, Due, Entry, Millis, NEVER, Pause, RateLimit};
use crate::turn::{API_BASE, API_SLOTS, Ready, Turn, settle_writable};
use conn::{ApiConn, Outcome};
pub(crate) use registry::Registry;

mod conn;
mod http;
mod model;
mod proxy;
mod registry;
mod routes;
mod toxic;

/// API connections open at once, at most; one more is closed at once.
pub const MAX_API_CONNECTIONS: usize = API_SLOTS;
/// An API connection with no event (no bytes read, no room to write) for
/// this long is closed, in milliseconds: toxiproxy's idle timeout, and
/// what frees the slot of a client that sent half a request and left.
pub const IDLE_MS: Millis = 60_000;

/// A connection and its one timer entry.
struct Slot {
    conn: ApiConn,
    /// When it is closed if it makes no progress before.
    deadline: Millis,
    /// The deadline of its one live timer entry, or [`NEVER`]: the entry
    /// is moved only when it comes due, so progress costs no heap push.
    armed_at: Millis,
}

/// The API listener and its connections.
pub(crate) struct Api {
    listener: Option<TcpListener>,
    conns: Table<Slot>,
    accept_pause: Pause,
    refuse_log: RateLimit,
}

impl Api {
    pub fn new(listener: TcpListener) -> Api {
        let max = MAX_API_CONNECTIONS;
        Api {
            listener: Some(listener),
            conns: Table::new(API_BASE, max, 16, max),
            accept_pause: Pause::default(),
            refuse_log: RateLimit::default(),
        }
    }

    /// The listener is readable: accept until `WouldBlock`.
    pub fn accept(&mut self, t: &mut Turn<'_>, registry: &mut Registry) {
        if self.accept_pause.holds(t.now) {
            return; // Paused after an accept error; its timer resumes it.
        }
        while let Some(listener) = &self.listener {
            let (stream, peer) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if is_transient(&e) => continue,
                Err(e) => {
                    warn!("api: accept failed: {e}; trying again in {ACCEPT_RETRY_MS} ms");
                    return self
                        .accept_pause
                        .start(t.now, Due::ApiAcceptRetry, t.timers);
                }
            };
            if self.conns.is_full() {
                if self.refuse_log.allow(t.now) {
                    warn!("api: {peer} closed: {MAX_API_CONNECTIONS} API connections open");
                }
                continue; // Dropping it closes it.
            }
            let _ = stream.set_nodelay(true);
            let slot = |stream| Slot {
                conn: ApiConn::new(stream),
                deadline: NEVER,
                armed_at: NEVER,
            };
            match (self.conns).insert(t.registry, stream, Interest::READABLE, slot) {
                Ok(key) => {
                    debug!("api {key}: accepted {peer}");
                    self.drive(key, t, registry);
                }
                Err(e) => warn!("api: cannot register {peer}: {e}"),
            }
        }
    }

    /// A readiness event for connection `key` (or its turn after its
    /// budget ran out).
    pub fn drive(&mut self, key: usize, t: &mut Turn<'_>, registry: &mut Registry) {
        let token = self.conns.token(key);
        let Some(slot) = self.conns.get_mut(key) else {
            return; // Closed earlier in this batch: a stale event.
        };
        let conn = &mut slot.conn;
        let outcome = conn.serve(registry, t);
        let want = conn.wants_writable();
        let registered = &mut conn.write_interest;
        if let Err(e) = settle_writable(t.registry, &mut conn.stream, token, registered, want) {
            debug!("api {key}: cannot change interest: {e}");
            return self.close(key, "cannot change interest", t);
        }
        match outcome {
            Outcome::Done(why) => return self.close(key, why, t),
            Outcome::StillReady => t.ready.push(Ready::Api { key }),
            Outcome::Open => {}
        }
        // Any event pushes the deadline back.
        slot.deadline = t.now.saturating_add(IDLE_MS);
        if slot.armed_at == NEVER {
            slot.armed_at = slot.deadline;
            t.timers.arm(slot.armed_at, Due::Api { key: key as u32 });
        }
    }

    /// Connection `key`'s timer entry, due `at`, came due.
    pub fn on_timer(&mut self, key: usize, at: Millis, t: &mut Turn<'_>) {
        let Some(slot) = self.conns.get_mut(key) else {
            return;
        };
        if slot.armed_at != at {
            return; // Stale: an earlier connection's in the same key.
        }
        if slot.deadline > at {
            // Pushed back since: the entry moves to the later deadline.
            slot.armed_at = slot.deadline;
            t.timers.arm(slot.armed_at, Due::Api { key: key as u32 });
            return;
        }
        self.close(key, "no progress for 60 s", t);
    }

    /// The accept-retry entry due `at` came due.
    pub fn on_accept_retry(&mut self, at: Millis, t: &mut Turn<'_>, registry: &mut Registry) {
        if self.accept_pause.is_current(at) {
            self.accept(t, registry);
        }
    }

    /// Timer entries that can be current at once: one per connection,
    /// and the listener's pause.
    pub fn timers_current(&self) -> usize {
        self.conns.open() + 1
    }

    /// Whether an API timer entry is current (for the sweep). A
    /// connection keeps one entry, re-armed when it comes due.
    pub fn is_current(&self, entry: &Entry) -> bool {
        match entry.due {
            Due::Api { key } => {
                (self.conns.get(key as usize)).is_some_and(|s| s.armed_at == entry.at)
            }
            Due::ApiAcceptRetry => self.accept_pause.is_current(entry.at),
            _ => false,
        }
    }

    /// Closes every API connection and the listener: the server stops.
    pub fn close_all(&mut self, t: &mut Turn<'_>) {
        if let Some(mut listener) = self.listener.take() {
            let _ = t.registry.deregister(&mut listener);
        }
        for key in self.conns.keys() {
            self.close(key, "shutting down", t);
        }
    }

    /// Frees the keys of connections closed this turn.
    pub fn end_turn(&mut self) {
        self.conns.end_turn();
    }

    fn close(&mut self, key: usize, why: &str, t: &mut Turn<'_>) {
        if let Some(mut slot) = self.conns.close(key) {
            debug!("api {key}: closed: {why}");
            let _ = t.registry.deregister(&mut slot.conn.stream);
        }
    }
}

/// Accept errors that concern one client only: try the next.
fn is_transient(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::Interrupted | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    )
}
