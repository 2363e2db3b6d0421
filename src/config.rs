//! What the server is told: addresses, framing mode, reply text and limits.
//!
//! Every bound the server keeps is either a field here (set by the user) or a
//! documented constant below (fixed, because no user should need to move it).

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use crate::fault::{Fault, MAX_FAULTS};
#[cfg(feature = "journal")]
use crate::journal::JournalTarget;
#[cfg(feature = "scripts")]
use crate::rules::MAX_RULES;
use crate::rules::Rule;
#[cfg(feature = "relay")]
use crate::vocab::Upstream;
use crate::vocab::{Protocol, check_reply_len};

/// Default TCP and UDP address: loopback, port 8000, as in the article.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8000";
/// Default reply text.
pub const DEFAULT_REPLY: &str = "Received";
pub use crate::vocab::MAX_REPLY_LEN;
/// Default for [`Config::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default for [`Config::idle_timeout`], in seconds.
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 60;
/// Longest idle timeout accepted (about 24 days). Deadlines are kept in
/// milliseconds since the server started; this keeps them far from overflow.
pub const MAX_IDLE_TIMEOUT_SECS: u64 = 2_000_000;
/// Default for [`Config::max_line`].
pub const DEFAULT_MAX_LINE: usize = 64 * 1024;
/// Default for [`Config::read_buffer`]: 64 KiB, so the largest UDP payload
/// (65,507 bytes) is read whole.
pub const DEFAULT_READ_BUFFER: usize = 64 * 1024;
/// Smallest and largest [`Config::read_buffer`].
pub const READ_BUFFER_RANGE: (usize, usize) = (512, 1024 * 1024);
/// Default for [`Config::max_owed`].
pub const DEFAULT_MAX_OWED: usize = 64 * 1024;
/// Largest [`Config::max_owed`] (the smallest is 1).
pub const MAX_MAX_OWED: usize = 16 * 1024 * 1024;
/// Default for [`Config::udp_queue_len`].
pub const DEFAULT_UDP_QUEUE_LEN: usize = 1024;
/// Largest [`Config::udp_queue_len`] (the smallest is 1).
pub const MAX_UDP_QUEUE_LEN: usize = 1 << 20;
/// Default for [`Config::udp_queue_bytes`]: with custom replies up to
/// 64 KiB each, the count alone would not bound the memory.
pub const DEFAULT_UDP_QUEUE_BYTES: usize = 256 * 1024;
/// Smallest [`Config::udp_queue_bytes`]: one reply of the longest reply
/// text fits.
pub const MIN_UDP_QUEUE_BYTES: usize = MAX_REPLY_LEN;
/// Largest [`Config::udp_queue_bytes`].
pub const MAX_UDP_QUEUE_BYTES: usize = 64 * 1024 * 1024;
#[cfg(feature = "relay")]
/// Default for [`Config::connect_timeout`], in seconds.
pub const DEFAULT_CONNECT_TIMEOUT_SECS: u64 = 5;
#[cfg(feature = "relay")]
/// Default for [`Config::flow_timeout`], in seconds.
pub const DEFAULT_FLOW_TIMEOUT_SECS: u64 = 30;
#[cfg(feature = "relay")]
/// Default for [`Config::max_flows`].
pub const DEFAULT_MAX_FLOWS: usize = 1024;
#[cfg(feature = "relay")]
/// Largest [`Config::max_flows`]: each flow is a socket, a descriptor.
pub const MAX_MAX_FLOWS: usize = 1 << 20;
#[cfg(feature = "relay")]
/// Default for [`Config::max_delayed`]: a 1 MiB body through a 600 ms
/// delay arrives in 0.6 s plus its transfer time, not 10 s.
pub const DEFAULT_MAX_DELAYED: usize = 4 * 1024 * 1024;
#[cfg(feature = "relay")]
/// Smallest and largest [`Config::max_delayed`]: 64 KiB (the default
/// `--max-owed`) to 256 MiB.
pub const MAX_DELAYED_RANGE: (usize, usize) = (64 * 1024, 256 * 1024 * 1024);
/// Largest `--max-line`: 16 MiB. With a custom [`Responder`](crate::Responder)
/// each connection may buffer one partial line, so this bounds that buffer.
pub const MAX_MAX_LINE: usize = 16 * 1024 * 1024;

