//! The loop's sources and what it does with each event: the dispatch by
//! token, the deadlines that come due, the end of a turn, and the one
//! shutdown sequence. Handlers act; this only decides which one.

use std::sync::atomic::Ordering;

use log::info;
use mio::Token;

use super::SHUTDOWN_GRACE_MS;
#[cfg(feature = "api")]
use super::proxies::Targets;
use super::tcp_side::TcpSide;
#[cfg(not(feature = "api"))]
type Targets<'a> = TcpSide<'a>;
use crate::control::{self, Control};
use crate::handle::Shared;
use crate::listener::Listener;
use crate::relay::flows::Flows;
use crate::relay::pair::Side;
use crate::relay::pairs::Pairs;
use crate::tcp::Tcp;
use crate::timer::{Due, Millis, Timers};
use crate::turn::{Owner, Readiness, Ready, Turn};
use crate::udp::{Udp, Upstreams};

/// The event sources and their handlers.
pub(super) struct Sources {
    /// The main TCP listener; its streams' job is `relay` when there is
    /// one, else `tcp`.
    pub(super) listener: Listener,
    /// Served TCP connections.
    pub(super) tcp: Tcp,
    /// Relayed TCP pairs (`--upstream tcp:...`): a peer of `tcp`, reached
    /// from the dispatch directly.
    pub(super) relay: Option<Pairs>,
    pub(super) udp: Option<Udp>,
    /// The UDP relay's flows (`--upstream udp:...`): the loop hands them
    /// their own events, and lends them to `udp` for the rest.
    pub(super) flows: Option<Flows>,
    /// The live control socket and its connections (`--control`).
    pub(super) control: Option<Control>,
    /// The toxiproxy API and its connections (`--api`).
    #[cfg(feature = "api")]
    pub(super) api: Option<crate::api::Api>,
    /// The named endpoints (`--config`, the API).
    #[cfg(feature = "api")]
    pub(super) proxies: crate::api::Registry,
    /// Shutdown has begun: no new clients, owed replies drain.
    pub(super) stopping: bool,
    #[cfg(all(feature = "signals", unix))]
    pub(super) signals: Option<signal_hook_mio::v1_0::Signals>,
}

impl Sources {
    /// Hands one event to the handler its token names.
    pub(super) fn dispatch(
        &mut self,
        token: Token,
        ready: Readiness,
        shared: &Shared,
        t: &mut Turn<'_>,
    ) {
        match Owner::of(token) {
            Owner::Listener => self.accept(t),
            Owner::Udp => self.serve_udp(t),
            Owner::Waker => {
                self.apply_changes(shared, t);
                if shared.stop_requested.load(Ordering::SeqCst) {
                    self.begin_shutdown(t);
                }
            }
            Owner::Signals => self.on_signals(t),
            Owner::ControlListener => self.serve_control(None, t),
            Owner::Control(key) => self.serve_control(Some(key), t),
            Owner::ApiListener => self.serve_api(None, t),
            Owner::Api(key) => self.serve_api(Some(key), t),
            #[cfg(feature = "api")]
            Owner::EndpointListener(endpoint) => self.on_endpoint(endpoint, t, |e, t| e.accept(t)),
            #[cfg(feature = "api")]
            Owner::EndpointPair {
                endpoint,
                key,
                upstream,
            } => self.on_endpoint(endpoint, t, |e, t| e.on_event(key, upstream, ready, t)),
            #[cfg(feature = "api")]
            Owner::EndpointFlow { endpoint, key } => {
                self.on_endpoint(endpoint, t, |e, t| e.serve_flow(key, t))
            }
            #[cfg(not(feature = "api"))]
            Owner::EndpointListener(_)
            | Owner::EndpointPair { .. }
            | Owner::EndpointFlow { .. } => {}
            Owner::Conn(key) => self.tcp.on_event(key, ready, t),
            Owner::PairClient(key) => self.on_pair_event(key, Side::Client, ready, t),
            Owner::PairUpstream(key) => self.on_pair_event(key, Side::Upstream, ready, t),
            Owner::Flow(key) => self.serve_flow(key, t),
            Owner::Unknown => {}
        }
    }

