//! The named proxies the API manages, toxiproxy's semantics: create,
//! change, delete, populate, reset, and their toxics. Each enabled proxy
//! holds its bound listener; a disabled one holds none.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};

use log::debug;
use mio::net::TcpListener;

use super::model::{ApiError, ProxyInput, ProxySpec, ProxyView};
use super::toxic::{Toxic, ToxicChange, ToxicInput};
use crate::relay::Direction;

/// Proxies at most (SPEC 14: 256 endpoints).
pub(crate) const MAX_PROXIES: usize = 256;

/// One named proxy.
#[derive(Debug)]
pub(crate) struct Proxy {
    pub name: String,
    /// The address as given, or the bound one once it listened (port 0
    /// resolved), as toxiproxy shows it.
    pub listen: String,
    pub upstream: String,
    pub enabled: bool,
    pub toxics: Vec<Toxic>,
    listener: Option<TcpListener>,
}

impl Proxy {
    /// How the API shows it: the upstream stream's toxics first, then the
    /// downstream's, each in the order added (toxiproxy's two chains).
    pub fn view(&self) -> ProxyView<'_> {
        let up = self.toxics.iter().filter(|t| t.dir == Direction::Up);
        let down = self.toxics.iter().filter(|t| t.dir == Direction::Down);
        ProxyView {
            name: &self.name,
            listen: &self.listen,
            upstream: &self.upstream,
            enabled: self.enabled,
            toxics: up.chain(down).collect(),
        }
    }

    /// Listens on `listen` (the same address again after a disable).
    fn start(&mut self) -> Result<(), ApiError> {
        if self.enabled {
            return Ok(());
        }
        let addr = resolve_listen(&self.listen)?;
        let listener = std::net::TcpListener::bind(addr).map_err(|e| {
            let status = if e.kind() == std::io::ErrorKind::AddrInUse {
                409 // toxiproxy answers 500.
            } else {
                500
            };
            ApiError::new(status, format!("listen tcp {addr}: {e}"))
        })?;
        let bound = listener
            .local_addr()
            .map_err(|e| ApiError::new(500, e.to_string()))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| ApiError::new(500, e.to_string()))?;
        self.listener = Some(TcpListener::from_std(listener));
        self.listen = bound.to_string();
        self.enabled = true;
        debug!(
            "proxy {}: listening on {bound}, upstream {}",
            self.name, self.upstream
        );
        Ok(())
    }

    /// Closes the listener (and, with a relay, the connections).
    fn stop(&mut self) {
        if self.enabled {
            self.listener = None;
            self.enabled = false;
            debug!("proxy {}: stopped", self.name);
        }
    }

    /// Whether `spec`'s address or upstream differs from this proxy's.
    fn differs(&self, listen: &str, upstream: &str) -> Result<bool, ApiError> {
        let listen = resolve_listen(listen)?;
        Ok(listen.to_string() != self.listen || upstream != self.upstream)
    }
}

/// `HOST:PORT` as a socket address: empty is `127.0.0.1:0`, an empty
/// host or `localhost` is 127.0.0.1 (ackloop stays on loopback unless
/// told), a name is resolved.
fn resolve_listen(listen: &str) -> Result<SocketAddr, ApiError> {
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    if listen.is_empty() {
        return Ok(SocketAddr::new(loopback, 0));
    }
    if let Ok(addr) = listen.parse() {
        return Ok(addr);
    }
    let bad = |why: &str| ApiError::new(400, format!("listen '{listen}': {why}"));
    let (host, port) = listen
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

/// Whether every toxic of `spec` would be taken.
fn check_toxics(spec: &ProxySpec) -> Result<(), ApiError> {
    let mut names: Vec<String> = Vec::new();
    for input in &spec.toxics {
        let taken = |name: &str| names.iter().any(|n| n == name);
        let toxic = Toxic::new(input.clone(), taken).map_err(|(s, m)| ApiError::new(s, m))?;
        names.push(toxic.name);
    }
    Ok(())
}

/// Every proxy, in the order created.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    proxies: Vec<Proxy>,
}

