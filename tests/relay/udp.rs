//! UDP flows through the relay: one flow per client both ways, the cap
//! and expiry, an unreachable upstream, seeded drops, faults each way.

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use crate::common::upstream::UdpUpstream;
use crate::common::{DEADLINE, Server, counter, text, wait_until};
use crate::{ask, relay_summary};

/// Starts a server relaying UDP to `upstream`, with `args` after.
#[track_caller]
pub fn udp_relay(upstream: SocketAddr, args: &[&str]) -> Server {
    let spec = format!("udp:{upstream}");
    let mut all = vec!["--upstream", spec.as_str()];
    all.extend_from_slice(args);
    Server::start(&all)
}

/// A client socket on a free port with a short read timeout.
pub fn udp_client(timeout: Duration) -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(timeout)).unwrap();
    socket
}

/// The next datagram and its source, or `None` within the read timeout.
pub fn udp_receive(socket: &UdpSocket) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = vec![0; 65_536];
    match crate::common::retrying(|| socket.recv_from(&mut buf)) {
        Ok((n, from)) => Some((buf[..n].to_vec(), from)),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
        Err(e) => panic!("recv: {e}"),
    }
}

#[test]
fn datagrams_relay_both_ways_through_one_flow_per_client() {
    let upstream = UdpUpstream::echo();
    let relay = udp_relay(upstream.addr, &[]);
    let clients = [udp_client(DEADLINE), udp_client(DEADLINE)];
    for round in 0..3 {
        for (i, client) in clients.iter().enumerate() {
            let datagram = format!("client {i} round {round}");
            client.send_to(datagram.as_bytes(), relay.udp()).unwrap();
            let (reply, from) = udp_receive(client).expect("a reply");
            assert_eq!(text(&reply), datagram);
            assert_eq!(from, relay.udp(), "replies come from the address sent to");
        }
    }
    let sources = upstream.sources.lock().unwrap().clone();
    let distinct: std::collections::BTreeSet<_> = sources.iter().collect();
    assert_eq!(sources.len(), 6);
    assert_eq!(distinct.len(), 2, "one flow per client: {sources:?}");
    let empty = udp_client(DEADLINE);
    empty.send_to(b"", relay.udp()).unwrap();
    assert_eq!(udp_receive(&empty).expect("the empty datagram too").0, b"");
}

/// One flow at most, closed after a second of silence: a second client is
/// dropped until the first one's flow expires, then served.
/// Many clients' datagrams at once: the relay reads them from its socket
/// in batches, sends each up its client's own flow, and sends what the
/// flows bring back together (two of them long, past what one send
/// gathers); each client gets its own datagrams back, in order, from the
/// address it sent to.
#[test]
fn many_clients_datagrams_at_once_each_reach_their_own_client_in_order() {
    const CLIENTS: usize = 40;
    const EACH: usize = 2;
    let upstream = UdpUpstream::echo();
    // Room of its own for 80 datagrams, two of 40 KB (the test's options
    // win over the smallest settings of ACKLOOP_TEST_ARGS).
    let room = ["--read-buffer", "65536", "--udp-queue-len", "1024"];
    let relay = udp_relay(
        upstream.addr,
        &[&room[..], &["--udp-queue-bytes", "4194304"]].concat(),
    );
    let clients: Vec<UdpSocket> = (0..CLIENTS).map(|_| udp_client(DEADLINE)).collect();
    let datagram = |client: usize, k: usize| {
        let mut datagram = format!("client {client} datagram {k}").into_bytes();
        if client < 2 && k == 0 {
            datagram.resize(40_000, b'.');
        }
        datagram
    };
    for k in 0..EACH {
        for (i, client) in clients.iter().enumerate() {
            client.send_to(&datagram(i, k), relay.udp()).unwrap();
        }
    }
    for (i, client) in clients.iter().enumerate() {
        for k in 0..EACH {
            let (reply, from) = udp_receive(client).expect("a reply");
            assert!(
                reply == datagram(i, k),
                "client {i}'s datagram {k}, in order"
            );
            assert_eq!(from, relay.udp(), "replies come from the address sent to");
        }
    }
    let sources = upstream.sources.lock().unwrap().clone();
    let distinct: std::collections::BTreeSet<_> = sources.iter().collect();
    assert_eq!(distinct.len(), CLIENTS, "one flow per client");
}

