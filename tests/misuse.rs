//! Misuse of the public API: every call a user can make, with the values
//! a careless or hostile caller would pass, must answer `Err` or do
//! something bounded; none may stop the loop, panic or grow memory.
//!
//! Each test ends by checking that the server still answers.

// Some helpers serve only the tests of live changes (`control`).
#![cfg_attr(not(feature = "control"), allow(unused))]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ackloop::testing::TestServer;
use ackloop::{Config, Fault, Mode, Request, Server};

/// Bounds every wait: generous, so it only ends a test that already failed.
const DEADLINE: Duration = Duration::from_secs(10);

/// A Handle call on a server that is gone should fail at once; the loop
/// would have answered well within this.
const PROMPT: Duration = Duration::from_secs(2);

/// One TCP exchange in once mode: the reply, read until the server closes.
#[track_caller]
fn tcp_exchange(addr: SocketAddr) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.write_all(b"Hello, Server").unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).expect("reply, then EOF");
    reply
}

/// One UDP exchange: the reply datagram, or `None` within `wait`.
fn udp_try(addr: SocketAddr, wait: Duration) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(addr).unwrap();
    socket.set_read_timeout(Some(wait)).unwrap();
    socket.send(b"Hello, Server").unwrap();
    let mut buf = vec![0; 70_000];
    let n = socket.recv(&mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// One call through a handle, named in the test's table.
type HandleCall<'a> = Box<dyn Fn() -> Result<(), String> + 'a>;

/// One hand-made change to a configuration.
type ConfigChange = fn(&mut Config);

#[test]
#[cfg(feature = "control")]
fn handle_calls_after_the_server_stopped_fail_at_once() {
    let mut server = Server::bind(Config::loopback()).unwrap();
    let handle = server.handle();
    let thread = std::thread::spawn(move || server.run());
    handle.shutdown();
    thread.join().unwrap().unwrap();
    // The server is dropped with its thread: nobody will take a change.
    let fault: Fault = "udp:drop".parse().unwrap();
    let calls: [(&str, HandleCall<'_>); 5] = [
        ("add_fault", Box::new(|| handle.add_fault(fault.clone()))),
        ("clear_faults", Box::new(|| handle.clear_faults())),
        ("set_reply", Box::new(|| handle.set_reply("Later"))),
        ("refuse", Box::new(|| handle.refuse())),
        ("accept", Box::new(|| handle.accept())),
    ];
    for (name, call) in calls {
        let began = Instant::now();
        let result = call();
        let took = began.elapsed();
        let why = result.expect_err(name);
        assert!(took < PROMPT, "{name} took {took:?} to fail: {why}");
        assert!(why.contains("stopped"), "{name}: {why}");
    }
    handle.shutdown(); // Again, and after the end: nothing happens.
}

#[test]
#[cfg(feature = "control")]
fn handle_calls_on_a_stopped_but_kept_server_fail_at_once() {
    // A host that drives turns itself keeps the server after it stops.
    let mut server = Server::bind(Config::loopback()).unwrap();
    let handle = server.handle();
    server.shutdown();
    let deadline = Instant::now() + DEADLINE;
    while server.turn(Some(Duration::from_millis(10))).unwrap() == ackloop::Status::Running {
        assert!(Instant::now() < deadline, "the server did not stop");
    }
    let began = Instant::now();
    let why = handle
        .clear_faults()
        .expect_err("a stopped server takes no change");
    assert!(began.elapsed() < PROMPT, "took {:?}", began.elapsed());
    assert!(why.contains("stopped"), "{why}");
    drop(server);
}

#[test]
#[cfg(feature = "control")]
fn set_reply_with_an_empty_or_oversized_text_is_an_error_and_changes_nothing() {
    let server = TestServer::start().unwrap();
    let handle = server.handle();
    for text in [Vec::new(), vec![b'x'; 2048], vec![b'y'; 1025]] {
        let len = text.len();
        let why = handle.set_reply(text).expect_err("a bad length");
        assert!(why.contains("1 to 1024"), "{len} bytes: {why}");
        assert!(!why.contains("--"), "a library user typed no flag: {why}");
    }
    handle
        .set_reply(vec![b'z'; 1024])
        .expect("the longest reply");
    assert_eq!(tcp_exchange(server.tcp_addr()), vec![b'z'; 1024]);
    assert_eq!(
        udp_try(server.udp_addr(), DEADLINE).as_deref(),
        Some(&[b'z'; 1024][..])
    );
}

#[test]
fn a_hand_built_config_with_extreme_fields_is_refused_or_served() {
    let extreme: [(&str, ConfigChange); 10] = [
        ("max_connections 0", |c| c.max_connections = 0),
        ("idle 1 ns", |c| {
            c.idle_timeout = Some(Duration::from_nanos(1));
        }),
        ("idle Duration::MAX", |c| {
            c.idle_timeout = Some(Duration::MAX)
        }),
        ("max_line 0", |c| c.max_line = 0),
        ("max_line usize::MAX", |c| c.max_line = usize::MAX),
        ("read_buffer 0", |c| c.read_buffer = 0),
        ("read_buffer usize::MAX", |c| c.read_buffer = usize::MAX),
        ("max_owed 0", |c| c.max_owed = 0),
        ("udp_queue_len usize::MAX", |c| c.udp_queue_len = usize::MAX),
        ("udp_queue_bytes 0", |c| c.udp_queue_bytes = 0),
    ];
    for (what, change) in extreme {
        let mut config = Config::loopback();
        change(&mut config);
        match Server::bind(config) {
            Err(ackloop::Error::Config(why)) => assert!(!why.contains('\n'), "{what}: {why}"),
            other => panic!("{what}: {other:?}"),
        }
    }
    // The largest legal values: served, and no memory reserved for them
    // up front beyond the documented caps.
    let server = TestServer::builder()
        .configure(|c| {
            c.max_connections = usize::MAX;
            c.max_line = ackloop::MAX_MAX_LINE;
            c.max_owed = ackloop::MAX_MAX_OWED;
            c.udp_queue_len = ackloop::MAX_UDP_QUEUE_LEN;
            c.udp_queue_bytes = ackloop::MAX_UDP_QUEUE_BYTES;
            c.idle_timeout = Some(Duration::from_secs(ackloop::MAX_IDLE_TIMEOUT_SECS));
        })
        .start()
        .unwrap();
    assert_eq!(tcp_exchange(server.tcp_addr()), b"Received");
    assert!(udp_try(server.udp_addr(), DEADLINE).is_some());
}

#[test]
fn a_responder_whose_replies_are_huge_costs_the_reply_not_the_server() {
    // 1 MiB per reply: larger than any datagram, sixteen times the owed
    // bound. UDP drops it (counted); TCP sends it whole.
    const HUGE: usize = 1 << 20;
    let server = TestServer::builder()
        .mode(Mode::Line)
        .responder(|request: &Request<'_>, reply: &mut Vec<u8>| {
            if request.message == b"small" {
                reply.extend_from_slice(b"ok");
            } else {
                reply.resize(HUGE, b'h');
            }
            true
        })
        .start()
        .unwrap();
    assert_eq!(udp_try(server.udp_addr(), Duration::from_millis(300)), None);
    let deadline = Instant::now() + DEADLINE;
    while server.stats().replies_dropped == 0 {
        assert!(
            Instant::now() < deadline,
            "the huge datagram reply was not counted"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut stream = TcpStream::connect(server.tcp_addr()).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.write_all(b"big\nsmall\n").unwrap();
    let mut reply = vec![0; HUGE + 1 + 3];
    stream.read_exact(&mut reply).unwrap();
    assert!(reply[..HUGE].iter().all(|&b| b == b'h'));
    assert_eq!(&reply[HUGE..], b"\nok\n");
}

#[test]
#[cfg(feature = "control")]
fn refuse_and_accept_without_tcp_are_errors_that_name_no_flag() {
    let server = TestServer::builder()
        .configure(|c| c.tcp = None)
        .start()
        .unwrap();
    let handle = server.handle();
    for (name, result) in [("refuse", handle.refuse()), ("accept", handle.accept())] {
        let why = result.expect_err(name);
        assert!(why.contains("no TCP"), "{name}: {why}");
        assert!(
            !why.contains("--"),
            "{name}: a library user typed no flag: {why}"
        );
    }
    assert!(
        udp_try(server.udp_addr(), DEADLINE).is_some(),
        "UDP goes on"
    );
}

#[test]
fn try_wait_for_without_a_limit_of_time_does_not_panic() {
    let server = TestServer::start().unwrap();
    let addr = server.tcp_addr();
    // Sent from another thread, so the wait usually begins first.
    let client = std::thread::spawn(move || tcp_exchange(addr));
    let messages = server.try_wait_for(1, Duration::MAX).expect("one arrived");
    assert_eq!(messages.len(), 1);
    assert_eq!(client.join().unwrap(), b"Received");
}

#[test]
fn waiting_for_more_messages_than_are_recorded_ends_when_they_arrived() {
    let server = TestServer::builder().record_limit(1).start().unwrap();
    for _ in 0..3 {
        assert!(udp_try(server.udp_addr(), DEADLINE).is_some());
    }
    let began = Instant::now();
    let recorded = server
        .try_wait_for(3, Duration::from_secs(5))
        .expect("3 arrived, 1 recorded");
    assert!(began.elapsed() < PROMPT, "took {:?}", began.elapsed());
    assert_eq!((recorded.len(), server.unrecorded()), (1, 2));
}

#[test]
#[cfg(feature = "control")]
fn a_handle_called_from_the_loop_itself_fails_at_once_instead_of_stalling_it() {
    // A responder that changes the server through its handle: the loop
    // would wait for itself.
    let slot: Arc<Mutex<Option<ackloop::Handle>>> = Arc::default();
    let in_responder = Arc::clone(&slot);
    let server = TestServer::builder()
        .responder(move |_: &Request<'_>, reply: &mut Vec<u8>| {
            let handle = in_responder.lock().unwrap().clone();
            let result = handle.map(|handle| handle.clear_faults());
            reply.extend_from_slice(format!("{result:?}").as_bytes());
            true
        })
        .start()
        .unwrap();
    *slot.lock().unwrap() = Some(server.handle());
    let began = Instant::now();
    let reply = String::from_utf8(tcp_exchange(server.tcp_addr())).unwrap();
    assert!(
        began.elapsed() < PROMPT,
        "the loop stalled {:?}",
        began.elapsed()
    );
    assert!(reply.starts_with("Some(Err("), "{reply}");
    assert!(reply.contains("loop's own thread"), "{reply}");
    assert!(
        udp_try(server.udp_addr(), DEADLINE).is_some(),
        "still serving"
    );
}

#[test]
fn a_turn_with_the_longest_timeout_still_wakes_for_events() {
    let mut server = Server::bind(Config::loopback()).unwrap();
    let handle = server.handle();
    handle.shutdown(); // The waker's event is waiting: the turn must not sleep.
    let began = Instant::now();
    let deadline = began + DEADLINE;
    while server.turn(Some(Duration::MAX)).unwrap() == ackloop::Status::Running {
        assert!(Instant::now() < deadline, "the server did not stop");
    }
    assert!(began.elapsed() < PROMPT, "took {:?}", began.elapsed());
    assert_eq!(
        server.poll_delay(),
        Some(Duration::ZERO),
        "stopped: turn at once"
    );
}
