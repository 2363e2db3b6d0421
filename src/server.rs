//! The loop: bind, then turn after turn, poll and dispatch.
//!
//! One turn is: poll (sleeping no longer than the nearest deadline, or not
//! at all while some source is still ready), hand every event to the
//! handler its token names, serve the sources left still ready last turn,
//! handle the deadlines that came due, and free the slab keys of
//! connections closed during the turn. The loop only dispatches: the
//! [`listener`](crate::listener) accepts and hands each stream to its job,
//! [`tcp`](crate::tcp) serves, [`relay`](crate::relay) relays (its pairs'
//! and flows' events reach it directly), [`udp`](crate::udp) answers
//! datagrams, [`control`](crate::control) takes commands. Every deadline
//! (a connection's or pair's idle, linger or fault step, a flow's idle
//! timeout, the UDP delays, an accept retry, a control wait, the shutdown
//! grace) is an
//! entry of one timer heap, so the nearest one is the poll's timeout.

use std::cell::RefCell;
use std::fmt;
use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use log::{info, trace};
use mio::{Events, Poll, Waker};

use crate::bind::{bind_tcp, bind_udp, reserve_tcp};
use crate::config::Config;
use crate::config::Mode;
use crate::control;
use crate::error::Error;
use crate::fault::{self, Fault, Faults};
use crate::handle::{Handle, InTurn, Shared};
use crate::journal::Journal;
#[cfg(feature = "journal")]
use crate::journal::JournalEvent;
use crate::listener::Listener;
use crate::relay;
use crate::reply::{FixedReply, Pattern, Replies, Responder, Scripted};
use crate::stats::Stats;
use crate::tcp::{RESERVED_CONNECTIONS, Tcp};
use crate::timer::{Clock, Millis, SWEEP_SLACK, Timers};
use crate::turn::{Described, LISTENER, Readiness, Ready, Turn, WAKER};
use crate::udp::Udp;
use crate::vocab::Protocol;
use sources::Sources;

// `AsFd`/`AsRawFd` for a host's own loop. mio's poll is one descriptor
// (epoll, kqueue) on these platforms only: the condition is mio's own for
// `Poll: AsRawFd`. Elsewhere (mio's poll(2) fallback, forced or not) it has
// no single descriptor to give.
#[cfg(all(
    unix,
    not(mio_unsupported_force_poll_poll),
    not(any(
        target_os = "aix",
        target_os = "espidf",
        target_os = "nuttx",
        target_os = "fuchsia",
        target_os = "haiku",
        target_os = "hermit",
        target_os = "hurd",
        target_os = "nto",
        target_os = "vita",
        target_os = "cygwin",
        target_os = "horizon"
    )),
))]
mod host;
#[cfg(feature = "api")]
mod proxies;
mod sources;
mod tcp_side;
#[cfg(test)]
mod tests;

