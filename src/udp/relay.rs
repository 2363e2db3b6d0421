//! The relay's side of the UDP socket (`--upstream udp:...`): client
//! datagrams go upstream through their flows ([`Flows`]), and what the
//! upstream sends back on a flow leaves from the public socket, through
//! the same faults and bounded queue as any reply.

use std::io::ErrorKind;
use std::sync::atomic::Ordering::Relaxed;

use log::debug;

use super::{DATAGRAMS_PER_TURN, Datagram, Udp, judge, receive};
use crate::journal::{AppliedFaults, JournalDirection};
use crate::relay::Direction;
use crate::relay::flows::Received;
use crate::stats::add;
use crate::timer::{Entry, Millis};
use crate::turn::{Ready, Turn};

impl Udp {
    /// Relay: takes client datagrams and sends each upstream through its
    /// flow. Whether the budget ran out.
    pub(super) fn serve_relay(&mut self, t: &mut Turn<'_>) -> bool {
        let Some(flows) = self.relay.as_deref_mut() else {
            return false;
        };
        let mut still_ready = true;
        for _ in 0..DATAGRAMS_PER_TURN {
            match receive(&self.socket, t.buf) {
                Ok((len, from)) => {
                    add(&t.counters.datagrams, 1);
                    add(&t.counters.bytes_in, len as u64);
                    let ordinal = t.counters.datagrams.load(Relaxed);
                    let len = len.min(t.buf.len());
                    let verdict = judge(from, (Direction::Up, ordinal), len, t);
                    flows.send_up(len, (from, ordinal), verdict, t);
                }
                // Drained: the next datagram brings a new event.
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    still_ready = false;
                    break;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => debug!("udp: receive error: {e}"),
            }
        }
        // An `up` delay may have held a datagram.
        self.arm_delay_timer(t);
        still_ready
    }

    /// Relay: flow `key` is readable: each datagram the upstream sent on it
    /// goes to its client from the public socket, as the `down` faults say.
    pub fn serve_flow(&mut self, key: usize, t: &mut Turn<'_>) {
        let Some(mut flows) = self.relay.take() else {
            return;
        };
        let mut still_ready = true;
        for _ in 0..DATAGRAMS_PER_TURN {
            let (len, client, ordinal) = match flows.receive(key, t) {
                Received::Datagram(len, client, ordinal) => (len, client, ordinal),
                Received::Again => continue,
                Received::Drained => {
                    still_ready = false;
                    break;
                }
            };
            let len = len.min(t.buf.len());
            let journaled = Datagram {
                journal: t.journal,
                now: t.now,
                ordinal,
                peer: client,
                out: JournalDirection::Down,
            };
            match judge(client, (Direction::Down, ordinal), len, t) {
                None => {
                    let clean = AppliedFaults::default();
                    journaled.record(JournalDirection::Down, &t.buf[..len], clean);
                    self.send_or_queue(&t.buf[..len], client, t.counters, t.now);
                }
                // Shaped, so copied out of the shared buffer.
                Some(verdict) => {
                    let reply = t.buf[..len].to_vec();
                    self.answer_faulty(reply, &verdict, journaled, t);
                }
            }
        }
        self.relay = Some(flows);
        self.settle(still_ready, Ready::Flow { key }, t);
    }

    /// Relay: flow `key`'s idle timer came due.
    pub fn on_flow_timer(&mut self, key: usize, at: Millis, t: &mut Turn<'_>) {
        if let Some(flows) = &mut self.relay {
            flows.on_timer(key, at, t);
        }
    }

    /// Relay: the flows open now (each has one timer entry).
    pub fn flows(&self) -> usize {
        self.relay.as_ref().map_or(0, |flows| flows.open())
    }

    /// Relay: whether a flow's timer entry is its current one.
    pub fn is_current_flow(&self, entry: &Entry) -> bool {
        self.relay
            .as_ref()
            .is_some_and(|flows| flows.is_current(entry))
    }

    /// The end of a turn: the keys of flows closed during it are freed.
    pub fn end_turn(&mut self) {
        if let Some(flows) = &mut self.relay {
            flows.end_turn();
        }
    }
}