    pub(super) fn serve_again(&mut self, ready: Ready, t: &mut Turn<'_>) {
        match ready {
            Ready::Listener => self.accept(t),
            Ready::Udp => self.serve_udp(t),
            Ready::Conn { key, id } => self.tcp.resume(key, id, t),
            Ready::Pair { key, id } => {
                if let Some(relay) = &mut self.relay {
                    relay.resume(key, id, t);
                }
            }
            Ready::Control { key } => self.serve_control(Some(key), t),
            Ready::Flow { key } => self.serve_flow(key, t),
            Ready::Api { key } => self.serve_api(Some(key), t),
            #[cfg(feature = "api")]
            Ready::EndpointPair { endpoint, key, id } => {
                self.on_endpoint(endpoint, t, |e, t| e.resume(key, id, t))
            }
            #[cfg(feature = "api")]
            Ready::EndpointListener { endpoint } => {
                self.on_endpoint(endpoint, t, |e, t| e.accept(t))
            }
            #[cfg(feature = "api")]
            Ready::EndpointFlow { endpoint, key } => {
                self.on_endpoint(endpoint, t, |e, t| e.serve_flow(key, t))
            }
            #[cfg(not(feature = "api"))]
            Ready::EndpointPair { .. }
            | Ready::EndpointListener { .. }
            | Ready::EndpointFlow { .. } => {}
        }
    }

    /// The API listener (`None`) or API connection `key` is ready.
    #[cfg(feature = "api")]
    fn serve_api(&mut self, key: Option<usize>, t: &mut Turn<'_>) {
        let Some(api) = &mut self.api else {
            return;
        };
        let proxies = &mut self.proxies;
        match key {
            None => api.accept(t, proxies),
            Some(key) => api.drive(key, t, proxies),
        }
    }