/// How soon a turn comes back to journal lines a slow reader (a full
/// pipe) has not taken, in milliseconds.
const JOURNAL_RETRY_MS: u64 = 10;
/// Events taken from the kernel per poll; more simply wait a turn (and a
/// host polling the server's descriptor finds it still readable).
const EVENTS_PER_POLL: usize = 1024;
/// Room on the still-ready lists before they grow (they hold one entry
/// per source cut short by its budget in one turn).
const READY_CAPACITY: usize = 256;
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
    control_addr: Option<SocketAddr>,
    api_addr: Option<SocketAddr>,
    replies: Replies,
    buf: Box<[u8]>,
    /// The UDP sockets' one batch, made on first use (see [`Turn::batch`]).
    batch: Option<crate::udp::batch::Batch>,
    clock: Clock,
    /// Every deadline: connections' and pairs', flows', the UDP delays,
    /// the accept retries, control waits, the shutdown grace.
    timers: Timers,
    /// Sources still ready from the last turn, served this turn.
    ready: Vec<Ready>,
    /// Sources found still ready during this turn.
    ready_next: Vec<Ready>,
    /// The faults in force.
    faults: Faults,
    /// The journal (`--journal`, or a callback), written once a turn.
    journal: Option<RefCell<Journal>>,
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
        Server::build(config, None)
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
        Server::build(config, Some(Box::new(responder)))
    }

    /// Validates `config`, then binds and registers everything.
    fn build(
        config: Config,
        responder: Option<Box<dyn Responder + Send>>,
    ) -> Result<Server, Error> {
        config.validate().map_err(Error::Config)?;
        // Before anything is bound: a journal that cannot be opened is
        // a start-up error.
        let journal = open_journal(&config)?;
        // Rules, `match=` faults and the journal need each message whole:
        // the responder path, with the fixed reply as the responder.
        let rules = config.starting_rules();
        let needs_messages = !rules.is_empty()
            || journal.is_some()
            || config.faults.iter().any(|f| f.select.matches.is_some());
        let responder = match responder {
            None if needs_messages => Some(Box::new(FixedReply(config.reply.clone())) as _),
            responder => responder,
        };
        let replies = match responder {
            Some(responder) => Replies::Custom {
                responder: Scripted::new(rules, responder),
                scratch: Vec::new(),
            },
            None => Replies::Fixed(Pattern::new(
                &config.reply,
                config.mode == Mode::Line,
                config.max_owed,
            )),
        };
        // Before anything is bound: a bad config file is a start-up error.
        #[cfg(feature = "api")]
        let config_text = proxies::read_config_file(config.config_file.as_deref())?;
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let mut reserved = None;
        let (listener, tcp_addr) = match config.tcp {
            // Refused from the start: the port, bound, waits for `accept`.
            Some(addr) if config.refuse => {
                let (socket, bound) = reserve_tcp(addr, config.reuse_port)?;
                reserved = Some((socket, bound));
                (None, Some(bound))
            }
            Some(addr) => {
                let reuse = config.reuse_port;
                let (listener, bound) = bind_tcp(poll.registry(), addr, reuse, LISTENER, "tcp")?;
                (Some((listener, bound)), Some(bound))
            }
            None => (None, None),
        };
        let fixed_reply = matches!(replies, Replies::Fixed(_));
        let (udp, udp_addr) = match config.udp {
            Some(addr) => {
                let (socket, bound) = bind_udp(poll.registry(), addr, config.reuse_port)?;
                (Some(Udp::new(socket, fixed_reply, &config)), Some(bound))
            }
            None => (None, None),
        };
        let (control, control_addr) = control::from_config(poll.registry(), &config)?;
        let (api, api_addr) = proxies::bind_api(&poll, config.api)?;
        #[cfg(not(feature = "api"))]
        let () = api;
        let relayed = [Protocol::Tcp, Protocol::Udp].map(|p| config.relaying(p));
        let faults = Faults::relaying(
            config.seed.unwrap_or_else(fault::random_seed),
            &config.faults,
            relayed,
        );
        if !config.faults.is_empty() {
            let specs: Vec<String> = config.faults.iter().map(ToString::to_string).collect();
            // The seed only when it decides something: a log never says
            // "random" of faults that make no random choice.
            let how = match (config.faults.iter().any(Fault::is_random), config.seed) {
                (false, _) => String::new(),
                (true, Some(seed)) => format!("; seed {seed}"),
                (true, None) => format!("; seed {} (random: replay with --seed)", faults.seed()),
            };
            info!("faults {}{how}", specs.join(" "));
        }
        let mut listener = Listener::new(
            listener,
            LISTENER,
            config.reuse_port,
            config.max_connections,
        );
        if let Some((socket, bound)) = reserved {
            listener.start_refused(socket, bound);
        }
        #[cfg(feature = "api")]
        let seed = faults.seed();
        #[cfg_attr(not(feature = "api"), allow(unused_mut))]
        let mut server = Server {
            poll,
            events: Events::with_capacity(EVENTS_PER_POLL),
            sources: Sources {
                listener,
                tcp: Tcp::new(&config),
                relay: relay::pairs_for(&config),
                flows: relay::flows_for(&config, udp.is_some()),
                udp,
                control,
                #[cfg(feature = "api")]
                api,
                #[cfg(feature = "api")]
                proxies: crate::api::Registry::new(&config, seed),
                stopping: false,
                #[cfg(all(feature = "signals", unix))]
                signals: None,
            },
            tcp_addr,
            udp_addr,
            control_addr,
            api_addr,
            replies,
            // The one read buffer, shared by every connection and the UDP
            // socket: bytes are handled before the next read, so nobody
            // needs their own.
            buf: vec![0; config.read_buffer].into_boxed_slice(),
            batch: None,
            clock: Clock::new(),
            // Room for an entry per connection and the sweep threshold,
            // reserved as the connection table is (see RESERVED_CONNECTIONS).
            timers: Timers::with_capacity(
                config.max_connections.min(RESERVED_CONNECTIONS) + 2 * SWEEP_SLACK,
            ),
            ready: Vec::with_capacity(READY_CAPACITY),
            ready_next: Vec::with_capacity(READY_CAPACITY),
            faults,
            journal,
            shared: Arc::new(Shared {
                waker,
                stop_requested: AtomicBool::new(false),
                counters: Default::default(),
                changes: Default::default(),
            }),
            status: Status::Running,
        };
        #[cfg(feature = "api")]
        if let (Some(path), Some(text)) = (&config.config_file, config_text) {
            (server.load_proxies(&text))
                .map_err(|why| Error::Config(format!("--config {}: {why}", path.display())))?;
        }
        Ok(server)
    }

    /// The bound TCP address (port 0 resolved), or `None` without TCP.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// The bound UDP address (port 0 resolved), or `None` without UDP.
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp_addr
    }

    /// The bound control address (`--control`, port 0 resolved), or `None`.
    pub fn control_addr(&self) -> Option<SocketAddr> {
        self.control_addr
    }

    /// The bound API address (`--api`, port 0 resolved), or `None`.
    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.api_addr
    }

    /// A handle for other threads: request shutdown, read counters, make
    /// the changes live control makes.
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
    /// closes everything at once. Unix only.
    ///
    /// # Errors
    ///
    /// If the signal handlers cannot be installed or registered.
    #[cfg(all(feature = "signals", unix))]
    pub fn watch_signals(&mut self) -> io::Result<()> {
        use crate::turn::SIGNALS;
        use signal_hook_mio::v1_0::Signals;
        let mut signals = Signals::new([libc::SIGINT, libc::SIGTERM])?;
        self.poll
            .registry()
            .register(&mut signals, SIGNALS, mio::Interest::READABLE)?;
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
        self.handle().shutdown();
    }

    /// How long until the server next needs a turn with nothing happening
    /// on its sockets: zero while a source is still ready, and zero for
    /// good once the server is [stopped](Status::Stopped) (a turn then
    /// returns at once); else the time to the nearest deadline (idle
    /// timeout, lingering close, a fault's delay, accept retry, a control
    /// `received`, shutdown grace), or `None` when only socket events can
    /// give it work.
    ///
    /// A host driving the server calls [`turn`](Server::turn) no later than
    /// this, the way smoltcp's `poll_delay` pairs with its `poll`. A host
    /// that waits on the server's descriptor must not wait at all while
    /// this is zero: work left on the still-ready list makes no descriptor
    /// readable (see [nesting in a host's loop](crate#nesting-in-a-hosts-loop)).
    pub fn poll_delay(&self) -> Option<Duration> {
        if self.status == Status::Stopped || !self.ready.is_empty() {
            return Some(Duration::ZERO);
        }
        // Journal lines a slow reader has not taken yet: try again soon.
        let journal_waits = (self.journal.as_ref()).is_some_and(|j| j.borrow().has_pending());
        let retry = journal_waits.then_some(Duration::from_millis(JOURNAL_RETRY_MS));
        let next = self
            .timers
            .next_at()
            .map(|at| Clock::until(self.clock.now(), at));
        match (next, retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    #[cfg(feature = "journal")]
    /// Calls `callback` with every journal event from now on: each
    /// message, reply, greeting, push and relayed chunk, as `--journal`
    /// writes them
    /// (with or without a journal file). Messages reach the server's
    /// responder path whole from then on, as with a rule.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use std::io::Write;
    ///
    /// let mut server = ackloop::Server::bind(ackloop::Config::loopback())?;
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let log = Arc::clone(&seen);
    /// server.on_journal(move |event| log.lock().unwrap().push(event.bytes.to_vec()));
    /// let mut client = std::net::TcpStream::connect(server.tcp_addr().unwrap())?;
    /// client.write_all(b"ping")?;
    /// while seen.lock().unwrap().len() < 2 {
    ///     server.turn(Some(std::time::Duration::from_millis(10)))?;
    /// }
    /// assert_eq!(*seen.lock().unwrap(), [&b"ping"[..], b"Received"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn on_journal(&mut self, callback: impl FnMut(&JournalEvent<'_>) + Send + 'static) {
        let callback = Box::new(callback);
        match &mut self.journal {
            Some(journal) => journal.get_mut().set_callback(callback),
            None => self.journal = Some(RefCell::new(Journal::to_callback(callback))),
        }
        self.sources.tcp.switch_to_responder(&mut self.replies);
    }

    /// Runs one turn: waits for events for at most `timeout` (`None`: as
    /// long as needed), but never past the server's own next deadline, then
    /// handles everything that is ready. With `Some(Duration::ZERO)` it
    /// never blocks: the call for a host that waits elsewhere.
    ///
    /// # Errors
    ///
    /// Only if polling itself fails.
    pub fn turn(&mut self, timeout: Option<Duration>) -> io::Result<Status> {
        if self.status == Status::Stopped {
            return Ok(Status::Stopped);
        }
        // A handle used during the turn (by a responder) must not wait for it.
        let _in_turn = InTurn::enter(&self.shared);
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
        let Lent {
            mut t,
            sources,
            events,
            ready,
            shared,
        } = self.lend();
        for event in events.iter() {
            trace!("event {}", Described(event));
            sources.dispatch(event.token(), Readiness::of(event), shared, &mut t);
        }
        for still_ready in ready.drain(..) {
            sources.serve_again(still_ready, &mut t);
        }
        while let Some(entry) = t.timers.pop_due(t.now) {
            sources.on_due(entry.due, entry.at, &mut t);
        }
        sources.end_turn(&mut t);
        if let Some(journal) = &mut self.journal {
            let journal = journal.get_mut();
            journal.flush();
            let lost = &self.shared.counters.journal_lost;
            lost.store(journal.lost(), std::sync::atomic::Ordering::Relaxed);
        }
        std::mem::swap(&mut self.ready, &mut self.ready_next);
        if self.sources.stopping && self.sources.is_idle() {
            self.status = Status::Stopped;
            self.shared.stop_taking_changes();
            info!("ackloop stopped: {}", self.stats());
        }
        Ok(self.status)
    }
}

