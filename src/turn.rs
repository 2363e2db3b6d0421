//! What one turn of the loop lends its handlers: the per-turn context, the
//! still-ready list and the tokens that name the fixed sources.
//!
//! This module sits below the loop ([`server`](crate::server)) and its
//! handlers ([`tcp`](crate::tcp), [`udp`](crate::udp)): they all use it,
//! and it uses none of them (only UDP's batch, a leaf that uses nothing
//! of the crate, which the turn lends as it lends the read buffer).

use std::cell::RefCell;
use std::fmt;

use std::io;

use mio::event::Source;
use mio::{Interest, Registry, Token};

use crate::fault::Faults;
use crate::journal::Journal;
use crate::reply::Replies;
use crate::stats::Counters;
use crate::timer::{Due, Millis, Timers};
use crate::udp::batch::Batch;

/// The TCP listener's token. Connection tokens are slab keys, far below.
pub(crate) const LISTENER: Token = Token(usize::MAX - 1);
/// The UDP socket's token.
pub(crate) const UDP: Token = Token(usize::MAX - 2);
/// The waker's token: another thread asked for something.
pub(crate) const WAKER: Token = Token(usize::MAX - 3);
/// SIGINT or SIGTERM arrived (with the `signals` feature).
pub(crate) const SIGNALS: Token = Token(usize::MAX - 4);
/// The control listener (`--control`).
pub(crate) const CONTROL_LISTENER: Token = Token(usize::MAX - 5);
/// The API listener (`--api`).
pub(crate) const API_LISTENER: Token = Token(usize::MAX - 6);
/// Relay: the client socket of pair `key` has token `PAIR_BASE + key`,
/// its upstream socket `UPSTREAM_BASE + key`: an eighth of the token
/// space each, above every served connection's key, so that a token
/// alone says which job its socket has.
pub(crate) const PAIR_BASE: Token = Token(1 << (usize::BITS - 2));
/// Relay: the upstream socket of pair `key` (see [`PAIR_BASE`]).
pub(crate) const UPSTREAM_BASE: Token = Token(PAIR_BASE.0 + (1 << (usize::BITS - 3)));
/// Relay: UDP flow `key` has token `FLOW_BASE + key`; named endpoint
/// `e`'s flow `key` has `FLOW_BASE + (e << ENDPOINT_SHIFT) + key`.
pub(crate) const FLOW_BASE: Token = Token(2 << (usize::BITS - 2));
/// Tokens at or above this one name fixed sources, not connections.
pub(crate) const FIRST_FIXED: Token = Token(usize::MAX - 16);
/// Tokens reserved for control connections: one per connection that may
/// be open at once.
pub(crate) const CONTROL_SLOTS: usize = 64;
/// Control connection `key` has token `CONTROL_BASE + key`, below the
/// fixed tokens and far above any data connection's slab key.
pub(crate) const CONTROL_BASE: Token = Token(FIRST_FIXED.0 - CONTROL_SLOTS);
/// Tokens reserved for API connections (`--api`): one per connection that
/// may be open at once.
pub(crate) const API_SLOTS: usize = 256;
/// API connection `key` has token `API_BASE + key`, just below the
/// control connections'.
pub(crate) const API_BASE: Token = Token(CONTROL_BASE.0 - API_SLOTS);
/// Named endpoints at most (SPEC 14).
pub(crate) const MAX_ENDPOINTS: usize = 256;
/// Named endpoint `e` (1 to [`MAX_ENDPOINTS`]; 0 is the main sockets)
/// has the relay's pair tokens shifted by `e << ENDPOINT_SHIFT`: its pair
/// `key` is `PAIR_BASE + (e << ENDPOINT_SHIFT) + key` (client) and
/// `UPSTREAM_BASE` plus the same (upstream).
pub(crate) const ENDPOINT_SHIFT: u32 = 40;
/// Named endpoint `e`'s listener (its UDP socket, for a UDP endpoint) has
/// token `ENDPOINT_LISTENER_BASE + e`, below the API connections'.
pub(crate) const ENDPOINT_LISTENER_BASE: Token = Token(API_BASE.0 - 2 * MAX_ENDPOINTS);

