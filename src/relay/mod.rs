//! The relay (SPEC section 11): a protocol's socket passes its clients'
//! bytes to a real server, the *upstream*, and the faults of section 8 act
//! on the relayed traffic, in either direction.
//!
//! Its vocabulary, [`Upstream`] (where a protocol is relayed to) and
//! [`Direction`] (which way bytes travel, as a fault's `dir=` selector
//! names it), lives in [`vocab`](crate::vocab), below the configuration
//! and the faults that use it too. The path of a relayed byte, top down:
//!
//! - [`pairs`]: the table of TCP pairs, what needs the loop (tokens,
//!   interest, timers, closing), a peer of served TCP: the
//!   [`listener`](crate::listener) hands it every client when relaying
//!   is its job, and the loop's dispatch every event, still-ready entry
//!   and timer of a pair;
//! - [`pair`]: one pair's life (connect, relay, linger), no sockets;
//! - [`half`]: one direction of a pair (the rest buffer, the FIN, the
//!   faults; `half::lines` for line mode), no sockets;
//! - `splice` (Linux): a kernel pipe that moves a plain direction's bulk
//!   from socket to socket with `splice(2)`;
//! - [`journal`]: a pair's lines in the journal, with one;
//! - [`flows`]: UDP flows, one connected socket per client source;
//!   [`udp`](crate::udp) hands it every datagram when UDP is relayed.

pub(crate) mod flows;
pub(crate) mod half;
pub(crate) mod journal;
pub(crate) mod pair;
pub(crate) mod pairs;
#[cfg(target_os = "linux")]
pub(crate) mod splice;

use crate::config::Config;

/// The relayed TCP pairs, when TCP is relayed (`--upstream tcp:...`).
pub(crate) fn pairs_for(config: &Config) -> Option<pairs::Pairs> {
    config.upstream_tcp.map(|up| pairs::Pairs::new(up, config))
}

/// The relayed UDP flows, when UDP is on (`udp_on`) and relayed.
pub(crate) fn flows_for(config: &Config, udp_on: bool) -> Option<flows::Flows> {
    (config.upstream_udp)
        .filter(|_| udp_on)
        .map(|up| flows::Flows::new(up, config))
}
