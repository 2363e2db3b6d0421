//! The library as its users meet it: the test server in someone's test,
//! custom responders, a host driving turns, shutdown from another thread,
//! counters; and the GUIDE's traps, met by a host turning the loop itself
//! ([`traps`]).

// Some helpers serve only the tests of live changes (`control`).
#![cfg_attr(not(feature = "control"), allow(unused))]

#[cfg(target_os = "linux")]
mod sockets;
mod traps;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use ackloop::testing::TestServer;
use ackloop::{Config, Echo, Mode, Protocol, Request, Server, Stats, Status};

/// Bounds every wait: generous, so it only ends a test that already failed.
const DEADLINE: Duration = Duration::from_secs(10);

#[track_caller]
fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream
}

/// Sends `request`, then reads until the server closes.
#[track_caller]
fn exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = connect(addr);
    stream.write_all(request).unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).expect("reply, then EOF");
    reply
}

#[track_caller]
fn udp_socket() -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(DEADLINE)).unwrap();
    socket
}

#[track_caller]
fn udp_reply(socket: &UdpSocket) -> Vec<u8> {
    let mut buf = vec![0; 70_000];
    let (n, _) = socket.recv_from(&mut buf).expect("a reply datagram");
    buf.truncate(n);
    buf
}

/// The article's client, standing in for "the client code you test".
fn article_client(tcp: SocketAddr, udp: SocketAddr) -> std::io::Result<(String, String)> {
    let mut stream = TcpStream::connect(tcp)?;
    stream.write_all(b"Hello, Server")?;
    let mut tcp_reply = String::new();
    stream.read_to_string(&mut tcp_reply)?;
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.send_to(b"Hello, Server", udp)?;
    let mut buf = [0; 64];
    let n = socket.recv(&mut buf)?;
    Ok((tcp_reply, String::from_utf8_lossy(&buf[..n]).into()))
}

#[test]
fn a_user_tests_their_client_against_the_test_server() {
    let server = TestServer::start().unwrap();
    let replies = article_client(server.tcp_addr(), server.udp_addr()).unwrap();
    assert_eq!(replies, ("Received".into(), "Received".into()));
    let messages = server.wait_for(2);
    assert_eq!(
        (messages[0].protocol, &messages[0].bytes[..]),
        (Protocol::Tcp, &b"Hello, Server"[..])
    );
    assert_eq!(
        (messages[1].protocol, &messages[1].bytes[..]),
        (Protocol::Udp, &b"Hello, Server"[..])
    );
}

#[test]
fn the_test_server_records_peers_and_times_out_with_what_arrived() {
    let server = TestServer::builder().mode(Mode::Line).start().unwrap();
    let mut stream = connect(server.tcp_addr());
    stream.write_all(b"one\r\ntwo\n").unwrap();
    let messages = server.wait_for(2);
    assert_eq!(messages[0].bytes, b"one");
    assert_eq!(messages[1].bytes, b"two");
    assert_eq!(messages[0].peer, stream.local_addr().unwrap());
    let partial = server.try_wait_for(3, Duration::from_millis(50));
    assert_eq!(partial.unwrap_err().len(), 2, "a third message never came");
}

#[test]
fn the_record_is_bounded() {
    let server = TestServer::builder().record_limit(3).start().unwrap();
    let socket = udp_socket();
    for i in 0..5u8 {
        socket.send_to(&[i], server.udp_addr()).unwrap();
        assert_eq!(udp_reply(&socket), b"Received");
    }
    assert_eq!(server.received().len(), 3);
    assert_eq!(server.unrecorded(), 2);
}

#[test]
fn parallel_test_servers_do_not_clash() {
    let threads: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(|| {
                let server = TestServer::start().unwrap();
                exchange(server.tcp_addr(), b"hi")
            })
        })
        .collect();
    for thread in threads {
        assert_eq!(thread.join().unwrap(), b"Received");
    }
}

