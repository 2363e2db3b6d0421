//! A named endpoint (SPEC 14): a relay of its own on the loop, with its
//! own socket, upstream and faults, beside the main sockets (which are
//! endpoint 0). A TCP endpoint's pairs are the relay's ([`Pairs`]); a UDP
//! endpoint's public socket and flows are UDP's and the relay's
//! ([`Udp`], [`Flows`]), as `--upstream udp:...` has them: one path for
//! the main sockets and every endpoint, with tokens of the endpoint's own
//! range. The loop's timers, read buffer and journal are shared; the
//! counters and faults are the endpoint's own while it works.
//!
//! The endpoint knows nothing of names or the API: the registry that
//! holds it ([`api`](crate::api)) starts, changes and closes it.

use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use log::{debug, warn};
use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Interest, Registry};

use crate::config::{Config, Mode};
use crate::fault::{Fault, Faults, Relaying};
use crate::limits::ACCEPTS_PER_TURN;
use crate::listener::Admit;
use crate::relay::flows::Flows;
use crate::relay::pair::{Readiness, Side};
use crate::relay::pairs::Pairs;
use crate::stats::{Counters, Stats, add};
use crate::timer::{ACCEPT_RETRY_MS, Due, Entry, Millis, Pause, RateLimit};
use crate::turn::{ENDPOINT_LISTENER_BASE, EndpointId, Ready, Turn};
use crate::udp::{Udp, Upstreams};
use crate::vocab::Protocol;

/// One named endpoint while it is enabled.
pub(crate) struct Endpoint {
    id: EndpointId,
    relay: Relay,
    /// The faults its toxics make, judged on its own traffic.
    faults: Faults,
    /// What it counted since the last [`drain`](Endpoint::drain).
    counters: Counters,
}

/// What an endpoint relays, and the sockets it does it with. The TCP
/// variant stays inline, as it was before UDP endpoints: most endpoints
/// are TCP, and every pair event reaches it.
#[allow(clippy::large_enum_variant)]
enum Relay {
    Tcp(Streams),
    /// Boxed: a UDP socket's queue and batch headers are larger than a
    /// listener, and most endpoints are TCP.
    Udp(Box<Datagrams>),
}

/// A TCP endpoint: its listener and its pairs.
struct Streams {
    listener: TcpListener,
    /// `None` when the upstream's name did not resolve: every client is
    /// then reset, as a refused upstream's are.
    pairs: Option<Pairs>,
    max_connections: usize,
    accept_pause: Pause,
    failure_log: RateLimit,
    /// Shutting down: its listener is off the poll; nothing more is
    /// accepted.
    stopping: bool,
}

/// A UDP endpoint: its public socket and its flows.
struct Datagrams {
    udp: Udp,
    flows: Flows,
}

/// How an endpoint of `protocol` relays each protocol, for its faults:
/// a TCP endpoint as streams (faults act on whole connections), a UDP one
/// datagram by datagram.
pub(crate) fn relaying(protocol: Protocol) -> [Relaying; 2] {
    match protocol {
        Protocol::Tcp => [Relaying::Streams, Relaying::Not],
        Protocol::Udp => [Relaying::Not, Relaying::Messages],
    }
}

/// An endpoint's socket: a TCP listener, or a UDP socket.
pub(crate) enum Socket {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

impl Socket {
    /// A non-blocking socket of `protocol` bound to `addr`.
    ///
    /// # Errors
    ///
    /// As the bind's: the address in use, not permitted.
    pub fn bind(protocol: Protocol, addr: SocketAddr) -> io::Result<Socket> {
        Ok(match protocol {
            Protocol::Tcp => Socket::Tcp(TcpListener::bind(addr)?),
            Protocol::Udp => Socket::Udp(UdpSocket::bind(addr)?),
        })
    }

    /// The address it is bound to (port 0 resolved).
    ///
    /// # Errors
    ///
    /// As `getsockname`'s.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Socket::Tcp(listener) => listener.local_addr(),
            Socket::Udp(socket) => socket.local_addr(),
        }
    }
}

