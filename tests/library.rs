//! The library as its users meet it: the test server in someone's test,
//! custom responders, a host driving turns, shutdown from another thread,
//! counters.

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
    let bad_configs: [(&str, Spoil); 6] = [
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
    ];
    for (what, spoil) in bad_configs {
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

/// Finding the server's own sockets in this process, to give them receive
/// buffers large enough that a burst waits there whole.
#[cfg(target_os = "linux")]
mod sockets {
    use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
    use std::os::fd::RawFd;

    fn address(
        fd: RawFd,
        get: unsafe extern "C" fn(
            libc::c_int,
            *mut libc::sockaddr,
            *mut libc::socklen_t,
        ) -> libc::c_int,
    ) -> Option<SocketAddr> {
        // SAFETY: an all-zero sockaddr_in is valid.
        let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        let mut len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: `addr` is writable for `len` bytes; a descriptor that is
        // not an IPv4 socket only makes the call fail.
        let rc = unsafe { get(fd, (&raw mut addr).cast(), &mut len) };
        if rc != 0 || i32::from(addr.sin_family) != libc::AF_INET {
            return None;
        }
        let ip = Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr));
        Some(SocketAddrV4::new(ip, u16::from_be(addr.sin_port)).into())
    }

    /// This process's socket bound to `local` and connected to `peer`
    /// (`None`: not connected).
    #[track_caller]
    pub fn find(local: SocketAddr, peer: Option<SocketAddr>) -> RawFd {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
            .find(|&fd| {
                address(fd, libc::getsockname) == Some(local)
                    && address(fd, libc::getpeername) == peer
            })
            .unwrap_or_else(|| panic!("no socket {local} -> {peer:?} in this process"))
    }

    #[track_caller]
    fn set(fd: RawFd, option: libc::c_int, value: libc::c_int) {
        // SAFETY: setsockopt with a pointer to a live c_int of the size
        // passed.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                option,
                (&raw const value).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "setsockopt: {}", std::io::Error::last_os_error());
    }

    /// This process's socket bound to `local` and connected to `peer`, once
    /// it exists (another thread may be about to accept it).
    #[track_caller]
    pub fn find_soon(local: SocketAddr, peer: SocketAddr) -> RawFd {
        let deadline = std::time::Instant::now() + super::DEADLINE;
        loop {
            let found = std::fs::read_dir("/proc/self/fd")
                .unwrap()
                .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
                .find(|&fd| {
                    address(fd, libc::getsockname) == Some(local)
                        && address(fd, libc::getpeername) == Some(peer)
                });
            if let Some(fd) = found {
                return fd;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "never accepted: {local} -> {peer}"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// Sets SO_SNDBUF (the kernel doubles it, within `wmem_max`).
    #[track_caller]
    pub fn set_send_buffer(fd: RawFd, bytes: usize) {
        set(fd, libc::SO_SNDBUF, bytes as libc::c_int);
    }

    /// Sets SO_RCVBUF (the kernel doubles it, within `rmem_max`).
    #[track_caller]
    pub fn set_receive_buffer(fd: RawFd, bytes: usize) {
        set(fd, libc::SO_RCVBUF, bytes as libc::c_int);
    }

    /// SO_RCVBUF as the kernel set it.
    #[track_caller]
    pub fn receive_buffer(fd: RawFd) -> usize {
        let mut value: libc::c_int = 0;
        let mut len = size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `value`.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&raw mut value).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0, "getsockopt: {}", std::io::Error::last_os_error());
        value as usize
    }

    /// Bytes of a TCP socket's send queue not yet acknowledged by the peer.
    #[track_caller]
    pub fn unacknowledged(fd: RawFd) -> usize {
        try_unacknowledged(fd)
            .unwrap_or_else(|| panic!("TIOCOUTQ: {}", std::io::Error::last_os_error()))
    }

    /// The same, or `None` if `fd` is no longer a socket (closed).
    pub fn try_unacknowledged(fd: RawFd) -> Option<usize> {
        let mut n: libc::c_int = 0;
        // SAFETY: TIOCOUTQ writes one c_int.
        let rc = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &raw mut n) };
        (rc == 0).then_some(n as usize)
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