impl Registry {
    pub fn proxies(&self) -> &[Proxy] {
        &self.proxies
    }

    pub fn get(&self, name: &str) -> Result<&Proxy, ApiError> {
        let found = self.proxies.iter().find(|p| p.name == name);
        found.ok_or_else(ApiError::proxy_not_found)
    }

    fn get_mut(&mut self, name: &str) -> Result<&mut Proxy, ApiError> {
        let found = self.proxies.iter_mut().find(|p| p.name == name);
        found.ok_or_else(ApiError::proxy_not_found)
    }

    /// `POST /proxies`: a new proxy, listening unless disabled.
    pub fn create(&mut self, spec: ProxySpec) -> Result<&Proxy, ApiError> {
        if self.get(&spec.name).is_ok() {
            return Err(ApiError::new(409, "proxy already exists"));
        }
        let proxy = self.build(spec)?;
        self.proxies.push(proxy);
        Ok(self.proxies.last().expect("just pushed"))
    }

    /// A proxy from `spec`, started and with its toxics, not yet listed.
    fn build(&self, spec: ProxySpec) -> Result<Proxy, ApiError> {
        if self.proxies.len() >= MAX_PROXIES {
            return Err(ApiError::new(400, format!("at most {MAX_PROXIES} proxies")));
        }
        let mut proxy = Proxy {
            name: spec.name,
            listen: spec.listen,
            upstream: spec.upstream,
            enabled: false,
            toxics: Vec::new(),
            listener: None,
        };
        for input in spec.toxics {
            let toxic = Toxic::new(input, |name| proxy.toxics.iter().any(|t| t.name == name));
            proxy.toxics.push(
                toxic
                    .map(Ok)
                    .unwrap_or_else(|(s, m)| Err(ApiError::new(s, m)))?,
            );
        }
        if spec.enabled {
            proxy.start()?;
        }
        Ok(proxy)
    }

    /// `PATCH /proxies/{name}`: a new address or upstream restarts it; the
    /// same values change nothing; `enabled` starts or stops it.
    pub fn update(&mut self, name: &str, input: ProxyInput) -> Result<&Proxy, ApiError> {
        let proxy = self.get_mut(name)?;
        let listen = input.listen.unwrap_or_else(|| proxy.listen.clone());
        let upstream = input.upstream.unwrap_or_else(|| proxy.upstream.clone());
        let enabled = input.enabled.unwrap_or(proxy.enabled);
        if proxy.differs(&listen, &upstream)? {
            proxy.stop();
            proxy.listen = listen;
            proxy.upstream = upstream;
        }
        if enabled {
            proxy.start()?;
        } else {
            proxy.stop();
        }
        Ok(proxy)
    }

    /// `DELETE /proxies/{name}`.
    pub fn delete(&mut self, name: &str) -> Result<(), ApiError> {
        let at = self.proxies.iter().position(|p| p.name == name);
        let at = at.ok_or_else(ApiError::proxy_not_found)?;
        self.proxies.remove(at).stop();
        Ok(())
    }

    /// `POST /populate`: every entry checked before anything changes; an
    /// entry equal to an existing proxy keeps it as it is, one with the
    /// same name replaces it. Returns the names of the entries' proxies
    /// so far, and the error that stopped it, if any.
    pub fn populate(&mut self, inputs: Vec<ProxyInput>) -> (Vec<String>, Option<ApiError>) {
        let specs: Result<Vec<ProxySpec>, ApiError> = (inputs.into_iter().enumerate())
            .map(|(i, input)| input.spec(Some(i + 1)))
            .map(|spec| spec.and_then(|spec| check_toxics(&spec).map(|()| spec)))
            .collect();
        let specs = match specs {
            Ok(specs) => specs,
            Err(e) => return (Vec::new(), Some(e)),
        };
        let mut names = Vec::new();
        for spec in specs {
            if let Err(e) = self.add_or_replace(spec.clone()) {
                return (names, Some(e));
            }
            names.push(spec.name);
        }
        (names, None)
    }