#[test]
fn flows_are_capped_and_expire() {
    let upstream = UdpUpstream::echo();
    let relay = udp_relay(upstream.addr, &["--max-flows", "1", "--flow-timeout", "1"]);
    let first = udp_client(DEADLINE);
    first.send_to(b"first", relay.udp()).unwrap();
    assert_eq!(udp_receive(&first).unwrap().0, b"first");
    let last_active = Instant::now();
    let second = udp_client(Duration::from_millis(100));
    let mut dropped = 0;
    let served = wait_until(DEADLINE, || {
        second.send_to(b"second", relay.udp()).unwrap();
        match udp_receive(&second) {
            Some((reply, _)) => reply == b"second",
            None => {
                dropped += 1;
                false
            }
        }
    });
    assert!(served, "the second client was never served");
    let waited = last_active.elapsed();
    assert!(dropped >= 1, "dropped while the first flow lived");
    assert!(
        waited >= Duration::from_millis(900),
        "served after {waited:?}"
    );
    let (_, summary, _) = relay_summary(relay);
    assert!(
        counter(&summary, "replies dropped").unwrap() >= 1,
        "{summary}"
    );
}

#[test]
fn an_unreachable_upstream_is_counted_and_the_flow_goes_on() {
    let gone = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let relay = udp_relay(gone, &["--control", "127.0.0.1:0"]);
    let client = udp_client(Duration::from_millis(50));
    let control = relay.control.unwrap();
    let mut stats = String::new();
    let counted = wait_until(DEADLINE, || {
        client.send_to(b"hello?", relay.udp()).unwrap();
        stats = ask(control, "stats");
        !stats.contains(" upstream_failed=0 ")
    });
    assert!(counted, "{stats}");
    assert!(relay_summary(relay).0.success());
}

/// The same seed drops the same replies: 10 % of them, the same ones.
#[test]
fn the_same_seed_drops_the_same_datagrams_each_way() {
    for dir in ["down", "up"] {
        let pattern = |seed: &str| -> Vec<bool> {
            let upstream = UdpUpstream::echo();
            let fault = format!("udp:drop,p=0.1,dir={dir}");
            let relay = udp_relay(upstream.addr, &["--fault", &fault, "--seed", seed]);
            let client = udp_client(Duration::from_millis(200));
            (0..30)
                .map(|i| {
                    client
                        .send_to(format!("{i}").as_bytes(), relay.udp())
                        .unwrap();
                    udp_receive(&client).is_some()
                })
                .collect()
        };
        let first = pattern("3");
        let lost = first.iter().filter(|got| !**got).count();
        assert!((1..=10).contains(&lost), "{dir}: {lost} of 30 lost");
        assert_eq!(pattern("3"), first, "{dir}");
    }
}

#[test]
fn udp_faults_shape_each_direction() {
    let upstream = UdpUpstream::echo();
    let relay = udp_relay(upstream.addr, &["--fault", "udp:delay=200,dir=up"]);
    let client = udp_client(DEADLINE);
    let started = Instant::now();
    client.send_to(b"late", relay.udp()).unwrap();
    assert_eq!(udp_receive(&client).unwrap().0, b"late");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(200), "{took:?}");
    assert!(
        took <= Duration::from_secs(3),
        "held past its delay: {took:?}"
    );
    let relay = udp_relay(
        upstream.addr,
        &[
            "--fault",
            "udp:duplicate",
            "--fault",
            "udp:truncate=2,dir=up",
        ],
    );
    client.send_to(b"twice", relay.udp()).unwrap();
    assert_eq!(udp_receive(&client).unwrap().0, b"tw");
    assert_eq!(udp_receive(&client).unwrap().0, b"tw");
}

