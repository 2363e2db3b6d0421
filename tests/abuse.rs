//! Bounded under abuse: misbehaving clients cannot make the `ackloop`
//! binary grow its memory, spin its CPU or starve the other clients
//! (SPEC sections 2, 3 and 5). Black box, loopback, bounded counts; each
//! test would fail against a server without the feature it names.
//!
//! Linux only: memory is read from `/proc`, floods use `sendmmsg`.
#![cfg(target_os = "linux")]

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{
    DEADLINE, End, Server, assert_summary, connect, counter, join, line_exchange, read_exactly,
    read_until_closed, tcp_request, text, wait_until, write_until_blocked,
};

const LINE_REPLY: &str = "Received\n";

/// Far above what the server needs (a few MiB plus a fixed amount per
/// connection), far below what buffering a flood would take.
const RSS_LIMIT_KIB: u64 = 64 * 1024;

/// Ends a test whose flood never stopped.
const FLOOD_GUARD: Duration = Duration::from_secs(30);

/// A line-mode request and its reply on a fresh connection, within the
/// deadline.
#[track_caller]
fn served(addr: SocketAddr) {
    let stream = connect(addr);
    let reply = line_exchange(&stream, b"Hello, Server\n", LINE_REPLY.len());
    assert_eq!(text(&reply), LINE_REPLY);
}

/// Closes `stream` with a reset: SO_LINGER on with a zero timeout.
#[track_caller]
fn reset(stream: TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a descriptor `stream` owns, with a pointer to
    // a live value of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER: {}", std::io::Error::last_os_error());
    drop(stream);
}

/// What became of a line-mode client that sent one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// It got its reply.
    Served,
    /// The server closed it (FIN or reset) without a reply.
    Shed,
    /// Neither before the deadline: left hanging.
    Hanging,
}

/// Waits until `deadline` for the reply to one line, or the close.
#[track_caller]
fn outcome(mut stream: &TcpStream, deadline: Instant) -> Outcome {
    let mut reply = [0; LINE_REPLY.len()];
    let mut got = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Outcome::Hanging;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut reply[got..]) {
            Ok(0) if got == 0 => return Outcome::Shed,
            Ok(0) => panic!("closed after a partial reply {:?}", text(&reply[..got])),
            Ok(n) => {
                got += n;
                if got == reply.len() {
                    assert_eq!(text(&reply), LINE_REPLY);
                    return Outcome::Served;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) if got == 0 => return Outcome::Shed, // Reset.
            Err(e) => panic!("{e} after a partial reply {:?}", text(&reply[..got])),
        }
    }
}

/// New line-mode clients, all connected before any is read, each having
/// sent one line.
#[track_caller]
fn arrive(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let clients: Vec<TcpStream> = (0..n).map(|_| connect(addr)).collect();
    for client in &clients {
        // A write can meet a reset from a server that already shed it.
        let _ = (&*client).write_all(b"hi\n");
    }
    clients
}

/// What became of each client by a shared deadline: (served, shed,
/// hanging).
#[track_caller]
fn tally(clients: &[TcpStream], deadline: Instant) -> (usize, usize, usize) {
    let outcomes: Vec<Outcome> = clients.iter().map(|c| outcome(c, deadline)).collect();
    let count = |o| outcomes.iter().filter(|x| **x == o).count();
    (
        count(Outcome::Served),
        count(Outcome::Shed),
        count(Outcome::Hanging),
    )
}

/// New clients knock one after the other until one is served, within
/// `DEADLINE` in all.
#[track_caller]
fn served_again(addr: SocketAddr) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let client = arrive(addr, 1);
        let last = outcome(&client[0], deadline);
        if last == Outcome::Served {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not served again within {DEADLINE:?}; last attempt {last:?}"
        );
        std::thread::sleep(Duration::from_millis(10)); // Retry pace.
    }
}

#[test]
fn a_never_reading_pipeliner_is_pushed_back_with_bounded_memory() {
    let server = Server::start(&["--mode", "line"]);
    let flooder = connect(server.tcp());
    flooder
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    // 64 MiB of two-byte lines, never reading a reply (4.5 times as many
    // bytes of replies). The writes block once the server stops reading
    // this client (backpressure), and the write timeout then ends them.
    let writer = flooder.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        write_until_blocked(&writer, 64 << 20, &b"x\n".repeat(32 * 1024))
    });
    let started = Instant::now();
    let mut peak = server.rss_kib();
    let mut others = 0;
    loop {
        peak = peak.max(server.rss_kib());
        served(server.tcp()); // Another client is served meanwhile.
        others += 1;
        if sender.is_finished() {
            break;
        }
        if started.elapsed() > FLOOD_GUARD {
            let _ = flooder.shutdown(std::net::Shutdown::Both);
            panic!("the flood did not end within {FLOOD_GUARD:?}");
        }
        std::thread::sleep(Duration::from_millis(20)); // Sampling pace.
    }
    let sent = join(sender);
    peak = peak.max(server.rss_kib());
    assert!(others > 0);
    assert!(
        sent < 64 << 20,
        "the server read all {sent} bytes from a client that never reads"
    );
    assert!(peak < RSS_LIMIT_KIB, "RSS peaked at {peak} KiB");
    // The pushed-back client is still served: its replies are whole.
    let first = read_exactly(&flooder, 4 * LINE_REPLY.len());
    assert_eq!(text(&first), LINE_REPLY.repeat(4));
    served(server.tcp());
}