/// A turn's context, lent from the server's parts, with the parts it is
/// lent apart from: the sources it serves, the events polled, the sources
/// left still ready last turn, what other threads share.
struct Lent<'a> {
    t: Turn<'a>,
    sources: &'a mut Sources,
    events: &'a Events,
    ready: &'a mut Vec<Ready>,
    shared: &'a Shared,
}

impl Server {
    /// The one way a turn's context is made: for a turn, and for the
    /// proxies a config file creates before the first.
    fn lend(&mut self) -> Lent<'_> {
        let Server {
            poll,
            events,
            sources,
            replies,
            buf,
            batch,
            clock,
            timers,
            ready,
            ready_next,
            faults,
            journal,
            shared,
            ..
        } = self;
        let t = Turn {
            registry: poll.registry(),
            now: clock.now(),
            buf,
            batch,
            replies,
            counters: &shared.counters,
            timers,
            ready: ready_next,
            faults,
            journal: journal.as_ref(),
        };
        Lent {
            t,
            sources,
            events,
            ready,
            shared,
        }
    }
}

/// The journal `config` asks for (`--journal`), opened; `None` for none.
#[cfg(feature = "journal")]
fn open_journal(config: &Config) -> Result<Option<RefCell<Journal>>, Error> {
    let Some(target) = &config.journal else {
        return Ok(None);
    };
    let sink = crate::journal::open(target).map_err(|source| Error::Journal {
        target: target.to_string(),
        source,
    })?;
    let name = target.to_string();
    Ok(Some(RefCell::new(Journal::to_writer(sink, name))))
}

/// No journal without the `journal` feature.
#[cfg(not(feature = "journal"))]
fn open_journal(_: &Config) -> Result<Option<RefCell<Journal>>, Error> {
    Ok(None)
}

/// Without the `api` feature, `Config::validate` refuses `--api`.
#[cfg(not(feature = "api"))]
mod proxies {
    use super::{Error, Poll, SocketAddr};

    pub(super) fn bind_api(
        _: &Poll,
        _: Option<SocketAddr>,
    ) -> Result<((), Option<SocketAddr>), Error> {
        Ok(((), None))
    }
}

impl Drop for Server {
    /// A [`Handle`] outlives its server: its calls fail at once from now
    /// on, and those waiting are answered, rather than waiting out
    /// [`CHANGE_TIMEOUT`](crate::CHANGE_TIMEOUT).
    fn drop(&mut self) {
        self.shared.stop_taking_changes();
    }
}