/// The endpoint a relay's sources belong to: 0 is the main sockets
/// (`--upstream`), 1 to [`MAX_ENDPOINTS`] a named one (SPEC 14). It names
/// their tokens, still-ready entries and timer entries, so that the relay's
/// pairs, flows and UDP socket serve any endpoint on one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EndpointId(pub u16);

impl EndpointId {
    /// The main sockets.
    pub const MAIN: EndpointId = EndpointId(0);

    /// `e << ENDPOINT_SHIFT`: where its keys start in a relay token range.
    pub fn offset(self) -> usize {
        (self.0 as usize) << ENDPOINT_SHIFT
    }

    /// How many of `n` entries (pairs, flows, keys closed in a turn) to
    /// make room for up front: all of them for the main sockets; none for
    /// a named endpoint, of which up to [`MAX_ENDPOINTS`] may sit idle
    /// (each under 4 KiB: `tests/alloc.rs`), its tables grown by its
    /// first connections instead, once.
    pub fn reserve(self, n: usize) -> usize {
        match self.0 {
            0 => n,
            _ => 0,
        }
    }

    /// The token of its UDP socket.
    pub fn udp_token(self) -> Token {
        match self.0 {
            0 => UDP,
            e => Token(ENDPOINT_LISTENER_BASE.0 + e as usize),
        }
    }

    /// Its UDP socket, left still ready.
    pub fn udp_ready(self) -> Ready {
        match self.0 {
            0 => Ready::Udp,
            endpoint => Ready::EndpointListener { endpoint },
        }
    }

    /// The timer entry of its UDP socket's earliest delayed datagram.
    pub fn udp_delay_due(self) -> Due {
        match self.0 {
            0 => Due::UdpDelay,
            endpoint => Due::EndpointUdpDelay { endpoint },
        }
    }

    /// Its flow `key`, left still ready.
    pub fn flow_ready(self, key: usize) -> Ready {
        match self.0 {
            0 => Ready::Flow { key },
            endpoint => Ready::EndpointFlow { endpoint, key },
        }
    }

    /// The idle timer entry of its flow `key`.
    pub fn flow_due(self, key: usize) -> Due {
        let key = key as u32;
        match self.0 {
            0 => Due::Flow { key },
            endpoint => Due::EndpointFlow { endpoint, key },
        }
    }

    /// Its pair `key` (serial `id`), left still ready.
    pub fn pair_ready(self, key: usize, id: u32) -> Ready {
        match self.0 {
            0 => Ready::Pair { key, id },
            endpoint => Ready::EndpointPair { endpoint, key, id },
        }
    }

    /// The timer entry of its pair `key`.
    pub fn pair_due(self, key: usize) -> Due {
        let key = key as u32;
        match self.0 {
            0 => Due::Pair { key },
            endpoint => Due::EndpointPair { endpoint, key },
        }
    }
}

/// Everything a handler may touch during one turn, borrowed from the
/// server: the poll's registry (to change its own interest), the clock
/// reading, the shared buffer and replies, counters, timers and the list of
/// sources still ready for the next turn.
pub(crate) struct Turn<'a> {
    pub registry: &'a Registry,
    pub now: Millis,
    pub buf: &'a mut [u8],
    /// The one batch of UDP datagrams (their sources, lengths and
    /// payload slots for `recvmmsg`/`sendmmsg`), shared by every UDP
    /// socket and relayed flow as `buf` is by every connection: each
    /// works through what it read before another reads. Made on first
    /// use (a server without UDP never needs it), and taken out while a
    /// socket works through it.
    pub batch: &'a mut Option<Batch>,
    pub replies: &'a mut Replies,
    pub counters: &'a Counters,
    pub timers: &'a mut Timers,
    pub ready: &'a mut Vec<Ready>,
    /// The faults in force (none by default).
    pub faults: &'a mut Faults,
    /// The journal (`--journal` or a callback), if any.
    pub journal: Option<&'a RefCell<Journal>>,
}