#[test]
fn echo_answers_each_line_and_datagram_with_itself() {
    let server = TestServer::builder()
        .mode(Mode::Line)
        .responder(Echo)
        .start()
        .unwrap();
    let stream = connect(server.tcp_addr());
    let mut writer = stream.try_clone().unwrap();
    // Lines split across writes, one of them at the "\r|\n" boundary.
    for piece in [&b"first li"[..], b"ne\r", b"\nsecond\n\n", b"last"] {
        writer.write_all(piece).unwrap();
    }
    writer.shutdown(std::net::Shutdown::Write).unwrap();
    let lines: Vec<String> = BufReader::new(stream).lines().map(Result::unwrap).collect();
    assert_eq!(lines, ["first line", "second", "", "last"]);

    let socket = udp_socket();
    socket.send_to(b"datagram", server.udp_addr()).unwrap();
    assert_eq!(udp_reply(&socket), b"datagram");
    socket.send_to(b"", server.udp_addr()).unwrap();
    assert_eq!(udp_reply(&socket), b"");
}

#[test]
fn a_responder_may_send_nothing() {
    // Answers only messages that start with '!', upper-cased.
    let picky = |request: &Request<'_>, reply: &mut Vec<u8>| {
        reply.extend(request.message.iter().map(u8::to_ascii_uppercase));
        request.message.starts_with(b"!")
    };
    let server = TestServer::builder().responder(picky).start().unwrap();
    assert_eq!(
        exchange(server.tcp_addr(), b"quiet"),
        b"",
        "closed without a reply"
    );
    assert_eq!(exchange(server.tcp_addr(), b"!loud"), b"!LOUD");
    let socket = udp_socket();
    socket.send_to(b"quiet", server.udp_addr()).unwrap();
    socket.send_to(b"!loud", server.udp_addr()).unwrap();
    // Loopback keeps datagrams in order: had "quiet" been answered, its
    // reply would come first.
    assert_eq!(udp_reply(&socket), b"!LOUD");
}

#[test]
fn a_host_drives_the_server_turn_by_turn() {
    let mut config = Config::loopback();
    config.idle_timeout = Some(Duration::from_secs(30));
    let mut server = Server::bind(config).unwrap();
    assert_eq!(server.poll_delay(), None, "no connection, no deadline");
    let mut client = connect(server.tcp_addr().unwrap());
    let deadline = Instant::now() + DEADLINE;
    while server.stats().accepted == 0 {
        assert!(Instant::now() < deadline, "never accepted");
        assert_eq!(
            server.turn(Some(Duration::from_millis(100))).unwrap(),
            Status::Running
        );
    }
    let delay = server.poll_delay().expect("an idle deadline now");
    assert!(
        delay <= Duration::from_secs(30) && delay > Duration::from_secs(20),
        "{delay:?}"
    );

    client.write_all(b"Hello, Server").unwrap();
    client.set_nonblocking(true).unwrap();
    let mut reply = Vec::new();
    loop {
        assert!(Instant::now() < deadline, "no reply");
        server.turn(Some(Duration::from_millis(100))).unwrap();
        match client.read_to_end(&mut reply) {
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(reply, b"Received");
    drop(client); // Our EOF ends the server's lingering close.
    server.shutdown();
    while server.turn(Some(Duration::from_millis(100))).unwrap() == Status::Running {
        assert!(Instant::now() < deadline, "never stopped");
    }
    assert_eq!(server.turn(None).unwrap(), Status::Stopped, "stays stopped");
}

#[test]
fn shutdown_from_another_thread_finishes_owed_replies() {
    let mut config = Config::loopback();
    config.mode = Mode::Line;
    let mut server = Server::bind(config).unwrap();
    let tcp = server.tcp_addr().unwrap();
    let handle = server.handle();
    let thread = std::thread::spawn(move || server.run());

    // Pipeline far more replies than socket buffers hold, without reading,
    // so that the server owes bytes when asked to stop.
    let mut stream = connect(tcp);
    let lines = 400_000;
    let mut writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let _ = writer.write_all(&b"x\n".repeat(lines));
    });
    let mut first = [0; 9];
    stream.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"Received\n");
    let before = handle.stats().messages;
    handle.shutdown();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).expect("EOF, not a reset");
    let _ = sender.join();
    drop(stream); // Our EOF ends the server's lingering close.
    let stats = thread.join().unwrap().unwrap();
    let replies = 1 + rest.len() / 9;
    assert_eq!(rest.len() % 9, 0, "whole replies only");
    assert!(rest.chunks(9).all(|r| r == b"Received\n"));
    assert!(
        replies as u64 >= before,
        "every reply owed at shutdown arrived"
    );
    assert_eq!(
        replies as u64, stats.messages,
        "every line read was answered"
    );
}

