//! Where a protocol is relayed to (with the `relay` feature).
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

use super::Protocol;

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
        let protocol: Protocol = proto.parse().map_err(|why: String| bad(&why))?;
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
}
