//! The loop: bind, then turn after turn, wait for readiness and dispatch it.
//!
//! One turn is: poll (sleeping no longer than the nearest deadline, or not
//! at all while some source is still ready), hand every event to the
//! handler its token names, serve the sources left still ready last turn,
//! expire due timers, and free the slab keys of connections closed during
//! the turn. The loop only dispatches; [`tcp`](crate::tcp) and
//! [`udp`](crate::udp) act.

use std::fmt;
use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use log::{info, trace, warn};
use mio::net::{TcpListener, UdpSocket};
use mio::{Events, Interest, Poll, Registry, Token, Waker};

use crate::config::{Config, Mode};
use crate::reply::{Pattern, Replies, Responder};
use crate::stats::{Counters, Stats, add};
use crate::tcp::Tcp;
use crate::timer::{Clock, Millis, NEVER, Timers};
use crate::udp::Udp;

/// The TCP listener's token. Connection tokens are slab keys, far below.
pub(crate) const LISTENER: Token = Token(usize::MAX - 1);
/// The UDP socket's token.
pub(crate) const UDP: Token = Token(usize::MAX - 2);
/// The waker's token: another thread asked for shutdown.
const WAKER: Token = Token(usize::MAX - 3);
/// SIGINT or SIGTERM arrived (with the `signals` feature).
#[cfg(feature = "signals")]
const SIGNALS: Token = Token(usize::MAX - 4);

/// Events taken from the kernel per poll; more simply wait a turn.
const EVENTS_PER_POLL: usize = 1024;
/// Room on the still-ready lists before they grow (they hold one entry
/// per source cut short by its budget in one turn).
const READY_CAPACITY: usize = 256;
/// The one read buffer, shared by every connection and the UDP socket:
/// bytes are handled before the next read, so nobody needs their own.
const READ_BUFFER_BYTES: usize = 64 * 1024;
/// After shutdown is requested, how long owed replies may take to drain,
/// in milliseconds; then everything closes regardless.
pub const SHUTDOWN_GRACE_MS: Millis = 5_000;

/// Whether the loop still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Serving, or draining owed replies after a shutdown request.
    Running,
    /// Everything is closed; further turns do nothing.
    Stopped,
}

/// Why the server could not start.
#[derive(Debug)]
pub enum Error {
    /// A configuration value is out of range (message names the option).
    Config(String),
    /// A socket could not be bound.
    Bind {
        /// `"tcp"` or `"udp"`.
        protocol: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// What the operating system said.
        source: io::Error,
    },
    /// Setting up the poll failed.
    Io(io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(message) => f.write_str(message),
            Error::Bind {
                protocol,
                addr,
                source,
            } => write!(f, "cannot bind {protocol} {addr}: {source}"),
            Error::Io(e) => write!(f, "cannot set up the poll: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Config(_) => None,
            Error::Bind { source, .. } => Some(source),
            Error::Io(e) => Some(e),
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::Io(e)
    }
}

/// What other threads share with the loop.
struct Shared {
    waker: Waker,
    stop_requested: AtomicBool,
    counters: Counters,
}

/// A handle to a running server, for other threads: ask it to stop, read
/// its counters. Cheap to clone.
///
/// # Examples
///
/// ```
/// let mut server = ackloop::Server::bind(ackloop::Config::loopback())?;
/// let handle = server.handle();
/// let thread = std::thread::spawn(move || server.run());
/// handle.shutdown();
/// let stats = thread.join().unwrap()?;
/// assert_eq!(stats.accepted, 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("stats", &self.stats())
            .finish()
    }
}

impl Handle {
    /// Asks the loop to stop: it stops accepting, finishes the replies it
    /// owes (for at most five seconds), closes everything and returns from
    /// [`Server::run`]. Returns at once; calling it again does nothing.
    pub fn shutdown(&self) {
        self.shared.stop_requested.store(true, Ordering::SeqCst);
        if let Err(e) = self.shared.waker.wake() {
            warn!("cannot wake the loop: {e}");
        }
    }