#[test]
fn an_endless_line_is_cut_at_max_line_with_bounded_memory() {
    let server = Server::start(&["--mode", "line"]); // --max-line 65536.
    let hog = connect(server.tcp());
    hog.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    let writer = hog.try_clone().unwrap();
    // Up to 64 MiB without a newline.
    let sender =
        std::thread::spawn(move || write_until_blocked(&writer, 64 << 20, &[b'x'; 65_536]));
    let reader = std::thread::spawn(move || read_until_closed(&hog, DEADLINE));
    let mut peak = server.rss_kib();
    while !(sender.is_finished() && reader.is_finished()) {
        peak = peak.max(server.rss_kib());
        std::thread::sleep(Duration::from_millis(20)); // Sampling pace.
    }
    let drained = join(reader);
    join(sender);
    assert_eq!(text(&drained.bytes), "", "no reply for an over-long line");
    assert_ne!(drained.end, End::TimedOut, "the connection must be closed");
    assert!(peak < RSS_LIMIT_KIB, "RSS peaked at {peak} KiB");
    served(server.tcp());
}

#[test]
fn over_long_lines_are_warned_about_at_most_once_a_second() {
    let server = Server::start(&["--mode", "line", "--max-line", "8"]);
    let started = Instant::now();
    let clients = 20;
    for _ in 0..clients {
        let stream = connect(server.tcp());
        (&stream).write_all(b"far too long a line\n").unwrap();
        let drained = read_until_closed(&stream, DEADLINE);
        assert_eq!(text(&drained.bytes), "", "no reply for an over-long line");
    }
    let elapsed = started.elapsed();
    let log = server.wait_for_stderr("an over-long line warning", |log| {
        log.contains("over --max-line")
    });
    let warnings = log.matches("over --max-line").count();
    // One per started second at most, and at least the first one.
    let allowed = elapsed.as_secs() as usize + 1;
    assert!(
        (1..=allowed).contains(&warnings),
        "{warnings} warnings for {clients} over-long lines in {elapsed:?}"
    );
}

#[test]
fn slow_drip_clients_do_not_delay_a_normal_client() {
    let server = Server::start(&["--mode", "line"]);
    let drips: Vec<TcpStream> = (0..20)
        .map(|_| {
            let stream = connect(server.tcp());
            stream.set_nodelay(true).unwrap();
            stream
        })
        .collect();
    // One byte every 50 ms from each, never a newline, for 2 s.
    let dripper = std::thread::spawn(move || {
        for _ in 0..40 {
            for drip in &drips {
                (&*drip).write_all(b"x").unwrap();
            }
            std::thread::sleep(Duration::from_millis(50)); // The drip pace.
        }
        drips
    });
    let mut exchanges = 0;
    while !dripper.is_finished() {
        served(server.tcp()); // Within the deadline, or this fails.
        exchanges += 1;
        std::thread::sleep(Duration::from_millis(20)); // Request pace.
    }
    let drips = join(dripper);
    assert!(exchanges > 0);
    // The drips' 40-byte lines were kept whole: ending them gets replies.
    for drip in &drips {
        assert_eq!(text(&line_exchange(drip, b"\n", 9)), LINE_REPLY);
    }
}

#[test]
fn connect_then_reset_clients_leave_the_server_serving() {
    let mut server = Server::start(&[]);
    for i in 0..500 {
        let stream = TcpStream::connect(server.tcp()).unwrap();
        if i % 2 == 1 {
            // Half send a request first: the reply meets a reset.
            let _ = (&stream).write_all(b"Hello, Server");
        }
        reset(stream);
    }
    assert!(server.is_running(), "{}", server.stderr());
    assert_eq!(
        text(&tcp_request(server.tcp(), b"Hello, Server")),
        "Received"
    );
    let (status, stderr) = server.terminate();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_summary(&stderr);
}