#[test]
fn counters_follow_the_traffic() {
    let server = TestServer::start().unwrap();
    assert_eq!(exchange(server.tcp_addr(), b"12345"), b"Received");
    let socket = udp_socket();
    socket.send_to(b"123", server.udp_addr()).unwrap();
    assert_eq!(udp_reply(&socket), b"Received");
    // The counters are updated just after each send: the client may see
    // its reply a moment before the server has counted it.
    let expected = Stats {
        accepted: 1,
        messages: 1,
        datagrams: 1,
        bytes_in: 8,
        bytes_out: 16,
        ..Stats::default()
    };
    let deadline = Instant::now() + DEADLINE;
    let mut stats = server.stats();
    while stats != expected {
        assert!(Instant::now() < deadline, "counters stuck at {stats:?}");
        std::thread::yield_now();
        stats = server.stats();
    }
    assert_eq!(stats.to_string().lines().count(), 1);
}

#[test]
fn shutdown_is_bounded_when_a_client_never_reads() {
    let mut config = Config::loopback();
    config.mode = Mode::Line;
    let mut server = Server::bind(config).unwrap();
    let tcp = server.tcp_addr().unwrap();
    let handle = server.handle();
    let (done, stopped) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(server.run());
    });

    // A client that pipelines lines and never reads a reply: the server
    // owes it more than it can ever write.
    let mut stream = connect(tcp);
    stream
        .set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let chunk = b"x\n".repeat(64 * 1024);
    while stream.write_all(&chunk).is_ok() {} // Until the server stops reading.
    handle.shutdown();
    let limit = Duration::from_millis(ackloop::SHUTDOWN_GRACE_MS) + DEADLINE;
    let stats = stopped
        .recv_timeout(limit)
        .expect("stopped within the grace period")
        .unwrap();
    assert_eq!(stats.open, 0);
    assert!(stats.messages > 0);
    drop(stream);
}

#[test]
fn every_public_constructor_rejects_a_bad_config_without_panicking() {
    type Spoil = fn(&mut Config);
    let bad_configs: &[(&str, Spoil)] = &[
        ("empty reply", |c| c.reply.clear()),
        ("reply too long", |c| {
            c.reply = vec![b'x'; ackloop::MAX_REPLY_LEN + 1]
        }),
        ("no protocol", |c| (c.tcp, c.udp) = (None, None)),
        ("max_line 0", |c| c.max_line = 0),
        ("max_connections 0", |c| c.max_connections = 0),
        // Kept in whole milliseconds, it would be 0.
        ("idle under 1 ms", |c| {
            c.idle_timeout = Some(Duration::from_micros(999))
        }),
        // The same for a flow: kept as 0 ms, every flow would close at once.
        #[cfg(feature = "relay")]
        ("flow under 1 ms", |c| {
            c.flow_timeout = Some(Duration::from_micros(500))
        }),
    ];
    for &(what, spoil) in bad_configs {
        for mode in [Mode::Once, Mode::Line] {
            let mut config = Config::loopback();
            config.mode = mode;
            spoil(&mut config);
            let is_config_error = |r: Result<Server, ackloop::Error>| matches!(r, Err(ackloop::Error::Config(ref m)) if !m.contains('\n'));
            assert!(
                is_config_error(Server::bind(config.clone())),
                "{what}, bind"
            );
            assert!(
                is_config_error(Server::with_responder(config.clone(), Echo)),
                "{what}, with_responder"
            );
            let started = TestServer::builder()
                .configure(|c| *c = config.clone())
                .start();
            assert!(
                matches!(started, Err(ackloop::Error::Config(_))),
                "{what}, test server: {started:?}"
            );
        }
    }
}

