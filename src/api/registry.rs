//! The named proxies, toxiproxy's semantics: create, change, delete,
//! populate, reset, and their toxics; and the way from the loop to each
//! proxy's endpoint (its number names its tokens and timer entries).

use super::model::{ApiError, ProxyInput, ProxySpec, protocol_of};
use super::proxy::{Env, Proxy, check_toxic};
use super::toxic::{Toxic, ToxicChange, ToxicInput};
use crate::command::{Command, Reply};
use crate::config::Config;
use crate::endpoint::Endpoint;
use crate::stats::Stats;
use crate::timer::Entry;
use crate::turn::{MAX_ENDPOINTS, Turn};

/// Whether every toxic of `spec` would be taken.
fn check_toxics(spec: &ProxySpec) -> Result<(), ApiError> {
    let protocol = protocol_of(&spec.listen, &spec.upstream)?;
    let mut names: Vec<String> = Vec::new();
    for input in &spec.toxics {
        let taken = |name: &str| names.iter().any(|n| n == name);
        let toxic = Toxic::new(input.clone(), taken).map_err(|(s, m)| ApiError::new(s, m))?;
        check_toxic(&toxic, protocol)?;
        names.push(toxic.name);
    }
    Ok(())
}

/// Every proxy: slot `id - 1` holds proxy `id`; `order` lists them as
/// created.
pub(crate) struct Registry {
    /// Boxed: the list grows by doubling as proxies come (up to 256), and
    /// each size it outgrows stays resident; a pointer each keeps that
    /// small beside the proxies (issue 21: an idle endpoint's memory).
    slots: Vec<Option<Box<Proxy>>>,
    order: Vec<u16>,
    env: Env,
}

impl Registry {
    /// No proxies yet; theirs will be `config`'s limits and `seed`.
    pub fn new(config: &Config, seed: u64) -> Registry {
        Registry {
            slots: Vec::new(),
            order: Vec::new(),
            env: Env {
                config: config.clone(),
                seed,
            },
        }
    }

    /// Every proxy, in the order created.
    pub fn proxies(&self) -> impl Iterator<Item = &Proxy> {
        (self.order.iter()).filter_map(|id| self.slots[*id as usize - 1].as_deref())
    }

    fn find(&self, name: &str) -> Option<u16> {
        self.proxies().find(|p| p.name == name).map(|p| p.id)
    }

    pub fn get(&self, name: &str) -> Result<&Proxy, ApiError> {
        let found = self.proxies().find(|p| p.name == name);
        found.ok_or_else(ApiError::proxy_not_found)
    }

    fn get_mut(&mut self, name: &str) -> Result<&mut Proxy, ApiError> {
        let id = self.find(name).ok_or_else(ApiError::proxy_not_found)?;
        Ok(self.slots[id as usize - 1].as_deref_mut().expect("listed"))
    }

    /// `POST /proxies`: a new proxy, listening unless disabled.
    pub fn create(&mut self, spec: ProxySpec, t: &mut Turn<'_>) -> Result<&Proxy, ApiError> {
        if self.find(&spec.name).is_some() {
            return Err(ApiError::new(409, "proxy already exists"));
        }
        check_toxics(&spec)?;
        let id = self.add(spec, t)?;
        Ok(self.slots[id as usize - 1].as_deref().expect("just added"))
    }

    /// Lists a proxy made from `spec`, started unless disabled; its number.
    fn add(&mut self, spec: ProxySpec, t: &mut Turn<'_>) -> Result<u16, ApiError> {
        let free = self.slots.iter().position(Option::is_none);
        let at = match free {
            Some(at) => at,
            None if self.slots.len() < MAX_ENDPOINTS => {
                self.slots.push(None);
                self.slots.len() - 1
            }
            None => {
                return Err(ApiError::new(
                    400,
                    format!("at most {MAX_ENDPOINTS} proxies"),
                ));
            }
        };
        let mut proxy = Proxy {
            id: at as u16 + 1,
            name: spec.name,
            listen: spec.listen,
            upstream: spec.upstream,
            toxics: Vec::new(),
            faults: Vec::new(),
            endpoint: None,
            stats: Stats::default(),
        };
        for input in spec.toxics {
            let taken = |name: &str| proxy.toxics.iter().any(|t| t.name == name);
            let toxic = Toxic::new(input, taken).map_err(|(s, m)| ApiError::new(s, m))?;
            proxy.toxics.push(toxic);
        }
        if spec.enabled {
            proxy.start(&self.env, t)?;
        }
        let id = proxy.id;
        self.slots[at] = Some(Box::new(proxy));
        self.order.push(id);
        Ok(id)
    }

