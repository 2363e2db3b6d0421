//! ackloop: a single-threaded, non-blocking TCP + UDP acknowledgement server
//! on one `mio` poll loop.
//!
//! ackloop answers every client with a reply text, `Received` by default:
//! TCP and UDP at once, from one thread and one [`mio::Poll`], with memory
//! bounded by its configuration whatever clients do.
//!
//! It grew out of a short article on Python sockets whose blocking TCP and
//! UDP servers on `localhost:8000` could never run together, and whose
//! clients never got to run. This crate is that server done properly, and
//! written to be read: the rest of this page is a tour of the loop for
//! anyone learning non-blocking IO.
//!
//! # Quick start
//!
//! ```
//! use std::io::{Read, Write};
//! use ackloop::testing::TestServer;
//!
//! let server = TestServer::start()?; // 127.0.0.1, free ports, own thread
//! let mut client = std::net::TcpStream::connect(server.tcp_addr())?;
//! client.write_all(b"Hello, Server")?;
//! let mut reply = String::new();
//! client.read_to_string(&mut reply)?;
//! assert_eq!(reply, "Received");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! To serve for real: [`Server::bind`] a [`Config`], then [`Server::run`];
//! or call [`Server::turn`] from a host loop of your own, no later than
//! [`Server::poll_delay`] says. [`Server::with_responder`] replaces the
//! fixed reply with your own logic ([`Responder`], [`Echo`]).
//!
//! To stand in for a real protocol: [`Rule`]s answer messages by what they
//! say (`"prefix:GET => 503 || 200"`, tried before the reply text),
//! [`Config::greeting`] sends a banner first, [`Handle::push`] sends to
//! every open connection unasked, and [`Server::on_journal`] (or
//! [`Config::journal`]) reports every message and reply as a
//! [`JournalEvent`]. Reply texts take the [`unescape`] escapes (`\r\n`,
//! `\xHH`).
//!
//! # Nesting in a host's loop
//!
//! A host that already waits on descriptors of its own (`poll(2)`, epoll,
//! a tokio runtime) can wait on the server's too: on Unix, [`Server`]
//! implements `AsFd` and `AsRawFd`, giving the descriptor of its
//! [`mio::Poll`] (an epoll or kqueue instance, readable while any of its
//! sockets has an event waiting). The contract:
//!
//! 1. Wait until the descriptor is readable, for at most
//!    [`Server::poll_delay`] (`None`: no limit from the server).
//! 2. When it is readable, or the delay has passed, call
//!    `server.turn(Some(Duration::ZERO))`. A turn with a zero timeout never
//!    blocks; a spurious wake-up costs an empty turn, nothing more.
//! 3. While `poll_delay()` is `Some(Duration::ZERO)`, don't wait at all: a
//!    source cut short by its budget waits on the still-ready list (see
//!    below), and nothing will make the descriptor readable for it.
//!
//! The descriptor is level-triggered: readable for as long as events are
//! pending, even after a turn that could not take them all. A host that is
//! told only of *changes* (tokio's `AsyncFd`, `EPOLLET`) clears its
//! readiness after a turn only once the descriptor is no longer readable.
//! The details and a doctest are on the `AsFd` impl of [`Server`];
//! `examples/host_poll.rs` and `examples/host_tokio.rs` are complete hosts.
//!
//! # A tour of the loop
//!
//! The path of a byte: [`Server::turn`] polls and dispatches by token →
//! the TCP or UDP handler reads until `WouldBlock` → [`framing`] cuts lines
//! → the reply is owed → the handler writes until `WouldBlock`, remembering
//! where it stopped.
//!
//! ## One poll, many sources
//!
//! A [`mio::Poll`] watches every socket at once. Each source is registered
//! with a [`mio::Token`]: fixed tokens for the listener, the UDP socket,
//! the waker (another thread asking for shutdown) and the signals; for a
//! connection, its key in a [`slab::Slab`]. A slab hands out small integer
//! keys and reuses freed ones, so the token leads straight to the
//! connection's state with no hashing, and memory tracks live connections.
//!
//! ## Readiness is edge-triggered: repeat until `WouldBlock`
//!
//! mio reports a socket when it *becomes* ready, not while it *is* ready.
//! After an event, the handler must read (or accept, or write) until the
//! call returns [`std::io::ErrorKind::WouldBlock`]; bytes left behind
//! after a short read may never be reported again. Every IO loop in this
//! crate therefore ends with a visible `WouldBlock => break` arm.
//! (Lab: [`no-drain`](#the-traps-lab).)
//!
//! A handler may still stop early on purpose, to be fair: a connection
//! reads at most [`READS_PER_TURN`] times a turn, the listener accepts at
//! most [`ACCEPTS_PER_TURN`] clients, the UDP socket takes at most
//! [`DATAGRAMS_PER_TURN`] datagrams. Since nobody will report such a source
//! again, the loop keeps it on a *still ready* list, serves it next turn,
//! and meanwhile polls with a zero timeout.
//! (Lab: [`no-still-ready`](#the-traps-lab).)
//!
//! ## The life of a connection
//!
//! 1. **Accept.** The listener is readable: accept until `WouldBlock`. Over
//!    [`Config::max_connections`] a client is accepted and closed at once.
//!    Out of file descriptors (`EMFILE`), accept would fail forever while
//!    clients wait in the backlog, so the server frees a descriptor it
//!    keeps in reserve, accepts and closes them, and takes it back.
//!    (Lab: [`emfile-spin`](#the-traps-lab).)
//! 2. **Read.** The connection is registered for `READABLE`. Bytes go into
//!    one read buffer ([`Config::read_buffer`], 64 KiB by default) shared
//!    by every data socket: bytes are framed and answered before the next read,
//!    so nobody needs a buffer of their own.
//! 3. **Owe.** A message makes a reply owed. With the fixed reply, a
//!    connection owes "n bytes of `ReceivedReceived...`" — just a count,
//!    written from one shared pattern. A custom responder's bytes go into a
//!    per-connection buffer.
//! 4. **Write.** Write until everything is out or `WouldBlock`. A short
//!    write is progress, not an error (never `write_all` on a non-blocking
//!    socket): remember where you stopped.
//!    (Lab: [`write-all`](#the-traps-lab).)
//! 5. **`WRITABLE` comes and goes.** Only while bytes are owed is the socket
//!    registered for `WRITABLE`; the writable event then continues the
//!    write. Registered for good, a socket is writable nearly always and
//!    some platforms report it after every read: a busy loop for nothing.
//!    (Lab: [`writable-for-life`](#the-traps-lab).)
//! 6. **Backpressure.** A client can send without ever reading. Once a
//!    connection owes [`Config::max_owed`] bytes, the server takes no more lines
//!    from it (the rest of a read waits in a buffer of the connection's)
//!    and stops reading it; the kernel's buffers fill and TCP flow control
//!    slows the client. When the owed bytes drain, reading resumes at
//!    once, because the input left unread will not be reported again.
//!    (Lab: [`no-backpressure`](#the-traps-lab).)
//! 7. **Close.** Closing a socket with unread input makes the kernel send a
//!    reset, which can destroy a reply still in flight. So the server shuts
//!    down its writing side (FIN), reads and discards until the peer closes,
//!    sends nothing for [`LINGER_MS`] or has been lingered for
//!    [`LINGER_CAP_MS`] (a *lingering close*), then drops the socket
//!    (deregistering it first where the platform needs that). Its slab
//!    key is freed only when the turn ends: a later event in the same
//!    batch for the old connection must not reach a new one that got the
//!    same key.
//!    (Lab: [`close-without-linger`, `stale-key`](#the-traps-lab).)
//!
//! ## Datagrams
//!
//! UDP has no connections: every datagram is a message, and its reply goes
//! back to its source with `send_to`, straight away. Only when the socket
//! would block does the reply wait, in a queue bounded by
//! [`Config::udp_queue_len`] and [`Config::udp_queue_bytes`] (past it, replies are
//! dropped and counted; replies a `delay` holds back, and on a relay the
//! datagrams held either way, count against the same bound), and only
//! then is `WRITABLE` registered. On Linux `recvmmsg` takes up to 64
//! datagrams per system call (with the fixed reply and no fault, without
//! copying their payloads), and `sendmmsg` sends the replies, or a relay's
//! datagrams, gathered over the turn: the crate's `unsafe` code is mostly
//! these two calls' C structures.
//!
//! ## Time
//!
//! mio has no timers. One binary heap holds every deadline the server
//! keeps, one entry per waiting thing: per connection (idle timeout,
//! lingering close, a fault's delayed step), a listener's retry after an
//! accept error, the earliest delayed UDP reply, a control `received`,
//! the end of the shutdown grace period. Its first entry is the poll's
//! timeout. A connection records when bytes last moved, in or out, and its
//! entry is re-armed lazily when it comes due, so activity costs nothing
//! on the heap; entries their owner no longer needs are skipped when due,
//! and swept out once they could outnumber the live ones. An empty turn
//! does not mean a deadline passed, so the loop reads the clock after
//! every poll.
//! (Lab: [`no-deadline-timeout`](#the-traps-lab).)
//!
//! ## A fault's delay
//!
//! With `--fault tcp:delay=200` ([`Fault`]), a message is judged when it is
//! framed: the verdict is a pure function of the seed and the message's
//! ordinals, so it does not depend on how turns fell. The reply is made at
//! once, but queued on the connection as a *step* due 200 ms later, and it
//! counts as owed, so backpressure still bounds a client whose delayed
//! replies pile up. Flushing stops at a step that is not due and notes
//! when it is; that moment becomes the connection's deadline on the timer
//! heap, like an idle timeout. `WRITABLE` is not registered meanwhile: the
//! socket is not what the reply waits for. When the entry comes due the
//! loop drives the connection as if it were writable, the step goes out,
//! and replies behind it follow in order. A delayed UDP reply waits in the
//! reply queue's own heap, within its bounds, with an entry of its own.
//!
//! ## Shutting down
//!
//! A [`Handle`] (from any thread, through a [`mio::Waker`]) or a signal
//! ([`Server::watch_signals`], delivered on the same poll) starts the
//! shutdown: stop accepting, close idle connections, finish the replies
//! owed — for at most [`SHUTDOWN_GRACE_MS`] — then close everything.
//!
//! ## Watching it happen
//!
//! `ackloop --mode line --log-level trace`, one client sending
//! `Hello, Server\n` then closing (mio's own trace lines included):
//!
//! ```text
//! TRACE [ackloop::server] event listener readable           ← a client is waiting
//! TRACE [mio::poll] registering event source with poller: token=Token(0), interests=READABLE
//! DEBUG [ackloop::tcp] conn 0: accepted 127.0.0.1:57330     ← slab key 0 is its token
//! TRACE [ackloop::tcp] conn 0: read 14 bytes, wrote 9 bytes, owes 0 (Open { line: OpenLine { word: 0 }, paused: false })
//!                                                           ← read at once after accept: one line,
//!                                                             one reply, written whole: no WRITABLE
//! TRACE [ackloop::server] event conn 0 readable read-closed ← the client closed
//! TRACE [ackloop::tcp] conn 0: read 0 bytes, wrote 0 bytes, owes 0 (Closing { peer_eof: true })
//! DEBUG [ackloop::tcp] conn 0: closed                       ← EOF: nothing owed, close
//! ```
//!
//! (When the client's bytes come after the accept, the first `read` line
//! says `read 0 bytes` and an `event conn 0 readable` brings the line.)
//!
//! (No `deregistering` line follows the close on Linux: closing the
//! descriptor takes it off epoll's list by itself; elsewhere the
//! connection is deregistered first, as mio asks.)
//!
//! ## A relay: two half-pipes per client
//!
//! With an [`Upstream`] ([`Config::add_upstream`], `--upstream`) a
//! protocol's socket relays to a real server instead of answering. A TCP
//! client becomes a *pair*: its socket and a non-blocking connect to the
//! upstream, each registered with its own token, and one state machine
//! per direction (a half-pipe, as haproxy's channels are): bytes read go
//! straight from the shared buffer to the other side, and only what that
//! side would not take is kept, while the source is not read
//! (backpressure both ways). A fault that holds bytes (a dribble, a
//! judged line) keeps them within the same bound, `max_owed`, counting
//! each held chunk's bookkeeping with its bytes; a delay on a stream is
//! latency, not a bandwidth cap: it reads on while its bytes wait, up to
//! [`Config::max_delayed`], and draws each chunk's delay in its range
//! (toxiproxy's `latency` ± `jitter`), in order. On Linux a
//! direction that carries bulk and that nothing needs to see (no fault on
//! it, no line mode, no journal) moves its bytes with `splice(2)` through
//! a pipe of its own, socket to pipe to socket, never through user
//! space: the pipe holds at most `max_owed` too, and is opened only once
//! a direction has read 64 KiB in one go (an idle or chatty pair holds
//! none). A FIN travels its direction after the bytes before it; a reset
//! resets the other side, even one that comes after that side's FIN (no
//! longer read, the socket's error tells it). A UDP client
//! source gets a *flow*: a socket of its own connected to the upstream,
//! so the kernel sorts the replies, which leave from the public socket.
//! Faults act on either direction ([`Direction`], `dir=`).
//!
//! ## The traps lab
//!
//! `examples/lab/` runs each mistake this tour warns against, and
//! measures it (Linux): a small correct server, the same server with one
//! trap built in, and a probe that drives the client exposing the trap
//! against the broken variant, the correct server and ackloop itself.
//!
//! ```sh
//! cargo run --release --example lab -- TRAP   # one trap
//! cargo run --release --example lab -- all    # the whole table
//! ```
//!
//! | `TRAP` | the mistake | where the tour explains it |
//! |---|---|---|
//! | `no-drain` | one read per readiness event | [Readiness is edge-triggered](#readiness-is-edge-triggered-repeat-until-wouldblock) |
//! | `no-still-ready` | a per-turn budget without the still-ready list | [Readiness is edge-triggered](#readiness-is-edge-triggered-repeat-until-wouldblock) |
//! | `writable-for-life` | `WRITABLE` registered for good | [The life of a connection](#the-life-of-a-connection), 5 |
//! | `write-all` | `write_all` on a non-blocking socket | [The life of a connection](#the-life-of-a-connection), 4 |
//! | `ok-zero` | `Ok(0)` not taken as end of stream | [Watching it happen](#watching-it-happen): `read 0 bytes`, then closed |
//! | `no-deadline-timeout` | the nearest deadline not used as the poll timeout | [Time](#time) |
//! | `emfile-spin` | no spare descriptor when out of descriptors | [The life of a connection](#the-life-of-a-connection), 1 |
//! | `close-without-linger` | closing with unread input: the reset eats the reply | [The life of a connection](#the-life-of-a-connection), 7 |
//! | `no-backpressure` | owed bytes unbounded | [The life of a connection](#the-life-of-a-connection), 6 |
//! | `interrupted` | `EINTR` from the poll treated as fatal | [`Server::turn`] retries it |
//! | `stale-key` | a slab key freed mid-batch (cannot show on epoll: a scripted kqueue batch) | [The life of a connection](#the-life-of-a-connection), 7 |
//!
//! # Resource bounds
//!
//! | bound | default | at the limit |
//! |---|---|---|
//! | [`Config::max_connections`] | 1024 | accept and close at once, count as rejected, warn once a second |
//! | [`Config::idle_timeout`] | 60 s | close the connection |
//! | [`Config::max_line`] | 64 KiB | close after the replies owed for earlier lines, warn |
//! | [`Config::max_owed`] | 64 KiB | take no more lines, stop reading the connection until its replies drain |
//! | [`Config::read_buffer`] | 64 KiB | one buffer for every data socket; a datagram larger than it is counted whole, read in part |
//! | [`READS_PER_TURN`], [`ACCEPTS_PER_TURN`], [`DATAGRAMS_PER_TURN`] | 16, 64, 256 | serve the source again next turn |
//! | [`Config::udp_queue_len`], [`Config::udp_queue_bytes`] | 1024, 256 KiB | drop the UDP reply, count it |
//! | [`LINGER_MS`], [`LINGER_CAP_MS`] | 2 s, 30 s | close a lingering connection: silent that long, or lingered that long in all |
//! | [`MAX_FAULTS`] | 64 | a fault more is an error (`error:` on control, `Err` from the library) |
//! | [`SHUTDOWN_GRACE_MS`] | 5 s | close everything |
//! | [`Config::connect_timeout`] | 5 s | relay: reset the client, count `upstream_failed` |
//! | [`Config::max_flows`], [`Config::flow_timeout`] | 1024, 30 s | relay: drop a new source's datagram and count it; close the flow |
//! | [`Config::max_delayed`] | 4 MiB | relay: a TCP direction a delay holds is not read until bytes go (per direction: a pair holds twice this at most) |
//!
//! Memory is about 130 KiB of shared buffers (the read buffer and, with
//! the fixed reply, the reply pattern sized to [`Config::max_owed`]: 64 KiB
//! each by default) plus 56 bytes per idle connection (with the fixed
//! reply, faults or not): a 40-byte slot and a 16-byte timer entry,
//! reserved up front for [`Config::max_connections`]. A busy connection
//! may add buffers of its own: input held back by backpressure (at most
//! one read, 64 KiB) and, with a custom [`Responder`], the open line (at
//! most `max_line`) and its owed replies (at most [`Config::max_owed`] plus
//! one reply, whose size the responder decides).
//!
//! # Features
//!
//! Every feature is on by default (the program as shipped). With
//! `default-features = false` the crate is the core alone, SPEC sections
//! 1 to 8: TCP and UDP serving, faults ([`Config::faults`], [`Fault`]),
//! the configuration, the loop ([`Server::turn`], [`Server::run`]), the
//! [`Handle`]'s shutdown and counters, and the [test
//! server](testing::TestServer). Each part below adds itself back:
//!
//! * `cli`: the `ackloop` binary's crates (`lexopt`, `simple_logger`)
//!   and `signals`. Alone (`--no-default-features --features cli`) it is
//!   the core's program: an option of a part left out is a one-line
//!   error naming its feature (exit 2).
//! * `signals`: [`Server::watch_signals`], through `signal-hook-mio`
//!   (Unix only; elsewhere the feature compiles to nothing).
//! * `relay`: the relay (SPEC 11): [`Upstream`], [`Config::add_upstream`],
//!   `--upstream`, TCP pairs and UDP flows.
//! * `scripts`: scripted replies (SPEC 12): [`Rule`],
//!   [`Config::greeting`], [`Handle::push`], `--rule`, `--greeting`, and
//!   (with `control`) [`Script`] and `--script`.
//! * `journal`: the journal (SPEC 13): [`Config::journal`],
//!   [`Server::on_journal`], [`JournalEvent`], `--journal`.
//! * `control`: live control (SPEC 9): [`Config::control`], `--control`,
//!   and the handle's changes at run time ([`Handle::add_fault`],
//!   [`Handle::set_reply`], [`Handle::refuse`], ...).
//!
//! * `api`: toxiproxy's HTTP API and named endpoints (SPEC 14),
//!   `--api` and `--config` (with `relay` and `control`, which it
//!   needs).
//!
//! A part that is off costs nothing: the loop keeps its place for it (an
//! `Option` of a type no value can have), and the compiler removes every
//! branch that leads there.
//!
//! # Platforms
//!
//! ackloop builds wherever mio does (Linux, macOS, the BSDs, Windows).
//! Some parts are narrower:
//!
//! * Linux only: `recvmmsg`/`sendmmsg` batches for UDP with the fixed
//!   reply (elsewhere one `recv_from`/`send_to` per datagram), and closing
//!   a connection without deregistering it first.
//! * Unix only: signals, and the spare descriptor that lets the server
//!   shed clients waiting in the backlog when it runs out of descriptors.
//! * Unix where mio's poll is one descriptor (epoll or kqueue: Linux,
//!   Android, macOS, iOS, the BSDs, illumos, Solaris, ...): `AsFd` and
//!   `AsRawFd` on [`Server`]. Not on AIX, Haiku, Fuchsia, Hurd, QNX,
//!   Cygwin and a few embedded targets, where mio has no such descriptor.