impl Turn<'_> {
    /// This turn with `counters` and `faults` of another's: a named
    /// endpoint counts apart and judges by its own faults, sharing the
    /// rest (the clock, buffer, timers, still-ready list and journal).
    pub fn with<'b>(&'b mut self, counters: &'b Counters, faults: &'b mut Faults) -> Turn<'b> {
        Turn {
            registry: self.registry,
            now: self.now,
            buf: self.buf,
            batch: self.batch,
            replies: self.replies,
            counters,
            timers: self.timers,
            ready: self.ready,
            faults,
            journal: self.journal,
        }
    }
}

/// Registers `WRITABLE` interest on `source` exactly while `want` says
/// bytes wait for the socket; `registered` is what is registered now.
/// Kept for good, a socket is reported writable after every read on some
/// platforms and the loop spins (mio #1963). Every handler settles its
/// interest through here.
pub(crate) fn settle_writable(
    registry: &Registry,
    source: &mut impl Source,
    token: Token,
    registered: &mut bool,
    want: bool,
) -> io::Result<()> {
    if want == *registered {
        return Ok(());
    }
    let interest = if want {
        Interest::READABLE | Interest::WRITABLE
    } else {
        Interest::READABLE
    };
    registry.reregister(source, token, interest)?;
    *registered = want;
    Ok(())
}

/// A source left with work undone when its budget ran out. Readiness is
/// edge-triggered, so nothing will report it again: the handler puts it
/// on [`Turn::ready`], and the loop serves it on the next turn, polling
/// with a zero timeout meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ready {
    Listener,
    Udp,
    Conn {
        key: usize,
        id: u32,
    },
    /// Relayed TCP pair `key`.
    Pair {
        key: usize,
        id: u32,
    },
    Control {
        key: usize,
    },
    /// Relayed UDP flow `key`.
    Flow {
        key: usize,
    },
    /// API connection `key`.
    #[cfg_attr(not(feature = "api"), allow(dead_code))]
    Api {
        key: usize,
    },
    /// Named endpoint `endpoint`'s pair `key`.
    #[cfg_attr(not(feature = "api"), allow(dead_code))]
    EndpointPair {
        endpoint: u16,
        key: usize,
        id: u32,
    },
    /// Named endpoint `endpoint`'s listener, or its UDP socket.
    #[cfg_attr(not(feature = "api"), allow(dead_code))]
    EndpointListener {
        endpoint: u16,
    },
    /// Named endpoint `endpoint`'s UDP flow `key`.
    #[cfg_attr(not(feature = "api"), allow(dead_code))]
    EndpointFlow {
        endpoint: u16,
        key: usize,
    },
}

/// Whom a token names: the one place tokens are decoded, for the loop's
/// dispatch and the trace log alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    Listener,
    Udp,
    Waker,
    Signals,
    ControlListener,
    /// Control connection `key`.
    Control(usize),
    ApiListener,
    /// API connection `key`.
    Api(usize),
    /// Named endpoint `endpoint`'s listener, or its UDP socket.
    EndpointListener(u16),
    /// Named endpoint `endpoint`'s UDP flow `key`.
    EndpointFlow {
        endpoint: u16,
        key: usize,
    },
    /// Named endpoint `endpoint`'s pair `key`: its client's socket, or
    /// with `upstream` its upstream's.
    EndpointPair {
        endpoint: u16,
        key: usize,
        upstream: bool,
    },
    /// Served connection `key`.
    Conn(usize),
    /// The client socket of relayed pair `key`.
    PairClient(usize),
    /// The upstream socket of relayed pair `key`.
    PairUpstream(usize),
    /// Relayed UDP flow `key`.
    Flow(usize),
    /// A fixed token no source has.
    Unknown,
}