#[test]
fn the_test_server_takes_faults_and_a_seed() {
    let server = TestServer::builder()
        .fault("udp:drop,first=1".parse().unwrap())
        .seed(3)
        .start()
        .unwrap();
    let client = udp_socket();
    client.connect(server.udp_addr()).unwrap();
    client.send(b"dropped").unwrap();
    client.send(b"answered").unwrap();
    // Datagrams from one socket are handled in order: when the second
    // one's reply is here, the first was judged (and dropped).
    assert_eq!(udp_reply(&client), b"Received");
    assert_eq!(server.stats().faults.drop, 1);
    assert_eq!(server.stats().faults.total(), 1);
    client.set_nonblocking(true).unwrap();
    let mut buf = [0; 16];
    assert!(client.recv(&mut buf).is_err(), "no second reply");
    assert_eq!(server.wait_for(2).len(), 2, "both were received");
}

#[test]
#[cfg(feature = "control")]
fn the_handle_flips_faults_reply_and_listener_between_steps() {
    let server = TestServer::builder().mode(Mode::Line).start().unwrap();
    let handle = server.handle();
    let tcp = server.tcp_addr();
    let line = |stream: &TcpStream| {
        (&*stream).write_all(b"Hello, Server\n").unwrap();
        let mut reply = String::new();
        BufReader::new(stream).read_line(&mut reply).unwrap();
        reply
    };
    // Healthy; then failing: each change applies once the call returns.
    let stream = connect(tcp);
    assert_eq!(line(&stream), "Received\n");
    handle.add_fault("tcp:close".parse().unwrap()).unwrap();
    assert_eq!(exchange(tcp, b"Hello, Server\n"), b"");
    handle.clear_faults().unwrap();
    // A new reply text; the open connection gets it too.
    handle.set_reply("Got it").unwrap();
    assert_eq!(line(&stream), "Got it\n");
    assert!(handle.set_reply("").is_err(), "an empty reply");
    // Refused: new clients get ECONNREFUSED; the open one goes on.
    handle.refuse().unwrap();
    let refused = TcpStream::connect(tcp).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    assert_eq!(line(&stream), "Got it\n");
    handle.accept().unwrap();
    assert_eq!(line(&connect(tcp)), "Got it\n");
    assert_eq!(server.stats().faults.close, 1);
}

/// Faults built by hand that no spec could write: each way in refuses
/// them with a one-line error, and nothing changes.
fn faults_no_spec_could_write() -> Vec<ackloop::Fault> {
    use ackloop::{Fault, FaultKind, Selector};
    // Not Copy (a `match=` holds bytes): a fresh one each time.
    let all = Selector::default;
    let fault = |protocol, kind, select| Fault {
        protocol,
        kind,
        select,
    };
    let dribble_nothing = FaultKind::Dribble {
        bytes: 0,
        every_ms: 0,
    };
    let backwards = FaultKind::Delay {
        min_ms: 500,
        max_ms: 10,
    };
    vec![
        fault(Protocol::Tcp, dribble_nothing, all()),
        fault(Protocol::Tcp, backwards, all()),
        fault(Protocol::Udp, backwards, all()),
        fault(
            Protocol::Udp,
            FaultKind::Drop,
            Selector {
                p: Some(7.5),
                ..all()
            },
        ),
        fault(
            Protocol::Udp,
            FaultKind::Drop,
            Selector {
                p: Some(f64::NAN),
                ..all()
            },
        ),
        fault(
            Protocol::Udp,
            FaultKind::Drop,
            Selector {
                every: Some(0),
                ..all()
            },
        ),
        fault(Protocol::Tcp, FaultKind::Drop, all()),
        fault(Protocol::Udp, FaultKind::Hang, all()),
    ]
}

