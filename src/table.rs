//! A table of connections whose slab keys are their tokens, with
//! deferred free: the one home of GUIDE trap 5.
//!
//! Entry `key` is registered with token `base + key`, so an event's token
//! leads straight to its entry with no hashing. Closing an entry takes it
//! out at once but keeps its key *held* until [`end_turn`](Table::end_turn):
//! the poll's batch of events may still hold events of the closed
//! connection, and a new connection accepted into the same key during the
//! batch would receive them (mio #219, #172). So no key is reused within a
//! turn; a stale event finds an empty slot and is dropped.
//!
//! Every set of sockets the loop keeps uses it: data connections
//! ([`tcp`](crate::tcp)), control connections
//! ([`control`](crate::control)), the relay's TCP pairs (each registers
//! its second socket with a token of a range of its own, through
//! [`insert_with`](Table::insert_with)) and its UDP flows.

use std::io;

use mio::event::Source;
use mio::{Interest, Registry, Token};
use slab::Slab;

/// A set of live entries keyed by token, freed at the end of the turn.
#[derive(Debug)]
pub(crate) struct Table<T> {
    /// Entry `key` has token `base + key`.
    base: usize,
    /// Keys held at once, at most (open and closed this turn): the tokens
    /// reserved for this table.
    max_keys: usize,
    /// `None` marks an entry closed this turn, its key held until the
    /// turn ends.
    slots: Slab<Option<T>>,
    /// Keys closed during this turn.
    closed: Vec<usize>,
}

impl<T> Table<T> {
    /// An empty table whose tokens start at `base`, holding at most
    /// `max_keys` keys, with room for `capacity` entries and
    /// `closed_per_turn` closes in a turn before either grows.
    pub fn new(base: Token, max_keys: usize, capacity: usize, closed_per_turn: usize) -> Self {
        Table {
            base: base.0,
            max_keys,
            slots: Slab::with_capacity(capacity),
            closed: Vec::with_capacity(closed_per_turn),
        }
    }

    /// The token of entry `key`.
    pub fn token(&self, key: usize) -> Token {
        Token(self.base + key)
    }

    /// Entries open now (those closed this turn are not).
    pub fn open(&self) -> usize {
        self.slots.len() - self.closed.len()
    }

    /// Whether every key is held: nothing more can be inserted this turn.
    pub fn is_full(&self) -> bool {
        self.slots.len() >= self.max_keys
    }

    /// Open entry `key`; `None` if it closed (this turn or before).
    pub fn get(&self, key: usize) -> Option<&T> {
        self.slots.get(key)?.as_ref()
    }

    /// Open entry `key`, to change it; `None` if it closed.
    pub fn get_mut(&mut self, key: usize) -> Option<&mut T> {
        self.slots.get_mut(key)?.as_mut()
    }

    /// Registers `source` for `interest` under the next free key's token,
    /// then inserts the entry `build` makes of it; returns the key.
    ///
    /// # Errors
    ///
    /// When the table is full or the registration fails; the source is
    /// dropped (closed) then.
    pub fn insert<S: Source>(
        &mut self,
        registry: &Registry,
        mut source: S,
        interest: Interest,
        build: impl FnOnce(S) -> T,
    ) -> io::Result<usize> {
        self.insert_with(|token| {
            registry.register(&mut source, token, interest)?;
            Ok(build(source))
        })
    }

    /// Inserts the entry `make` builds for the next free key's token (an
    /// entry with more than one socket registers each itself, say with
    /// the token for one and a token of its own range for the other);
    /// returns the key.
    ///
    /// # Errors
    ///
    /// When the table is full, or as `make` fails: nothing is inserted.
    pub fn insert_with(&mut self, make: impl FnOnce(Token) -> io::Result<T>) -> io::Result<usize> {
        if self.is_full() {
            return Err(io::Error::other("no free key"));
        }
        let entry = self.slots.vacant_entry();
        let key = entry.key();
        entry.insert(Some(make(Token(self.base + key))?));
        Ok(key)
    }

    /// Takes entry `key` out: its key stays held until the turn ends. The
    /// caller deregisters (where needed) and drops what it returns.
    pub fn close(&mut self, key: usize) -> Option<T> {
        let entry = self.slots.get_mut(key)?.take()?;
        self.closed.push(key);
        Some(entry)
    }

    /// The keys of the open entries, for a pass that may close them
    /// (shutting down).
    pub fn keys(&self) -> Vec<usize> {
        let open = self.slots.iter().filter(|(_, slot)| slot.is_some());
        open.map(|(key, _)| key).collect()
    }

    /// Every open entry.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &T)> {
        let slots = self.slots.iter();
        slots.filter_map(|(key, slot)| Some((key, slot.as_ref()?)))
    }

    /// The turn is over: no event of its batch is left, so the keys
    /// closed during it may be handed out again.
    pub fn end_turn(&mut self) {
        for key in self.closed.drain(..) {
            self.slots.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::net::UdpSocket;

    fn socket() -> UdpSocket {
        UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap()
    }

    #[test]
    fn a_closed_key_is_not_reused_until_the_turn_ends() {
        let poll = mio::Poll::new().unwrap();
        let mut table = Table::new(Token(100), 8, 0, 0);
        let first = table.insert(poll.registry(), socket(), Interest::READABLE, |s| s);
        let first = first.unwrap();
        assert_eq!(table.token(first), Token(100 + first));
        assert!(table.close(first).is_some());
        assert!(table.get(first).is_none(), "a stale event finds nothing");
        assert_eq!(table.open(), 0);
        let second = table.insert(poll.registry(), socket(), Interest::READABLE, |s| s);
        assert_ne!(second.unwrap(), first, "no reuse within the turn");
        table.end_turn();
        let third = table.insert(poll.registry(), socket(), Interest::READABLE, |s| s);
        assert_eq!(third.unwrap(), first, "freed at the turn's end");
        assert_eq!(table.open(), 2);
    }

    #[test]
    fn keys_stay_within_the_reserved_tokens() {
        let poll = mio::Poll::new().unwrap();
        let mut table = Table::new(Token(10), 2, 0, 0);
        for _ in 0..2 {
            table
                .insert(poll.registry(), socket(), Interest::READABLE, |s| s)
                .unwrap();
        }
        assert!(table.is_full());
        assert!(
            (table.insert(poll.registry(), socket(), Interest::READABLE, |s| s)).is_err(),
            "a third key would leave the table's tokens"
        );
        table.close(0);
        assert!(table.is_full(), "a key closed this turn is still held");
        assert_eq!(table.keys(), [1]);
    }
}