    fn add_or_replace(&mut self, spec: ProxySpec) -> Result<(), ApiError> {
        if let Some(at) = self.proxies.iter().position(|p| p.name == spec.name) {
            if !self.proxies[at].differs(&spec.listen, &spec.upstream)? {
                return Ok(());
            }
            self.proxies.remove(at).stop();
        }
        let proxy = self.build(spec)?;
        self.proxies.push(proxy);
        Ok(())
    }

    /// Creates the proxies of a toxiproxy config file (`--config`: a JSON
    /// array of proxies, as `/populate` takes, `toxics` allowed), failing
    /// at the first bad entry with a line naming it.
    pub fn load(&mut self, text: &str) -> Result<(), String> {
        let inputs: Vec<ProxyInput> =
            serde_json::from_str(text).map_err(|e| format!("not a JSON array of proxies: {e}"))?;
        // Every entry is checked before any is bound.
        let mut specs = Vec::with_capacity(inputs.len());
        for (i, input) in inputs.into_iter().enumerate() {
            let entry = match &input.name {
                Some(name) => format!("proxy {} ('{name}')", i + 1),
                None => format!("proxy {}", i + 1),
            };
            let spec = input
                .spec(None)
                .map_err(|e| format!("{entry}: {}", e.message))?;
            check_toxics(&spec).map_err(|e| format!("{entry}: {}", e.message))?;
            specs.push((entry, spec));
        }
        for (entry, spec) in specs {
            (self.add_or_replace(spec)).map_err(|e| format!("{entry}: {}", e.message))?;
        }
        Ok(())
    }

    /// `POST /reset`: every proxy enabled, every toxic removed.
    pub fn reset(&mut self) -> Result<(), ApiError> {
        for proxy in &mut self.proxies {
            proxy.toxics.clear();
            proxy.start()?;
        }
        Ok(())
    }

    /// `POST /proxies/{name}/toxics`.
    pub fn add_toxic(&mut self, name: &str, input: ToxicInput) -> Result<&Toxic, ApiError> {
        let proxy = self.get_mut(name)?;
        let taken = |toxic: &str| proxy.toxics.iter().any(|t| t.name == toxic);
        let toxic = Toxic::new(input, taken).map_err(|(s, m)| ApiError::new(s, m))?;
        proxy.toxics.push(toxic);
        Ok(proxy.toxics.last().expect("just pushed"))
    }

    pub fn toxic(&self, name: &str, toxic: &str) -> Result<&Toxic, ApiError> {
        let proxy = self.get(name)?;
        let found = proxy.toxics.iter().find(|t| t.name == toxic);
        found.ok_or_else(ApiError::toxic_not_found)
    }

    /// `PATCH /proxies/{name}/toxics/{toxic}`.
    pub fn change_toxic(
        &mut self,
        name: &str,
        toxic: &str,
        change: ToxicChange,
    ) -> Result<&Toxic, ApiError> {
        let proxy = self.get_mut(name)?;
        let found = proxy.toxics.iter_mut().find(|t| t.name == toxic);
        let found = found.ok_or_else(ApiError::toxic_not_found)?;
        found.change(change).map_err(|m| ApiError::new(400, m))?;
        Ok(found)
    }

    /// `DELETE /proxies/{name}/toxics/{toxic}`.
    pub fn remove_toxic(&mut self, name: &str, toxic: &str) -> Result<(), ApiError> {
        let proxy = self.get_mut(name)?;
        let at = proxy.toxics.iter().position(|t| t.name == toxic);
        let at = at.ok_or_else(ApiError::toxic_not_found)?;
        proxy.toxics.remove(at);
        Ok(())
    }
}