impl Endpoint {
    /// Endpoint `id` (1 or more), called `name` in the journal, relaying
    /// what `socket` takes in (a TCP listener's clients, or a UDP socket's
    /// datagrams through a flow per client) to `upstream`, with `faults`
    /// judged with `seed`; `config` gives the relay's limits.
    ///
    /// # Errors
    ///
    /// When the socket cannot be registered.
    pub fn start(
        id: u16,
        name: &str,
        socket: Socket,
        upstream: Option<SocketAddr>,
        (faults, seed): (&[Fault], u64),
        config: &Config,
        registry: &Registry,
    ) -> io::Result<Endpoint> {
        let id = EndpointId(id);
        let relay = match socket {
            Socket::Tcp(mut listener) => {
                let token = mio::Token(ENDPOINT_LISTENER_BASE.0 + id.0 as usize);
                registry.register(&mut listener, token, Interest::READABLE)?;
                Relay::Tcp(Streams::new(id, name, listener, upstream, config))
            }
            Socket::Udp(mut socket) => {
                registry.register(&mut socket, id.udp_token(), Interest::READABLE)?;
                Relay::Udp(Box::new(Datagrams {
                    udp: Udp::for_endpoint(id, Some(name), socket, false, config),
                    flows: Flows::for_endpoint(id, upstream, config),
                }))
            }
        };
        Ok(Endpoint::new(id, relay, faults, seed))
    }

    fn new(id: EndpointId, relay: Relay, faults: &[Fault], seed: u64) -> Endpoint {
        let protocol = relay.protocol();
        Endpoint {
            id,
            relay,
            faults: Faults::relaying(seed, faults, relaying(protocol)),
            counters: Counters::default(),
        }
    }

    /// Its faults from now on: new connections are judged by them, open
    /// ones from their next bytes, every datagram from the next (SPEC 14).
    pub fn set_faults(&mut self, faults: &[Fault], t: &mut Turn<'_>) {
        let relaying = relaying(self.relay.protocol());
        self.faults = Faults::relaying(self.faults.seed(), faults, relaying);
        self.with_pairs(t, |pairs, t| pairs.reshape(t));
    }

    /// Open pairs (a UDP endpoint has none).
    pub fn open(&self) -> usize {
        match &self.relay {
            Relay::Tcp(streams) => streams.pairs.as_ref().map_or(0, Pairs::open),
            Relay::Udp(_) => 0,
        }
    }

    /// Nothing left to finish: no pair open, no datagram waiting.
    pub fn is_idle(&self) -> bool {
        match &self.relay {
            Relay::Tcp(_) => self.open() == 0,
            Relay::Udp(d) => d.udp.queued() == 0,
        }
    }

    /// Timer entries it can hold current at once: one per pair or flow,
    /// and its listener's pause or its UDP delays.
    pub fn timers_current(&self) -> usize {
        match &self.relay {
            Relay::Tcp(_) => self.open() + 1,
            Relay::Udp(d) => d.flows.open() + 1,
        }
    }

    /// Adds what this endpoint counted since the last call to the
    /// server's counters and to its own `total`.
    pub fn drain(&self, server: &Counters, total: &mut Stats) {
        self.counters.drain_into(server, total);
    }

    /// Runs `step` with a turn whose faults and counters are this
    /// endpoint's.
    fn with_own<R>(
        &mut self,
        t: &mut Turn<'_>,
        step: impl FnOnce(&mut Relay, &mut Turn<'_>) -> R,
    ) -> R {
        step(
            &mut self.relay,
            &mut t.with(&self.counters, &mut self.faults),
        )
    }

    /// Runs `step` on its pairs (a TCP endpoint's, its upstream resolved).
    fn with_pairs(&mut self, t: &mut Turn<'_>, step: impl FnOnce(&mut Pairs, &mut Turn<'_>)) {
        self.with_own(t, |relay, t| {
            if let Relay::Tcp(Streams {
                pairs: Some(pairs), ..
            }) = relay
            {
                step(pairs, t);
            }
        });
    }

