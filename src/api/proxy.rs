//! One named proxy: its name, addresses, toxics and enabled state, as the
//! API shows them, and while enabled the endpoint that relays for it.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};

use log::debug;

use super::model::{ApiError, ProxyView, StatsView, split_protocol};
use super::toxic::Toxic;
use crate::command::{Command, Reply, stats_line};
use crate::config::Config;
use crate::endpoint::{Endpoint, Socket, relaying};
use crate::fault::{Fault, MAX_FAULTS, check_direction};
use crate::stats::Stats;
use crate::turn::Turn;
use crate::vocab::Direction;
use crate::vocab::Protocol;

/// What starting an endpoint needs besides the proxy: the server's
/// limits and the faults' seed.
pub(crate) struct Env {
    pub config: Config,
    pub seed: u64,
}

/// One named proxy.
pub(crate) struct Proxy {
    /// Its endpoint number (1 to 256), which names its tokens.
    pub id: u16,
    pub name: String,
    /// The address as given, or the bound one once it listened (port 0
    /// resolved), as toxiproxy shows it.
    pub listen: String,
    pub upstream: String,
    pub toxics: Vec<Toxic>,
    /// Faults added with the control port's `@NAME fault SPEC`.
    pub faults: Vec<Fault>,
    /// The relay, while enabled.
    pub endpoint: Option<Endpoint>,
    /// What its endpoints counted, through every enable and disable.
    pub stats: Stats,
}

impl Proxy {
    pub fn enabled(&self) -> bool {
        self.endpoint.is_some()
    }

    /// What it relays: `udp:` on its upstream (and its listen address)
    /// makes it a UDP proxy.
    pub fn protocol(&self) -> Protocol {
        split_protocol(&self.upstream).0
    }

    /// How the API shows it: the upstream stream's toxics first, then the
    /// downstream's, each in the order added (toxiproxy's two chains).
    pub fn view(&self) -> ProxyView<'_> {
        let up = self.toxics.iter().filter(|t| t.dir == Direction::Up);
        let down = self.toxics.iter().filter(|t| t.dir == Direction::Down);
        ProxyView {
            name: &self.name,
            listen: &self.listen,
            upstream: &self.upstream,
            enabled: self.enabled(),
            toxics: up.chain(down).collect(),
            stats: None,
        }
    }

    /// As [`view`](Proxy::view), with its own counters under `stats`
    /// (an extension toxiproxy's clients ignore).
    pub fn view_with_stats(&self) -> ProxyView<'_> {
        ProxyView {
            stats: Some(StatsView::of(&self.stats)),
            ..self.view()
        }
    }

    /// The faults its toxics make, on its protocol, then those added by
    /// name.
    fn all_faults(&self) -> Vec<Fault> {
        let protocol = self.protocol();
        let toxics = self
            .toxics
            .iter()
            .flat_map(|toxic| toxic.faults_on(protocol));
        toxics.chain(self.faults.iter().cloned()).collect()
    }

    /// Its toxics changed: new connections are judged by them, open ones
    /// from their next bytes.
    pub fn toxics_changed(&mut self, t: &mut Turn<'_>) {
        let faults = self.all_faults();
        if let Some(endpoint) = &mut self.endpoint {
            endpoint.set_faults(&faults, t);
            endpoint.drain(t.counters, &mut self.stats);
        }
    }

    /// Listens on `listen` (the same address again after a disable) and
    /// relays to `upstream`, resolved now.
    pub fn start(&mut self, env: &Env, t: &Turn<'_>) -> Result<(), ApiError> {
        if self.enabled() {
            return Ok(());
        }
        let protocol = self.protocol();
        let addr = resolve(split_protocol(&self.listen).1, "listen")?;
        // A name that does not resolve is taken (as toxiproxy does): its
        // clients are reset (a TCP proxy's) or their datagrams dropped,
        // as a refused upstream's are.
        let upstream = resolve(split_protocol(&self.upstream).1, "upstream").ok();
        let faults = self.all_faults();
        let (id, faults, config) = (self.id, (&faults[..], env.seed), &env.config);
        let not_bound = |e: io::Error| {
            let status = match e.kind() {
                io::ErrorKind::AddrInUse => 409, // toxiproxy answers 500.
                _ => 500,
            };
            ApiError::new(status, format!("listen {} {addr}: {e}", protocol.name()))
        };
        let internal = |e: io::Error| ApiError::new(500, e.to_string());
        let socket = Socket::bind(protocol, addr).map_err(not_bound)?;
        let bound = socket.local_addr().map_err(internal)?;
        let endpoint =
            Endpoint::start(id, &self.name, socket, upstream, faults, config, t.registry);
        let endpoint = endpoint.map_err(internal)?;
        self.endpoint = Some(endpoint);
        self.listen = shown(protocol, bound);
        debug!("proxy {}: {bound} relays to {}", self.name, self.upstream);
        Ok(())
    }

    /// Closes the listener and every connection.
    pub fn stop(&mut self, t: &mut Turn<'_>) {
        if let Some(endpoint) = self.endpoint.take() {
            endpoint.close(t, &mut self.stats);
            debug!("proxy {}: stopped", self.name);
        }
    }

    /// The control port's `@NAME COMMAND` (`fault`, `clear`, `stats`,
    /// `refuse`, `accept`), answered as a control command is.
    pub fn command(&mut self, command: Command, env: &Env, t: &mut Turn<'_>) -> Reply {
        match command {
            Command::AddFault(fault) => {
                let protocol = self.protocol();
                if fault.protocol != protocol {
                    let relays = protocol.name().to_uppercase();
                    return Err(format!(
                        "fault '{fault}': endpoint {} relays {relays}",
                        self.name
                    ));
                }
                let [tcp, udp] = relaying(protocol);
                check_direction(&fault, |p| p.pick(tcp, udp))?;
                if self.all_faults().len() >= MAX_FAULTS {
                    return Err(format!("at most {MAX_FAULTS} faults on an endpoint"));
                }
                self.faults.push(fault);
                self.toxics_changed(t);
            }
            Command::ClearFaults => {
                self.faults.clear();
                self.toxics.clear();
                self.toxics_changed(t);
            }
            Command::Stats => return Ok(stats_line(&self.stats)),
            Command::Refuse => self.stop(t),
            Command::Accept => self.start(env, t).map_err(|e| e.message)?,
            other => return Err(format!("'{other}' is not for an endpoint")),
        }
        Ok(String::new())
    }

    /// Whether `listen` or `upstream` differs from this proxy's.
    pub fn differs(&self, listen: &str, upstream: &str) -> Result<bool, ApiError> {
        let protocol = super::model::protocol_of(listen, upstream)?;
        let listen = shown(protocol, resolve(split_protocol(listen).1, "listen")?);
        Ok(listen != self.listen || upstream != self.upstream)
    }
}

