//! A real TCP + UDP peer for your tests: [`TestServer`].
//!
//! It starts ackloop on `127.0.0.1:0` (so parallel tests never clash over
//! ports) on a background thread, records what arrives, lets a test wait
//! for messages with a deadline, and shuts down when dropped. The role
//! Go's `httptest` plays for HTTP, for raw TCP and UDP.
//!
//! # Examples
//!
//! ```
//! use std::io::{Read, Write};
//! use ackloop::testing::TestServer;
//!
//! let server = TestServer::start()?;
//! let mut client = std::net::TcpStream::connect(server.tcp_addr())?; // the code under test
//! client.write_all(b"Hello, Server")?;
//! let mut reply = String::new();
//! client.read_to_string(&mut reply)?;
//! assert_eq!(reply, "Received");
//! assert_eq!(server.wait_for(1)[0].bytes, b"Hello, Server");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::net::SocketAddr;
use std::ops::{Bound, RangeBounds};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[cfg(feature = "scripts")]
use crate::Rule;
use crate::{
    Config, Error, Fault, FixedReply, Handle, Mode, Protocol, Request, Responder, Server, Stats,
};
#[cfg(feature = "journal")]
use crate::{JournalCallback, JournalEvent};

/// How long [`TestServer::wait_for`] waits before it gives up.
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages recorded at most by default; later ones are counted in
/// [`TestServer::unrecorded`] but not kept, so a flood cannot exhaust memory.
pub const DEFAULT_RECORD_LIMIT: usize = 10_000;

/// One message the test server received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// TCP or UDP.
    pub protocol: Protocol,
    /// The sender's address.
    pub peer: SocketAddr,
    /// The message: a line (line mode, without terminator), the first
    /// bytes of a connection (once mode) or a datagram.
    pub bytes: Vec<u8>,
}

/// What the responder wrapper shares with the test.
#[derive(Default)]
struct Record {
    log: Mutex<Log>,
    arrived: Condvar,
}

#[derive(Default)]
struct Log {
    messages: Vec<Message>,
    unrecorded: u64,
    /// Every message, recorded or not: TCP, UDP.
    arrived: [usize; 2],
}

/// What a test expects to have arrived by the time the server is dropped.
#[derive(Debug, Clone)]
struct Expectation {
    /// `None`: messages of both protocols.
    protocol: Option<Protocol>,
    low: Bound<usize>,
    high: Bound<usize>,
}

impl Expectation {
    fn arrived(&self, log: &Log) -> usize {
        match self.protocol {
            Some(Protocol::Tcp) => log.arrived[0],
            Some(Protocol::Udp) => log.arrived[1],
            None => log.arrived[0] + log.arrived[1],
        }
    }

    fn met(&self, log: &Log) -> bool {
        (self.low, self.high).contains(&self.arrived(log))
    }
}

impl std::fmt::Display for Expectation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = |bound: Bound<usize>, below: bool| match bound {
            Bound::Included(n) => Some(n),
            Bound::Excluded(n) if below => Some(n + 1),
            Bound::Excluded(n) => Some(n.saturating_sub(1)),
            Bound::Unbounded => None,
        };
        match (n(self.low, true), n(self.high, false)) {
            (Some(a), Some(b)) if a == b => write!(f, "exactly {a}")?,
            (Some(a), Some(b)) => write!(f, "{a} to {b}")?,
            (Some(a), None) => write!(f, "at least {a}")?,
            (None, Some(b)) => write!(f, "at most {b}")?,
            (None, None) => write!(f, "any number of")?,
        }
        match self.protocol {
            Some(Protocol::Tcp) => f.write_str(" TCP message(s)"),
            Some(Protocol::Udp) => f.write_str(" UDP message(s)"),
            None => f.write_str(" message(s)"),
        }
    }
}