    /// `PATCH /proxies/{name}`: a new address or upstream restarts it; the
    /// same values change nothing; `enabled` starts or stops it.
    pub fn update(
        &mut self,
        name: &str,
        input: ProxyInput,
        t: &mut Turn<'_>,
    ) -> Result<&Proxy, ApiError> {
        let id = self.find(name).ok_or_else(ApiError::proxy_not_found)?;
        let proxy = self.slots[id as usize - 1].as_mut().expect("listed");
        let listen = input.listen.unwrap_or_else(|| proxy.listen.clone());
        let upstream = input.upstream.unwrap_or_else(|| proxy.upstream.clone());
        let enabled = input.enabled.unwrap_or(proxy.enabled());
        let protocol = protocol_of(&listen, &upstream)?;
        for toxic in &proxy.toxics {
            check_toxic(toxic, protocol)?;
        }
        if proxy.differs(&listen, &upstream)? {
            proxy.stop(t);
            // Faults named for the other protocol have nothing to act on.
            proxy.faults.retain(|fault| fault.protocol == protocol);
            proxy.listen = listen;
            proxy.upstream = upstream;
        }
        if enabled {
            proxy.start(&self.env, t)?;
        } else {
            proxy.stop(t);
        }
        Ok(proxy)
    }

    /// `DELETE /proxies/{name}`.
    pub fn delete(&mut self, name: &str, t: &mut Turn<'_>) -> Result<(), ApiError> {
        let id = self.find(name).ok_or_else(ApiError::proxy_not_found)?;
        self.remove(id, t);
        Ok(())
    }

    fn remove(&mut self, id: u16, t: &mut Turn<'_>) {
        if let Some(mut proxy) = self.slots[id as usize - 1].take() {
            proxy.stop(t);
        }
        self.order.retain(|listed| *listed != id);
    }

