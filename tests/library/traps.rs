//! The GUIDE's traps, met by a host that turns the loop itself: clients
//! waiting in the backlog, bursts longer than one turn's budget, deadlines
//! with no events, replies through short writes and behind a FIN.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use ackloop::testing::TestServer;
use ackloop::{Config, Mode, Server};

#[cfg(target_os = "linux")]
use crate::sockets;
use crate::{DEADLINE, connect, udp_socket};

/// Turns `server` (at most 10 ms each) until `done` holds, within
/// `DEADLINE`; whether it held.
fn turn_until(server: &mut Server, mut done: impl FnMut(&Server) -> bool) -> bool {
    let deadline = Instant::now() + DEADLINE;
    while !done(server) {
        if Instant::now() >= deadline {
            return false;
        }
        server.turn(Some(Duration::from_millis(10))).unwrap();
    }
    true
}

/// Reads what a non-blocking stream has now into `got`; whether the peer
/// has closed it.
#[track_caller]
fn read_now(mut stream: &TcpStream, got: &mut Vec<u8>) -> bool {
    let mut buf = [0; 64 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// Clients that connect while the server is not turning wait in the
/// listen backlog, and one readiness event stands for all of them: no
/// other event comes. So the listener must be accepted from until
/// `WouldBlock`, and, when the per-turn accept budget stops that early,
/// served again next turn from the still-ready list (GUIDE traps 1, 2).
#[test]
fn every_client_waiting_in_the_backlog_is_served_without_another_event() {
    for n in [3, ackloop::ACCEPTS_PER_TURN + 6] {
        let mut server = Server::bind(Config::loopback()).unwrap();
        let tcp = server.tcp_addr().unwrap();
        let clients: Vec<TcpStream> = (0..n)
            .map(|_| {
                let mut client = connect(tcp);
                client.write_all(b"Hello, Server").unwrap();
                client.set_nonblocking(true).unwrap();
                client
            })
            .collect();
        let mut replies = vec![Vec::new(); n];
        let mut closed = vec![false; n];
        let all_served = turn_until(&mut server, |_| {
            for (i, client) in clients.iter().enumerate() {
                if !closed[i] {
                    closed[i] = read_now(client, &mut replies[i]);
                }
            }
            closed.iter().all(|&c| c)
        });
        let served = closed.iter().filter(|&&c| c).count();
        assert!(
            all_served,
            "{served} of {n} waiting clients served within {DEADLINE:?} ({} accepted)",
            server.stats().accepted
        );
        assert!(replies.iter().all(|r| r == b"Received"), "{replies:?}");
    }
}

/// A burst longer than one turn's reads ([`READS_PER_TURN`] reads of
/// 64 KiB) that is already all in the server's receive buffer: nothing
/// more will arrive, so no event will report the rest. The server must
/// serve the connection again from its still-ready list (GUIDE trap 2).
///
/// The burst is one long line: a connection that owed reply bytes when
/// its budget ran out would register for `WRITABLE`, and the event that
/// brings would hide a missing still-ready entry.
///
/// [`READS_PER_TURN`]: ackloop::READS_PER_TURN
#[cfg(target_os = "linux")]
#[test]
fn a_burst_longer_than_one_turns_reads_is_answered_without_another_event() {
    use std::os::fd::AsRawFd;
    let burst = (ackloop::READS_PER_TURN + 8) * 64 * 1024;
    let mut config = Config::loopback();
    config.mode = Mode::Line;
    config.udp = None;
    config.max_line = burst;
    let mut server = Server::bind(config).unwrap();
    let tcp = server.tcp_addr().unwrap();
    let mut client = connect(tcp);
    client.set_write_timeout(Some(DEADLINE)).unwrap();
    assert!(turn_until(&mut server, |s| s.stats().accepted == 1));
    let theirs = sockets::find(tcp, Some(client.local_addr().unwrap()));
    sockets::set_receive_buffer(theirs, 4 << 20);
    let room = sockets::receive_buffer(theirs);
    if room < 2 * burst {
        // net.core.rmem_max caps it (the default 208 KiB does).
        eprintln!("skipped: a {room}-byte receive buffer cannot hold a {burst}-byte burst");
        return;
    }

    let mut line = vec![b'x'; burst - 1];
    line.push(b'\n');
    client.write_all(&line).unwrap();
    let deadline = Instant::now() + DEADLINE;
    while sockets::unacknowledged(client.as_raw_fd()) > 0 {
        assert!(
            Instant::now() < deadline,
            "setup: the burst never all reached the server's receive buffer"
        );
        std::thread::sleep(Duration::from_millis(1));
    }

    client.set_nonblocking(true).unwrap();
    let mut reply = Vec::new();
    let answered = turn_until(&mut server, |_| {
        read_now(&client, &mut reply);
        !reply.is_empty()
    });
    let read = server.stats().bytes_in;
    assert!(
        answered,
        "no reply within {DEADLINE:?}: the server read {read} of the {burst} bytes"
    );
    assert_eq!(reply, b"Received\n");
}

/// The same for UDP: more datagrams than one turn takes
/// ([`DATAGRAMS_PER_TURN`]) all wait in the server's receive buffer before
/// it turns; every one is answered, with no datagram after them to raise
/// another event (GUIDE traps 1, 2).
///
/// [`DATAGRAMS_PER_TURN`]: ackloop::DATAGRAMS_PER_TURN
#[cfg(target_os = "linux")]
#[test]
fn a_datagram_burst_longer_than_one_turns_budget_is_answered_without_another_event() {
    use std::os::fd::AsRawFd;
    let mut config = Config::loopback();
    config.tcp = None;
    let mut server = Server::bind(config).unwrap();
    let udp = server.udp_addr().unwrap();
    // Room for the burst, and for its replies at the client, even where
    // net.core.rmem_max is the default 208 KiB (doubled by the kernel).
    sockets::set_receive_buffer(sockets::find(udp, None), 1 << 20);
    let client = udp_socket();
    sockets::set_receive_buffer(client.as_raw_fd(), 1 << 20);
    client.connect(udp).unwrap();
    let n = ackloop::DATAGRAMS_PER_TURN + 44;
    for _ in 0..n {
        // Loopback delivers during the send: each is queued when it returns.
        client.send(b"burst").unwrap();
    }

    client.set_nonblocking(true).unwrap();
    let mut answered = 0;
    let mut buf = [0; 64];
    let all = turn_until(&mut server, |_| {
        while let Ok(len) = client.recv(&mut buf) {
            assert_eq!(&buf[..len], b"Received");
            answered += 1;
        }
        answered == n
    });
    assert!(
        all,
        "{answered} of {n} datagrams answered within {DEADLINE:?}"
    );
}

/// The idle timeout of the tests on deadlines: short, so they are quick.
const IDLE: Duration = Duration::from_millis(300);

/// mio has no timers: a deadline is kept only by passing it to `poll` as
/// its timeout. A silent client on an otherwise idle server is closed at
/// its idle deadline, though no event ever wakes the loop (GUIDE trap 7).
#[test]
fn an_idle_deadline_wakes_a_loop_that_has_no_events() {
    let server = TestServer::builder()
        .mode(Mode::Line)
        .configure(|c| c.idle_timeout = Some(IDLE))
        .start()
        .unwrap();
    let started = Instant::now();
    let mut silent = connect(server.tcp_addr());
    let mut rest = Vec::new();
    silent
        .read_to_end(&mut rest)
        .unwrap_or_else(|e| panic!("not closed within {DEADLINE:?}: {e}"));
    let after = started.elapsed();
    assert_eq!(rest, b"");
    assert!(
        after >= IDLE * 9 / 10,
        "closed after {after:?}, before {IDLE:?}"
    );
}

/// Connects a client to a host-driven server and turns it until the
/// client is accepted: the client (non-blocking) and when it connected.
fn idle_client(server: &mut Server) -> (TcpStream, Instant) {
    let started = Instant::now();
    let client = connect(server.tcp_addr().unwrap());
    let accepted = server.stats().accepted + 1;
    assert!(turn_until(server, |s| s.stats().accepted == accepted));
    client.set_nonblocking(true).unwrap();
    (client, started)
}

/// A host-driven line-mode server with the idle timeout `IDLE`.
fn idle_server() -> Server {
    let mut config = Config::loopback();
    config.mode = Mode::Line;
    config.udp = None;
    config.idle_timeout = Some(IDLE);
    Server::bind(config).unwrap()
}

/// An empty list of events does not mean a deadline passed: a host that
/// turns the server with short timeouts gets one empty poll after another,
/// and the idle connection stays open until its deadline truly comes
/// (GUIDE trap 7).
#[test]
fn empty_polls_do_not_bring_a_deadline_forward() {
    let mut server = idle_server();
    let (client, started) = idle_client(&mut server);
    let mut got = Vec::new();
    let closed = turn_until(&mut server, |_| read_now(&client, &mut got));
    let after = started.elapsed();
    assert!(closed, "not closed within {DEADLINE:?}");
    assert_eq!(got, b"");
    assert!(
        after >= IDLE * 9 / 10,
        "closed after {after:?}, before {IDLE:?}"
    );
}

/// Nor does a list with events mean no deadline passed: while another
/// client keeps every poll busy, the silent one is still closed at its
/// deadline (GUIDE trap 7).
#[test]
fn a_loop_busy_every_turn_still_keeps_deadlines() {
    let mut server = idle_server();
    let (silent, started) = idle_client(&mut server);
    let (busy, _) = idle_client(&mut server);
    let mut replies = Vec::new();
    let mut got = Vec::new();
    let closed = turn_until(&mut server, |_| {
        // A line before every poll: no turn ever finds no event. The
        // replies are read, so none piles up.
        (&busy).write_all(b"x\n").unwrap();
        read_now(&busy, &mut replies);
        read_now(&silent, &mut got)
    });
    let after = started.elapsed();
    assert!(closed, "the silent client not closed within {DEADLINE:?}");
    assert!(
        after >= IDLE * 9 / 10,
        "closed after {after:?}, before {IDLE:?}"
    );
    assert!(!replies.is_empty() && replies.chunks(9).all(|r| r == b"Received\n"));
}

/// A short write is progress, not an error (GUIDE trap 4). The server's
/// send buffer is made tiny and the client reads nothing until that buffer
/// is full, so the server's writes have certainly stopped short on
/// `WouldBlock`; from then on the replies go out in short writes as the
/// client reads. Every one still arrives whole and in order, and the
/// connection ends with a FIN.
#[cfg(target_os = "linux")]
#[test]
fn replies_many_times_the_send_buffer_arrive_whole_through_short_writes() {
    let mut config = Config::loopback();
    config.mode = Mode::Line;
    config.udp = None;
    let mut server = Server::bind(config).unwrap();
    let tcp = server.tcp_addr().unwrap();
    let handle = server.handle();
    let running = std::thread::spawn(move || server.run());
    let mut client = connect(tcp);
    client.set_write_timeout(Some(DEADLINE)).unwrap();
    let theirs = sockets::find_soon(tcp, client.local_addr().unwrap());
    sockets::set_send_buffer(theirs, 4096);

    // 180 KB of replies: far more than the send buffer and the client's
    // receive window together.
    let lines = 20_000;
    client.write_all(&b"x\n".repeat(lines)).unwrap();
    // Unacknowledged bytes wait in the server's send queue only once the
    // client's receive window is full: the server's writes now block.
    let deadline = Instant::now() + DEADLINE;
    while sockets::try_unacknowledged(theirs).is_some_and(|n| n < 4096) {
        assert!(
            Instant::now() < deadline,
            "the server never filled its send buffer"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    client.shutdown(std::net::Shutdown::Write).unwrap();
    let mut replies = Vec::new();
    client
        .read_to_end(&mut replies)
        .unwrap_or_else(|e| panic!("{e} after {} reply bytes", replies.len()));
    assert_eq!(replies.len(), lines * 9);
    assert!(replies.chunks(9).all(|r| r == b"Received\n"));
    handle.shutdown();
    let stats = running.join().unwrap().unwrap();
    assert_eq!(stats.bytes_out, (lines * 9) as u64);
}

/// Closing a socket with unread input sends a reset, and the reset throws
/// away the replies still queued in the kernel behind our FIN (GUIDE
/// trap 9). Here the client has not read yet, so most of its replies wait
/// in the server's send queue when the server is done with it (a line
/// over `max_line` ends the exchange); then the client sends a few more
/// bytes, which the server never reads as a request. A lingering close
/// reads and discards them until the client's EOF; every reply arrives,
/// then a FIN.
#[cfg(target_os = "linux")]
#[test]
fn replies_queued_behind_the_fin_survive_input_sent_after_the_close() {
    let mut config = Config::loopback();
    config.mode = Mode::Line;
    config.udp = None;
    config.max_line = 8;
    let mut server = Server::bind(config).unwrap();
    let tcp = server.tcp_addr().unwrap();
    let client = connect(tcp);
    assert!(turn_until(&mut server, |s| s.stats().accepted == 1));
    // Room in the server's send queue for the replies the client's
    // receive window cannot take yet.
    let theirs = sockets::find(tcp, Some(client.local_addr().unwrap()));
    sockets::set_send_buffer(theirs, 1 << 20);

    let lines = 30_000; // 270 KB of replies
    let mut request = b"x\n".repeat(lines);
    request.extend_from_slice(b"far too long\n");
    let total = request.len() as u64;
    let mut writer = client.try_clone().unwrap();
    let sender = std::thread::spawn(move || writer.write_all(&request));
    assert!(
        turn_until(&mut server, |s| s.stats().bytes_in == total),
        "the server never read the whole request"
    );
    sender.join().unwrap().unwrap();
    // The server is done with this client; replies still wait in its send
    // queue. Now input it will not answer.
    (&client).write_all(b"late\n").unwrap();

    client.set_nonblocking(true).unwrap();
    let mut replies = Vec::new();
    let mut error = None;
    let closed = turn_until(&mut server, |_| {
        let mut buf = [0; 64 * 1024];
        loop {
            match (&client).read(&mut buf) {
                Ok(0) => return true,
                Ok(n) => replies.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    error = Some(e);
                    return true;
                }
            }
        }
    });
    assert!(closed, "not closed within {DEADLINE:?}");
    assert!(
        error.is_none(),
        "{:?} after {} of {lines} replies",
        error,
        replies.len() / 9
    );
    assert_eq!(replies.len(), lines * 9);
    assert!(replies.chunks(9).all(|r| r == b"Received\n"));
}