/// How TCP bytes are turned into replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// The article's server: reply once to the first bytes, then close.
    #[default]
    Once,
    /// A persistent connection: one reply line per `\n`-terminated line.
    Line,
}

impl std::str::FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "once" => Ok(Mode::Once),
            "line" => Ok(Mode::Line),
            _ => Err(format!("unknown mode '{s}' (expected once or line)")),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Once => "once",
            Mode::Line => "line",
        })
    }
}

/// Everything the server needs to know before it binds.
///
/// `Config::default()` is the command line's default: TCP and UDP on
/// `127.0.0.1:8000`, once mode, reply `Received`.
///
/// # Examples
///
/// ```
/// let mut config = ackloop::Config::default();
/// config.tcp = Some("127.0.0.1:0".parse()?);
/// config.udp = None; // TCP only
/// config.mode = ackloop::Mode::Line;
/// assert!(config.validate().is_ok());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Config {
    /// TCP listen address, or `None` for no TCP. Port 0 picks a free port.
    pub tcp: Option<SocketAddr>,
    /// UDP bind address, or `None` for no UDP. Port 0 picks a free port.
    pub udp: Option<SocketAddr>,
    /// TCP framing.
    pub mode: Mode,
    /// The fixed reply: 1 to [`MAX_REPLY_LEN`] bytes. In line mode a `\n`
    /// follows it. Ignored by a server built with a custom responder.
    pub reply: Vec<u8>,
    /// Live TCP connections at most; a client over the limit is accepted
    /// and closed at once, counted as rejected.
    pub max_connections: usize,
    /// Close a TCP connection that moved no bytes, in or out, for this
    /// long; `None` never closes an idle connection. Kept in whole
    /// milliseconds (a fraction of one is cut off), so under 1 ms is an
    /// error rather than a timeout of 0.
    pub idle_timeout: Option<Duration>,
    /// Longest line in line mode, terminator excluded; a longer line closes
    /// its connection after the replies owed for the lines before it.
    pub max_line: usize,
    /// Faults to inject into the replies, in order (none by default).
    pub faults: Vec<Fault>,
    /// The seed of every random choice the faults make; `None` picks one
    /// at random and logs it, so that a run can be replayed.
    pub seed: Option<u64>,
    #[cfg(feature = "control")]
    /// The live control socket's address (loopback only), or `None` for
    /// none. Port 0 picks a free port.
    pub control: Option<SocketAddr>,
    /// The toxiproxy HTTP API's address (SPEC 14), or `None` for none.
    /// Port 0 picks a free port. Needs the `api` feature.
    pub api: Option<SocketAddr>,
    /// toxiproxy's config file (`--config`): a JSON array of proxies, as
    /// its `POST /populate` takes, created at start-up as named endpoints.
    /// Needs the `api` feature.
    pub config_file: Option<std::path::PathBuf>,
    /// Sets `SO_REUSEPORT` on the TCP listener and the UDP socket before
    /// binding, so that several processes can share one address and the
    /// kernel spreads clients over them (Unix only).
    pub reuse_port: bool,
    /// The one read buffer shared by every data socket, in bytes (control
    /// connections read their short lines 4 KiB at a time). Smaller saves
    /// memory on a small host: TCP input is read in more pieces, and a
    /// custom responder sees at most this much of a datagram or of once
    /// mode's first bytes (a datagram is still counted at its real length).
    pub read_buffer: usize,
    /// A connection owing this many reply bytes takes no more lines and is
    /// not read until they drain (backpressure). On a relay, the bytes a
    /// direction holds for its receiver, in memory or (Linux, bulk) in
    /// its kernel pipe.
    pub max_owed: usize,
    /// UDP datagrams waiting, at most: replies the socket cannot take yet
    /// and datagrams a `delay` holds back, on a relay either way, all
    /// together; past it they are dropped and counted.
    pub udp_queue_len: usize,
    /// Bytes of UDP datagrams waiting (as for `udp_queue_len`), at most.
    pub udp_queue_bytes: usize,
    #[cfg(feature = "scripts")]
    /// Scripted replies, tried in order before the reply text; the first
    /// that matches a message answers it (none by default).
    pub rules: Vec<Rule>,
    #[cfg(feature = "scripts")]
    /// Sent on every accepted TCP connection before anything else (1 to
    /// [`MAX_REPLY_LEN`] bytes, no `\n` added); `None` for none.
    pub greeting: Option<Vec<u8>>,
    #[cfg(feature = "journal")]
    /// Where the journal of every message and reply goes; `None` for no
    /// journal (and no cost).
    pub journal: Option<JournalTarget>,
    #[cfg(feature = "relay")]
    /// Relay TCP clients to this server instead of answering them
    /// (section 11); set with [`Config::add_upstream`].
    pub upstream_tcp: Option<SocketAddr>,
    #[cfg(feature = "relay")]
    /// Relay UDP datagrams to this server instead of answering them.
    pub upstream_udp: Option<SocketAddr>,
    #[cfg(feature = "relay")]
    /// A TCP upstream that has not accepted the connect this long fails:
    /// the client is reset. Whole seconds, at least one.
    pub connect_timeout: Duration,
    #[cfg(feature = "relay")]
    /// Close a UDP flow with no datagram either way for this long; `None`
    /// never closes one (`--max-flows` still bounds them). Kept in whole
    /// milliseconds, as [`idle_timeout`](Config::idle_timeout) is: under
    /// 1 ms is an error.
    pub flow_timeout: Option<Duration>,
    #[cfg(feature = "relay")]
    /// UDP flows (client sources relayed) at most; a datagram from a new
    /// source past it is dropped and counted.
    pub max_flows: usize,
    #[cfg(feature = "relay")]
    /// What a relayed TCP direction whose bytes wait for a `delay` (stream
    /// mode) holds at most, bookkeeping included, in place of
    /// [`max_owed`](Config::max_owed) (the larger of the two): a delay is
    /// latency, and the direction keeps reading while its bytes wait.
    /// Per direction, so a pair holds at most twice this.
    pub max_delayed: usize,
    /// Start with TCP refusing, as a script's `refuse` says: the port is
    /// bound (and announced) but not listening, so clients get
    /// "connection refused" until `accept` (a control line, or
    /// [`Handle::accept`](crate::Handle::accept)) opens it: a test's
    /// client can start before its server.
    pub refuse: bool,
}