/// A listen address as the API shows it: `udp:` before a UDP one's.
fn shown(protocol: Protocol, addr: SocketAddr) -> String {
    match protocol {
        Protocol::Tcp => addr.to_string(),
        Protocol::Udp => format!("udp:{addr}"),
    }
}

/// Whether `toxic` can act on a proxy of `protocol`. A UDP proxy judges
/// each datagram, so it takes the toxic types whose faults UDP has
/// (section 8: `latency` as `delay`, and `corrupt`, `truncate`,
/// `duplicate`, `drop`); a type that acts on a stream (a rate, a close, a
/// reset, slices, `limit_data`'s byte count) is refused, and so, on a TCP
/// proxy, is a type only datagrams have.
pub(crate) fn check_toxic(toxic: &Toxic, protocol: Protocol) -> Result<(), ApiError> {
    const ON_STREAMS: [&str; 6] = [
        "bandwidth",
        "slow_close",
        "timeout",
        "reset_peer",
        "slicer",
        "limit_data",
    ];
    if protocol == Protocol::Udp && ON_STREAMS.contains(&toxic.kind.name) {
        let message = format!(
            "toxic type {} acts on a stream, and a UDP proxy relays datagrams \
             (it takes latency and the kinds UDP has: delay, truncate, corrupt, duplicate, drop)",
            toxic.kind.name
        );
        return Err(ApiError::new(400, message));
    }
    toxic
        .try_faults_on(protocol)
        .map_err(|why| ApiError::new(400, why))?;
    Ok(())
}

/// `HOST:PORT` as a socket address: empty is `127.0.0.1:0`, an empty
/// host or `localhost` is 127.0.0.1 (ackloop stays on loopback unless
/// told), a name is resolved.
fn resolve(text: &str, what: &str) -> Result<SocketAddr, ApiError> {
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    if text.is_empty() {
        return Ok(SocketAddr::new(loopback, 0));
    }
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let bad = |why: &str| ApiError::new(400, format!("{what} '{text}': {why}"));
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| bad("expected HOST:PORT"))?;
    let port: u16 = port.parse().map_err(|_| bad("not a port"))?;
    if host.is_empty() || host == "localhost" {
        return Ok(SocketAddr::new(loopback, port));
    }
    let mut addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| bad(&e.to_string()))?;
    addrs.next().ok_or_else(|| bad("no address"))
}
