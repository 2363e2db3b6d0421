//! A pair's transitions with scripted peers: no sockets, time passed in.

use std::collections::VecDeque;
use std::io::{self, ErrorKind, Read, Write};

use super::*;

/// A scripted socket: what its peer sends (read in order; blocks when the
/// script runs out), what we wrote to it, and how its connect goes.
#[derive(Debug, Default)]
struct Peer {
    sends: VecDeque<io::Result<Vec<u8>>>,
    got: Vec<u8>,
    /// We sent our FIN.
    shut: bool,
    /// `None`: connecting; then the connect's outcome.
    connected: Option<Result<(), ErrorKind>>,
    /// Writes fail with this.
    write_error: Option<ErrorKind>,
    /// The error a reset left on the socket, for [`Endpoint::reset_error`].
    error: Option<ErrorKind>,
}

impl Peer {
    fn connected() -> Peer {
        Peer {
            connected: Some(Ok(())),
            ..Peer::default()
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.sends.push_back(Ok(bytes.to_vec()));
    }

    fn close(&mut self) {
        self.sends.push_back(Ok(Vec::new()));
    }

    fn reset(&mut self) {
        self.sends.push_back(Err(ErrorKind::ConnectionReset.into()));
    }
}

impl Read for Peer {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.sends.pop_front() {
            None => Err(ErrorKind::WouldBlock.into()),
            Some(Err(e)) => Err(e),
            Some(Ok(mut bytes)) => {
                let n = bytes.len().min(buf.len());
                buf[..n].copy_from_slice(&bytes[..n]);
                if n < bytes.len() {
                    self.sends.push_front(Ok(bytes.split_off(n)));
                }
                Ok(n)
            }
        }
    }
}

impl Write for Peer {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        assert!(!self.shut, "write after our FIN");
        assert!(self.connected.is_some(), "write before the connect is done");
        if let Some(kind) = self.write_error {
            return Err(kind.into());
        }
        self.got.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Sink for Peer {
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shut = true;
        Ok(())
    }
}

impl Endpoint for Peer {
    fn connect_status(&mut self) -> Option<io::Result<()>> {
        self.connected.map(|r| r.map_err(io::Error::from))
    }

    fn reset_error(&mut self) -> Option<io::Error> {
        self.error.take().map(io::Error::from)
    }
}

const CONNECT_MS: Millis = 5_000;
const IDLE: Option<Millis> = Some(60_000);

/// A pair accepted at 0 whose upstream is still connecting.
fn connecting(shapes: [Shape; 2], doom: Option<(Millis, Doom)>) -> Pair<Peer> {
    let plan = Plan {
        shapes,
        doom,
        lines: false,
        journal: None,
    };
    let sockets = (Peer::connected(), Peer::default());
    Pair::new((7, 0), sockets, (0, CONNECT_MS), plan)
}

/// A plain pair, connected.
fn relaying() -> Pair<Peer> {
    let mut pair = connecting(Default::default(), None);
    pair.upstream.connected = Some(Ok(()));
    event(&mut pair, Side::Upstream, 0).unwrap();
    pair
}