impl Default for Config {
    fn default() -> Config {
        let addr: SocketAddr = DEFAULT_ADDR.parse().expect("default address parses");
        Config {
            tcp: Some(addr),
            udp: Some(addr),
            mode: Mode::Once,
            reply: DEFAULT_REPLY.as_bytes().to_vec(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout: Some(Duration::from_secs(DEFAULT_IDLE_TIMEOUT_SECS)),
            max_line: DEFAULT_MAX_LINE,
            faults: Vec::new(),
            seed: None,
            #[cfg(feature = "control")]
            control: None,
            api: None,
            config_file: None,
            reuse_port: false,
            read_buffer: DEFAULT_READ_BUFFER,
            max_owed: DEFAULT_MAX_OWED,
            udp_queue_len: DEFAULT_UDP_QUEUE_LEN,
            udp_queue_bytes: DEFAULT_UDP_QUEUE_BYTES,
            #[cfg(feature = "scripts")]
            rules: Vec::new(),
            #[cfg(feature = "scripts")]
            greeting: None,
            #[cfg(feature = "journal")]
            journal: None,
            #[cfg(feature = "relay")]
            upstream_tcp: None,
            #[cfg(feature = "relay")]
            upstream_udp: None,
            #[cfg(feature = "relay")]
            connect_timeout: Duration::from_secs(DEFAULT_CONNECT_TIMEOUT_SECS),
            #[cfg(feature = "relay")]
            flow_timeout: Some(Duration::from_secs(DEFAULT_FLOW_TIMEOUT_SECS)),
            #[cfg(feature = "relay")]
            max_flows: DEFAULT_MAX_FLOWS,
            #[cfg(feature = "relay")]
            max_delayed: DEFAULT_MAX_DELAYED,
            refuse: false,
        }
    }
}

impl Config {
    /// A configuration for tests: TCP and UDP on `127.0.0.1:0`, so the
    /// operating system picks free ports and parallel tests never clash.
    pub fn loopback() -> Config {
        let any_port: SocketAddr = "127.0.0.1:0".parse().expect("loopback parses");
        Config {
            tcp: Some(any_port),
            udp: Some(any_port),
            ..Config::default()
        }
    }