    /// Runs `step` on its UDP socket and flows (a UDP endpoint's).
    fn with_datagrams(
        &mut self,
        t: &mut Turn<'_>,
        step: impl FnOnce(&mut Datagrams, &mut Turn<'_>),
    ) {
        self.with_own(t, |relay, t| {
            if let Relay::Udp(datagrams) = relay {
                step(datagrams, t);
            }
        });
    }

    /// Its listener is readable (or its UDP socket: then the datagrams
    /// go up their flows).
    pub fn accept(&mut self, t: &mut Turn<'_>) {
        let id = self.id;
        // The server's open pairs, before this turn counts apart.
        let server_open = t.counters.open.load(Relaxed);
        self.with_own(t, |relay, t| match relay {
            Relay::Tcp(streams) => streams.accept(id, server_open, t),
            Relay::Udp(d) => d.udp.serve(Some(&mut d.flows as &mut dyn Upstreams), t),
        });
    }

    /// A readiness event for a side of pair `key`.
    pub fn on_event(&mut self, key: usize, upstream: bool, ready: Readiness, t: &mut Turn<'_>) {
        let side = if upstream {
            Side::Upstream
        } else {
            Side::Client
        };
        self.with_pairs(t, |pairs, t| pairs.on_event(key, side, ready, t));
    }

    /// Pair `key`, left still ready, is served again.
    pub fn resume(&mut self, key: usize, id: u32, t: &mut Turn<'_>) {
        self.with_pairs(t, |pairs, t| pairs.resume(key, id, t));
    }

    /// Flow `key` is readable (or was left still ready).
    pub fn serve_flow(&mut self, key: usize, t: &mut Turn<'_>) {
        self.with_datagrams(t, |d, t| d.flows.serve(key, &mut d.udp, t));
    }

    /// Its timer entry `due`, armed for `at`, came due: a pair's, a
    /// flow's, its UDP delays' or its accept pause's end.
    pub fn on_due(&mut self, due: Due, at: Millis, t: &mut Turn<'_>) {
        match due {
            Due::EndpointPair { key, .. } => self.with_pairs(t, |p, t| p.on_timer(key, at, t)),
            Due::EndpointFlow { key, .. } => {
                self.with_datagrams(t, |d, t| d.flows.on_timer(key as usize, at, t))
            }
            Due::EndpointUdpDelay { .. } => self.with_datagrams(t, |d, t| {
                d.udp
                    .on_delay_timer(at, Some(&mut d.flows as &mut dyn Upstreams), t)
            }),
            Due::EndpointAcceptRetry { .. } => {
                let current = match &self.relay {
                    Relay::Tcp(streams) => streams.accept_pause.is_current(at),
                    Relay::Udp(_) => false,
                };
                if current {
                    self.accept(t);
                }
            }
            _ => {}
        }
    }

    /// Whether a timer entry of this endpoint is current (for the sweep).
    pub fn is_current(&self, entry: &Entry) -> bool {
        match (&self.relay, entry.due) {
            (Relay::Tcp(s), Due::EndpointPair { .. }) => {
                (s.pairs.as_ref()).is_some_and(|p| p.is_current(entry))
            }
            (Relay::Tcp(s), Due::EndpointAcceptRetry { .. }) => s.accept_pause.is_current(entry.at),
            (Relay::Udp(d), Due::EndpointFlow { .. }) => d.flows.is_current(entry),
            (Relay::Udp(d), Due::EndpointUdpDelay { .. }) => d.udp.is_current_delay(entry.at),
            _ => false,
        }
    }

    /// Shutting down: every pair writes what it holds, then closes. A
    /// UDP endpoint goes on as the main UDP socket does, until the
    /// datagrams it holds have left or the grace is over.
    pub fn stop(&mut self, t: &mut Turn<'_>) {
        if let Relay::Tcp(streams) = &mut self.relay {
            streams.stopping = true;
            let _ = t.registry.deregister(&mut streams.listener);
        }
        self.with_pairs(t, |pairs, t| pairs.stop(t));
    }

    /// Closes its socket and every pair or flow now (disabled, deleted,
    /// restarted); what they counted goes to `total` and the server's.
    pub fn close(mut self, t: &mut Turn<'_>, total: &mut Stats) {
        if let Relay::Tcp(streams) = &mut self.relay {
            let _ = t.registry.deregister(&mut streams.listener);
        }
        self.close_now(t);
        self.drain(t.counters, total);
    }

    /// Closes every pair now (a TCP endpoint's listener stays), or a UDP
    /// endpoint's flows and socket, dropping (and counting) what waits.
    pub fn close_now(&mut self, t: &mut Turn<'_>) {
        self.with_own(t, |relay, t| match relay {
            Relay::Tcp(Streams {
                pairs: Some(pairs), ..
            }) => pairs.close_all(t),
            Relay::Tcp(_) => {}
            Relay::Udp(d) => {
                d.udp.close(t);
                d.flows.close_all(t);
            }
        });
    }

    /// The end of a turn: frees the keys of pairs or flows closed this
    /// turn; a UDP endpoint's gathered datagrams leave.
    pub fn end_turn(&mut self, t: &mut Turn<'_>) {
        self.with_own(t, |relay, t| match relay {
            Relay::Tcp(streams) => streams.pairs.as_mut().map_or((), Pairs::end_turn),
            Relay::Udp(d) => {
                d.flows.end_turn();
                d.udp.end_turn(t);
            }
        });
    }
}

impl Relay {
    fn protocol(&self) -> Protocol {
        match self {
            Relay::Tcp(_) => Protocol::Tcp,
            Relay::Udp(_) => Protocol::Udp,
        }
    }
}

impl Streams {
    fn new(
        id: EndpointId,
        name: &str,
        listener: TcpListener,
        upstream: Option<SocketAddr>,
        config: &Config,
    ) -> Streams {
        // A stream relay: faults act on whole connections.
        let relay = Config {
            mode: Mode::Once,
            ..config.clone()
        };
        Streams {
            listener,
            pairs: upstream.map(|up| Pairs::for_endpoint(id, Some(name.into()), up, &relay)),
            max_connections: config.max_connections,
            accept_pause: Pause::default(),
            failure_log: RateLimit::default(),
            stopping: false,
        }
    }