/// A flow holding a datagram back (`up` delay) is not idle: the datagram
/// delayed past `--flow-timeout` still reaches the upstream, and its
/// reply the client, once the delay is over; nothing is dropped.
#[test]
fn a_datagram_delayed_past_the_flow_timeout_is_still_relayed() {
    let upstream = UdpUpstream::echo();
    let relay = udp_relay(
        upstream.addr,
        &["--fault", "udp:delay=2000,dir=up", "--flow-timeout", "1"],
    );
    let client = udp_client(DEADLINE);
    let sent = Instant::now();
    client.send_to(b"late", relay.udp()).unwrap();
    let (reply, _) = udp_receive(&client).expect("the delayed datagram's reply");
    let took = sent.elapsed();
    assert_eq!(reply, b"late");
    assert!(took >= Duration::from_millis(2000), "{took:?}");
    assert!(took <= Duration::from_secs(6), "{took:?}");
    let (_, summary, _) = relay_summary(relay);
    assert_eq!(counter(&summary, "replies dropped"), Some(0), "{summary}");
}

/// A flow whose upstream never answers expires all the same: its clock
/// runs from the client's datagram, not only from the upstream's. With
/// one flow at most, a second client's datagram reaches the upstream
/// once the first flow has been silent for `--flow-timeout`.
#[test]
fn a_flow_with_a_silent_upstream_expires() {
    let upstream = UdpUpstream::start(|_| None);
    let relay = udp_relay(upstream.addr, &["--max-flows", "1", "--flow-timeout", "1"]);
    let first = udp_client(DEADLINE);
    let last_active = Instant::now();
    first.send_to(b"first", relay.udp()).unwrap();
    let reached = wait_until(DEADLINE, || upstream.received.load(SeqCst) >= 1);
    assert!(reached, "the first datagram never reached the upstream");
    let second = udp_client(DEADLINE);
    // One datagram every 100 ms: dropped while the first flow lives.
    let expired = wait_until(Duration::from_secs(6), || {
        second.send_to(b"second", relay.udp()).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        upstream.received.load(SeqCst) >= 2
    });
    let waited = last_active.elapsed();
    assert!(expired, "the silent flow never expired ({waited:?})");
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
    let sources = upstream.sources.lock().unwrap().clone();
    assert_ne!(
        sources[0], sources[1],
        "the second client has a flow of its own"
    );
}

/// A flow whose datagram an `up` delay holds is kept while it waits, and
/// expires `--flow-timeout` after it left (the upstream never answers, so
/// only that departure starts the flow's idle time).
#[test]
fn a_flow_expires_once_its_delayed_datagram_has_left() {
    let upstream = UdpUpstream::start(|_| None);
    let relay = udp_relay(
        upstream.addr,
        &[
            "--fault",
            "udp:delay=1500,dir=up,first=1",
            "--max-flows",
            "1",
            "--flow-timeout",
            "1",
        ],
    );
    let first = udp_client(DEADLINE);
    let sent = Instant::now();
    first.send_to(b"held", relay.udp()).unwrap();
    let reached = wait_until(DEADLINE, || upstream.received.load(SeqCst) >= 1);
    let held_for = sent.elapsed();
    assert!(reached, "the held datagram never reached the upstream");
    assert!(held_for >= Duration::from_millis(1500), "{held_for:?}");
    let second = udp_client(DEADLINE);
    let expired = wait_until(Duration::from_secs(6), || {
        second.send_to(b"second", relay.udp()).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        upstream.received.load(SeqCst) >= 2
    });
    let waited = sent.elapsed();
    assert!(expired, "the flow never expired ({waited:?})");
    assert!(waited >= Duration::from_millis(2400), "{waited:?}");
}