#[test]
fn pipeliners_that_reset_with_replies_owed_leave_the_server_serving() {
    let mut server = Server::start(&["--mode", "line"]);
    for _ in 0..50 {
        let stream = connect(server.tcp());
        stream
            .set_write_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        write_until_blocked(&stream, 256 << 10, &b"x\n".repeat(8 * 1024));
        reset(stream);
    }
    assert!(server.is_running(), "{}", server.stderr());
    served(server.tcp());
    let (status, stderr) = server.terminate();
    assert_eq!(status.code(), Some(0), "{stderr}");
}

#[test]
fn out_of_descriptors_waiting_clients_are_closed_without_spinning() {
    let mut server = Server::start_with_fd_limit(64, &["--mode", "line"]);
    let tcp = server.tcp();
    // 200 clients at once, far more than 64 descriptors hold.
    let clients = arrive(tcp, 200);
    // Each is served or closed within a few seconds; none left hanging.
    let (served_n, shed, hanging) = tally(&clients, Instant::now() + Duration::from_secs(5));
    assert_eq!(
        hanging, 0,
        "{hanging} left hanging ({served_n} served, {shed} closed)"
    );
    assert!(served_n > 0, "nobody served ({shed} closed)");
    assert!(served_n < 64 && shed > 0, "{served_n} served with 64 fds");

    // While the served ones hold every descriptor, more clients come: they
    // are closed too, and the loop does not spin.
    let before = server.cpu_ticks();
    let window = Instant::now();
    let late = arrive(tcp, 20);
    let (late_served, late_shed, late_hanging) = tally(&late, window + Duration::from_secs(5));
    assert_eq!(
        late_hanging, 0,
        "late clients: {late_hanging} left hanging ({late_served} served, {late_shed} closed)"
    );
    drop(late);
    let rest = Duration::from_secs(2).saturating_sub(window.elapsed());
    std::thread::sleep(rest); // The measuring window.
    let used = server.cpu_ticks() - before;
    let measured = window.elapsed();
    assert!(
        used < 50,
        "{used} ticks of CPU in {measured:?} at the descriptor limit"
    );

    // Once they all leave, new clients are served again.
    drop(clients);
    served_again(tcp);
    let (status, stderr) = server.terminate();
    assert_eq!(status.code(), Some(0), "{stderr}");
}

#[test]
fn idle_connections_are_closed_and_chatting_ones_kept() {
    let server = Server::start(&["--mode", "line", "--idle-timeout", "1"]);
    let silent = connect(server.tcp());
    let active = connect(server.tcp());
    let started = Instant::now();
    // The active client talks every 300 ms for 3.5 s: more than three
    // idle timeouts, never silent for one.
    let chatter = std::thread::spawn(move || {
        let begun = Instant::now();
        while begun.elapsed() < Duration::from_millis(3_500) {
            assert_eq!(
                text(&line_exchange(&active, b"ping\n", 9)),
                LINE_REPLY,
                "the active client after {:?}",
                begun.elapsed()
            );
            std::thread::sleep(Duration::from_millis(300)); // The chat pace.
        }
        active
    });
    let drained = read_until_closed(&silent, DEADLINE);
    let closed_after = started.elapsed();
    assert_eq!(drained.end, End::Eof, "the silent one is closed with a FIN");
    assert_eq!(text(&drained.bytes), "");
    assert!(
        closed_after >= Duration::from_millis(900),
        "closed after {closed_after:?}, before the idle timeout"
    );
    let active = join(chatter);
    assert_eq!(
        text(&line_exchange(&active, b"still here\n", 9)),
        LINE_REPLY
    );
}

#[test]
fn over_max_connections_a_client_is_closed_at_once() {
    let mut server = Server::start(&["--mode", "line", "--max-connections", "5"]);
    let tcp = server.tcp();
    let mut five: Vec<TcpStream> = (0..5)
        .map(|_| {
            let stream = connect(tcp);
            assert_eq!(text(&line_exchange(&stream, b"hi\n", 9)), LINE_REPLY);
            stream
        })
        .collect();
    let first_rejection = Instant::now();
    let sixth = connect(tcp);
    let drained = read_until_closed(&sixth, Duration::from_secs(5));
    assert_eq!(text(&drained.bytes), "", "the sixth is not served");
    assert_ne!(drained.end, End::TimedOut, "the sixth is closed at once");
    // The five are unaffected.
    for stream in &five {
        assert_eq!(text(&line_exchange(stream, b"again\n", 9)), LINE_REPLY);
    }
    let limit_warning = |line: &str| {
        let line = line.to_lowercase();
        line.contains("warn") && (line.contains("max-connections") || line.contains("limit"))
    };
    server.wait_for_stderr("a warning naming the limit", |log| {
        log.lines().any(limit_warning)
    });
    // A burst of rejections: each closed at once, logged at most once a
    // second.
    for i in 0..30 {
        let stream = connect(tcp);
        let drained = read_until_closed(&stream, Duration::from_secs(5));
        assert_eq!(text(&drained.bytes), "", "rejected client {i}");
        assert_ne!(drained.end, End::TimedOut, "rejected client {i}");
    }
    // One of the five leaves: its place is free again.
    drop(five.pop());
    served_again(tcp);
    for stream in &five {
        assert_eq!(text(&line_exchange(stream, b"still\n", 9)), LINE_REPLY);
    }
    let (status, stderr) = server.terminate();
    let seconds = first_rejection.elapsed().as_secs();
    assert_eq!(status.code(), Some(0), "{stderr}");
    let warnings = stderr.lines().filter(|l| limit_warning(l)).count() as u64;
    assert!(
        warnings <= seconds + 2,
        "{warnings} limit warnings in {seconds} s:\n{stderr}"
    );
    let summary = assert_summary(&stderr);
    let rejected = counter(&summary, "rejected").unwrap();
    assert!(rejected >= 31, "{summary}");
}