/// Runs `f` with a fresh loop context at `now`: no faults, no journal.
fn with_cx<R>(now: Millis, f: impl FnOnce(&mut PairCx<'_>) -> R) -> R {
    let counters = Counters::default();
    let mut faults = Faults::new(0, &[]);
    let mut warnings = RateLimit::default();
    let mut buf = vec![0; 16];
    let mut cx = PairCx {
        now,
        buf: &mut buf,
        max_owed: 64,
        max_delayed: 64,
        counters: &counters,
        faults: &mut faults,
        max_line: 1024,
        warnings: &mut warnings,
        journal: None,
    };
    f(&mut cx)
}

/// One readiness event (both ways) on `side` at `now`.
fn event(pair: &mut Pair<Peer>, side: Side, now: Millis) -> Result<Advance, End> {
    with_cx(now, |cx| pair.advance(side, Readiness::BOTH, cx))
}

fn timer(pair: &mut Pair<Peer>, now: Millis) -> Result<Advance, End> {
    with_cx(now, |cx| pair.on_timer(IDLE, cx))
}

#[test]
fn bytes_sent_during_the_connect_wait_then_flow_both_ways() {
    let mut pair = connecting(Default::default(), None);
    assert!(pair.wants_writable(Side::Upstream), "writable = connected");
    pair.client.send(b"GET / HTTP/1.0\r\n\r\n");
    event(&mut pair, Side::Client, 1).unwrap();
    assert_eq!(pair.held(), 18, "held until the connect is done");
    // Writable but not connected yet (a spurious event): still waiting.
    event(&mut pair, Side::Upstream, 2).unwrap();
    assert!(pair.upstream.got.is_empty());
    pair.upstream.connected = Some(Ok(()));
    event(&mut pair, Side::Upstream, 3).unwrap();
    assert_eq!(pair.upstream.got, b"GET / HTTP/1.0\r\n\r\n");
    assert!(!pair.wants_writable(Side::Upstream));
    pair.upstream.send(b"HTTP/1.0 200 OK\r\n");
    event(&mut pair, Side::Upstream, 4).unwrap();
    assert_eq!(pair.client.got, b"HTTP/1.0 200 OK\r\n");
    assert_eq!(pair.held(), 0);
}

#[test]
fn a_refused_connect_fails_the_pair() {
    let mut pair = connecting(Default::default(), None);
    pair.upstream.connected = Some(Err(ErrorKind::ConnectionRefused));
    let end = event(&mut pair, Side::Upstream, 1).unwrap_err();
    assert!(matches!(end, End::ConnectFailed(e) if e.kind() == ErrorKind::ConnectionRefused));
}

#[test]
fn a_late_connect_fails_at_its_deadline() {
    let mut pair = connecting(Default::default(), None);
    assert_eq!(pair.deadline(IDLE), Some(CONNECT_MS));
    assert!(timer(&mut pair, CONNECT_MS - 1).is_ok());
    let end = timer(&mut pair, CONNECT_MS).unwrap_err();
    assert!(matches!(end, End::ConnectFailed(e) if e.kind() == ErrorKind::TimedOut));
}

#[test]
fn a_half_close_travels_its_way_and_the_other_goes_on() {
    let mut pair = relaying();
    pair.client.send(b"last words");
    pair.client.close();
    event(&mut pair, Side::Client, 1).unwrap();
    assert_eq!(pair.upstream.got, b"last words");
    assert!(pair.upstream.shut, "the client's FIN reached the upstream");
    assert!(!pair.client.shut);
    pair.upstream.send(b"answer");
    event(&mut pair, Side::Upstream, 2).unwrap();
    assert_eq!(pair.client.got, b"answer");
    pair.upstream.close();
    let end = event(&mut pair, Side::Upstream, 3).unwrap_err();
    assert!(matches!(end, End::Done), "both directions ended");
    assert!(pair.client.shut);
}

#[test]
fn a_reset_from_either_side_resets_the_pair() {
    let mut pair = relaying();
    pair.upstream.reset();
    let end = event(&mut pair, Side::Upstream, 1).unwrap_err();
    assert!(matches!(
        end,
        End::Reset {
            upstream_failed: true
        }
    ));
    let mut pair = relaying();
    pair.client.reset();
    let end = event(&mut pair, Side::Client, 1).unwrap_err();
    assert!(matches!(
        end,
        End::Reset {
            upstream_failed: false
        }
    ));
    // A write into a side that is gone: that side failed.
    let mut pair = relaying();
    pair.upstream.write_error = Some(ErrorKind::BrokenPipe);
    pair.client.send(b"x");
    let end = event(&mut pair, Side::Client, 1).unwrap_err();
    assert!(matches!(
        end,
        End::Reset {
            upstream_failed: true
        }
    ));
}

#[test]
fn a_pair_silent_both_ways_is_idle() {
    let mut pair = relaying();
    pair.client.send(b"ping");
    event(&mut pair, Side::Client, 100).unwrap();
    assert_eq!(pair.deadline(IDLE), Some(60_100));
    assert!(timer(&mut pair, 60_099).is_ok());
    assert!(matches!(timer(&mut pair, 60_100), Err(End::Done)));
}

#[test]
fn bytes_held_by_a_delay_keep_the_pair_from_idling() {
    let delay = Shape {
        delay_ms: 90_000,
        ..Shape::default()
    };
    let mut pair = connecting([Shape::default(), delay], None);
    pair.upstream.connected = Some(Ok(()));
    pair.upstream.send(b"slow");
    event(&mut pair, Side::Upstream, 0).unwrap();
    assert_eq!(
        pair.deadline(IDLE),
        Some(90_001),
        "the delay, not the idle timeout"
    );
    assert!(timer(&mut pair, 60_000).is_ok());
    assert!(pair.client.got.is_empty());
    timer(&mut pair, 90_001).unwrap();
    assert_eq!(pair.client.got, b"slow");
}

#[test]
fn a_close_fault_ends_the_pair_before_any_byte_after_its_delay() {
    let mut pair = connecting(Default::default(), Some((100, Doom::Close)));
    pair.upstream.connected = Some(Ok(()));
    pair.client.send(b"request");
    event(&mut pair, Side::Upstream, 0).unwrap();
    pair.upstream.send(b"early reply");
    event(&mut pair, Side::Upstream, 50).unwrap();
    assert!(pair.upstream.got.is_empty() && pair.client.got.is_empty());
    assert_eq!(pair.deadline(IDLE), Some(100));
    assert!(timer(&mut pair, 100).is_ok(), "lingering");
    assert!(pair.client.shut && pair.upstream.shut, "FIN both ways");
    assert!(pair.client.got.is_empty(), "nothing relayed");
    pair.client.close();
    pair.upstream.close();
    assert!(matches!(
        event(&mut pair, Side::Client, 120),
        Err(End::Done)
    ));
}

#[test]
fn a_reset_fault_resets_the_pair_at_its_time() {
    let mut pair = connecting(Default::default(), Some((0, Doom::Reset)));
    let end = event(&mut pair, Side::Client, 0).unwrap_err();
    assert!(matches!(
        end,
        End::Reset {
            upstream_failed: false
        }
    ));
}

#[test]
fn a_truncate_cuts_the_pair_after_its_bytes() {
    let cut = Shape {
        truncate: Some(4),
        ..Shape::default()
    };
    let mut pair = connecting([Shape::default(), cut], None);
    pair.upstream.connected = Some(Ok(()));
    pair.upstream.send(b"HTTP/1.0 200 OK");
    assert!(event(&mut pair, Side::Upstream, 0).is_ok(), "lingering");
    assert_eq!(pair.client.got, b"HTTP");
    assert!(pair.client.shut && pair.upstream.shut);
    assert_eq!(pair.deadline(IDLE), Some(LINGER_MS));
    assert!(matches!(timer(&mut pair, LINGER_MS), Err(End::Done)));
}

#[test]
fn a_shutdown_flushes_what_is_held_then_lingers() {
    let mut pair = connecting(Default::default(), None);
    pair.client.send(b"held");
    event(&mut pair, Side::Client, 0).unwrap();
    pair.stop();
    pair.upstream.connected = Some(Ok(()));
    assert!(event(&mut pair, Side::Upstream, 1).is_ok(), "lingering");
    assert_eq!(pair.upstream.got, b"held");
    assert!(pair.client.shut && pair.upstream.shut);
    pair.client.close();
    pair.upstream.close();
    assert!(matches!(event(&mut pair, Side::Client, 2), Err(End::Done)));
}

#[test]
fn a_reset_after_a_half_close_resets_the_pair() {
    // The client's FIN, then its reset: its socket is not read again, but
    // its next event finds the error the reset left.
    let mut pair = relaying();
    pair.client.close();
    event(&mut pair, Side::Client, 1).unwrap();
    assert!(pair.upstream.shut, "the FIN went on");
    pair.client.error = Some(ErrorKind::BrokenPipe);
    let end = event(&mut pair, Side::Client, 2).unwrap_err();
    assert!(matches!(
        end,
        End::Reset {
            upstream_failed: false
        }
    ));
    // The mirror: the upstream's FIN, then its reset.
    let mut pair = relaying();
    pair.upstream.close();
    event(&mut pair, Side::Upstream, 1).unwrap();
    assert!(pair.client.shut, "the FIN went on");
    pair.upstream.error = Some(ErrorKind::BrokenPipe);
    let end = event(&mut pair, Side::Upstream, 2).unwrap_err();
    assert!(matches!(
        end,
        End::Reset {
            upstream_failed: true
        }
    ));
}

#[test]
fn a_socket_still_read_is_not_asked_for_its_error() {
    // Before its FIN a reset shows in the read itself: no extra call.
    let mut pair = relaying();
    pair.client.error = Some(ErrorKind::BrokenPipe);
    pair.client.send(b"x");
    event(&mut pair, Side::Client, 1).unwrap();
    assert_eq!(pair.upstream.got, b"x");
    assert!(pair.client.error.is_some(), "not asked");
}

#[test]
fn a_hang_ends_once_the_client_ends_it() {
    let hang = Shape {
        hang: true,
        ..Shape::default()
    };
    // Down: the request and its FIN go up; the answer is discarded; the
    // client's FIN ended it, so the pair lingers out.
    let mut pair = connecting([Shape::default(), hang.clone()], None);
    pair.upstream.connected = Some(Ok(()));
    event(&mut pair, Side::Upstream, 0).unwrap();
    pair.upstream.send(b"banner");
    event(&mut pair, Side::Upstream, 1).unwrap();
    assert!(pair.client.got.is_empty() && !pair.client.shut, "hanging");
    pair.client.send(b"request");
    pair.client.close();
    assert!(event(&mut pair, Side::Client, 2).is_ok(), "lingering");
    assert_eq!(pair.upstream.got, b"request");
    assert!(pair.client.got.is_empty(), "nothing relayed down");
    assert!(pair.client.shut && pair.upstream.shut);
    assert_eq!(pair.deadline(IDLE), Some(2 + LINGER_MS));
    // Up: the client's bytes and FIN are discarded, and end it as well.
    let mut pair = connecting([hang, Shape::default()], None);
    pair.upstream.connected = Some(Ok(()));
    event(&mut pair, Side::Upstream, 0).unwrap();
    pair.client.send(b"request");
    event(&mut pair, Side::Client, 1).unwrap();
    assert!(!pair.client.shut, "the client still talking: hanging");
    pair.client.close();
    assert!(event(&mut pair, Side::Client, 2).is_ok(), "lingering");
    assert!(pair.upstream.got.is_empty() && pair.client.shut);
}

#[test]
fn a_hang_waits_for_the_bytes_the_client_sent_before_its_fin() {
    let hang = Shape {
        hang: true,
        ..Shape::default()
    };
    let mut pair = connecting([Shape::default(), hang], None);
    pair.upstream.connected = Some(Ok(()));
    event(&mut pair, Side::Upstream, 0).unwrap();
    pair.upstream.write_error = Some(ErrorKind::WouldBlock);
    pair.client.send(b"request");
    pair.client.close();
    assert!(event(&mut pair, Side::Client, 1).is_ok());
    assert!(!pair.client.shut, "the request is still held");
    pair.upstream.write_error = None;
    assert!(event(&mut pair, Side::Upstream, 2).is_ok(), "lingering");
    assert_eq!(pair.upstream.got, b"request");
    assert!(pair.client.shut && pair.upstream.shut);
}
