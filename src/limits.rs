//! The loop's shared limits: how much one source may do in a turn, and
//! how long a closing socket may linger. Served connections, datagrams and
//! relayed pairs and flows keep the same ones, so this room sits below
//! every handler ([`tcp`](crate::tcp), [`udp`](crate::udp) and
//! [`relay`](crate::relay)) and imports nothing of the crate but the
//! clock's unit.

use crate::timer::Millis;

/// Reads per connection (or relayed direction) per turn, so one fast
/// client cannot starve the others (with 64 KiB reads, 1 MiB a turn).
pub const READS_PER_TURN: usize = 16;
/// Accepts per turn, so a connection storm cannot starve served clients.
pub const ACCEPTS_PER_TURN: usize = 64;
/// Datagrams read per turn before other sources get their turn: a flood
/// on UDP cannot starve TCP clients. Replies sent from the queue, and
/// delayed datagrams released, have a budget of the same size each turn;
/// so do the datagrams read from one relayed flow.
pub const DATAGRAMS_PER_TURN: usize = 256;
/// How long a lingering close waits for the peer's EOF after the last
/// bytes it sent (or after the close began), in milliseconds.
pub const LINGER_MS: Millis = 2_000;
/// How long a lingering close lasts at most, however often the peer sends,
/// in milliseconds (nginx's `lingering_time` is the same 30 s). A peer
/// that keeps sending after its reply cannot hold a connection open.
pub const LINGER_CAP_MS: Millis = 30_000;
