//! One named proxy: its name, addresses, toxics and enabled state, as the
//! API shows them, and while enabled the endpoint that relays for it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};

use log::debug;

use super::model::{ApiError, ProxyView, StatsView};
use super::toxic::Toxic;
use crate::command::{Command, Reply, stats_line};
use crate::config::Config;
use crate::endpoint::Endpoint;
use crate::fault::{Fault, MAX_FAULTS, Relaying, check_direction};
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

    /// The faults its toxics make, then those added by name.
    fn all_faults(&self) -> Vec<Fault> {
        let toxics = self.toxics.iter().flat_map(Toxic::faults);
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
        let addr = resolve(&self.listen, "listen")?;
        let listener = std::net::TcpListener::bind(addr).map_err(|e| {
            let status = if e.kind() == std::io::ErrorKind::AddrInUse {
                409 // toxiproxy answers 500.
            } else {
                500
            };
            ApiError::new(status, format!("listen tcp {addr}: {e}"))
        })?;
        let internal = |e: std::io::Error| ApiError::new(500, e.to_string());
        let bound = listener.local_addr().map_err(internal)?;
        listener.set_nonblocking(true).map_err(internal)?;
        let listener = mio::net::TcpListener::from_std(listener);
        // A name that does not resolve is taken (as toxiproxy does): its
        // clients are reset, as a refused upstream's are.
        let upstream = resolve(&self.upstream, "upstream").ok();
        let faults = self.all_faults();
        let endpoint = Endpoint::start(
            self.id,
            &self.name,
            listener,
            upstream,
            &faults,
            env.seed,
            &env.config,
            t.registry,
        )
        .map_err(internal)?;
        self.endpoint = Some(endpoint);
        self.listen = bound.to_string();
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
                let relaying = |p| match p {
                    Protocol::Tcp => Relaying::Streams,
                    Protocol::Udp => Relaying::Not,
                };
                if fault.protocol != Protocol::Tcp {
                    return Err(format!(
                        "fault '{fault}': endpoint {} relays TCP",
                        self.name
                    ));
                }
                check_direction(&fault, relaying)?;
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
        let listen = resolve(listen, "listen")?;
        Ok(listen.to_string() != self.listen || upstream != self.upstream)
    }
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
