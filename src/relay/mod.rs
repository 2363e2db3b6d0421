//! The relay (SPEC section 11): a protocol's socket passes its clients'
//! bytes to a real server, the *upstream*, and the faults of section 8 act
//! on the relayed traffic, in either direction.
//!
//! Its vocabulary, [`Upstream`] (where a protocol is relayed to) and
//! [`Direction`] (which way bytes travel, as a fault's `dir=` selector
//! names it), lives in [`vocab`](crate::vocab), below its users, and is
//! re-exported here. The path of a relayed byte, top down:
//!
//! - [`pairs`]: the table of TCP pairs, what needs the loop (tokens,
//!   interest, timers, closing); [`tcp`](crate::tcp) hands it every
//!   client when TCP is relayed;
//! - [`pair`]: one pair's life (connect, relay, linger), no sockets;
//! - [`half`]: one direction of a pair (the rest buffer, the FIN, the
//!   faults; `half::lines` for line mode), no sockets;
//! - [`journal`]: a pair's lines in the journal, with one;
//! - [`flows`]: UDP flows, one connected socket per client source;
//!   [`udp`](crate::udp) hands it every datagram when UDP is relayed.

pub(crate) mod flows;
pub(crate) mod half;
pub(crate) mod journal;
pub(crate) mod pair;
pub(crate) mod pairs;

// Its files say `super::Direction`; the type lives in the vocabulary.
pub(crate) use crate::vocab::Direction;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::Protocol;

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

    #[test]
    fn directions_parse() {
        assert_eq!("up".parse(), Ok(Direction::Up));
        assert_eq!("down".parse(), Ok(Direction::Down));
        assert!("sideways".parse::<Direction>().is_err());
        assert_eq!(Direction::default(), Direction::Down);
    }
}