#![deny(missing_docs, rust_2018_idioms)]
// A part that is off leaves some of its support in the core unused (a
// token's variant, a fault check only a relay asks for), and this page's
// links to it dangling: both are checked with every part on, as CI's
// clippy and doc build it.
#![cfg_attr(
    not(all(
        feature = "relay",
        feature = "scripts",
        feature = "journal",
        feature = "control",
        feature = "api"
    )),
    allow(dead_code, rustdoc::broken_intra_doc_links)
)]
#![doc(test(attr(deny(warnings))))]

#[cfg(feature = "api")]
mod api;
mod bind;
mod closing;
#[cfg(feature = "control")]
mod command;
mod config;
#[cfg_attr(not(feature = "control"), path = "off/control.rs")]
mod control;
#[cfg(feature = "api")]
mod endpoint;
mod error;
mod escape;
mod fault;
pub mod framing;
mod handle;
#[cfg_attr(not(feature = "journal"), path = "off/journal.rs")]
mod journal;
mod limits;
mod listener;
#[cfg_attr(not(feature = "relay"), path = "off/relay.rs")]
mod relay;
mod reply;
#[cfg_attr(not(feature = "scripts"), path = "off/rules.rs")]
mod rules;
#[cfg(all(feature = "scripts", feature = "control"))]
mod script;
mod server;
#[cfg(feature = "control")]
mod service;
mod stats;
mod table;
mod tcp;
pub mod testing;
mod timer;
mod turn;
mod udp;
mod vocab;
mod write;