    /// The listener is readable: accept, a budget's worth a turn. `t` is
    /// the endpoint's own turn; `server_open` the pairs open in the
    /// server's count (this endpoint's own not yet drained into it).
    fn accept(&mut self, id: EndpointId, server_open: u64, t: &mut Turn<'_>) {
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
                        id.0
                    );
                    let due = Due::EndpointAcceptRetry { endpoint: id.0 };
                    return self.accept_pause.start(t.now, due, t.timers);
                }
            };
            self.admit(stream, peer, id, server_open, t);
        }
        t.ready.push(Ready::EndpointListener { endpoint: id.0 });
    }

    fn admit(
        &mut self,
        stream: TcpStream,
        peer: SocketAddr,
        id: EndpointId,
        server_open: u64,
        t: &mut Turn<'_>,
    ) {
        // `--max-connections` counts every endpoint's pairs together: the
        // server's, and this endpoint's own since they were last drained
        // (a wrapping sum: its own count goes down as well as up).
        let open = server_open.wrapping_add(t.counters.open.load(Relaxed));
        if open >= self.max_connections as u64 {
            add(&t.counters.rejected, 1);
            return debug!("endpoint {}: {peer} closed: at --max-connections", id.0);
        }
        if let Some(pairs) = &mut self.pairs {
            return pairs.admit(stream, peer, t);
        }
        add(&t.counters.accepted, 1);
        add(&t.counters.upstream_failed, 1);
        if self.failure_log.allow(t.now) {
            warn!(
                "endpoint {}: its upstream does not resolve; {peer} is reset",
                id.0
            );
        }
        let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
        debug!("endpoint {}: {peer} reset", id.0);
    }
}
