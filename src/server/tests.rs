//! The loop's bookkeeping seen from inside, over real sockets on loopback:
//! the timer heap holds one entry per waiting thing, whatever the clients
//! do.

// Some helpers serve only the tests of live changes (`control`).
#![cfg_attr(not(feature = "control"), allow(unused))]

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use super::*;

const DEADLINE: Duration = Duration::from_secs(10);

/// Turns `server` until `done` says so, for at most [`DEADLINE`].
#[track_caller]
fn turn_until(server: &mut Server, mut done: impl FnMut(&mut Server) -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !done(server) {
        assert!(Instant::now() < deadline, "not done within {DEADLINE:?}");
        server.turn(Some(Duration::from_millis(10))).unwrap();
    }
}

/// Turns `server` until a whole answer line arrives on `client`.
#[track_caller]
fn answer(server: &mut Server, client: &mut TcpStream) -> String {
    let mut line = Vec::new();
    turn_until(server, |_| {
        let mut byte = [0];
        loop {
            match client.read(&mut byte) {
                Ok(1) if byte[0] == b'\n' => return true,
                Ok(1) => line.push(byte[0]),
                Ok(_) => panic!("closed after {line:?}"),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                Err(e) => panic!("{e}"),
            }
        }
    });
    String::from_utf8(line).unwrap()
}

/// Control waits each met at once: each armed a deadline a day away.
#[test]
#[cfg(feature = "control")]
fn received_answered_early_leaves_no_timer_entries_piling_up() {
    let config = Config {
        control: Some("127.0.0.1:0".parse().unwrap()),
        ..Config::loopback()
    };
    let mut server = Server::bind(config).unwrap();
    let mut control = TcpStream::connect(server.control_addr().unwrap()).unwrap();
    control.set_nonblocking(true).unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp = server.udp_addr().unwrap();
    const WAITS: u64 = 3 * SWEEP_SLACK as u64;
    for n in 1..=WAITS {
        control
            .write_all(format!("received {n} 86400\n").as_bytes())
            .unwrap();
        // Waiting (with its entry armed) before the datagram arrives.
        turn_until(&mut server, |server| {
            let control = server.sources.control.as_ref().unwrap();
            control.timers_current() == 2
        });
        client.send_to(b"one", udp).unwrap();
        assert_eq!(answer(&mut server, &mut control), format!("ok {n}"));
    }
    let held = server.timers.len();
    assert!(
        held <= 2 * 3 + SWEEP_SLACK,
        "{held} timer entries after {WAITS} waits answered"
    );
}

#[test]
fn delayed_udp_replies_share_one_timer_entry() {
    let config = Config {
        faults: vec!["udp:delay=60000".parse().unwrap()],
        ..Config::loopback()
    };
    let mut server = Server::bind(config).unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    const DATAGRAMS: u64 = 100;
    for _ in 0..DATAGRAMS {
        client
            .send_to(b"later", server.udp_addr().unwrap())
            .unwrap();
    }
    turn_until(&mut server, |server| server.stats().datagrams == DATAGRAMS);
    let udp = server.sources.udp.as_ref().unwrap();
    assert_eq!(udp.queued(), DATAGRAMS as usize, "every reply is held back");
    assert_eq!(server.timers.len(), 1, "one entry for them all");
}