/// Wraps the real responder: records each message, then answers it.
struct Recording {
    inner: Box<dyn Responder + Send>,
    record: Arc<Record>,
    limit: usize,
}

impl Recording {
    /// Records `request`, then (if `answer`) asks the inner responder.
    fn respond_recorded(
        &mut self,
        request: &Request<'_>,
        reply: &mut Vec<u8>,
        answer: bool,
    ) -> bool {
        let mut log = lock(&self.record.log);
        log.arrived[usize::from(request.protocol == Protocol::Udp)] += 1;
        if log.messages.len() < self.limit {
            log.messages.push(Message {
                protocol: request.protocol,
                peer: request.peer,
                bytes: request.message.to_vec(),
            });
        } else {
            log.unrecorded += 1;
        }
        drop(log);
        self.record.arrived.notify_all();
        answer && self.inner.respond(request, reply)
    }
}

impl Responder for Recording {
    fn respond(&mut self, request: &Request<'_>, reply: &mut Vec<u8>) -> bool {
        self.respond_recorded(request, reply, true)
    }

    fn set_reply_text(&mut self, text: &[u8]) -> bool {
        self.inner.set_reply_text(text)
    }

    /// A rule answered: recorded all the same.
    fn answered_by_rule(&mut self, request: &Request<'_>) {
        let mut ignored = Vec::new();
        let _ = self.respond_recorded(request, &mut ignored, false);
    }
}

/// A server on `127.0.0.1:0`, TCP and UDP, running on its own thread until
/// dropped. See the [module docs](self).
pub struct TestServer {
    tcp: SocketAddr,
    udp: SocketAddr,
    /// The control socket's address, when the configuration asked for one.
    control: Option<SocketAddr>,
    handle: Handle,
    thread: Option<JoinHandle<std::io::Result<Stats>>>,
    record: Arc<Record>,
    /// Checked when the server is dropped.
    expectations: Mutex<Vec<Expectation>>,
}

impl std::fmt::Debug for TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer")
            .field("tcp", &self.tcp)
            .field("udp", &self.udp)
            .finish_non_exhaustive()
    }
}

/// Options for a [`TestServer`]: mode, responder, other configuration.
pub struct Builder {
    config: Config,
    responder: Option<Box<dyn Responder + Send>>,
    record_limit: usize,
    #[cfg(feature = "journal")]
    journal: Option<JournalCallback>,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("config", &self.config)
            .field("record_limit", &self.record_limit)
            .finish_non_exhaustive()
    }
}

impl Builder {
    /// TCP framing (once mode by default).
    pub fn mode(mut self, mode: Mode) -> Builder {
        self.config.mode = mode;
        self
    }

    /// Answers with `responder` instead of the fixed reply.
    pub fn responder(mut self, responder: impl Responder + Send + 'static) -> Builder {
        self.responder = Some(Box::new(responder));
        self
    }

    /// Changes any other setting. The addresses stay `127.0.0.1:0` unless
    /// you set them; setting one to `None` turns that protocol off, and its
    /// address accessor then returns `0.0.0.0:0`. An invalid setting makes
    /// [`start`](Builder::start) return [`Error::Config`].
    pub fn configure(mut self, change: impl FnOnce(&mut Config)) -> Builder {
        change(&mut self.config);
        self
    }

    /// Adds a fault, as `--fault` does: `.fault("udp:drop,p=0.1".parse()?)`.
    pub fn fault(mut self, fault: Fault) -> Builder {
        self.config.faults.push(fault);
        self
    }

    #[cfg(feature = "scripts")]
    /// Adds a rule, as `--rule` does: `.rule("exact:ping => pong".parse()?)`.
    /// Messages a rule answers are recorded too.
    pub fn rule(mut self, rule: Rule) -> Builder {
        self.config.rules.push(rule);
        self
    }