    /// The counters as they are now.
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }
}

/// Everything a handler may touch during one turn, borrowed from the
/// server: the poll's registry (to change its own interest), the clock
/// reading, the shared buffer and replies, counters, timers and the list of
/// sources still ready for the next turn.
pub(crate) struct Turn<'a> {
    pub registry: &'a Registry,
    pub now: Millis,
    pub buf: &'a mut [u8],
    pub replies: &'a mut Replies,
    pub counters: &'a Counters,
    pub timers: &'a mut Timers,
    pub ready: &'a mut Vec<Ready>,
}

/// A source left with work undone when its budget ran out. Readiness is
/// edge-triggered, so nothing will report it again: the loop serves it on
/// the next turn, polling with a zero timeout meanwhile.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Ready {
    Listener,
    Udp,
    Conn { key: usize, id: u32 },
}

/// Lets a warning through at most once a second.
#[derive(Debug, Default)]
pub(crate) struct RateLimit {
    next_at: Millis,
}

impl RateLimit {
    pub fn allow(&mut self, now: Millis) -> bool {
        if now < self.next_at {
            return false;
        }
        self.next_at = now + 1_000;
        true
    }
}

/// The event sources and their handlers.
struct Sources {
    tcp: Tcp,
    udp: Option<Udp>,
    /// Shutdown was requested: close everything at this moment at the latest.
    stop_at: Option<Millis>,
    #[cfg(feature = "signals")]
    signals: Option<signal_hook_mio::v1_0::Signals>,
}

