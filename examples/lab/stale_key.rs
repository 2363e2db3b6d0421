//! The eleventh trap: a slab key freed in the middle of a batch of
//! events, replayed for the lab's servers, which epoll cannot show it with.
//!
//! epoll reports a descriptor at most once per `epoll_wait`, with its
//! readable and writable bits together. The lab's server registers one
//! socket per key and closes a connection only while handling that
//! socket's own event, so no later event of its batch can name the closed
//! key. A server with two sockets per key can: ackloop's relay registers a
//! pair's client socket and its upstream socket, and an event of either
//! may close the pair while the other's event waits later in the batch
//! (`stale_relay.rs` measures that on epoll). kqueue needs no second
//! socket: a socket's read and write filters are two events, and both
//! carry `EV_EOF` when the peer hangs up. One batch can then read
//!
//! ```text
//! 1. conn 0 read-closed     client A hung up: close conn 0
//! 2. listener readable      client B arrives: accept into the slab
//! 3. conn 0 write-closed    A's second event, still in the batch
//! ```
//!
//! If step 1 frees key 0 at once, step 2 gives key 0 to client B, and
//! step 3 closes B, who did nothing wrong. Freeing keys when the batch
//! ends (the lab's server and ackloop's `Table::end_turn` both do) gives B
//! key 1, and step 3 finds key 0 already closed. The script below replays
//! that batch through a slab, both ways, without a socket.

use slab::Slab;

/// One event of the scripted batch.
#[derive(Debug, Clone, Copy)]
enum Event {
    /// The peer of this key hung up (read or write side).
    HungUp(usize),
    /// The listener has a client waiting.
    ClientWaiting(&'static str),
}

const BATCH: [Event; 3] = [
    Event::HungUp(0),
    Event::ClientWaiting("B"),
    Event::HungUp(0),
];

/// What replaying the batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    /// Clients closed, in order.
    pub closed: Vec<&'static str>,
    /// Clients still connected at the end, with their keys.
    pub open: Vec<(usize, &'static str)>,
}

/// Replays the batch with client A on key 0; `free_at_once` frees a
/// closed connection's key as soon as it closes, the trap.
pub fn replay(free_at_once: bool) -> Replay {
    let mut conns: Slab<(&'static str, bool)> = Slab::new(); // (client, closed)
    conns.insert(("A", false));
    let mut to_free = Vec::new();
    let mut closed = Vec::new();
    for event in BATCH {
        match event {
            Event::ClientWaiting(client) => {
                conns.insert((client, false));
            }
            Event::HungUp(key) => match conns.get_mut(key) {
                Some((client, is_closed)) if !*is_closed => {
                    closed.push(*client);
                    *is_closed = true;
                    if free_at_once {
                        conns.remove(key); // TRAP: key 0 is free for the next accept
                    } else {
                        to_free.push(key);
                    }
                }
                _ => {} // stale: already closed, or nothing there
            },
        }
    }
    for key in to_free {
        conns.remove(key); // the batch is over: no event can name the key now
    }
    let open = conns
        .iter()
        .map(|(key, (client, _))| (key, *client))
        .collect();
    Replay { closed, open }
}

/// The replay, told as a sentence.
pub fn describe(replay: &Replay) -> String {
    let open: Vec<String> = (replay.open.iter())
        .map(|(key, client)| format!("{client} on key {key}"))
        .collect();
    format!(
        "closed: {}; still connected: {}",
        replay.closed.join(", "),
        if open.is_empty() {
            "nobody".into()
        } else {
            open.join(", ")
        }
    )
}
