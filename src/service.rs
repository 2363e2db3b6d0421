//! A service socket's listener and its table of connections, where a
//! client sends requests and reads answers: the control port's
//! ([`control`](crate::control)) and the API's ([`api`](crate::api)).
//! What both do alike is here once: accepting (bounded, paused after an
//! accept error, refusals logged at most once a second), closing one
//! connection or all, freeing keys at the turn's end, and the answers not
//! yet written ([`Unsent`]), whose bound stops a connection's reading so
//! that a client that never reads cannot grow the server. What a request
//! is and what answers it stays with each service.

use std::io::{self, ErrorKind};

use log::{debug, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

use crate::table::Table;
use crate::timer::{ACCEPT_RETRY_MS, Due, Millis, Pause, RateLimit};
use crate::turn::{Turn, settle_writable};
use crate::write::write_until_blocked;

/// Bytes of answers not yet sent past which a connection's requests wait
/// (and it is not read) until they drain. Past it by one answer at most.
pub(crate) const MAX_UNSENT: usize = 64 * 1024;

/// A service connection, as its table needs it.
pub(crate) trait Connection {
    /// Its socket, to deregister before it is dropped.
    fn stream(&mut self) -> &mut TcpStream;
}

/// The listener and the open connections of one service.
pub(crate) struct Service<C> {
    /// For the log: `control`, `api`.
    name: &'static str,
    listener: Option<TcpListener>,
    pub conns: Table<C>,
    /// Connections open at once, at most.
    max: usize,
    /// Accepting is paused after an accept error.
    accept_pause: Pause,
    /// What comes due when the pause is over.
    retry: Due,
    refuse_log: RateLimit,
}

impl<C: Connection> Service<C> {
    /// `listener`'s service `name`: at most `max` connections, with
    /// tokens from `base` and room for `capacity` before the table grows;
    /// `retry` comes due after an accept error.
    pub fn new(
        name: &'static str,
        listener: TcpListener,
        (base, max, capacity): (Token, usize, usize),
        retry: Due,
    ) -> Service<C> {
        Service {
            name,
            listener: Some(listener),
            conns: Table::new(base, max, capacity, max),
            max,
            accept_pause: Pause::default(),
            retry,
            refuse_log: RateLimit::default(),
        }
    }

    /// Accepts the next client, registered, its connection made by
    /// `make`; `None` once the listener is drained (`WouldBlock`: the
    /// next client brings a new event), paused or closed. A client past
    /// the bound is closed at once, logged at most once a second.
    pub fn accept_next(
        &mut self,
        t: &mut Turn<'_>,
        make: &impl Fn(TcpStream) -> C,
    ) -> Option<usize> {
        if self.accept_pause.holds(t.now) {
            return None; // Paused after an accept error; its timer resumes it.
        }
        loop {
            let (stream, peer) = match self.listener.as_ref()?.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return None,
                Err(e) if is_transient(&e) => continue,
                // Out of descriptors, say: the clients waiting will not be
                // reported again, so try again later (no spin, no stall).
                Err(e) => {
                    let name = self.name;
                    warn!("{name}: accept failed: {e}; trying again in {ACCEPT_RETRY_MS} ms");
                    self.accept_pause.start(t.now, self.retry, t.timers);
                    return None;
                }
            };
            if self.conns.is_full() {
                if self.refuse_log.allow(t.now) {
                    let (name, max) = (self.name, self.max);
                    warn!("{name}: {peer} closed: {max} {name} connections open");
                }
                continue; // Dropping it closes it.
            }
            match self
                .conns
                .insert(t.registry, stream, Interest::READABLE, make)
            {
                Ok(key) => {
                    debug!("{} {key}: accepted {peer}", self.name);
                    return Some(key);
                }
                Err(e) => warn!("{}: cannot register {peer}: {e}", self.name),
            }
        }
    }

    /// Whether the accept pause due `at` is the current one (its end
    /// resumes accepting).
    pub fn is_current_pause(&self, at: Millis) -> bool {
        self.accept_pause.is_current(at)
    }

    /// Closes connection `key`, saying `why` in the log.
    pub fn close(&mut self, key: usize, why: &str, t: &mut Turn<'_>) {
        if let Some(mut conn) = self.conns.close(key) {
            debug!("{} {key}: closed: {why}", self.name);
            let _ = t.registry.deregister(conn.stream());
        }
    }

    /// Closes every connection and the listener: the server stops.
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
}

/// Accept errors that concern one client only: try the next.
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::Interrupted | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    )
}

/// A connection's answers not yet written, and whether `WRITABLE` is
/// registered for them (exactly while any wait).
#[derive(Debug, Default)]
pub(crate) struct Unsent {
    bytes: Vec<u8>,
    write_interest: bool,
}

impl Unsent {
    /// The bytes, for an answer to be added.
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Past [`MAX_UNSENT`]: requests wait and the connection is not read.
    pub fn is_full(&self) -> bool {
        self.bytes.len() >= MAX_UNSENT
    }

    /// Writes until done or `WouldBlock`. An idle connection keeps no
    /// large buffer.
    pub fn flush(&mut self, stream: &mut TcpStream) -> io::Result<()> {
        let (written, result) = write_until_blocked(stream, &self.bytes);
        self.bytes.drain(..written);
        if self.bytes.is_empty() && self.bytes.capacity() > MAX_UNSENT {
            self.bytes = Vec::new();
        }
        result.map(drop)
    }

    /// Registers `WRITABLE` interest on `stream` (token `token`) exactly
    /// while answers wait.
    pub fn settle(
        &mut self,
        registry: &Registry,
        stream: &mut TcpStream,
        token: Token,
    ) -> io::Result<()> {
        let want = !self.bytes.is_empty();
        settle_writable(registry, stream, token, &mut self.write_interest, want)
    }
}