/// An ackloop server: the sockets, the poll and every connection.
///
/// Build it with [`Server::bind`] (fixed reply) or
/// [`Server::with_responder`]; the sockets are bound when it returns, so
/// [`tcp_addr`](Server::tcp_addr) and [`udp_addr`](Server::udp_addr) give
/// the real ports. Then either [`run`](Server::run) it, or drive it with
/// [`turn`](Server::turn) from a loop of your own.
pub struct Server {
    poll: Poll,
    events: Events,
    sources: Sources,
    tcp_addr: Option<SocketAddr>,
    udp_addr: Option<SocketAddr>,
    replies: Replies,
    buf: Box<[u8]>,
    clock: Clock,
    timers: Timers,
    /// Sources still ready from the last turn, served this turn.
    ready: Vec<Ready>,
    /// Sources found still ready during this turn.
    ready_next: Vec<Ready>,
    shared: Arc<Shared>,
    status: Status,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("tcp_addr", &self.tcp_addr)
            .field("udp_addr", &self.udp_addr)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Binds the sockets `config` names and prepares to serve the fixed
    /// reply. Nothing is served until [`run`](Server::run) or
    /// [`turn`](Server::turn).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an invalid configuration, [`Error::Bind`] when
    /// an address cannot be bound (in use, not permitted), [`Error::Io`]
    /// when the poll cannot be created.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::{ErrorKind, Read, Write};
    ///
    /// let mut server = ackloop::Server::bind(ackloop::Config::loopback())?;
    /// let mut client = std::net::TcpStream::connect(server.tcp_addr().unwrap())?;
    /// client.write_all(b"Hello, Server")?;
    /// client.set_nonblocking(true)?;
    /// let mut reply = Vec::new();
    /// // Drive the server one turn at a time until the reply and EOF arrive.
    /// loop {
    ///     server.turn(Some(std::time::Duration::from_millis(10)))?;
    ///     match client.read_to_end(&mut reply) {
    ///         Ok(_) => break,
    ///         Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
    ///         Err(e) => return Err(e.into()),
    ///     }
    /// }
    /// assert_eq!(reply, b"Received");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn bind(config: Config) -> Result<Server, Error> {
        let pattern = Pattern::new(&config.reply, config.mode == Mode::Line);
        Server::build(config, Replies::Fixed(pattern))
    }

    /// Like [`bind`](Server::bind), but every reply comes from `responder`
    /// ([`Echo`](crate::Echo), a closure, or your own type); `config.reply`
    /// is not used.
    ///
    /// # Errors
    ///
    /// As for [`bind`](Server::bind).
    ///
    /// # Examples
    ///
    /// ```
    /// let server = ackloop::Server::with_responder(ackloop::Config::loopback(), ackloop::Echo)?;
    /// assert!(server.udp_addr().is_some());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_responder<R: Responder + Send + 'static>(
        config: Config,
        responder: R,
    ) -> Result<Server, Error> {
        let replies = Replies::Custom {
            responder: Box::new(responder),
            scratch: Vec::new(),
        };
        Server::build(config, replies)
    }

    fn build(config: Config, replies: Replies) -> Result<Server, Error> {
        config.validate().map_err(Error::Config)?;
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let (listener, tcp_addr) = match config.tcp {
            Some(addr) => {
                let (listener, bound) = bind_tcp(poll.registry(), addr)?;
                (Some(listener), Some(bound))
            }
            None => (None, None),
        };
        let fixed_reply = matches!(replies, Replies::Fixed(_));
        let (udp, udp_addr) = match config.udp {
            Some(addr) => {
                let (socket, bound) = bind_udp(poll.registry(), addr)?;
                (Some(Udp::new(socket, fixed_reply)), Some(bound))
            }
            None => (None, None),
        };
        info!(
            "serving tcp {} ({} mode), udp {}",
            tcp_addr.map_or("off".into(), |a| a.to_string()),
            config.mode,
            udp_addr.map_or("off".into(), |a| a.to_string()),
        );
        Ok(Server {
            poll,
            events: Events::with_capacity(EVENTS_PER_POLL),
            sources: Sources {
                tcp: Tcp::new(listener, &config),
                udp,
                stop_at: None,
                #[cfg(feature = "signals")]
                signals: None,
            },
            tcp_addr,
            udp_addr,
            replies,
            buf: vec![0; READ_BUFFER_BYTES].into_boxed_slice(),
            clock: Clock::new(),
            // Room for the sweep threshold with few connections open.
            timers: Timers::with_capacity(2 * crate::tcp::TIMER_SLACK),
            ready: Vec::with_capacity(READY_CAPACITY),
            ready_next: Vec::with_capacity(READY_CAPACITY),
            shared: Arc::new(Shared {
                waker,
                stop_requested: AtomicBool::new(false),
                counters: Counters::default(),
            }),
            status: Status::Running,
        })
    }

    /// The bound TCP address (port 0 resolved), or `None` without TCP.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// The bound UDP address (port 0 resolved), or `None` without UDP.
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp_addr
    }

    /// A handle for other threads: request shutdown, read counters.
    pub fn handle(&self) -> Handle {
        Handle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// The counters as they are now.
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }

    /// Delivers SIGINT and SIGTERM as events on this server's own poll (no
    /// signal thread): the first starts a graceful shutdown, a second one
    /// closes everything at once.
    ///
    /// # Errors
    ///
    /// If the signal handlers cannot be installed or registered.
    #[cfg(feature = "signals")]
    pub fn watch_signals(&mut self) -> io::Result<()> {
        use signal_hook_mio::v1_0::Signals;
        let mut signals = Signals::new([libc::SIGINT, libc::SIGTERM])?;
        self.poll
            .registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        self.sources.signals = Some(signals);
        Ok(())
    }

    /// Serves on the current thread until shutdown is requested (through
    /// a [`Handle`], [`shutdown`](Server::shutdown) or a watched signal)
    /// and every owed reply is out or the grace period is over. Returns
    /// the final counters.
    ///
    /// # Errors
    ///
    /// Only if polling itself fails; errors of one client never end it.
    pub fn run(&mut self) -> io::Result<Stats> {
        while self.turn(None)? == Status::Running {}
        Ok(self.stats())
    }

    /// Starts a graceful shutdown from the loop's own thread: stop
    /// accepting, finish owed replies, then stop. Turns go on until
    /// [`turn`](Server::turn) returns [`Status::Stopped`].
    pub fn shutdown(&mut self) {
        self.shared.stop_requested.store(true, Ordering::SeqCst);
        let _ = self.shared.waker.wake();
    }

    /// How long until the server next needs a turn with nothing happening
    /// on its sockets: zero while a source is still ready, the time to the
    /// nearest deadline (idle timeout, lingering close, shutdown grace), or
    /// `None` when only socket events can give it work.
    ///
    /// A host driving the server calls [`turn`](Server::turn) no later than
    /// this, the way smoltcp's `poll_delay` pairs with its `poll`.
    pub fn poll_delay(&self) -> Option<Duration> {
        if self.status == Status::Stopped || !self.ready.is_empty() {
            return Some(Duration::ZERO);
        }
        let next = [
            self.timers.next_at(),
            Some(self.sources.tcp.accept_retry_at()),
            self.sources.stop_at,
        ]
        .into_iter()
        .flatten()
        .min()
        .filter(|&at| at != NEVER)?;
        Some(Clock::until(self.clock.now(), next))
    }

    /// Runs one turn: waits for events for at most `timeout` (`None`: as
    /// long as needed), but never past the server's own next deadline, then
    /// handles everything that is ready.
    ///
    /// # Errors
    ///
    /// Only if polling itself fails.
    pub fn turn(&mut self, timeout: Option<Duration>) -> io::Result<Status> {
        if self.status == Status::Stopped {
            return Ok(Status::Stopped);
        }
        let timeout = match (timeout, self.poll_delay()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            // A signal interrupted the wait: this is just a shorter turn.
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        let Server {
            poll,
            events,
            sources,
            replies,
            buf,
            clock,
            timers,
            ready,
            ready_next,
            shared,
            ..
        } = self;
        let mut t = Turn {
            registry: poll.registry(),
            now: clock.now(),
            buf,
            replies,
            counters: &shared.counters,
            timers,
            ready: ready_next,
        };
        for event in events.iter() {
            trace!("event {}", Described(event));
            let readable = event.is_readable() || event.is_read_closed() || event.is_error();
            sources.dispatch(event.token(), readable, shared, &mut t);
        }
        for still_ready in ready.drain(..) {
            sources.serve_again(still_ready, &mut t);
        }
        sources.expire(&mut t);
        sources.tcp.end_turn(t.timers);
        let finished = sources.finished(&mut t);
        std::mem::swap(ready, ready_next);
        if finished {
            self.status = Status::Stopped;
            info!("ackloop stopped: {}", self.stats());
        }
        Ok(self.status)
    }
}

