//! The reply queue and the delayed replies, with a real socket and no loop.

use super::*;
use crate::reply::Pattern;
use crate::timer::Timers;
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
        replies: &mut replies,
        counters,
        timers: &mut timers,
        ready: &mut ready,
        faults: &mut faults,
        journal: None,
    };
    f(&mut t)
}

/// On loopback the kernel almost never makes `send_to` block, so the
/// queue is filled by hand here, then drained by a real `serve`.
#[test]
fn queued_replies_are_bounded_then_sent_in_order() {
    let poll = mio::Poll::new().unwrap();
    let mut socket = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    poll.registry()
        .register(&mut socket, UDP, mio::Interest::READABLE)
        .unwrap();
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let to = client.local_addr().unwrap();
    let config = Config::default();
    let (queue_len, queue_bytes) = (config.udp_queue_len, config.udp_queue_bytes);
    let mut udp = Udp::new(socket, false, &config);
    let counters = Counters::default();
    for i in 0..queue_len + 5 {
        udp.queue_reply(format!("{i}").as_bytes(), to, &counters, 0);
    }
    assert_eq!(udp.queued(), queue_len);
    assert_eq!(counters.snapshot().replies_dropped, 5, "past the bound");
    // The byte bound holds too: one reply as large as all allowed.
    udp.queue_reply(&vec![0; queue_bytes], to, &counters, 0);
    assert_eq!(counters.snapshot().replies_dropped, 6);
    let turns = with_turn(&poll, &counters, |t| {
        // The socket has nothing to receive, so serve only sends: a
        // turn's budget at a time, the socket staying on the ready list
        // while replies are left.
        let mut turns = 0;
        loop {
            udp.serve(t);
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
    assert!(udp.spare.len() <= queue_len, "spares are bounded");
}

#[test]
fn delayed_replies_due_together_are_released_a_turn_budget_at_a_time() {
    let poll = mio::Poll::new().unwrap();
    let mut socket = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    poll.registry()
        .register(&mut socket, UDP, mio::Interest::READABLE)
        .unwrap();
    let sink = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = sink.local_addr().unwrap();
    let config = crate::Config::default();
    let mut udp = Udp::new(socket, false, &config);
    let counters = Counters::default();
    let held = DATAGRAMS_PER_TURN + 10;
    with_turn(&poll, &counters, |t| {
        for _ in 0..held {
            udp.delay_reply(b"late", to, 5, None, t);
        }
        t.now = 5;
        udp.release_delayed(t);
        assert_eq!(udp.delayed.len(), 10, "one turn's budget released");
        assert_eq!(t.ready.pop(), Some(Ready::Udp), "the rest next turn");
        udp.serve(t);
        assert_eq!(udp.queued(), 0);
        assert!(t.ready.is_empty());
    });
    assert_eq!(counters.snapshot().bytes_out, 4 * held as u64);
}
