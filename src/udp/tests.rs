//! The reply queue and the held datagrams, with a real socket and no loop.

use super::*;
use crate::fault::Verdict;
use crate::reply::Pattern;
use crate::timer::Timers;
use crate::turn::UDP;
use std::time::Duration;

/// Runs `f` in a turn of no loop at time 0: fixed replies, no faults, no
/// journal, a timer heap that holds nothing.
fn with_turn<R>(poll: &mio::Poll, counters: &Counters, f: impl FnOnce(&mut Turn<'_>) -> R) -> R {
    let (mut buf, mut timers, mut ready) = (vec![0; 1024], Timers::with_capacity(0), vec![]);
    let mut faults = crate::fault::Faults::new(0, &[]);
    let mut replies = Replies::Fixed(Pattern::new(b"Received", false, 64));
    let mut t = Turn {
        registry: poll.registry(),
        now: 0,
        buf: &mut buf,
        batch: &mut None,
        replies: &mut replies,
        counters,
        timers: &mut timers,
        ready: &mut ready,
        faults: &mut faults,
        journal: None,
    };
    f(&mut t)
}

/// A UDP socket registered on `poll`, as the server's.
fn server_socket(poll: &mio::Poll) -> UdpSocket {
    let mut socket = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    poll.registry()
        .register(&mut socket, UDP, mio::Interest::READABLE)
        .unwrap();
    socket
}

/// A client socket: where replies go.
fn client() -> std::net::UdpSocket {
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    client
}

/// A reply to `to` held `delay_ms`, sent through the one fault path.
fn delayed(
    udp: &mut Udp,
    to: SocketAddr,
    delay_ms: u64,
    up: Option<&mut dyn Upstreams>,
    t: &mut Turn<'_>,
) {
    let verdict = Verdict {
        delay_ms,
        ..Verdict::default()
    };
    let way = match up {
        Some(_) => Way::Up(FlowRef { key: 0, id: 0 }),
        None => Way::Reply,
    };
    let out = Outgoing {
        ordinal: 1,
        client: to,
        way,
    };
    let mut sending = Sending {
        counters: t.counters,
        now: t.now,
        journal: None,
        timers: t.timers,
        upstreams: up.map(|up| -> &mut dyn Upstreams { up }),
    };
    udp.send(out, b"late", Some(&verdict), &mut sending);
}

/// Pops every timer entry due at `t.now`, as the loop's timer pass does.
fn timer_pass(udp: &mut Udp, t: &mut Turn<'_>) {
    while let Some(entry) = t.timers.pop_due(t.now) {
        udp.on_delay_timer(entry.at, None, t);
    }
}

/// On loopback the kernel almost never makes `send_to` block, so the
/// queue is filled by hand here, then drained by a real `serve`.
#[test]
fn queued_replies_are_bounded_then_sent_in_order() {
    let poll = mio::Poll::new().unwrap();
    let client = client();
    let to = client.local_addr().unwrap();
    let config = Config::default();
    let (queue_len, queue_bytes) = (config.udp_queue_len, config.udp_queue_bytes);
    let mut udp = Udp::new(server_socket(&poll), false, &config);
    let counters = Counters::default();
    for i in 0..queue_len + 5 {
        udp.outbox
            .queue(format!("{i}").as_bytes(), to, &counters, 0);
    }
    assert_eq!(udp.queued(), queue_len);
    assert_eq!(counters.snapshot().replies_dropped, 5, "past the bound");
    // The byte bound holds too: one reply as large as all allowed.
    udp.outbox.queue(&vec![0; queue_bytes], to, &counters, 0);
    assert_eq!(counters.snapshot().replies_dropped, 6);
    let turns = with_turn(&poll, &counters, |t| {
        // The socket has nothing to receive, so serve only sends: a
        // turn's budget at a time, the socket staying on the ready list
        // while replies are left.
        let mut turns = 0;
        loop {
            udp.serve(None, t);
            turns += 1;
            let sent = (turns * DATAGRAMS_PER_TURN).min(queue_len);
            assert_eq!(udp.queued(), queue_len - sent, "turn {turns}");
            if udp.queued() == 0 {
                break;
            }
            assert_eq!(t.ready.pop(), Some(Ready::Udp), "still ready");
        }
        turns
    });
    assert_eq!(turns, queue_len.div_ceil(DATAGRAMS_PER_TURN));
    let sent: usize = (0..queue_len).map(|i| format!("{i}").len()).sum();
    assert_eq!(counters.snapshot().bytes_out, sent as u64);
    // Loopback delivers during `send_to`, so what will arrive has
    // arrived; the client's receive buffer holds the first few hundred
    // (the kernel drops the rest), and they are in order.
    client.set_nonblocking(true).unwrap();
    let mut got = [0; 16];
    let mut received = 0;
    while let Ok(n) = client.recv(&mut got) {
        assert_eq!(&got[..n], format!("{received}").as_bytes(), "in order");
        received += 1;
    }
    assert!(received >= 100, "only {received} replies arrived");
    assert!(udp.outbox.spares() <= queue_len, "spares are bounded");
}

#[test]
fn delayed_replies_due_together_are_released_a_turn_budget_at_a_time() {
    let poll = mio::Poll::new().unwrap();
    let sink = client();
    let to = sink.local_addr().unwrap();
    let mut udp = Udp::new(server_socket(&poll), false, &Config::default());
    let counters = Counters::default();
    let held = DATAGRAMS_PER_TURN + 10;
    with_turn(&poll, &counters, |t| {
        for _ in 0..held {
            delayed(&mut udp, to, 4, None, t);
        }
        assert_eq!(
            t.timers.next_at(),
            Some(5),
            "one entry, due after the delay"
        );
        t.now = 5;
        timer_pass(&mut udp, t);
        assert_eq!(udp.queued(), 10, "one turn's budget released");
        assert_eq!(t.ready.pop(), Some(Ready::Udp), "the rest next turn");
        udp.serve(None, t);
        assert_eq!(udp.queued(), 0);
        assert!(t.ready.is_empty());
    });
    assert_eq!(counters.snapshot().bytes_out, 4 * held as u64);
}

/// Issue 20, defect 1: the loop serves the socket before its timer pass,
/// and `serve` releases what is due itself. The timer entry then still
/// pending must stay the current one, so that a reply held meanwhile for
/// later has an entry: it was skipped as stale, and the reply waited for
/// the next datagram.
#[test]
fn a_reply_held_after_serve_released_the_due_ones_still_leaves_on_time() {
    let poll = mio::Poll::new().unwrap();
    let sink = client();
    let to = sink.local_addr().unwrap();
    let mut udp = Udp::new(server_socket(&poll), false, &Config::default());
    let counters = Counters::default();
    with_turn(&poll, &counters, |t| {
        delayed(&mut udp, to, 4, None, t); // Due at 5.
        t.now = 6;
        udp.serve(None, t); // Releases it before the timer pass.
        assert_eq!(udp.queued(), 0);
        delayed(&mut udp, to, 4, None, t); // Due at 11.
        timer_pass(&mut udp, t);
        assert_eq!(udp.queued(), 1, "not due yet");
        assert_eq!(t.timers.next_at(), Some(11), "and an entry for it");
        t.now = 11;
        timer_pass(&mut udp, t);
        assert_eq!(udp.queued(), 0, "released by its entry alone");
    });
    assert_eq!(counters.snapshot().bytes_out, 8);
    for _ in 0..2 {
        assert_eq!(sink.recv(&mut [0; 16]).unwrap(), 4);
    }
}

/// The relay's flows as a test sees them: one flow, which records what
/// it is sent and how many datagrams of its are held.
#[derive(Default)]
struct OneFlow {
    sent: Vec<Vec<u8>>,
    held: i32,
    held_most: i32,
}

impl Upstreams for OneFlow {
    fn flow_of(&mut self, _: SocketAddr, _: &mut Turn<'_>) -> Option<FlowRef> {
        Some(FlowRef { key: 0, id: 0 })
    }

    fn send_up(&mut self, _: FlowRef, datagram: &[u8], _: &Counters, _: Millis) -> bool {
        self.sent.push(datagram.to_vec());
        true
    }

    fn hold(&mut self, _: FlowRef, held: bool, _: Millis, _: &mut Timers) {
        self.held += if held { 1 } else { -1 };
        self.held_most = self.held_most.max(self.held);
    }
}

/// Held datagrams either way and queued replies share one bound: a relay
/// holds no more than `--udp-queue-len` in all. A held datagram's flow
/// knows it holds it until it leaves, up its flow.
#[test]
fn held_and_queued_datagrams_share_one_bound_and_held_ones_leave_up_their_flow() {
    let poll = mio::Poll::new().unwrap();
    let sink = client();
    let to = sink.local_addr().unwrap();
    let config = Config {
        udp_queue_len: 4,
        ..Config::default()
    };
    let mut udp = Udp::new(server_socket(&poll), false, &config);
    let counters = Counters::default();
    let mut flow = OneFlow::default();
    with_turn(&poll, &counters, |t| {
        udp.outbox.queue(b"queued", to, t.counters, t.now);
        udp.outbox.queue(b"queued", to, t.counters, t.now);
        for _ in 0..3 {
            delayed(&mut udp, to, 4, Some(&mut flow), t);
        }
        assert_eq!(udp.queued(), 4, "two queued, two held");
        assert_eq!(counters.snapshot().replies_dropped, 1, "the third held");
        assert_eq!((flow.held, flow.held_most), (2, 2));
        t.now = 5;
        while let Some(entry) = t.timers.pop_due(t.now) {
            udp.on_delay_timer(entry.at, Some(&mut flow), t);
        }
    });
    assert_eq!(flow.sent, [b"late", b"late"]);
    assert_eq!(flow.held, 0, "none held any more");
}

/// A reply to `to` sent now through the one fault path, no fault.
fn reply(udp: &mut Udp, to: SocketAddr, datagram: &[u8], t: &mut Turn<'_>) {
    let out = Outgoing {
        ordinal: 1,
        client: to,
        way: Way::Reply,
    };
    let mut sending = Sending {
        counters: t.counters,
        now: t.now,
        journal: None,
        timers: t.timers,
        upstreams: None,
    };
    udp.send(out, datagram, None, &mut sending);
}

/// Every datagram `sink` has received by now, as text.
fn drain(sink: &std::net::UdpSocket) -> Vec<String> {
    sink.set_nonblocking(true).unwrap();
    let mut got = [0; 64];
    let mut all = vec![];
    while let Ok(n) = sink.recv(&mut got) {
        all.push(String::from_utf8_lossy(&got[..n]).into_owned());
    }
    all
}

/// Sent datagrams are gathered, at most a batch of them, and leave
/// together, in order, when the turn ends.
#[test]
fn gathered_datagrams_are_bounded_and_leave_in_order() {
    let poll = mio::Poll::new().unwrap();
    let sink = client();
    let to = sink.local_addr().unwrap();
    let mut udp = Udp::new(server_socket(&poll), false, &Config::default());
    let counters = Counters::default();
    with_turn(&poll, &counters, |t| {
        for i in 0..70 {
            reply(&mut udp, to, format!("{i}").as_bytes(), t);
            assert!(
                udp.queued() <= outbound::GATHERED,
                "at most a batch gathered"
            );
        }
        assert_eq!(
            udp.queued(),
            70 % outbound::GATHERED,
            "the last batch waits"
        );
        udp.end_turn(t);
        assert_eq!(udp.queued(), 0, "and leaves with the turn");
    });
    let sent: Vec<String> = (0..70).map(|i| format!("{i}")).collect();
    assert_eq!(drain(&sink), sent);
    assert_eq!(counters.snapshot().replies_dropped, 0);
}

/// A socket that fills mid-batch: the datagrams it took have left, the
/// rest wait in the queue, in order, within its bound; past the bound they
/// are dropped and counted. The next writable event sends the queue.
#[test]
fn a_socket_full_mid_batch_keeps_the_rest_queued_within_the_bound() {
    let poll = mio::Poll::new().unwrap();
    let sink = client();
    let to = sink.local_addr().unwrap();
    let config = Config {
        udp_queue_len: 10,
        ..Config::default()
    };
    let mut udp = Udp::new(server_socket(&poll), false, &config);
    let counters = Counters::default();
    with_turn(&poll, &counters, |t| {
        for i in 0..20 {
            reply(&mut udp, to, format!("{i}").as_bytes(), t);
        }
        assert_eq!(udp.queued(), 20, "gathered");
        outbound::TAKES.set(Some(5));
        udp.end_turn(t);
        outbound::TAKES.set(None);
        assert_eq!(udp.queued(), 10, "five left, ten queued");
        assert_eq!(
            counters.snapshot().replies_dropped,
            5,
            "five past the bound"
        );
        reply(&mut udp, to, b"behind", t);
        assert_eq!(
            udp.queued(),
            10,
            "a new one goes behind the queue, which is full"
        );
        assert_eq!(counters.snapshot().replies_dropped, 6);
        udp.serve(None, t);
        assert_eq!(udp.queued(), 0, "the queue leaves when the socket takes it");
    });
    let sent: Vec<String> = (0..15).map(|i| format!("{i}")).collect();
    assert_eq!(drain(&sink), sent, "in order");
}

/// A send that fails for one datagram of a batch (here: an address the
/// socket cannot reach) costs that datagram alone, counted.
#[test]
fn an_error_mid_batch_costs_only_its_datagram() {
    let poll = mio::Poll::new().unwrap();
    let sink = client();
    let to = sink.local_addr().unwrap();
    let mut udp = Udp::new(server_socket(&poll), false, &Config::default());
    let counters = Counters::default();
    let unreachable: SocketAddr = "[::1]:9".parse().unwrap();
    with_turn(&poll, &counters, |t| {
        reply(&mut udp, to, b"first", t);
        reply(&mut udp, unreachable, b"lost", t);
        reply(&mut udp, to, b"third", t);
        udp.end_turn(t);
        assert_eq!(udp.queued(), 0);
    });
    assert_eq!(drain(&sink), ["first", "third"]);
    assert_eq!(counters.snapshot().replies_dropped, 1);
}

/// The rule for reading again: a full batch always is; a short one only
/// from [`READ_AGAIN_FROM`] on (a read after a smaller one mostly finds
/// nothing), or on a relay never.
#[test]
fn a_full_batch_is_read_again_and_a_short_one_from_four() {
    assert!(read_again(64, 64, READ_AGAIN_FROM), "full");
    assert!(
        read_again(1, 1, READ_AGAIN_FROM),
        "a full batch of one slot"
    );
    assert!(!read_again(3, 64, READ_AGAIN_FROM), "short, small");
    assert!(read_again(4, 64, READ_AGAIN_FROM), "short, from four");
    assert!(!read_again(31, 32, 32), "a relay's short batch");
}

/// Three datagrams come in one short batch: answered, with no second
/// read to see the socket empty; and a datagram that arrives after that
/// read brings a new event (epoll is edge-triggered), so it is answered
/// too, the wait for it bounded.
#[cfg(target_os = "linux")]
#[test]
fn a_small_batch_is_not_read_again_and_what_comes_after_it_is_still_answered() {
    let mut poll = mio::Poll::new().unwrap();
    let mut events = mio::Events::with_capacity(8);
    let socket = server_socket(&poll);
    let to = socket.local_addr().unwrap();
    let mut udp = Udp::new(socket, true, &Config::default());
    let counters = Counters::default();
    let client = client();
    let mut serve_when_ready = |udp: &mut Udp, poll: &mut mio::Poll| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while events.iter().all(|e| e.token() != UDP) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            assert!(!left.is_zero(), "no readable event within 10 s");
            poll.poll(&mut events, Some(left)).unwrap();
        }
        events.clear();
        let before = batch::RECEIVES.get();
        with_turn(poll, &counters, |t| udp.serve(None, t));
        batch::RECEIVES.get() - before
    };
    for _ in 0..3 {
        client.send_to(b"ping", to).unwrap();
    }
    // On loopback a datagram is on the server's queue when `send_to`
    // returns: the three are one batch.
    assert_eq!(serve_when_ready(&mut udp, &mut poll), 1, "one read");
    let mut buf = [0; 16];
    for _ in 0..3 {
        let n = client.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"Received");
    }
    client.send_to(b"late", to).unwrap();
    assert_eq!(serve_when_ready(&mut udp, &mut poll), 1);
    let n = client.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"Received", "the late one is answered");
    assert_eq!(counters.snapshot().datagrams, 4);
}