#[test]
#[cfg(feature = "control")]
fn a_fault_no_spec_could_write_is_refused_by_every_way_in_and_serving_goes_on() {
    let server = TestServer::builder().mode(Mode::Line).start().unwrap();
    let handle = server.handle();
    for fault in faults_no_spec_could_write() {
        let error = handle.add_fault(fault.clone()).expect_err("refused");
        assert!(error.starts_with("fault '"), "{error}");
        assert!(!error.contains('\n'), "{error}");
        let mut config = Config::loopback();
        config.faults = vec![fault.clone()];
        let refused = |r: Result<Server, ackloop::Error>| matches!(r, Err(ackloop::Error::Config(ref m)) if m.starts_with("--fault '"));
        assert!(refused(Server::bind(config)), "{fault:?} in a Config");
        let started = TestServer::builder().fault(fault.clone()).start();
        assert!(
            matches!(started, Err(ackloop::Error::Config(_))),
            "{fault:?} on the builder"
        );
    }
    // Nothing was put in force: the loop serves TCP and UDP, unfaulted.
    let mut stream = connect(server.tcp_addr());
    stream.write_all(b"Hello, Server\n").unwrap();
    let mut reply = [0; 9];
    stream.read_exact(&mut reply).expect("a TCP reply");
    assert_eq!(&reply, b"Received\n");
    let client = udp_socket();
    client.send_to(b"Hello, Server", server.udp_addr()).unwrap();
    assert_eq!(udp_reply(&client), b"Received");
    assert_eq!(server.stats().faults.total(), 0);
}

#[test]
#[cfg(feature = "control")]
fn the_fault_list_is_capped_and_clear_empties_it() {
    let server = TestServer::start().unwrap();
    let handle = server.handle();
    let harmless: ackloop::Fault = "udp:delay=0".parse().unwrap();
    for _ in 0..ackloop::MAX_FAULTS {
        handle.add_fault(harmless.clone()).unwrap();
    }
    let error = handle
        .add_fault(harmless.clone())
        .expect_err("one too many");
    assert!(error.contains("64 faults"), "{error}");
    let client = udp_socket();
    client.send_to(b"Hello, Server", server.udp_addr()).unwrap();
    assert_eq!(udp_reply(&client), b"Received");
    assert_eq!(
        server.stats().faults.delay,
        64,
        "each fault in force counted once"
    );
    handle.clear_faults().unwrap();
    handle.add_fault(harmless).expect("room again");
    let mut config = Config::loopback();
    config.faults = vec!["udp:drop".parse().unwrap(); ackloop::MAX_FAULTS + 1];
    assert!(
        matches!(Server::bind(config), Err(ackloop::Error::Config(m)) if m.contains("--fault"))
    );
}

#[test]
fn expectations_are_checked_when_the_test_server_drops() {
    let server = TestServer::start().unwrap();
    server.expect_messages(2);
    server.expect_messages_on(Protocol::Tcp, 1..=1);
    server.expect_messages_on(Protocol::Udp, 1..);
    let client = udp_socket();
    client.send_to(b"udp one", server.udp_addr()).unwrap();
    udp_reply(&client);
    assert_eq!(exchange(server.tcp_addr(), b"tcp one"), b"Received");
    let from_client = server.received_from(client.local_addr().unwrap());
    assert_eq!(from_client.len(), 1);
    assert_eq!(from_client[0].bytes, b"udp one");
    assert_eq!(server.received_on(Protocol::Tcp)[0].bytes, b"tcp one");
    drop(server); // All three hold: no panic.

    let server = TestServer::start().unwrap();
    server.expect_messages_on(Protocol::Udp, 2);
    let client = udp_socket();
    client.send_to(b"only one", server.udp_addr()).unwrap();
    udp_reply(&client);
    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(server)));
    let message = match dropped {
        Err(panic) => panic.downcast_ref::<String>().cloned().unwrap_or_default(),
        Ok(()) => panic!("an unmet expectation did not panic"),
    };
    assert!(
        message.contains("expected exactly 2 UDP message(s), 1 arrived"),
        "{message}"
    );
    assert!(
        message.contains("only one"),
        "lists what arrived: {message}"
    );
}