impl Owner {
    pub fn of(token: Token) -> Owner {
        match token {
            LISTENER => Owner::Listener,
            UDP => Owner::Udp,
            WAKER => Owner::Waker,
            SIGNALS => Owner::Signals,
            CONTROL_LISTENER => Owner::ControlListener,
            API_LISTENER => Owner::ApiListener,
            Token(key) if key >= FIRST_FIXED.0 => Owner::Unknown,
            Token(key) if key >= CONTROL_BASE.0 => Owner::Control(key - CONTROL_BASE.0),
            Token(key) if key >= API_BASE.0 => Owner::Api(key - API_BASE.0),
            Token(key) if key >= ENDPOINT_LISTENER_BASE.0 => {
                Owner::EndpointListener((key - ENDPOINT_LISTENER_BASE.0) as u16)
            }
            Token(key) if key >= FLOW_BASE.0 => flow(key - FLOW_BASE.0),
            Token(key) if key >= UPSTREAM_BASE.0 => pair(key - UPSTREAM_BASE.0, true),
            Token(key) if key >= PAIR_BASE.0 => pair(key - PAIR_BASE.0, false),
            Token(key) => Owner::Conn(key),
        }
    }
}

/// A pair's socket: the main sockets' relay (endpoint 0), or a named
/// endpoint's.
fn pair(key: usize, upstream: bool) -> Owner {
    match (key >> ENDPOINT_SHIFT, upstream) {
        (0, false) => Owner::PairClient(key),
        (0, true) => Owner::PairUpstream(key),
        (endpoint, upstream) => Owner::EndpointPair {
            endpoint: endpoint as u16,
            key: key & ((1 << ENDPOINT_SHIFT) - 1),
            upstream,
        },
    }
}

/// A flow's socket: the main sockets' relay (endpoint 0), or a named
/// endpoint's.
fn flow(key: usize) -> Owner {
    match key >> ENDPOINT_SHIFT {
        0 => Owner::Flow(key),
        endpoint => Owner::EndpointFlow {
            endpoint: endpoint as u16,
            key: key & ((1 << ENDPOINT_SHIFT) - 1),
        },
    }
}

/// What a readiness event says a socket can do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Readiness {
    /// Readable, read-closed or in error: a read will not block.
    pub readable: bool,
    /// Writable, write-closed or in error: a write will not block.
    pub writable: bool,
}

impl Readiness {
    /// Both ways: for a source resumed from the still-ready list or by a
    /// timer, which tries everything.
    pub const BOTH: Readiness = Readiness {
        readable: true,
        writable: true,
    };

    /// What `event` says.
    pub fn of(event: &mio::event::Event) -> Readiness {
        let error = event.is_error();
        Readiness {
            readable: event.is_readable() || event.is_read_closed() || error,
            writable: event.is_writable() || event.is_write_closed() || error,
        }
    }
}

/// An event as the trace log shows it: `conn 3 readable writable`.
pub(crate) struct Described<'a>(pub &'a mio::event::Event);

