//! The relay when the `relay` feature is off: the names the loop's
//! dispatch uses, for types no value can have. `Option<Pairs>` and
//! `Option<Flows>` are then always `None`, so the loop's relay branches
//! stay as they are and compile to nothing.

use crate::config::Config;

/// No relayed TCP pairs: nothing relays.
pub(crate) fn pairs_for(_: &Config) -> Option<pairs::Pairs> {
    None
}

/// No relayed UDP flows: nothing relays.
pub(crate) fn flows_for(_: &Config, _: bool) -> Option<flows::Flows> {
    None
}

pub(crate) mod pair {
    /// One of a pair's two sockets (their tokens are decoded all the
    /// same; no pair owns them).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Side {
        Client,
        Upstream,
    }
}

pub(crate) mod pairs {
    use std::net::SocketAddr;

    use mio::net::TcpStream;

    use super::pair::Side;
    use crate::listener::Admit;
    use crate::timer::{Entry, Millis};
    use crate::turn::{Readiness, Turn};

    /// The relayed TCP pairs: none can exist.
    pub(crate) enum Pairs {}

    impl Pairs {
        pub fn open(&self) -> usize {
            match *self {}
        }
        pub fn on_event(&mut self, _: usize, _: Side, _: Readiness, _: &mut Turn<'_>) {
            match *self {}
        }
        pub fn resume(&mut self, _: usize, _: u32, _: &mut Turn<'_>) {
            match *self {}
        }
        pub fn on_timer(&mut self, _: u32, _: Millis, _: &mut Turn<'_>) {
            match *self {}
        }
        pub fn stop(&mut self, _: &mut Turn<'_>) {
            match *self {}
        }
        pub fn close_all(&mut self, _: &mut Turn<'_>) {
            match *self {}
        }
        pub fn end_turn(&mut self) {
            match *self {}
        }
        pub fn is_current(&self, _: &Entry) -> bool {
            match *self {}
        }
    }

    impl Admit for Pairs {
        fn admit(&mut self, _: TcpStream, _: SocketAddr, _: &mut Turn<'_>) {
            match *self {}
        }
    }
}

pub(crate) mod flows {
    use std::net::SocketAddr;

    use crate::stats::Counters;
    use crate::timer::{Entry, Millis, Timers};
    use crate::turn::Turn;
    use crate::udp::{FlowRef, Udp, Upstreams};

    /// The relayed UDP flows: none can exist.
    pub(crate) enum Flows {}

    impl Flows {
        pub fn serve(&mut self, _: usize, _: &mut Udp, _: &mut Turn<'_>) {
            match *self {}
        }
        pub fn on_timer(&mut self, _: usize, _: Millis, _: &mut Turn<'_>) {
            match *self {}
        }
        pub fn close_all(&mut self, _: &mut Turn<'_>) {
            match *self {}
        }
        pub fn open(&self) -> usize {
            match *self {}
        }
        pub fn is_current(&self, _: &Entry) -> bool {
            match *self {}
        }
        pub fn end_turn(&mut self) {
            match *self {}
        }
    }

    impl Upstreams for Flows {
        fn flow_of(&mut self, _: SocketAddr, _: &mut Turn<'_>) -> Option<FlowRef> {
            match *self {}
        }
        fn send_up(&mut self, _: FlowRef, _: &[u8], _: &Counters, _: Millis) -> bool {
            match *self {}
        }
        fn hold(&mut self, _: FlowRef, _: bool, _: Millis, _: &mut Timers) {
            match *self {}
        }
    }
}