#[cfg(feature = "api")]
pub use api::MAX_API_CONNECTIONS;
pub use config::{
    Config, DEFAULT_ADDR, DEFAULT_IDLE_TIMEOUT_SECS, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_LINE,
    DEFAULT_MAX_OWED, DEFAULT_READ_BUFFER, DEFAULT_REPLY, DEFAULT_UDP_QUEUE_BYTES,
    DEFAULT_UDP_QUEUE_LEN, MAX_IDLE_TIMEOUT_SECS, MAX_MAX_LINE, MAX_MAX_OWED, MAX_UDP_QUEUE_BYTES,
    MAX_UDP_QUEUE_LEN, MIN_UDP_QUEUE_BYTES, Mode, READ_BUFFER_RANGE,
};
#[cfg(feature = "relay")]
pub use config::{DEFAULT_MAX_DELAYED, MAX_DELAYED_RANGE};
#[cfg(feature = "control")]
pub use control::MAX_CONTROL_CONNECTIONS;
pub use error::Error;
pub use escape::{escape, unescape};
pub use fault::{Fault, FaultCounts, FaultKind, MAX_FAULTS, Selector};
#[cfg(feature = "control")]
pub use handle::CHANGE_TIMEOUT;
pub use handle::Handle;
#[cfg(feature = "journal")]
pub use journal::{
    AppliedFaults, JournalCallback, JournalDirection, JournalEvent, JournalTarget,
    MAX_JOURNAL_BUFFER,
};
pub use limits::{ACCEPTS_PER_TURN, DATAGRAMS_PER_TURN, LINGER_CAP_MS, LINGER_MS, READS_PER_TURN};
pub use reply::{Echo, FixedReply, Request, Responder};
#[cfg(feature = "scripts")]
pub use rules::{MAX_RULES, Rule};
#[cfg(all(feature = "scripts", feature = "control"))]
pub use script::Script;
pub use server::{SHUTDOWN_GRACE_MS, Server, Status};
pub use stats::Stats;
#[cfg(feature = "relay")]
pub use vocab::Upstream;
pub use vocab::{Direction, MAX_REPLY_LEN, Match, Protocol};