    /// Relays `upstream`'s protocol to a real server, as `--upstream`
    /// does: `.upstream("tcp:127.0.0.1:6379".parse()?)`. The clients then
    /// talk to that server through the test server, and faults act on
    /// the relayed bytes. A later upstream for the same protocol replaces
    /// an earlier one. Relayed traffic is answered by the upstream, not by
    /// a responder, so it is not recorded ([`received`](TestServer::received)
    /// stays empty for that protocol); [`stats`](TestServer::stats) counts
    /// it.
    #[cfg(feature = "relay")]
    pub fn upstream(mut self, upstream: crate::Upstream) -> Builder {
        *self.config.upstream_slot(upstream.protocol) = Some(upstream.addr);
        self
    }

    /// Seeds the faults' random choices, as `--seed` does, so a run
    /// replays exactly.
    pub fn seed(mut self, seed: u64) -> Builder {
        self.config.seed = Some(seed);
        self
    }

    /// Keeps at most `limit` messages (default [`DEFAULT_RECORD_LIMIT`]).
    pub fn record_limit(mut self, limit: usize) -> Builder {
        self.record_limit = limit;
        self
    }

    #[cfg(feature = "journal")]
    /// Hands every journal event (each message in, each reply, greeting
    /// and push out) to `callback`, on the server's thread, as
    /// [`Server::on_journal`] does.
    pub fn on_journal(
        mut self,
        callback: impl FnMut(&JournalEvent<'_>) + Send + 'static,
    ) -> Builder {
        self.journal = Some(Box::new(callback));
        self
    }

    /// Binds and starts serving on a background thread.
    ///
    /// # Errors
    ///
    /// As [`Server::bind`]: an invalid configuration or a bind failure.
    pub fn start(self) -> Result<TestServer, Error> {
        let record = Arc::new(Record::default());
        let recording = Recording {
            inner: self
                .responder
                .unwrap_or_else(|| Box::new(FixedReply(self.config.reply.clone()))),
            record: Arc::clone(&record),
            limit: self.record_limit,
        };
        let config = self.config;
        #[cfg(feature = "journal")]
        let journal = self.journal;
        let (bound_tx, bound_rx) = mpsc::channel();
        // The server is built on its thread: the responder need only be Send.
        let thread = std::thread::Builder::new()
            .name("ackloop-test-server".into())
            .spawn(move || {
                let mut server = match Server::with_responder(config, recording) {
                    Ok(server) => server,
                    Err(e) => {
                        let _ = bound_tx.send(Err(e));
                        return Ok(Stats::default());
                    }
                };
                #[cfg(feature = "journal")]
                if let Some(callback) = journal {
                    server.on_journal(callback);
                }
                let bound = (
                    server.tcp_addr(),
                    server.udp_addr(),
                    server.control_addr(),
                    server.handle(),
                );
                let _ = bound_tx.send(Ok(bound));
                server.run()
            })?;
        let (tcp, udp, control, handle) = match bound_rx.recv() {
            Ok(Ok(bound)) => bound,
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(Error::Io(std::io::Error::other("server thread died"))),
        };
        let unbound: SocketAddr = ([0, 0, 0, 0], 0).into();
        Ok(TestServer {
            tcp: tcp.unwrap_or(unbound),
            udp: udp.unwrap_or(unbound),
            control,
            handle,
            thread: Some(thread),
            record,
            expectations: Mutex::new(Vec::new()),
        })
    }
}

impl TestServer {
    /// Starts a server with the defaults: once mode, reply `Received`.
    ///
    /// # Errors
    ///
    /// If the sockets cannot be bound or the thread cannot start.
    pub fn start() -> Result<TestServer, Error> {
        TestServer::builder().start()
    }