impl Sources {
    /// Hands one event to the handler its token names.
    fn dispatch(&mut self, token: Token, readable: bool, shared: &Shared, t: &mut Turn<'_>) {
        match token {
            LISTENER => self.tcp.accept(t),
            UDP => self.serve_udp(t),
            WAKER => {
                if shared.stop_requested.load(Ordering::SeqCst) {
                    self.stop(t);
                }
            }
            #[cfg(feature = "signals")]
            SIGNALS => self.on_signals(t),
            Token(key) => self.tcp.on_event(key, readable, t),
        }
    }

    fn serve_again(&mut self, ready: Ready, t: &mut Turn<'_>) {
        match ready {
            Ready::Listener => self.tcp.accept(t),
            Ready::Udp => self.serve_udp(t),
            Ready::Conn { key, id } => self.tcp.resume(key, id, t),
        }
    }

    fn serve_udp(&mut self, t: &mut Turn<'_>) {
        if let Some(udp) = &mut self.udp {
            if udp.serve(t) {
                t.ready.push(Ready::Udp);
            }
        }
    }

    /// Handles the deadlines that came due: connection timers, the
    /// listener's retry after an accept error, the shutdown grace period.
    fn expire(&mut self, t: &mut Turn<'_>) {
        while let Some(entry) = t.timers.pop_due(t.now) {
            self.tcp.on_timer(entry, t);
        }
        if self.tcp.accept_retry_at() <= t.now {
            self.tcp.accept(t);
        }
        if self.stop_at.is_some_and(|at| at <= t.now) {
            self.tcp.close_all(t);
            self.close_udp(t.counters);
        }
    }