/// Datagrams per `sendmmsg` call in a flood.
const BATCH: usize = 64;

/// Sends `BATCH` copies of `payload` on a connected socket in one
/// `sendmmsg` call: how many went out. Batching makes a flooder cheaper
/// per datagram than the server's receive and reply, so the flood
/// outpaces the server and its socket never runs dry.
fn send_batch(socket: &UdpSocket, payload: &[u8]) -> u64 {
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr() as *mut libc::c_void,
        iov_len: payload.len(),
    };
    // SAFETY: an all-zero mmsghdr is valid (null name, no control data).
    let mut header: libc::mmsghdr = unsafe { std::mem::zeroed() };
    header.msg_hdr.msg_iov = &raw mut iov;
    header.msg_hdr.msg_iovlen = 1;
    let mut headers = [header; BATCH];
    // SAFETY: `headers` holds BATCH valid headers whose one iovec points
    // into `payload`, which the kernel only reads; all outlive the call.
    let sent = unsafe {
        libc::sendmmsg(
            socket.as_raw_fd(),
            headers.as_mut_ptr(),
            BATCH as libc::c_uint,
            0,
        )
    };
    sent.max(0) as u64
}

#[test]
fn a_udp_flood_does_not_starve_tcp() {
    // Each flooder's cap only bounds a failing run: the flood stops as
    // soon as the TCP client is done.
    const PER_FLOODER: u64 = 250_000;
    let server = Server::start(&[]);
    let (tcp, udp) = (server.tcp(), server.udp());
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let flooders: Vec<_> = (0..4)
        .map(|_| {
            let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
            std::thread::spawn(move || {
                let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
                socket.connect(udp).unwrap();
                let mut flooded = 0;
                while flooded < PER_FLOODER && !stop.load(Ordering::Relaxed) {
                    // Never reads a reply; a full buffer drops datagrams.
                    let n = send_batch(&socket, b"flood");
                    flooded += n;
                    sent.fetch_add(n, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let flooded = || sent.load(Ordering::Relaxed);
    let over = || flooders.iter().any(|f| f.is_finished());
    // TCP clients are answered while the flood goes on: each request is
    // made once the flood has moved on by another 10,000 datagrams.
    let mut peak = server.rss_kib();
    for i in 0..5 {
        let mark = flooded();
        assert!(
            wait_until(DEADLINE, || flooded() >= mark + 10_000 || over()),
            "the flood stalled at {} datagrams",
            flooded()
        );
        assert!(
            !over(),
            "the flood ended ({} datagrams) before TCP request {i} was made",
            flooded()
        );
        assert_eq!(text(&tcp_request(tcp, b"Hello, Server")), "Received");
        peak = peak.max(server.rss_kib());
    }
    // Had the server drained UDP without a budget, the first request
    // would have waited for the flood to end.
    let flooding = !over();
    stop.store(true, Ordering::Relaxed);
    let total = flooded();
    for flooder in flooders {
        join(flooder);
    }
    assert!(
        flooding,
        "the flood ended ({total} datagrams) before 5 TCP requests were answered"
    );
    assert!(peak < RSS_LIMIT_KIB, "RSS peaked at {peak} KiB");
    // After the flood, UDP answers again. A datagram can meet a full
    // receive buffer, so it is sent again until a reply comes.
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(udp).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut reply = [0; 64];
    let answered = wait_until(DEADLINE, || {
        socket.send(b"after").unwrap();
        matches!(common::retrying(|| socket.recv(&mut reply)), Ok(n) if &reply[..n] == b"Received")
    });
    assert!(answered, "UDP never answered after the flood");
}