    /// Options for a server that differs from the default.
    ///
    /// # Examples
    ///
    /// ```
    /// use ackloop::{Echo, Mode, testing::TestServer};
    /// let server = TestServer::builder().mode(Mode::Line).responder(Echo).start()?;
    /// assert_ne!(server.tcp_addr().port(), 0);
    /// # Ok::<(), ackloop::Error>(())
    /// ```
    pub fn builder() -> Builder {
        Builder {
            config: Config::loopback(),
            responder: None,
            record_limit: DEFAULT_RECORD_LIMIT,
            #[cfg(feature = "journal")]
            journal: None,
        }
    }

    /// The TCP address to connect to.
    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp
    }

    /// The UDP address to send to.
    pub fn udp_addr(&self) -> SocketAddr {
        self.udp
    }

    /// The live control socket's address (port 0 resolved), when the
    /// configuration asked for one (with the `control` feature); `None`
    /// otherwise.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "control")] {
    /// use std::io::{BufRead, BufReader, Write};
    /// use ackloop::testing::TestServer;
    ///
    /// let server = TestServer::builder()
    ///     .configure(|config| config.control = Some("127.0.0.1:0".parse().unwrap()))
    ///     .start()?;
    /// let mut control = std::net::TcpStream::connect(server.control_addr().unwrap())?;
    /// control.write_all(b"fault udp:drop\n")?;
    /// let mut answer = String::new();
    /// BufReader::new(control).read_line(&mut answer)?;
    /// assert_eq!(answer, "ok\n");
    /// # }
    /// assert_eq!(ackloop::testing::TestServer::start()?.control_addr(), None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn control_addr(&self) -> Option<SocketAddr> {
        self.control
    }

    /// A handle to the server: counters, shutdown.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// The server's counters now.
    pub fn stats(&self) -> Stats {
        self.handle.stats()
    }

    /// The messages received so far, in arrival order.
    pub fn received(&self) -> Vec<Message> {
        lock(&self.record.log).messages.clone()
    }

    /// The messages received so far on `protocol`, in arrival order.
    pub fn received_on(&self, protocol: Protocol) -> Vec<Message> {
        self.received_where(|m| m.protocol == protocol)
    }

    /// The messages received so far from `peer`, in arrival order.
    pub fn received_from(&self, peer: SocketAddr) -> Vec<Message> {
        self.received_where(|m| m.peer == peer)
    }

    fn received_where(&self, keep: impl Fn(&Message) -> bool) -> Vec<Message> {
        let log = lock(&self.record.log);
        log.messages.iter().filter(|m| keep(m)).cloned().collect()
    }

    /// Expects `count` messages in all (a number, or a range such as
    /// `2..=5` or `1..`) to have arrived when the server is dropped; if
    /// not, the drop panics with what did arrive. Like wiremock's
    /// `Mock::expect`: a test states what its client must send, and the
    /// check cannot be forgotten.
    ///
    /// # Examples
    ///
    /// ```
    /// use ackloop::{Protocol, testing::TestServer};
    /// let server = TestServer::start()?;
    /// server.expect_messages_on(Protocol::Udp, 1);
    /// let client = std::net::UdpSocket::bind("127.0.0.1:0")?;
    /// client.send_to(b"Hello, Server", server.udp_addr())?;
    /// server.wait_for(1);
    /// drop(server); // Checked here: 1 UDP message arrived, as expected.
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn expect_messages(&self, count: impl IntoCount) {
        self.expect(None, count);
    }

    /// Like [`expect_messages`](TestServer::expect_messages), counting only
    /// the messages of `protocol`.
    pub fn expect_messages_on(&self, protocol: Protocol, count: impl IntoCount) {
        self.expect(Some(protocol), count);
    }

    fn expect(&self, protocol: Option<Protocol>, count: impl IntoCount) {
        let (low, high) = count.bounds();
        let mut expectations = self.expectations.lock().unwrap_or_else(|p| p.into_inner());
        expectations.push(Expectation {
            protocol,
            low,
            high,
        });
    }

    /// Messages that arrived after the record limit was reached.
    pub fn unrecorded(&self) -> u64 {
        lock(&self.record.log).unrecorded
    }

    /// Waits until at least `n` messages arrived, for at most `timeout`
    /// (`Duration::MAX`: no limit), and returns those recorded: all of
    /// them, unless more arrived than the [record
    /// limit](Builder::record_limit) keeps.
    ///
    /// # Errors
    ///
    /// On timeout, `Err` with the messages recorded so far.
    pub fn try_wait_for(&self, n: usize, timeout: Duration) -> Result<Vec<Message>, Vec<Message>> {
        let deadline = Instant::now().checked_add(timeout);
        let mut log = lock(&self.record.log);
        // Messages past the record limit arrived too: count them.
        while (log.messages.len() as u64).saturating_add(log.unrecorded) < n as u64 {
            let left = match deadline {
                Some(deadline) => deadline.saturating_duration_since(Instant::now()),
                None => Duration::MAX, // Too far to name: no limit.
            };
            if left.is_zero() {
                return Err(log.messages.clone());
            }
            log = match self.record.arrived.wait_timeout(log, left) {
                Ok((log, _)) => log,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        Ok(log.messages.clone())
    }

    /// Waits until at least `n` messages arrived and returns those
    /// recorded (all of them, within the record limit).
    ///
    /// # Panics
    ///
    /// If they have not arrived within [`WAIT_TIMEOUT`]; the message says
    /// what did arrive.
    #[track_caller]
    pub fn wait_for(&self, n: usize) -> Vec<Message> {
        match self.try_wait_for(n, WAIT_TIMEOUT) {
            Ok(messages) => messages,
            Err(arrived) => panic!(
                "waited {WAIT_TIMEOUT:?} for {n} message(s); {} arrived: {arrived:?}",
                arrived.len()
            ),
        }
    }
}

impl Drop for TestServer {
    /// Shuts the server down, joins its thread, then checks the
    /// expectations; a failed one panics (unless the test already is).
    fn drop(&mut self) {
        self.handle.shutdown();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let expectations = self
            .expectations
            .get_mut()
            .unwrap_or_else(|p| p.into_inner());
        let log = lock(&self.record.log);
        let failed: Vec<String> = expectations
            .iter()
            .filter(|e| !e.met(&log))
            .map(|e| format!("expected {e}, {} arrived", e.arrived(&log)))
            .collect();
        if !failed.is_empty() && !std::thread::panicking() {
            let arrived: Vec<String> = (log.messages.iter())
                .map(|m| {
                    let text = String::from_utf8_lossy(&m.bytes);
                    format!("{:?} from {}: {text:?}", m.protocol, m.peer)
                })
                .collect();
            panic!(
                "TestServer: {}; what arrived ({} more unrecorded): [{}]",
                failed.join("; "),
                log.unrecorded,
                arrived.join(", ")
            );
        }
    }
}

/// A count of messages for [`TestServer::expect_messages`]: a number or
/// a range of `usize`.
pub trait IntoCount {
    /// The lower and upper bounds.
    fn bounds(&self) -> (Bound<usize>, Bound<usize>);
}

impl IntoCount for usize {
    fn bounds(&self) -> (Bound<usize>, Bound<usize>) {
        (Bound::Included(*self), Bound::Included(*self))
    }
}

macro_rules! range_counts {
    ($($range:ty),*) => {$(
        impl IntoCount for $range {
            fn bounds(&self) -> (Bound<usize>, Bound<usize>) {
                (self.start_bound().cloned(), self.end_bound().cloned())
            }
        }
    )*};
}

range_counts!(
    std::ops::Range<usize>,
    std::ops::RangeInclusive<usize>,
    std::ops::RangeFrom<usize>,
    std::ops::RangeTo<usize>,
    std::ops::RangeToInclusive<usize>
);

/// Locks the log; a panic elsewhere while holding it leaves the data usable.
fn lock(log: &Mutex<Log>) -> MutexGuard<'_, Log> {
    log.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
