//! The TCP listener and its accept path, one piece for every job a
//! listener's streams may have (served by [`tcp`](crate::tcp), relayed by
//! [`relay`](crate::relay)): the per-turn budget, `--max-connections`
//! with its `rejected` count, the pause after an accept error, the
//! out-of-descriptors escape, and `refuse`/`accept` from live control.
//!
//! An accepted stream within the limit is handed to the listener's job
//! through [`Admit`]; the loop says which job that is (the main endpoint
//! has one: serve, or relay when `--upstream tcp:` is given).

use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use log::warn;
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Token};

use crate::limits::ACCEPTS_PER_TURN;
use crate::stats::add;
use crate::timer::{ACCEPT_RETRY_MS, Due, Millis, Pause, RateLimit};
use crate::turn::{Ready, Turn};

/// What a listener's job does with a stream it accepted within the limit.
pub(crate) trait Admit {
    /// Takes in `stream` from `peer`: counts it (`accepted`, `open`) once
    /// it is registered, and serves what it sent already.
    fn admit(&mut self, stream: TcpStream, peer: SocketAddr, t: &mut Turn<'_>);
}

/// A TCP listener: bound, refused, listening again, stopped.
pub(crate) struct Listener {
    /// `None` while refused (live control), after shutdown, or without TCP.
    socket: Option<TcpListener>,
    /// The port, bound but not listening, while refused since start-up
    /// (a script's `refuse`): `listen_again` listens on it.
    reserved: Option<socket2::Socket>,
    /// The address the listener is bound to, for listening again; `None`
    /// without TCP.
    addr: Option<SocketAddr>,
    /// Its token on the poll.
    token: Token,
    /// Listen with `SO_REUSEPORT` (`--reuse-port`).
    reuse_port: bool,
    /// Streams open at most, across every job (`--max-connections`):
    /// compared with the `open` counter, which every job keeps.
    max_connections: usize,
    /// A descriptor held in reserve for when the process runs out.
    spare_fd: spare::SpareFd,
    /// Accepting is paused after an accept error.
    pause: Pause,
    reject_log: RateLimit,
    /// Shutting down: not listening again.
    stopping: bool,
}

impl Listener {
    /// `bound` (the socket and its address), registered under `token`,
    /// or none (no TCP).
    pub fn new(
        bound: Option<(TcpListener, SocketAddr)>,
        token: Token,
        reuse_port: bool,
        max_connections: usize,
    ) -> Listener {
        let (socket, addr) = bound.unzip();
        Listener {
            socket,
            reserved: None,
            addr,
            token,
            reuse_port,
            max_connections,
            spare_fd: spare::SpareFd::reserve(),
            pause: Pause::default(),
            reject_log: RateLimit::default(),
            stopping: false,
        }
    }

    /// Starts refused (a script's `refuse`): `socket` is bound to `addr`
    /// and not listening, so clients are refused until `listen_again`
    /// listens on it.
    pub fn start_refused(&mut self, socket: socket2::Socket, addr: SocketAddr) {
        self.addr = Some(addr);
        self.reserved = Some(socket);
    }

    /// Whether there is TCP here at all (bound, even if refused now).
    pub fn is_bound(&self) -> bool {
        self.addr.is_some()
    }

    /// The listener is readable: accept until `WouldBlock`, or until the
    /// per-turn budget runs out (then it goes on the still-ready list),
    /// handing each stream within the limit to `job`.
    pub fn accept(&mut self, job: &mut impl Admit, t: &mut Turn<'_>) {
        if self.pause.holds(t.now) {
            return; // Paused after an accept error; its timer resumes it.
        }
        for _ in 0..ACCEPTS_PER_TURN {
            let Some(socket) = &self.socket else {
                return;
            };
            match socket.accept() {
                Ok((stream, peer)) => self.admit(stream, peer, job, t),
                // Drained: the next connection brings a new event.
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if is_transient(&e) => continue,
                Err(e) if is_out_of_descriptors(&e) => return self.shed_backlog(t),
                Err(e) => {
                    warn!("accept failed: {e}; trying again in {ACCEPT_RETRY_MS} ms");
                    return self.pause_accepting(t);
                }
            }
        }
        t.ready.push(Ready::Listener);
    }

    /// Hands one accepted stream to `job`, or turns it away over the
    /// limit.
    fn admit(
        &mut self,
        stream: TcpStream,
        peer: SocketAddr,
        job: &mut impl Admit,
        t: &mut Turn<'_>,
    ) {
        let open = t.counters.open.load(Ordering::Relaxed);
        if open >= self.max_connections as u64 {
            add(&t.counters.rejected, 1);
            if self.reject_log.allow(t.now) {
                warn!(
                    "rejected {peer}: at --max-connections {} (further rejections \
                     are logged at most once a second)",
                    self.max_connections
                );
            }
            return; // Dropping the stream closes it.
        }
        job.admit(stream, peer, t);
    }