    /// Checks the values against the limits above.
    ///
    /// # Errors
    ///
    /// A one-line message naming the offending option, in command line
    /// terms (`--reply`, `--max-line`, ...).
    pub fn validate(&self) -> Result<(), String> {
        if self.tcp.is_none() && self.udp.is_none() {
            return Err("--no-tcp and --no-udp: at least one protocol must be on".into());
        }
        check_reply_len("--reply", &self.reply, false)?;
        if self.max_connections == 0 {
            return Err("--max-connections: must be at least 1".into());
        }
        check_timeout("--idle-timeout", self.idle_timeout)?;
        if self.max_line == 0 || self.max_line > MAX_MAX_LINE {
            return Err(format!("--max-line: must be 1 to {MAX_MAX_LINE} bytes"));
        }
        let (min_buf, max_buf) = READ_BUFFER_RANGE;
        for (option, value, low, high) in [
            ("--read-buffer", self.read_buffer, min_buf, max_buf),
            ("--max-owed", self.max_owed, 1, MAX_MAX_OWED),
            ("--udp-queue-len", self.udp_queue_len, 1, MAX_UDP_QUEUE_LEN),
            (
                "--udp-queue-bytes",
                self.udp_queue_bytes,
                MIN_UDP_QUEUE_BYTES,
                MAX_UDP_QUEUE_BYTES,
            ),
        ] {
            if !(low..=high).contains(&value) {
                return Err(format!("{option}: must be {low} to {high}, got {value}"));
            }
        }
        #[cfg(feature = "control")]
        if let Some(addr) = self.control {
            if !addr.ip().is_loopback() {
                return Err(format!(
                    "--control: {addr} is not a loopback address (control is local only)"
                ));
            }
        }
        if self.api.is_some() && !cfg!(feature = "api") {
            return Err("--api: this build has no API (the `api` feature is off)".into());
        }
        if self.config_file.is_some() && !cfg!(feature = "api") {
            return Err("--config: this build has no endpoints (the `api` feature is off)".into());
        }
        #[cfg(feature = "scripts")]
        self.validate_scripts()?;
        if self.refuse && self.tcp.is_none() {
            return Err("refuse: TCP is off (--no-tcp)".into());
        }
        if self.faults.len() > MAX_FAULTS {
            return Err(format!(
                "--fault: {} faults, at most {MAX_FAULTS}",
                self.faults.len()
            ));
        }
        // A fault's own message, in command line terms.
        let flag = |e: String| format!("--{e}");
        self.faults
            .iter()
            .try_for_each(|fault| fault.validate().map_err(flag))?;
        // `dir=` and `match=` as the relaying (or its absence) allows.
        for fault in &self.faults {
            let relaying = |p| self.relaying(p);
            crate::fault::check_direction(fault, relaying).map_err(flag)?;
        }
        #[cfg(feature = "relay")]
        self.validate_relay()?;
        Ok(())
    }

    /// The scripted replies' checks: a greeting for TCP served here, of
    /// a reply's length; rules of their own limits, at most
    /// [`MAX_RULES`].
    #[cfg(feature = "scripts")]
    fn validate_scripts(&self) -> Result<(), String> {
        if let Some(greeting) = &self.greeting {
            if self.tcp.is_none() {
                return Err("--greeting: greets TCP connections, and TCP is off (--no-tcp)".into());
            }
            #[cfg(feature = "relay")]
            if let Some(upstream) = self.upstream_tcp {
                return Err(format!(
                    "--greeting: TCP is relayed to {upstream} (--upstream), which greets its clients"
                ));
            }
            check_reply_len("--greeting", greeting, false)?;
        }
        if self.rules.len() > MAX_RULES {
            return Err(format!("--rule: at most {MAX_RULES} rules"));
        }
        // A rule's own message, in command line terms.
        let flag = |e: String| format!("--{e}");
        self.rules
            .iter()
            .try_for_each(|rule| rule.validate().map_err(flag))
    }

    /// The rules replies start with (none without the `scripts` feature).
    pub(crate) fn starting_rules(&self) -> Vec<Rule> {
        #[cfg(feature = "scripts")]
        return self.rules.clone();
        #[cfg(not(feature = "scripts"))]
        Vec::new()
    }

