//! The server's one descriptor, for a host that waits on descriptors of
//! its own (`poll(2)`, epoll, kqueue, tokio's `AsyncFd`).
//!
//! Every source the server has (listener, connections, UDP socket, waker,
//! signals) is registered on one [`mio::Poll`]. On Linux that poll is an
//! epoll instance, on macOS and the BSDs a kqueue, and either is itself a
//! descriptor: readable whenever one of the sources it watches has an event
//! waiting. So the host needs to watch that one descriptor only.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use super::Server;

/// The descriptor of the server's [`mio::Poll`] (an epoll or kqueue
/// instance), for a host that waits on descriptors of its own.
///
/// # The contract
///
/// The host waits for this descriptor to be **readable**, along with its
/// own, for no longer than [`Server::poll_delay`] (`None`: as long as it
/// likes). Then it calls [`Server::turn`] with a zero timeout,
/// `turn(Some(Duration::ZERO))`, when the descriptor is readable **or**
/// the delay has passed (`poll_delay()` is then `Some(Duration::ZERO)`).
///
/// * **Readable means events wait.** The descriptor is level-triggered:
///   readable for as long as events are pending, whatever the sources'
///   own (edge-triggered) registrations. A turn takes at most 1024 events,
///   so after a busy turn it may still be readable: turn again.
/// * **Some work is invisible to the descriptor.** A source cut short by
///   its budget ([`DATAGRAMS_PER_TURN`](crate::DATAGRAMS_PER_TURN),
///   [`ACCEPTS_PER_TURN`](crate::ACCEPTS_PER_TURN),
///   [`READS_PER_TURN`](crate::READS_PER_TURN)) will not be reported
///   again: the server keeps it on a *still ready* list, and
///   `poll_delay()` is `Some(Duration::ZERO)` until it is served. A host
///   that waited on the descriptor alone would stall there, so it must not
///   wait at all while the delay is zero.
/// * **Deadlines** (idle timeouts, lingering closes, the shutdown grace
///   period) make no descriptor readable either: they are what
///   `poll_delay()` counts down to.
/// * **A turn with a zero timeout never blocks**: it takes the events
///   already there, serves them and returns.
/// * **Spurious readability is harmless**: a turn with nothing to do
///   returns at once.
/// * **Edge-triggered hosts** (tokio's `AsyncFd`, `EPOLLET`) are told when
///   the descriptor *becomes* readable, not while it is. Clear the
///   readiness after a turn only if the descriptor is no longer readable
///   (a zero-timeout `poll(2)` says), or a turn that left events behind
///   would never be reported again.
/// * **One descriptor for the server's whole life**, open until the server
///   drops (what tokio's `AsyncFd::register` asks of its callers). Take it
///   off the host's own poll (drop the `AsyncFd`, `EPOLL_CTL_DEL`) before
///   dropping the server; never close it or wait on it with `epoll_wait`
///   yourself: only [`Server::turn`] takes its events.
///
/// `examples/host_poll.rs` (plain `poll(2)`) and `examples/host_tokio.rs`
/// (a tokio current-thread runtime) are complete hosts.
///
/// # Example
///
/// One UDP exchange, served by waiting on the descriptor with `poll(2)`:
///
/// ```
/// use std::os::fd::AsRawFd;
/// use std::time::Duration;
/// use ackloop::{Config, Server};
///
/// let mut config = Config::loopback();
/// config.tcp = None;
/// let mut server = Server::bind(config)?;
/// let client = std::net::UdpSocket::bind("127.0.0.1:0")?;
/// client.send_to(b"Hello, Server", server.udp_addr().unwrap())?;
///
/// // Wait for the server's descriptor (a real host would wait on its own
/// // descriptors too, for at most `poll_delay()`; here: ten seconds).
/// let mut fds = [libc::pollfd { fd: server.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
/// // SAFETY: `fds` is an array of one valid `pollfd`, alive for the call.
/// let ready = unsafe { libc::poll(fds.as_mut_ptr(), 1, 10_000) };
/// assert_eq!(ready, 1, "the datagram made the descriptor readable");
/// server.turn(Some(Duration::ZERO))?; // takes the datagram and answers it
///
/// client.set_read_timeout(Some(Duration::from_secs(10)))?;
/// let mut reply = [0; 16];
/// let n = client.recv(&mut reply)?;
/// assert_eq!(&reply[..n], b"Received");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
impl AsFd for Server {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // mio lends the descriptor through the poll's registry, for as long
        // as the poll (which the server owns) lives: no `unsafe` needed.
        self.poll.registry().as_fd()
    }
}

/// The same descriptor as [`AsFd`] gives, with the same contract.
impl AsRawFd for Server {
    fn as_raw_fd(&self) -> RawFd {
        self.poll.as_raw_fd()
    }
}