impl fmt::Display for Described<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let event = self.0;
        match Owner::of(event.token()) {
            Owner::Listener => f.write_str("listener")?,
            Owner::Udp => f.write_str("udp")?,
            Owner::Waker => f.write_str("waker")?,
            Owner::Signals => f.write_str("signals")?,
            Owner::ControlListener => f.write_str("control listener")?,
            Owner::Control(key) => write!(f, "control {key}")?,
            Owner::ApiListener => f.write_str("api listener")?,
            Owner::Api(key) => write!(f, "api {key}")?,
            Owner::EndpointListener(e) => write!(f, "endpoint {e} listener")?,
            Owner::EndpointPair {
                endpoint,
                key,
                upstream,
            } => {
                let side = if upstream { "upstream" } else { "client" };
                write!(f, "endpoint {endpoint} pair {key} {side}")?
            }
            Owner::EndpointFlow { endpoint, key } => write!(f, "endpoint {endpoint} flow {key}")?,
            Owner::Conn(key) => write!(f, "conn {key}")?,
            Owner::PairClient(key) => write!(f, "pair {key} client")?,
            Owner::PairUpstream(key) => write!(f, "pair {key} upstream")?,
            Owner::Flow(key) => write!(f, "flow {key}")?,
            Owner::Unknown => write!(f, "token {}", event.token().0)?,
        }
        for (set, name) in [
            (event.is_readable(), "readable"),
            (event.is_writable(), "writable"),
            (event.is_read_closed(), "read-closed"),
            (event.is_write_closed(), "write-closed"),
            (event.is_error(), "error"),
        ] {
            if set {
                write!(f, " {name}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_token_decodes_to_its_owner() {
        assert_eq!(Owner::of(Token(0)), Owner::Conn(0));
        assert_eq!(Owner::of(Token(1000)), Owner::Conn(1000));
        assert_eq!(Owner::of(CONTROL_BASE), Owner::Control(0));
        let last = Token(CONTROL_BASE.0 + CONTROL_SLOTS - 1);
        assert_eq!(Owner::of(last), Owner::Control(CONTROL_SLOTS - 1));
        assert_eq!(Owner::of(FIRST_FIXED), Owner::Unknown);
        assert_eq!(
            Owner::of(Token(PAIR_BASE.0 - 1)),
            Owner::Conn(PAIR_BASE.0 - 1)
        );
        assert_eq!(Owner::of(PAIR_BASE), Owner::PairClient(0));
        let last_main = (1 << ENDPOINT_SHIFT) - 1;
        let client = Token(PAIR_BASE.0 + last_main);
        assert_eq!(Owner::of(client), Owner::PairClient(last_main));
        let endpoint = |endpoint, key, upstream| Owner::EndpointPair {
            endpoint,
            key,
            upstream,
        };
        let client = Token(PAIR_BASE.0 + (3 << ENDPOINT_SHIFT) + 7);
        assert_eq!(Owner::of(client), endpoint(3, 7, false));
        let upstream = Token(UPSTREAM_BASE.0 + (256 << ENDPOINT_SHIFT) + 9);
        assert_eq!(Owner::of(upstream), endpoint(256, 9, true));
        let listener = Token(ENDPOINT_LISTENER_BASE.0 + 256);
        assert_eq!(Owner::of(listener), Owner::EndpointListener(256));
        assert_eq!(
            Owner::of(Token(UPSTREAM_BASE.0 + 3)),
            Owner::PairUpstream(3)
        );
        assert_eq!(Owner::of(Token(FLOW_BASE.0 + 5)), Owner::Flow(5));
        assert_eq!(Owner::of(API_BASE), Owner::Api(0));
        let last_api = Token(CONTROL_BASE.0 - 1);
        assert_eq!(Owner::of(last_api), Owner::Api(API_SLOTS - 1));
        let last_flow = Token(FLOW_BASE.0 + (1 << ENDPOINT_SHIFT) - 1);
        assert_eq!(Owner::of(last_flow), Owner::Flow((1 << ENDPOINT_SHIFT) - 1));
        let flow = Token(FLOW_BASE.0 + (256 << ENDPOINT_SHIFT) + 4);
        let endpoint_flow = Owner::EndpointFlow {
            endpoint: 256,
            key: 4,
        };
        assert_eq!(Owner::of(flow), endpoint_flow);
        let top = MAX_ENDPOINTS << ENDPOINT_SHIFT | ((1 << ENDPOINT_SHIFT) - 1);
        assert!(
            FLOW_BASE.0 + top < ENDPOINT_LISTENER_BASE.0,
            "below the fixed"
        );
        assert_eq!(Owner::of(API_LISTENER), Owner::ApiListener);
        assert_eq!(Owner::of(LISTENER), Owner::Listener);
        assert_eq!(Owner::of(CONTROL_LISTENER), Owner::ControlListener);
    }
}