    /// The greeting TCP connections get first, if any.
    pub(crate) fn tcp_greeting(&self) -> Option<Vec<u8>> {
        #[cfg(feature = "scripts")]
        return self.greeting.clone();
        #[cfg(not(feature = "scripts"))]
        None
    }

    #[cfg(feature = "relay")]
    /// Relays `upstream`'s protocol to it.
    ///
    /// # Errors
    ///
    /// That protocol has an upstream already, or the address is port 0.
    pub fn add_upstream(&mut self, upstream: Upstream) -> Result<(), String> {
        upstream.validate()?;
        let slot = self.upstream_slot(upstream.protocol);
        if let Some(first) = slot {
            return Err(format!(
                "--upstream '{upstream}': {} is relayed to {first} already (one upstream per protocol)",
                upstream.protocol_name()
            ));
        }
        *slot = Some(upstream.addr);
        Ok(())
    }

    #[cfg(feature = "relay")]
    /// The upstream `protocol` is relayed to, if any.
    pub fn upstream(&self, protocol: Protocol) -> Option<SocketAddr> {
        protocol.pick(self.upstream_tcp, self.upstream_udp)
    }

    /// Without the `relay` feature nothing is relayed.
    #[cfg(not(feature = "relay"))]
    pub fn upstream(&self, protocol: Protocol) -> Option<SocketAddr> {
        let _ = protocol;
        None
    }

    #[cfg(feature = "relay")]
    /// Where `protocol`'s upstream is kept.
    pub(crate) fn upstream_slot(&mut self, protocol: Protocol) -> &mut Option<SocketAddr> {
        protocol.pick(&mut self.upstream_tcp, &mut self.upstream_udp)
    }

    /// How `protocol` is relayed: not, as a stream (TCP without
    /// `--mode line`), or as messages (lines, datagrams).
    pub(crate) fn relaying(&self, protocol: Protocol) -> crate::fault::Relaying {
        use crate::fault::Relaying;
        match self.upstream(protocol) {
            None => Relaying::Not,
            Some(_) if protocol == Protocol::Tcp && self.mode != Mode::Line => Relaying::Streams,
            Some(_) => Relaying::Messages,
        }
    }

    #[cfg(feature = "relay")]
    /// The relay's checks: each upstream is for a protocol that is on and
    /// names a port; timeouts in range.
    fn validate_relay(&self) -> Result<(), String> {
        for (protocol, listen) in [(Protocol::Tcp, self.tcp), (Protocol::Udp, self.udp)] {
            let Some(addr) = self.upstream(protocol) else {
                continue;
            };
            let upstream = Upstream { protocol, addr };
            upstream.validate()?;
            if listen.is_none() {
                let name = upstream.protocol_name();
                return Err(format!(
                    "--upstream '{upstream}': {name} is off (--no-{name})"
                ));
            }
        }
        let secs = self.connect_timeout.as_secs();
        if self.connect_timeout.subsec_nanos() != 0 || !(1..=MAX_IDLE_TIMEOUT_SECS).contains(&secs)
        {
            return Err(format!(
                "--connect-timeout: must be 1 to {MAX_IDLE_TIMEOUT_SECS} whole seconds"
            ));
        }
        check_timeout("--flow-timeout", self.flow_timeout)?;
        if !(1..=MAX_MAX_FLOWS).contains(&self.max_flows) {
            return Err(format!(
                "--max-flows: must be 1 to {MAX_MAX_FLOWS}, got {}",
                self.max_flows
            ));
        }
        let (low, high) = MAX_DELAYED_RANGE;
        if !(low..=high).contains(&self.max_delayed) {
            return Err(format!(
                "--max-delayed: must be {low} to {high} bytes, got {}",
                self.max_delayed
            ));
        }
        Ok(())
    }
}

/// Checks an idle timeout (a connection's, a flow's): the loop keeps it in
/// whole milliseconds, so under 1 ms would be kept as 0 ms, a close in the
/// very turn the connection or flow opens. `None` is never.
fn check_timeout(option: &str, timeout: Option<Duration>) -> Result<(), String> {
    match timeout {
        Some(t) if t.as_millis() == 0 || t.as_secs() > MAX_IDLE_TIMEOUT_SECS => Err(format!(
            "{option}: must be 1 ms to {MAX_IDLE_TIMEOUT_SECS} s (0 on the command line, \
             None in a Config: never), got {t:?}"
        )),
        _ => Ok(()),
    }
}
