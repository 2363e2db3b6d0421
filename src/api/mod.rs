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

use mio::net::{TcpListener, TcpStream};

use crate::service::{Connection, Service};
use crate::timer::{Due, Entry, Millis, NEVER};
use crate::turn::{API_BASE, API_SLOTS, Ready, Turn};
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

impl Connection for Slot {
    fn stream(&mut self) -> &mut TcpStream {
        &mut self.conn.stream
    }
}

/// The API listener and its connections.
pub(crate) struct Api {
    service: Service<Slot>,
}

impl Api {
    pub fn new(listener: TcpListener) -> Api {
        let tokens = (API_BASE, MAX_API_CONNECTIONS, 16);
        Api {
            service: Service::new("api", listener, tokens, Due::ApiAcceptRetry),
        }
    }

    /// The listener is readable: accept until `WouldBlock`.
    pub fn accept(&mut self, t: &mut Turn<'_>, registry: &mut Registry) {
        let slot = |stream: TcpStream| {
            let _ = stream.set_nodelay(true);
            Slot {
                conn: ApiConn::new(stream),
                deadline: NEVER,
                armed_at: NEVER,
            }
        };
        while let Some(key) = self.service.accept_next(t, &slot) {
            self.drive(key, t, registry);
        }
    }

    /// A readiness event for connection `key` (or its turn after its
    /// budget ran out).
    pub fn drive(&mut self, key: usize, t: &mut Turn<'_>, registry: &mut Registry) {
        let token = self.service.conns.token(key);
        let Some(slot) = self.service.conns.get_mut(key) else {
            return; // Closed earlier in this batch: a stale event.
        };
        let conn = &mut slot.conn;
        let outcome = conn.serve(registry, t);
        if let Err(e) = conn.out.settle(t.registry, &mut conn.stream, token) {
            let why = format!("cannot change interest: {e}");
            return self.service.close(key, &why, t);
        }
        match outcome {
            Outcome::Done(why) => return self.service.close(key, why, t),
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
        let Some(slot) = self.service.conns.get_mut(key) else {
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
        self.service.close(key, "no progress for 60 s", t);
    }

    /// The accept-retry entry due `at` came due.
    pub fn on_accept_retry(&mut self, at: Millis, t: &mut Turn<'_>, registry: &mut Registry) {
        if self.service.is_current_pause(at) {
            self.accept(t, registry);
        }
    }

    /// Timer entries that can be current at once: one per connection,
    /// and the listener's pause.
    pub fn timers_current(&self) -> usize {
        self.service.conns.open() + 1
    }

    /// Whether an API timer entry is current (for the sweep). A
    /// connection keeps one entry, re-armed when it comes due.
    pub fn is_current(&self, entry: &Entry) -> bool {
        match entry.due {
            Due::Api { key } => {
                (self.service.conns.get(key as usize)).is_some_and(|s| s.armed_at == entry.at)
            }
            Due::ApiAcceptRetry => self.service.is_current_pause(entry.at),
            _ => false,
        }
    }

    /// Closes every API connection and the listener: the server stops.
    pub fn close_all(&mut self, t: &mut Turn<'_>) {
        self.service.close_all(t);
    }

    /// Frees the keys of connections closed this turn.
    pub fn end_turn(&mut self) {
        self.service.end_turn();
    }
}
