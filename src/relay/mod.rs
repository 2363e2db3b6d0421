//! The relay (SPEC section 11): a protocol's socket passes its clients'
//! bytes to a real server, the *upstream*, and the faults of section 8 act
//! on the relayed traffic, in either direction.
//!
//! The vocabulary lives here: [`Upstream`] (where a protocol is relayed
//! to); [`Direction`] (which way bytes travel, as a fault's `dir=`
//! selector names it) lives below, in [`direction`](crate::direction),
//! since the faults and the handlers use it too. The path of a relayed
//! byte, top down:
//!
//! - [`pairs`]: the table of TCP pairs, what needs the loop (tokens,
//!   interest, timers, closing); [`tcp`](crate::tcp) hands it every
//!   client when TCP is relayed;
//! - [`pair`]: one pair's life (connect, relay, linger), no sockets;
//! - [`half`]: one direction of a pair (the rest buffer, the FIN, the
//!   faults; `half::lines` for line mode), no sockets;
//! - [`journal`]: a pair's lines in the journal, with one;
//! - [`flows`]: UDP flows, one connected socket per client source; the
//!   loop lends them to [`udp`](crate::udp), which sends each client
//!   datagram up through its flow, and hands them each event of a flow.
//!
//! # Examples
//!
//! ```
//! use ackloop::{Protocol, Upstream};
//!
//! let upstream: Upstream = "tcp:127.0.0.1:6379".parse()?;
//! assert_eq!(upstream.protocol, Protocol::Tcp);
//! assert_eq!(upstream.addr, "127.0.0.1:6379".parse().unwrap());
//! assert_eq!(upstream.to_string(), "tcp:127.0.0.1:6379");
//! assert!("tcp:127.0.0.1:0".parse::<Upstream>().is_err(), "port 0");
//! # Ok::<(), String>(())
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

pub use crate::direction::Direction;
use crate::reply::Protocol;

pub(crate) mod flows;
pub(crate) mod half;
pub(crate) mod journal;
pub(crate) mod pair;
pub(crate) mod pairs;

/// Where one protocol's clients are relayed to: `PROTO:ADDR`, as
/// `--upstream tcp:127.0.0.1:6379` writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upstream {
    /// The protocol whose socket becomes a relay.
    pub protocol: Protocol,
    /// The real server's address; never port 0.
    pub addr: SocketAddr,
}

impl FromStr for Upstream {
    type Err = String;

    /// Parses `tcp:IP:PORT` or `udp:IP:PORT` (`localhost` stands for
    /// 127.0.0.1, as in `--tcp`).
    fn from_str(spec: &str) -> Result<Upstream, String> {
        let bad = |why: &str| format!("--upstream '{spec}': {why}");
        let (proto, addr) = spec
            .split_once(':')
            .ok_or_else(|| bad("expected PROTO:ADDR, like tcp:127.0.0.1:6379"))?;
        let protocol = match proto {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            _ => return Err(bad(&format!("unknown protocol '{proto}' (tcp or udp)"))),
        };
        let addr = match addr.strip_prefix("localhost:") {
            Some(port) => format!("127.0.0.1:{port}").parse(),
            None => addr.parse(),
        };
        let addr: SocketAddr =
            addr.map_err(|_| bad("not an address like 127.0.0.1:6379 (IP:PORT)"))?;
        let upstream = Upstream { protocol, addr };
        upstream.validate()?;
        Ok(upstream)
    }
}

impl Upstream {
    /// Checks what parsing checks, for an upstream built by hand.
    ///
    /// # Errors
    ///
    /// A one-line message naming `--upstream`.
    pub fn validate(&self) -> Result<(), String> {
        if self.addr.port() == 0 {
            return Err(format!("--upstream '{self}': port 0 names no server"));
        }
        Ok(())
    }

    /// `tcp` or `udp`.
    pub(crate) fn protocol_name(&self) -> &'static str {
        self.protocol.name()
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.protocol_name(), self.addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_parse_and_print_back() {
        for spec in ["tcp:127.0.0.1:6379", "udp:127.0.0.1:53", "tcp:[::1]:80"] {
            let upstream: Upstream = spec.parse().unwrap();
            assert_eq!(upstream.to_string(), spec);
        }
        let local: Upstream = "udp:localhost:9".parse().unwrap();
        assert_eq!(local.addr, "127.0.0.1:9".parse().unwrap());
    }

    #[test]
    fn bad_upstreams_name_the_option() {
        for spec in [
            "",
            "tcp",
            "sctp:127.0.0.1:1",
            "tcp:nowhere",
            "tcp:127.0.0.1",
            "tcp:127.0.0.1:0",
            "udp:127.0.0.1:70000",
        ] {
            let message = spec.parse::<Upstream>().unwrap_err();
            assert!(message.starts_with("--upstream"), "{spec}: {message}");
        }
    }

    #[test]
    fn a_fault_names_its_direction() {
        let fault: crate::Fault = "tcp:delay=5,every=2,dir=up".parse().unwrap();
        assert_eq!(fault.select.dir, Some(Direction::Up));
        assert_eq!(fault.to_string(), "tcp:delay=5,every=2,dir=up");
        let plain: crate::Fault = "udp:drop".parse().unwrap();
        assert_eq!(plain.select.dir, None, "down unless said");
        assert!("udp:drop,dir=both".parse::<crate::Fault>().is_err());
    }

    #[test]
    fn each_direction_counts_its_own_messages() {
        let faults = ["tcp:close,every=2,dir=up", "tcp:reset,every=2"];
        let faults: Vec<crate::Fault> = faults.iter().map(|f| f.parse().unwrap()).collect();
        let mut set =
            crate::fault::Faults::relaying(7, &faults, [crate::fault::Relaying::Messages; 2]);
        let mut judge = |dir, n| set.judge_in(Protocol::Tcp, dir, [n, 0]).terminal;
        // Up messages 1, 2, 3 and down messages 1, 2 interleaved: each
        // fault sees only its direction's, so every=2 picks the second.
        use crate::FaultKind::{Close, Reset};
        assert_eq!(judge(Direction::Up, 1), None);
        assert_eq!(judge(Direction::Down, 1), None);
        assert_eq!(judge(Direction::Up, 2), Some(Close));
        assert_eq!(judge(Direction::Up, 3), None);
        assert_eq!(judge(Direction::Down, 2), Some(Reset));
    }
}