    /// Closes the UDP socket for good: the grace period is over, so the
    /// replies still queued are dropped, and counted.
    fn close_udp(&mut self, counters: &Counters) {
        if let Some(udp) = self.udp.take() {
            add(&counters.replies_dropped, udp.queued() as u64);
        }
    }

    /// Starts the graceful shutdown (once).
    fn stop(&mut self, t: &mut Turn<'_>) {
        if self.stop_at.is_some() {
            return;
        }
        info!("shutting down: no new clients; finishing owed replies");
        self.stop_at = Some(t.now + SHUTDOWN_GRACE_MS);
        self.tcp.stop(t);
    }

    /// SIGINT/SIGTERM: the first stops gracefully, a second at once.
    #[cfg(feature = "signals")]
    fn on_signals(&mut self, t: &mut Turn<'_>) {
        let Some(signals) = &mut self.signals else {
            return;
        };
        let count = signals.pending().count();
        if count == 0 {
            return;
        }
        if self.stop_at.is_some() || count > 1 {
            info!("second signal: closing everything now");
            self.stop(t);
            self.stop_at = Some(t.now);
        } else {
            self.stop(t);
        }
    }

    /// Shutdown is complete: nothing owed anywhere, or time is up.
    fn finished(&mut self, t: &mut Turn<'_>) -> bool {
        let Some(stop_at) = self.stop_at else {
            return false;
        };
        if t.now >= stop_at {
            self.tcp.close_all(t);
            self.tcp.end_turn(t.timers);
            self.close_udp(t.counters);
        }
        let udp_idle = self.udp.as_ref().is_none_or(|udp| udp.queued() == 0);
        self.tcp.open() == 0 && udp_idle
    }
}

/// An event as the trace log shows it: `conn 3 readable writable`.
struct Described<'a>(&'a mio::event::Event);

impl fmt::Display for Described<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let event = self.0;
        match event.token() {
            LISTENER => f.write_str("listener")?,
            UDP => f.write_str("udp")?,
            WAKER => f.write_str("waker")?,
            Token(key) if key >= usize::MAX - 8 => f.write_str("signals")?,
            Token(key) => write!(f, "conn {key}")?,
        }
        for (set, name) in [
            (event.is_readable(), "readable"),
            (event.is_writable(), "writable"),
            (event.is_read_closed(), "read-closed"),
            (event.is_write_closed(), "write-closed"),
            (event.is_error(), "error"),
        ] {
            if set {
                write!(f, " {name}")?;
            }
        }
        Ok(())
    }
}

/// Binds the TCP listener and registers it.
fn bind_tcp(registry: &Registry, addr: SocketAddr) -> Result<(TcpListener, SocketAddr), Error> {
    let bind_error = |source| Error::Bind {
        protocol: "tcp",
        addr,
        source,
    };
    let mut listener = TcpListener::bind(addr).map_err(bind_error)?;
    let bound = listener.local_addr().map_err(bind_error)?;
    warn_if_exposed("tcp", bound);
    registry.register(&mut listener, LISTENER, Interest::READABLE)?;
    Ok((listener, bound))
}

/// Binds the UDP socket and registers it.
fn bind_udp(registry: &Registry, addr: SocketAddr) -> Result<(UdpSocket, SocketAddr), Error> {
    let bind_error = |source| Error::Bind {
        protocol: "udp",
        addr,
        source,
    };
    let mut socket = UdpSocket::bind(addr).map_err(bind_error)?;
    let bound = socket.local_addr().map_err(bind_error)?;
    warn_if_exposed("udp", bound);
    registry.register(&mut socket, UDP, Interest::READABLE)?;
    Ok((socket, bound))
}

/// The defaults bind loopback only; anything else is reachable from the
/// network, which deserves a word in the log.
fn warn_if_exposed(protocol: &str, addr: SocketAddr) {
    if !addr.ip().is_loopback() {
        warn!("{protocol} bound to {addr}, which is not loopback: reachable from the network");
    }
}
