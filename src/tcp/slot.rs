//! A connection's slot in the table, 32 bytes: its socket, the connection
//! at rest ([`Dormant`]) and its place in the wait for its deadline
//! ([`Place`]: on the idle list, or off it with its own timer entry). That
//! is an idle connection's whole cost. Buffers, for the connections that
//! have any, wait on the [`Shelf`] under the connection's key.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use mio::net::TcpStream;

use super::conn::{Buffers, Connection, Dormant};
use crate::table::Table;
use crate::timer::{Members, Place, Stamp};

/// A live connection (see the module docs).
///
/// The interest registered is not kept: it is what
/// [`Connection::wants_writable`] said when the connection was last
/// driven, since every drive settles it (or closes the connection), and
/// nothing between drives changes what a connection wants.
#[derive(Debug)]
pub(super) struct Slot {
    pub stream: TcpStream,
    pub conn: Dormant,
    pub place: Place,
}

/// The idle list links connections through their slots.
impl Members for Table<Slot> {
    fn place(&self, key: u32) -> Option<Place> {
        self.get(key as usize).map(|slot| slot.place)
    }

    fn place_mut(&mut self, key: u32) -> Option<&mut Place> {
        self.get_mut(key as usize).map(|slot| &mut slot.place)
    }

    fn last_active(&self, key: u32) -> Option<Stamp> {
        self.get(key as usize).map(|slot| slot.conn.last_active())
    }
}

/// The buffers of the connections at rest that have any, by key: a
/// custom responder's connections, and those holding input, a fault's
/// steps or a journal's note of their peer. A connection at rest with
/// the fixed reply has none, and costs the shelf nothing.
#[derive(Debug, Default)]
pub(super) struct Shelf {
    buffers: HashMap<u32, Box<Buffers>, BuildHasherDefault<KeyHasher>>,
}

/// A drive wakes its connection and puts it back to rest: the common
/// case, a connection with no buffers, is a few moves and shifts, and
/// inlined into the drive (a call cost about as much as the packing
/// itself). Only buffers kept aside take a trip to the map.
impl Shelf {
    /// Wakes connection `key`, at rest as `dormant`, with its buffers.
    #[inline(always)]
    pub fn wake(&mut self, key: usize, dormant: Dormant) -> Connection {
        let buffers = match dormant.has_buffers() {
            true => self.take(key),
            false => None,
        };
        Connection::wake(dormant, buffers)
    }

    /// Puts connection `key` to rest, its buffers (if any) on the shelf.
    #[inline(always)]
    pub fn rest(&mut self, key: usize, conn: Connection) -> Dormant {
        let (dormant, buffers) = conn.rest();
        if let Some(buffers) = buffers {
            self.keep(key, buffers);
        }
        dormant
    }

    /// Connection `key`, at rest as `dormant`, closed: its buffers go.
    pub fn forget(&mut self, key: usize, dormant: &Dormant) {
        if dormant.has_buffers() {
            self.take(key);
        }
    }

    #[inline(never)]
    fn take(&mut self, key: usize) -> Option<Box<Buffers>> {
        self.buffers.remove(&(key as u32))
    }

    #[inline(never)]
    fn keep(&mut self, key: usize, buffers: Box<Buffers>) {
        self.buffers.insert(key as u32, buffers);
    }
}

/// Hashes a key: the shelf's keys are small integers, which a multiply
/// spreads over the high bits the table probes with, at a fraction of the
/// default hasher's cost.
#[derive(Debug, Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u32(&mut self, key: u32) {
        self.write_u64(u64::from(key));
    }

    fn write_u64(&mut self, n: u64) {
        // Fibonacci hashing: 2^64 divided by the golden ratio.
        self.0 = (self.0 ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An idle connection's cost is this slot: pinned, so that a new field
    /// is a decision, not an accident.
    #[test]
    fn a_slot_is_32_bytes_and_so_is_the_tables_entry() {
        use std::mem::size_of;
        /// Slab's own entry type, as the slab declares it.
        #[allow(dead_code)]
        enum SlabEntry<T> {
            Vacant(usize),
            Occupied(T),
        }
        // mio keeps a selector id beside each socket in debug builds.
        let debug_extra = if cfg!(debug_assertions) { 16 } else { 0 };
        assert_eq!(size_of::<Option<Slot>>(), 32 + debug_extra);
        assert_eq!(size_of::<SlabEntry<Option<Slot>>>(), 32 + debug_extra);
    }

    #[test]
    fn the_shelf_keeps_buffers_by_key_only_while_a_connection_has_them() {
        let mut shelf = Shelf::default();
        let mut conn = Connection::new(7, 0, None);
        conn.journal_peer(([127, 0, 0, 1], 9).into());
        let dormant = shelf.rest(3, conn);
        assert!(dormant.has_buffers());
        assert_eq!(shelf.buffers.len(), 1);
        let conn = shelf.wake(3, dormant);
        assert!(shelf.buffers.is_empty(), "taken back");
        let dormant = shelf.rest(3, conn);
        shelf.forget(3, &dormant);
        assert!(shelf.buffers.is_empty(), "closed: forgotten");
        let plain = shelf.rest(4, Connection::new(8, 0, None));
        assert!(!plain.has_buffers());
        assert!(shelf.buffers.is_empty());
    }
}