    /// `POST /populate`: every entry checked before anything changes; an
    /// entry equal to an existing proxy keeps it as it is, one with the
    /// same name replaces it. Returns the names of the entries' proxies
    /// so far, and the error that stopped it, if any.
    pub fn populate(
        &mut self,
        inputs: Vec<ProxyInput>,
        t: &mut Turn<'_>,
    ) -> (Vec<String>, Option<ApiError>) {
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
            let name = spec.name.clone();
            if let Err(e) = self.add_or_replace(spec, t) {
                return (names, Some(e));
            }
            names.push(name);
        }
        (names, None)
    }

    fn add_or_replace(&mut self, spec: ProxySpec, t: &mut Turn<'_>) -> Result<(), ApiError> {
        if let Some(id) = self.find(&spec.name) {
            let existing = self.slots[id as usize - 1].as_ref().expect("listed");
            if !existing.differs(&spec.listen, &spec.upstream)? {
                return Ok(());
            }
            self.remove(id, t);
        }
        self.add(spec, t).map(drop)
    }

    /// Creates the proxies of a toxiproxy config file (`--config`: a JSON
    /// array of proxies, as `/populate` takes, `toxics` allowed), failing
    /// at the first bad entry with a line naming it.
    pub fn load(&mut self, text: &str, t: &mut Turn<'_>) -> Result<(), String> {
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
            (self.add_or_replace(spec, t)).map_err(|e| format!("{entry}: {}", e.message))?;
        }
        Ok(())
    }

    /// `POST /reset`: every proxy enabled, every toxic removed.
    pub fn reset(&mut self, t: &mut Turn<'_>) -> Result<(), ApiError> {
        for proxy in self.slots.iter_mut().flatten() {
            proxy.toxics.clear();
            proxy.toxics_changed(t);
            proxy.start(&self.env, t)?;
        }
        Ok(())
    }

    /// `POST /proxies/{name}/toxics`.
    pub fn add_toxic(
        &mut self,
        name: &str,
        input: ToxicInput,
        t: &mut Turn<'_>,
    ) -> Result<&Toxic, ApiError> {
        let proxy = self.get_mut(name)?;
        let taken = |toxic: &str| proxy.toxics.iter().any(|t| t.name == toxic);
        let toxic = Toxic::new(input, taken).map_err(|(s, m)| ApiError::new(s, m))?;
        check_toxic(&toxic, proxy.protocol())?;
        proxy.toxics.push(toxic);
        proxy.toxics_changed(t);
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
        t: &mut Turn<'_>,
    ) -> Result<&Toxic, ApiError> {
        let proxy = self.get_mut(name)?;
        let at = proxy.toxics.iter().position(|t| t.name == toxic);
        let at = at.ok_or_else(ApiError::toxic_not_found)?;
        (proxy.toxics[at].change(change)).map_err(|m| ApiError::new(400, m))?;
        proxy.toxics_changed(t);
        Ok(&proxy.toxics[at])
    }

    /// `DELETE /proxies/{name}/toxics/{toxic}`.
    pub fn remove_toxic(
        &mut self,
        name: &str,
        toxic: &str,
        t: &mut Turn<'_>,
    ) -> Result<(), ApiError> {
        let proxy = self.get_mut(name)?;
        let at = proxy.toxics.iter().position(|t| t.name == toxic);
        let at = at.ok_or_else(ApiError::toxic_not_found)?;
        proxy.toxics.remove(at);
        proxy.toxics_changed(t);
        Ok(())
    }

    /// The control port's `endpoints`: `N`, then one line per proxy,
    /// `NAME LISTEN UPSTREAM enabled|disabled`.
    pub fn lines(&self) -> String {
        let mut text = self.order.len().to_string();
        for proxy in self.proxies() {
            let state = if proxy.enabled() {
                "enabled"
            } else {
                "disabled"
            };
            let (name, listen, upstream) = (&proxy.name, &proxy.listen, &proxy.upstream);
            text.push_str(&format!("\n{name} {listen} {upstream} {state}"));
        }
        text
    }

    /// The control port's `@NAME COMMAND`.
    pub fn command(&mut self, name: &str, command: Command, t: &mut Turn<'_>) -> Reply {
        let id = self.find(name);
        let id = id.ok_or_else(|| format!("no endpoint '{name}' (endpoints lists them)"))?;
        let proxy = self.slots[id as usize - 1].as_mut().expect("listed");
        proxy.command(command, &self.env, t)
    }

    // ----- the loop's way to the endpoints ------------------------------

    /// Runs `step` on endpoint `id`, if its proxy is enabled, then adds
    /// what it counted to the server's counters and the proxy's own.
    pub fn on_endpoint(
        &mut self,
        id: u16,
        t: &mut Turn<'_>,
        step: impl FnOnce(&mut Endpoint, &mut Turn<'_>),
    ) {
        let slot = (id as usize)
            .checked_sub(1)
            .and_then(|at| self.slots.get_mut(at));
        let Some(Some(proxy)) = slot else {
            return;
        };
        if let Some(endpoint) = &mut proxy.endpoint {
            step(endpoint, t);
            endpoint.drain(t.counters, &mut proxy.stats);
        }
    }

    /// Runs `step` on every enabled endpoint, as `on_endpoint` does.
    fn each_endpoint(&mut self, t: &mut Turn<'_>, step: impl Fn(&mut Endpoint, &mut Turn<'_>)) {
        for proxy in self.slots.iter_mut().flatten() {
            if let Some(endpoint) = &mut proxy.endpoint {
                step(endpoint, t);
                endpoint.drain(t.counters, &mut proxy.stats);
            }
        }
    }

    /// Open pairs over every endpoint.
    pub fn open(&self) -> usize {
        self.endpoints().map(Endpoint::open).sum()
    }

    /// Timer entries the endpoints can hold current at once: one per
    /// pair or flow, and each listener's pause or UDP socket's delays.
    pub fn timers_current(&self) -> usize {
        self.endpoints().map(Endpoint::timers_current).sum()
    }

    /// Whether every endpoint has finished: no pair open, no datagram
    /// waiting.
    pub fn is_idle(&self) -> bool {
        self.endpoints().all(Endpoint::is_idle)
    }

    /// Every enabled endpoint.
    fn endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.slots
            .iter()
            .flatten()
            .filter_map(|p| p.endpoint.as_ref())
    }

    /// Whether a timer entry of endpoint `id` is current (for the sweep).
    pub fn is_current(&self, id: u16, entry: &Entry) -> bool {
        let Some(Some(proxy)) = (id as usize)
            .checked_sub(1)
            .and_then(|at| self.slots.get(at))
        else {
            return false;
        };
        (proxy.endpoint.as_ref()).is_some_and(|endpoint| endpoint.is_current(entry))
    }

    /// Frees the keys of pairs and flows closed this turn; the datagrams
    /// UDP endpoints gathered leave.
    pub fn end_turn(&mut self, t: &mut Turn<'_>) {
        self.each_endpoint(t, |endpoint, t| endpoint.end_turn(t));
    }

    /// Shutting down: no new clients; pairs flush what they hold.
    pub fn stop(&mut self, t: &mut Turn<'_>) {
        self.each_endpoint(t, |endpoint, t| endpoint.stop(t));
    }

    /// Closes every pair and flow now: the shutdown grace is over.
    pub fn close_all(&mut self, t: &mut Turn<'_>) {
        self.each_endpoint(t, |endpoint, t| endpoint.close_now(t));
    }
}