    #[cfg(not(feature = "api"))]
    fn serve_api(&mut self, _: Option<usize>, _: &mut Turn<'_>) {}

    /// Hands named endpoint `id` to `step`, if it is enabled.
    #[cfg(feature = "api")]
    fn on_endpoint(
        &mut self,
        id: u16,
        t: &mut Turn<'_>,
        step: impl FnOnce(&mut crate::endpoint::Endpoint, &mut Turn<'_>),
    ) {
        self.proxies.on_endpoint(id, t, step);
    }

    /// The main listener is readable (or was left still ready): its
    /// streams go to its job, relaying or serving.
    fn accept(&mut self, t: &mut Turn<'_>) {
        match &mut self.relay {
            Some(relay) => self.listener.accept(relay, t),
            None => self.listener.accept(&mut self.tcp, t),
        }
    }

    /// A readiness event for `side` of relayed pair `key`.
    fn on_pair_event(&mut self, key: usize, side: Side, ready: Readiness, t: &mut Turn<'_>) {
        if let Some(relay) = &mut self.relay {
            relay.on_event(key, side, ready, t);
        }
    }

    /// The control socket, and what its commands change: the TCP side,
    /// and the named endpoints.
    fn control_and_target(&mut self) -> (Option<&mut Control>, Targets<'_>) {
        let Sources {
            control,
            listener,
            tcp,
            relay,
            #[cfg(feature = "api")]
            proxies,
            ..
        } = self;
        let relayed = relay.is_some();
        let side = TcpSide {
            listener,
            tcp,
            relayed,
        };
        #[cfg(feature = "api")]
        let target = Targets { side, proxies };
        #[cfg(not(feature = "api"))]
        let target = side;
        (control.as_mut(), target)
    }

    /// The control listener (`None`) or control connection `key` is ready.
    fn serve_control(&mut self, key: Option<usize>, t: &mut Turn<'_>) {
        let (Some(control), mut target) = self.control_and_target() else {
            return;
        };
        match key {
            None => control.accept(t, &mut target),
            Some(key) => control.drive(key, t, &mut target),
        }
    }

    /// The end of a turn: answer the control waits that are due, free the
    /// keys closed during the turn, send the UDP datagrams gathered, sweep
    /// stale timers.
    pub(super) fn end_turn(&mut self, t: &mut Turn<'_>) {
        if let (Some(control), mut target) = self.control_and_target() {
            control.check_waits(t, &mut target);
            control.end_turn();
        }
        self.tcp.end_turn();
        if let Some(relay) = &mut self.relay {
            relay.end_turn();
        }
        #[cfg(feature = "api")]
        if let Some(api) = &mut self.api {
            api.end_turn();
        }
        #[cfg(feature = "api")]
        self.proxies.end_turn(t);
        if let Some(flows) = &mut self.flows {
            flows.end_turn();
        }
        // What the relay's flows gathered for the UDP socket leaves now.
        if let Some(udp) = &mut self.udp {
            udp.end_turn(t);
        }
        self.sweep_timers(t.timers);
    }

    /// Drops stale timer entries once they may outnumber the current ones;
    /// each entry's owner says whether it is current.
    fn sweep_timers(&self, timers: &mut Timers) {
        // Each open connection (or relayed pair), each relayed UDP flow,
        // each listener's pause, the UDP delays, each control wait and the
        // shutdown grace: one entry each at most.
        let control = self.control.as_ref();
        let flows = self.flows.as_ref().map_or(0, Flows::open);
        #[cfg(feature = "api")]
        let api = self.api.as_ref();
        #[cfg(feature = "api")]
        let named = api.map_or(0, crate::api::Api::timers_current) + self.proxies.timers_current();
        #[cfg(not(feature = "api"))]
        let named = 0;
        let current = self.open() + flows + 3 + control.map_or(0, Control::timers_current) + named;
        timers.sweep(current, |entry| match entry.due {
            Due::Flow { .. } => (self.flows.as_ref()).is_some_and(|flows| flows.is_current(entry)),
            Due::Conn { .. } => self.tcp.is_current(entry),
            Due::Pair { .. } => (self.relay.as_ref()).is_some_and(|relay| relay.is_current(entry)),
            Due::AcceptRetry => self.listener.is_current(entry.at),
            Due::ControlWait { .. } | Due::ControlAcceptRetry => {
                control.is_some_and(|control| control.is_current(entry))
            }
            Due::UdpDelay => (self.udp.as_ref()).is_some_and(|udp| udp.is_current_delay(entry.at)),
            #[cfg(feature = "api")]
            Due::Api { .. } | Due::ApiAcceptRetry => api.is_some_and(|api| api.is_current(entry)),
            #[cfg(feature = "api")]
            Due::EndpointPair { endpoint, .. }
            | Due::EndpointAcceptRetry { endpoint }
            | Due::EndpointFlow { endpoint, .. }
            | Due::EndpointUdpDelay { endpoint } => self.proxies.is_current(endpoint, entry),
            Due::ShutdownGrace => true,
            // Without the API, nothing arms its entries or the endpoints'.
            #[cfg(not(feature = "api"))]
            _ => false,
        });
    }

    /// Carries out the changes other threads asked for, in order, and
    /// sends each its reply.
    fn apply_changes(&mut self, shared: &Shared, t: &mut Turn<'_>) {
        control::apply_changes(&shared.changes, &mut self.control_and_target().1, t);
    }

    /// The UDP socket is ready (or was left still ready), with the
    /// relay's flows lent to it if UDP is relayed.
    fn serve_udp(&mut self, t: &mut Turn<'_>) {
        if let Some(udp) = &mut self.udp {
            udp.serve(upstreams(&mut self.flows), t);
        }
    }

    /// Relayed UDP flow `key` is readable (or was left still ready).
    fn serve_flow(&mut self, key: usize, t: &mut Turn<'_>) {
        if let (Some(flows), Some(udp)) = (&mut self.flows, &mut self.udp) {
            flows.serve(key, udp, t);
        }
    }

    /// A deadline came due.
    pub(super) fn on_due(&mut self, due: Due, at: Millis, t: &mut Turn<'_>) {
        match due {
            Due::Conn { key } => self.tcp.on_timer(key, at, t),
            Due::Pair { key } => {
                if let Some(relay) = &mut self.relay {
                    relay.on_timer(key, at, t);
                }
            }
            Due::Flow { key } => {
                if let Some(flows) = &mut self.flows {
                    flows.on_timer(key as usize, at, t);
                }
            }
            Due::AcceptRetry => match &mut self.relay {
                Some(relay) => self.listener.on_accept_retry(at, relay, t),
                None => self.listener.on_accept_retry(at, &mut self.tcp, t),
            },
            Due::ControlAcceptRetry => {
                if let (Some(control), mut target) = self.control_and_target() {
                    control.on_accept_retry(at, t, &mut target);
                }
            }
            // `end_turn` answers the waits that are due.
            Due::ControlWait { .. } => {}
            Due::UdpDelay => {
                if let Some(udp) = &mut self.udp {
                    udp.on_delay_timer(at, upstreams(&mut self.flows), t);
                }
            }
            #[cfg(feature = "api")]
            Due::Api { key } => {
                if let Some(api) = &mut self.api {
                    api.on_timer(key as usize, at, t);
                }
            }
            #[cfg(feature = "api")]
            Due::ApiAcceptRetry => {
                if let Some(api) = &mut self.api {
                    api.on_accept_retry(at, t, &mut self.proxies);
                }
            }
            #[cfg(feature = "api")]
            Due::EndpointPair { endpoint, .. }
            | Due::EndpointAcceptRetry { endpoint }
            | Due::EndpointFlow { endpoint, .. }
            | Due::EndpointUdpDelay { endpoint } => {
                self.on_endpoint(endpoint, t, |e, t| e.on_due(due, at, t))
            }
            Due::ShutdownGrace => {
                info!("shutdown grace period over: closing everything");
                self.close_everything(t);
            }
            // Without the API, nothing arms its entries or the endpoints'.
            #[cfg(not(feature = "api"))]
            _ => {}
        }
    }

    // ----- shutting down ----------------------------------------------------
    //
    // One sequence:
    // 1. `begin_shutdown` (a `Handle`, `Server::shutdown`, a first signal):
    //    the listener closes; every connection finishes what it owes, then
    //    closes gracefully; the grace deadline is armed.
    // 2. After each turn, `Server::turn` asks `is_idle`: once nothing is
    //    open and no UDP reply waits, the server is stopped.
    // 3. If the grace deadline comes first (or a second signal), then
    //    `close_everything`, and the turn's end finds it idle.

    /// Starts the graceful shutdown (once).
    fn begin_shutdown(&mut self, t: &mut Turn<'_>) {
        if self.stopping {
            return;
        }
        info!("shutting down: no new clients; finishing owed replies");
        self.stopping = true;
        t.timers.arm(t.now + SHUTDOWN_GRACE_MS, Due::ShutdownGrace);
        self.listener.stop(t);
        self.tcp.stop(t);
        if let Some(relay) = &mut self.relay {
            relay.stop(t);
        }
        // Control connections are not data: nothing is owed them.
        if let Some(control) = &mut self.control {
            control.close_all(t);
        }
        #[cfg(feature = "api")]
        if let Some(api) = &mut self.api {
            api.close_all(t);
        }
        #[cfg(feature = "api")]
        self.proxies.stop(t);
    }

    /// Nothing left to finish: no connection open, no UDP datagram
    /// waiting (queued, or held by a delay either way), the named
    /// endpoints' included.
    pub(super) fn is_idle(&self) -> bool {
        #[cfg(feature = "api")]
        let named = self.proxies.is_idle();
        #[cfg(not(feature = "api"))]
        let named = true;
        self.open() == 0 && self.udp.as_ref().is_none_or(|udp| udp.queued() == 0) && named
    }

    /// Open TCP streams: served connections and relayed pairs, the named
    /// endpoints' too.
    fn open(&self) -> usize {
        #[cfg(feature = "api")]
        let named = self.proxies.open();
        #[cfg(not(feature = "api"))]
        let named = 0;
        self.tcp.open() + self.relay.as_ref().map_or(0, Pairs::open) + named
    }

    /// Closes every connection, flow and the UDP socket now. The
    /// datagrams still waiting for UDP are dropped, and counted.
    fn close_everything(&mut self, t: &mut Turn<'_>) {
        self.tcp.close_all(t);
        if let Some(relay) = &mut self.relay {
            relay.close_all(t);
        }
        #[cfg(feature = "api")]
        self.proxies.close_all(t);
        if let Some(mut udp) = self.udp.take() {
            udp.close(t);
        }
        if let Some(mut flows) = self.flows.take() {
            flows.close_all(t);
        }
    }

    /// SIGINT/SIGTERM: the first stops gracefully, a second at once.
    #[cfg(all(feature = "signals", unix))]
    fn on_signals(&mut self, t: &mut Turn<'_>) {
        let Some(signals) = &mut self.signals else {
            return;
        };
        let count = signals.pending().count();
        if count == 0 {
            return;
        }
        if self.stopping || count > 1 {
            info!("second signal: closing everything now");
            self.begin_shutdown(t);
            self.close_everything(t);
        } else {
            self.begin_shutdown(t);
        }
    }

    #[cfg(not(all(feature = "signals", unix)))]
    fn on_signals(&mut self, _: &mut Turn<'_>) {}
}

/// The relay's flows as UDP sees them, if UDP is relayed.
fn upstreams(flows: &mut Option<Flows>) -> Option<&mut dyn Upstreams> {
    flows.as_mut().map(|flows| flows as &mut dyn Upstreams)
}
