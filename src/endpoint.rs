//! A named endpoint (SPEC 14): a TCP relay of its own on the loop, with
//! its own listener, upstream and faults, beside the main sockets (which
//! are endpoint 0). Its pairs are the relay's ([`Pairs`]), with tokens of
//! its own range; the loop's timers, read buffer and counters are shared.
//!
//! The endpoint knows nothing of names or the API: the registry that
//! holds it ([`api`](crate::api)) starts, changes and closes it.

use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::time::Duration;

use log::{debug, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

use crate::config::{Config, Mode};
use crate::fault::{Fault, Faults, Relaying};
use crate::limits::ACCEPTS_PER_TURN;
use crate::listener::Admit;
use crate::relay::pair::{Readiness, Side};
use crate::relay::pairs::Pairs;
use crate::stats::{Counters, Stats, add};
use crate::timer::{ACCEPT_RETRY_MS, Due, Entry, Millis, Pause, RateLimit};
use crate::turn::{ENDPOINT_LISTENER_BASE, Ready, Turn};

/// One named endpoint while it listens.
pub(crate) struct Endpoint {
    id: u16,
    listener: TcpListener,
    /// `None` when the upstream's name did not resolve: every client is
    /// then reset, as a refused upstream's are.
    pairs: Option<Pairs>,
    /// The faults its toxics make, judged on its own pairs.
    faults: Faults,
    /// What its pairs counted since the last [`drain`](Endpoint::drain).
    counters: Counters,
    max_connections: usize,
    accept_pause: Pause,
    failure_log: RateLimit,
    /// Shutting down: its listener is off the poll; nothing more is
    /// accepted.
    stopping: bool,
}

/// The listener token of endpoint `id`.
fn listener_token(id: u16) -> Token {
    Token(ENDPOINT_LISTENER_BASE.0 + id as usize)
}

impl Endpoint {
    /// Endpoint `id` (1 or more), called `name` in the journal, relaying
    /// `listener`'s clients to `upstream`, with `faults`; `config` gives
    /// the relay's limits.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        id: u16,
        name: &str,
        mut listener: TcpListener,
        upstream: Option<SocketAddr>,
        faults: &[Fault],
        seed: u64,
        config: &Config,
        registry: &Registry,
    ) -> io::Result<Endpoint> {
        registry.register(&mut listener, listener_token(id), Interest::READABLE)?;
        // A stream relay: faults act on whole connections.
        let relay = Config {
            mode: Mode::Once,
            ..config.clone()
        };
        let relaying = [Relaying::Streams, Relaying::Not];
        Ok(Endpoint {
            id,
            listener,
            pairs: upstream.map(|up| Pairs::for_endpoint(id, Some(name.into()), up, &relay)),
            faults: Faults::relaying(seed, faults, relaying),
            counters: Counters::default(),
            max_connections: config.max_connections,
            accept_pause: Pause::default(),
            failure_log: RateLimit::default(),
            stopping: false,
        })
    }

    /// Its faults from now on: new connections are judged by them, and
    /// open ones from their next bytes (SPEC 14).
    pub fn set_faults(&mut self, faults: &[Fault], t: &mut Turn<'_>) {
        let relaying = [Relaying::Streams, Relaying::Not];
        self.faults = Faults::relaying(self.faults.seed(), faults, relaying);
        self.with_faults(t, |pairs, t| pairs.reshape(t));
    }

    /// Open pairs.
    pub fn open(&self) -> usize {
        self.pairs.as_ref().map_or(0, Pairs::open)
    }

    /// Adds what this endpoint counted since the last call to the
    /// server's counters and to its own `total`.
    pub fn drain(&self, server: &Counters, total: &mut Stats) {
        self.counters.drain_into(server, total);
    }

    /// Runs `step` with a turn whose faults and counters are this
    /// endpoint's.
    fn with_faults(&mut self, t: &mut Turn<'_>, step: impl FnOnce(&mut Pairs, &mut Turn<'_>)) {
        let Some(pairs) = &mut self.pairs else {
            return;
        };
        let mut own = Turn {
            registry: t.registry,
            now: t.now,
            buf: t.buf,
            replies: t.replies,
            counters: &self.counters,
            timers: t.timers,
            ready: t.ready,
            faults: &mut self.faults,
            journal: t.journal,
        };
        step(pairs, &mut own);
    }

    /// The listener is readable: accept, a budget's worth a turn.
    pub fn accept(&mut self, t: &mut Turn<'_>) {
        if self.stopping || self.accept_pause.holds(t.now) {
            return;
        }
        for _ in 0..ACCEPTS_PER_TURN {
            let (stream, peer) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    warn!(
                        "endpoint {}: accept failed: {e}; again in {ACCEPT_RETRY_MS} ms",
                        self.id
                    );
                    let due = Due::EndpointAcceptRetry { endpoint: self.id };
                    return self.accept_pause.start(t.now, due, t.timers);
                }
            };
            self.admit(stream, peer, t);
        }
        let endpoint = self.id;
        t.ready.push(Ready::EndpointListener { endpoint });
    }

    fn admit(&mut self, stream: TcpStream, peer: SocketAddr, t: &mut Turn<'_>) {
        // `--max-connections` counts every endpoint's pairs together.
        let open = t.counters.open.load(std::sync::atomic::Ordering::Relaxed);
        if open >= self.max_connections as u64 {
            add(&self.counters.rejected, 1);
            return debug!("endpoint {}: {peer} closed: at --max-connections", self.id);
        }
        if self.pairs.is_none() {
            add(&self.counters.accepted, 1);
            add(&self.counters.upstream_failed, 1);
            if self.failure_log.allow(t.now) {
                warn!(
                    "endpoint {}: its upstream does not resolve; {peer} is reset",
                    self.id
                );
            }
            let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
            return;
        }
        self.with_faults(t, |pairs, t| pairs.admit(stream, peer, t));
    }

    /// A readiness event for a side of pair `key`.
    pub fn on_event(&mut self, key: usize, upstream: bool, ready: Readiness, t: &mut Turn<'_>) {
        let side = if upstream {
            Side::Upstream
        } else {
            Side::Client
        };
        self.with_faults(t, |pairs, t| pairs.on_event(key, side, ready, t));
    }

    /// Pair `key`, left still ready, is served again.
    pub fn resume(&mut self, key: usize, id: u32, t: &mut Turn<'_>) {
        self.with_faults(t, |pairs, t| pairs.resume(key, id, t));
    }

    /// Pair `key`'s timer entry came due.
    pub fn on_timer(&mut self, key: u32, at: Millis, t: &mut Turn<'_>) {
        self.with_faults(t, |pairs, t| pairs.on_timer(key, at, t));
    }

    /// The accept pause due `at` is over.
    pub fn on_accept_retry(&mut self, at: Millis, t: &mut Turn<'_>) {
        if self.accept_pause.is_current(at) {
            self.accept(t);
        }
    }

    /// Whether a timer entry of this endpoint is current (for the sweep).
    pub fn is_current(&self, entry: &Entry) -> bool {
        match entry.due {
            Due::EndpointPair { .. } => (self.pairs.as_ref()).is_some_and(|p| p.is_current(entry)),
            Due::EndpointAcceptRetry { .. } => self.accept_pause.is_current(entry.at),
            _ => false,
        }
    }

    /// Shutting down: every pair writes what it holds, then closes.
    pub fn stop(&mut self, t: &mut Turn<'_>) {
        self.stopping = true;
        let _ = t.registry.deregister(&mut self.listener);
        self.with_faults(t, |pairs, t| pairs.stop(t));
    }

    /// Closes the listener and every pair now (disabled, deleted,
    /// restarted); what they counted goes to `total` and the server's.
    pub fn close(mut self, t: &mut Turn<'_>, total: &mut Stats) {
        let _ = t.registry.deregister(&mut self.listener);
        self.close_pairs(t);
        self.drain(t.counters, total);
    }

    /// Closes every pair now; the listener stays.
    pub fn close_pairs(&mut self, t: &mut Turn<'_>) {
        self.with_faults(t, |pairs, t| pairs.close_all(t));
    }

    /// Frees the keys of pairs closed this turn.
    pub fn end_turn(&mut self) {
        if let Some(pairs) = &mut self.pairs {
            pairs.end_turn();
        }
    }
}
