//! ackloop: a single-threaded, non-blocking TCP + UDP acknowledgement server
//! on one `mio` poll loop.

#![deny(missing_docs, rust_2018_idioms)]
#![doc(test(attr(deny(warnings))))]

mod config;
pub mod framing;
mod reply;
mod server;
mod stats;
mod tcp;
mod timer;
mod udp;

pub use config::{
    Config, DEFAULT_ADDR, DEFAULT_IDLE_TIMEOUT_SECS, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_LINE,
    DEFAULT_REPLY, MAX_IDLE_TIMEOUT_SECS, MAX_MAX_LINE, MAX_REPLY_LEN, Mode,
};
pub use reply::{Echo, FixedReply, Protocol, Request, Responder};
pub use server::{Error, Handle, SHUTDOWN_GRACE_MS, Server, Status};
pub use stats::Stats;
pub use tcp::{ACCEPTS_PER_TURN, LINGER_MS, MAX_OWED, READS_PER_TURN};
pub use udp::{DATAGRAMS_PER_TURN, REPLY_QUEUE_BYTES, REPLY_QUEUE_LEN};