    /// Stops accepting for [`ACCEPT_RETRY_MS`]: no retry storm, no stall.
    fn pause_accepting(&mut self, t: &mut Turn<'_>) {
        self.pause.start(t.now, Due::AcceptRetry, t.timers);
    }

    /// Out of file descriptors. The failed accept would fail again at
    /// once, forever, and the waiting clients would hang in the backlog.
    /// Give back the spare descriptor, then accept and close each waiting
    /// client in turn (libuv's trick), and take the spare again.
    fn shed_backlog(&mut self, t: &mut Turn<'_>) {
        let Some(socket) = &self.socket else {
            return;
        };
        let mut shed = 0u64;
        if self.spare_fd.release() {
            while (shed as usize) < ACCEPTS_PER_TURN {
                match socket.accept() {
                    Ok((stream, _)) => {
                        drop(stream);
                        shed += 1;
                    }
                    Err(e) if is_transient(&e) => continue,
                    // WouldBlock: the backlog is empty. Anything else:
                    // someone took the spare slot; retry below.
                    Err(_) => break,
                }
            }
            self.spare_fd = spare::SpareFd::reserve();
        }
        add(&t.counters.rejected, shed);
        if self.reject_log.allow(t.now) {
            warn!("out of file descriptors: closed {shed} waiting client(s) unserved");
        }
        // Not drained for sure: look again in a second rather than spin.
        self.pause_accepting(t);
    }

    /// The accept-retry entry due `at` came due: accept again if it is
    /// the current one.
    pub fn on_accept_retry(&mut self, at: Millis, job: &mut impl Admit, t: &mut Turn<'_>) {
        if self.pause.is_current(at) {
            self.accept(job, t);
        }
    }

    /// Whether the accept-retry entry due `at` is the one armed last.
    pub fn is_current(&self, at: Millis) -> bool {
        self.pause.is_current(at)
    }

    /// Closes the listener: new clients are refused ("connection
    /// refused"); open connections go on.
    pub fn refuse(&mut self, t: &mut Turn<'_>) {
        if let Some(mut socket) = self.socket.take() {
            let _ = t.registry.deregister(&mut socket);
        }
    }

    /// Listens again on the same address after [`refuse`](Listener::refuse).
    ///
    /// # Errors
    ///
    /// Shutting down, or the address cannot be bound or registered: a
    /// line for the control client.
    pub fn listen_again(&mut self, t: &mut Turn<'_>) -> Result<(), String> {
        let Some(addr) = self.addr else {
            return Err("not bound".into());
        };
        if self.stopping {
            return Err("shutting down".into());
        }
        if self.socket.is_none() {
            let socket = match self.reserved.take() {
                // Refused since start-up: the port is ours already.
                Some(socket) => crate::bind::listen(socket),
                None => crate::bind::tcp_listener(addr, self.reuse_port),
            };
            let mut socket = socket.map_err(|e| format!("cannot bind tcp {addr}: {e}"))?;
            t.registry
                .register(&mut socket, self.token, Interest::READABLE)
                .map_err(|e| format!("cannot register tcp {addr}: {e}"))?;
            self.socket = Some(socket);
            // Clients may be waiting already: no event would report them.
            t.ready.push(Ready::Listener);
        }
        Ok(())
    }

    /// Shutting down: the listener closes for good.
    pub fn stop(&mut self, t: &mut Turn<'_>) {
        self.stopping = true;
        self.refuse(t);
    }
}

/// Accept errors that concern one client only: try the next.
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::Interrupted | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    )
}

#[cfg(unix)]
fn is_out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

#[cfg(not(unix))]
fn is_out_of_descriptors(_: &io::Error) -> bool {
    false
}

/// The descriptor kept in reserve for [`Listener::shed_backlog`].
mod spare {
    /// Holds one open descriptor (on `/dev/null`) so that it can be given
    /// back when the process runs out. Unix only: elsewhere it holds none.
    #[derive(Debug)]
    pub struct SpareFd(#[cfg(unix)] Option<std::fs::File>);

    impl SpareFd {
        /// Takes a descriptor, if one can be had.
        pub fn reserve() -> SpareFd {
            #[cfg(unix)]
            return SpareFd(std::fs::File::open("/dev/null").ok());
            #[cfg(not(unix))]
            return SpareFd();
        }

        /// Closes the reserved descriptor; whether there was one.
        pub fn release(&mut self) -> bool {
            #[cfg(unix)]
            return self.0.take().is_some();
            #[cfg(not(unix))]
            return false;
        }
    }
}
