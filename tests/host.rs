//! ackloop nested in a host's own loop through its one descriptor (SPEC
//! section 10): a `poll(2)` host and a tokio host each serve TCP and UDP
//! with zero-timeout turns only, and the still-ready case shows why the
//! host must also honour `poll_delay()`.

#![cfg(unix)]

#[cfg(target_os = "linux")]
mod common;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use ackloop::{Config, Mode, Server, Status};

/// Bounds every wait: generous, so it only ends a test that already failed.
const DEADLINE: Duration = Duration::from_secs(10);

/// A turn with a zero timeout must come back well within this, however
/// loaded the machine; a blocking one would take the server's whole delay.
const PROMPT: Duration = Duration::from_secs(1);

/// `poll(2)` on `fds` for readability, for at most `timeout` (`None`: no
/// limit). Returns which of them are readable (or hung up).
fn poll_readable(fds: &[Option<BorrowedFd<'_>>], timeout: Option<Duration>) -> Vec<bool> {
    let mut pollfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|fd| libc::pollfd {
            // poll(2) skips negative descriptors.
            fd: fd.map_or(-1, |fd| fd.as_raw_fd()),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let timeout = match timeout {
        None => -1,
        // Rounded up: never wake just before a deadline and spin.
        Some(t) => libc::c_int::try_from(t.as_nanos().div_ceil(1_000_000)).unwrap_or(i32::MAX),
    };
    // SAFETY: `pollfds` is a valid array of `pollfd`s of the length given,
    // alive for the whole call.
    let n = unsafe { libc::poll(pollfds.as_mut_ptr(), pollfds.len() as libc::nfds_t, timeout) };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        assert_eq!(e.kind(), ErrorKind::Interrupted, "poll: {e}");
    }
    pollfds.iter().map(|p| p.revents != 0).collect()
}

/// Whether `fd` is readable right now.
fn readable_now(fd: BorrowedFd<'_>) -> bool {
    poll_readable(&[Some(fd)], Some(Duration::ZERO))[0]
}

/// The shorter of the server's poll delay and the time left.
fn wait_limit(server: &Server, deadline: Instant) -> Duration {
    let left = deadline.saturating_duration_since(Instant::now());
    server.poll_delay().map_or(left, |delay| delay.min(left))
}

/// A zero-timeout turn, checked to return promptly.
#[track_caller]
fn turn_now(server: &mut Server) -> Status {
    let started = Instant::now();
    let status = server.turn(Some(Duration::ZERO)).expect("turn");
    let took = started.elapsed();
    assert!(took < PROMPT, "a zero-timeout turn took {took:?}");
    status
}

/// Two lines over TCP, then one datagram; blocking sockets with timeouts.
fn client(tcp: SocketAddr, udp: SocketAddr) -> std::io::Result<(Vec<String>, Vec<u8>)> {
    let stream = TcpStream::connect(tcp)?;
    stream.set_read_timeout(Some(DEADLINE))?;
    (&stream).write_all(b"one\ntwo\n")?;
    stream.shutdown(Shutdown::Write)?;
    let lines = BufReader::new(&stream).lines().collect::<Result<_, _>>()?;

    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.set_read_timeout(Some(DEADLINE))?;
    socket.send_to(b"datagram", udp)?;
    let mut reply = vec![0; 64];
    let n = common::retrying(|| socket.recv(&mut reply))?;
    reply.truncate(n);
    Ok((lines, reply))
}

#[test]
fn a_poll_host_serves_tcp_and_udp_through_the_descriptor_alone() {
    let mut config = Config::loopback();
    config.mode = Mode::Line;
    let mut server = Server::bind(config).unwrap();
    let (tcp, udp) = (server.tcp_addr().unwrap(), server.udp_addr().unwrap());

    // The host's own descriptor: the client thread holds the other end and
    // drops it when done, which makes ours readable (end of file).
    let (done, client_end) = UnixStream::pair().unwrap();
    let client = std::thread::spawn(move || {
        let result = client(tcp, udp);
        drop(client_end);
        result
    });

    let deadline = Instant::now() + DEADLINE;
    let (mut turns, mut stopping) = (0, false);
    loop {
        assert!(Instant::now() < deadline, "stuck after {turns} turns");
        let own = (!stopping).then(|| done.as_fd());
        let limit = wait_limit(&server, deadline);
        let ready = poll_readable(&[Some(server.as_fd()), own], Some(limit));
        if ready[0] || server.poll_delay() == Some(Duration::ZERO) {
            turns += 1;
            if turn_now(&mut server) == Status::Stopped {
                break;
            }
        }
        if ready[1] {
            stopping = true;
            server.shutdown();
        }
    }
    let (lines, datagram) = client.join().unwrap().expect("the client's exchanges");
    assert_eq!(lines, ["Received", "Received"]);
    assert_eq!(datagram, b"Received");
    let stats = server.stats();
    assert_eq!((stats.accepted, stats.messages, stats.datagrams), (1, 2, 1));
    assert!(turns >= 2, "{turns} turns");
}

#[test]
fn a_tokio_host_serves_tcp_and_udp_through_async_fd() {
    use tokio::io::unix::AsyncFd;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, Interest};

    let mut config = Config::loopback();
    config.mode = Mode::Line;
    let server = Server::bind(config).unwrap();
    let (tcp, udp) = (server.tcp_addr().unwrap(), server.udp_addr().unwrap());

    // One thread for everything: the server and the tokio client tasks.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let host = async move {
        // SAFETY: the server's descriptor stays open, and the same one,
        // until the server drops, which the `AsyncFd` prevents until
        // `into_inner`.
        let mut server =
            unsafe { AsyncFd::register_with_interest(server, Interest::READABLE) }.unwrap();
        let mut client = tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(tcp).await?;
            let (reader, mut writer) = stream.into_split();
            writer.write_all(b"one\ntwo\n").await?;
            writer.shutdown().await?;
            let mut lines = tokio::io::BufReader::new(reader).lines();
            let mut replies = Vec::new();
            while let Some(line) = lines.next_line().await? {
                replies.push(line);
            }
            let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
            socket.send_to(b"datagram", udp).await?;
            let mut datagram = vec![0; 64];
            let n = socket.recv(&mut datagram).await?;
            datagram.truncate(n);
            std::io::Result::Ok((replies, datagram))
        });
        let mut replies = None;
        let mut turns = 0;
        loop {
            let delay = server.get_ref().poll_delay();
            let sleep = async {
                match delay {
                    Some(delay) => tokio::time::sleep(delay).await,
                    None => std::future::pending().await,
                }
            };
            let status = tokio::select! {
                guard = server.readable_mut() => {
                    let mut guard = guard.unwrap();
                    turns += 1;
                    let status = turn_now(guard.get_inner_mut());
                    // Edge-triggered: clear only what the turn used up.
                    if !readable_now(guard.get_inner().as_fd()) {
                        guard.clear_ready();
                    }
                    status
                }
                () = sleep => {
                    turns += 1;
                    turn_now(server.get_mut())
                }
                finished = &mut client, if replies.is_none() => {
                    replies = Some(finished.unwrap().expect("the client's exchanges"));
                    server.get_mut().shutdown();
                    Status::Running
                }
            };
            if status == Status::Stopped {
                break;
            }
        }
        (server.into_inner(), replies.unwrap(), turns)
    };
    let (server, (lines, datagram), turns) = runtime
        .block_on(async { tokio::time::timeout(DEADLINE, host).await })
        .expect("served and stopped within the deadline");
    assert_eq!(lines, ["Received", "Received"]);
    assert_eq!(datagram, b"Received");
    let stats = server.stats();
    assert_eq!((stats.accepted, stats.messages, stats.datagrams), (1, 2, 1));
    assert!(turns >= 2, "{turns} turns");
}

/// A TCP client whose every byte the server's kernel has acknowledged: by
/// then its connection waits in the listener's backlog, so its arrival
/// can no longer wake the server's descriptor later. (`SIOCOUTQ`: the
/// bytes sent but not yet acknowledged; Linux.)
#[cfg(target_os = "linux")]
#[track_caller]
fn wait_acknowledged(stream: &TcpStream, deadline: Instant) {
    loop {
        let mut unacknowledged: libc::c_int = 0;
        // SAFETY: TIOCOUTQ (= SIOCOUTQ) writes one `c_int` through the
        // pointer, which is valid for the call.
        let rc = unsafe { libc::ioctl(stream.as_raw_fd(), libc::TIOCOUTQ, &mut unacknowledged) };
        assert_eq!(rc, 0, "SIOCOUTQ: {}", std::io::Error::last_os_error());
        if unacknowledged == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "never acknowledged");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// More clients wait than one turn accepts ([`ackloop::ACCEPTS_PER_TURN`]):
/// the turn stops at its budget and keeps the listener on its still-ready
/// list. Nothing new happens on any socket, so the descriptor stays
/// silent; only `poll_delay()` (zero) says there is work. (A UDP burst
/// over one turn's `DATAGRAMS_PER_TURN` would show the same, but Linux's
/// default receive buffer holds only about 256 small datagrams.)
#[cfg(target_os = "linux")]
#[test]
fn poll_delay_is_zero_while_the_listener_is_still_ready() {
    let mut config = Config::loopback();
    config.udp = None;
    // Each client sends a line's start and nothing is answered until its
    // end: no reply, no lingering close, and without an idle timeout no
    // deadline at all. A poll delay can only come from the list.
    config.mode = Mode::Line;
    config.idle_timeout = None;
    let mut server = Server::bind(config).unwrap();
    assert_eq!(server.poll_delay(), None, "nothing to do yet");
    let tcp = server.tcp_addr().unwrap();
    let deadline = Instant::now() + DEADLINE;

    // One and a half turns' worth, within the listener's backlog (128).
    let budget = ackloop::ACCEPTS_PER_TURN;
    let clients: Vec<TcpStream> = (0..budget + budget / 2)
        .map(|_| {
            let mut stream = TcpStream::connect(tcp).unwrap();
            stream.set_read_timeout(Some(DEADLINE)).unwrap();
            stream.write_all(b"x").unwrap();
            stream
        })
        .collect();
    for client in &clients {
        wait_acknowledged(client, deadline);
    }

    let limit = Some(wait_limit(&server, deadline));
    assert!(
        poll_readable(&[Some(server.as_fd())], limit)[0],
        "the waiting clients make the descriptor readable"
    );
    turn_now(&mut server);
    assert_eq!(server.stats().accepted, budget as u64, "one turn's budget");
    assert_eq!(
        server.poll_delay(),
        Some(Duration::ZERO),
        "the listener is still ready: the host must not wait"
    );
    assert!(
        !readable_now(server.as_fd()),
        "and the descriptor is silent: a host that trusted it alone would wait forever"
    );

    turn_now(&mut server);
    assert_eq!(server.stats().accepted, clients.len() as u64, "the rest");
    assert_eq!(
        server.poll_delay(),
        None,
        "drained: only events bring work now"
    );
    assert!(!readable_now(server.as_fd()));

    // Every client ends its line and is served, by a host that honours
    // both the descriptor and the delay.
    for client in &clients {
        client.shutdown(Shutdown::Write).unwrap();
    }
    while server.stats().messages < clients.len() as u64 {
        assert!(Instant::now() < deadline, "{}", server.stats());
        let limit = wait_limit(&server, deadline);
        poll_readable(&[Some(server.as_fd())], Some(limit));
        turn_now(&mut server);
    }
    for mut client in clients {
        let mut reply = Vec::new();
        client.read_to_end(&mut reply).unwrap();
        assert_eq!(reply, b"Received\n");
    }
}

/// A zero-timeout turn returns at once whatever the server waits for: no
/// deadline at all, a far one, or spurious wake-ups with nothing to do.
#[test]
fn a_turn_with_a_zero_timeout_returns_promptly() {
    let mut config = Config::loopback();
    config.idle_timeout = Some(Duration::from_secs(60));
    let mut server = Server::bind(config).unwrap();
    // Should a turn block after all, this wakes it (and the elapsed time
    // fails the test) rather than hanging it.
    let handle = server.handle();
    let (stop_watchdog, watchdog) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if watchdog.recv_timeout(DEADLINE).is_err() {
            handle.shutdown();
        }
    });

    assert_eq!(server.poll_delay(), None);
    for _ in 0..100 {
        assert_eq!(turn_now(&mut server), Status::Running);
    }
    let client = TcpStream::connect(server.tcp_addr().unwrap()).unwrap();
    let deadline = Instant::now() + DEADLINE;
    while server.stats().accepted == 0 {
        assert!(Instant::now() < deadline, "never accepted");
        poll_readable(&[Some(server.as_fd())], Some(wait_limit(&server, deadline)));
        turn_now(&mut server);
    }
    let delay = server.poll_delay().expect("the idle deadline");
    assert!(delay > Duration::from_secs(50), "{delay:?}");
    for _ in 0..100 {
        assert_eq!(turn_now(&mut server), Status::Running);
    }
    assert!(!readable_now(server.as_fd()), "nothing happened");
    drop(client);
    let _ = stop_watchdog.send(());
    watchdog.join().unwrap();
}

/// The descriptor is level-triggered: readable while events wait, read or
/// not, and still readable after a turn that could not take them all (a
/// turn takes at most 1024 events). That is why an edge-triggered host
/// clears its readiness only once the descriptor is silent.
#[cfg(target_os = "linux")]
#[test]
fn the_descriptor_stays_readable_while_events_wait() {
    /// Events one turn takes (the server's `EVENTS_PER_POLL`), and a few
    /// connections more.
    const EVENTS_PER_TURN: usize = 1024;
    const CLIENTS: usize = EVENTS_PER_TURN + 76;
    common::raise_descriptor_limit(2 * CLIENTS as u64 + 64);

    let mut config = Config::loopback();
    config.udp = None;
    config.mode = Mode::Line; // A line's start gets no reply.
    config.idle_timeout = None;
    config.max_connections = CLIENTS;
    let mut server = Server::bind(config).unwrap();
    let tcp = server.tcp_addr().unwrap();
    let deadline = Instant::now() + DEADLINE;

    // Connected a hundred at a time, and accepted in between: the
    // listener's backlog holds 128 (mio's, as std's).
    let mut clients = Vec::with_capacity(CLIENTS);
    while clients.len() < CLIENTS {
        let more = (CLIENTS - clients.len()).min(100);
        clients.extend((0..more).map(|_| TcpStream::connect(tcp).unwrap()));
        while server.stats().accepted < clients.len() as u64 {
            assert!(Instant::now() < deadline, "{}", server.stats());
            poll_readable(&[Some(server.as_fd())], Some(wait_limit(&server, deadline)));
            turn_now(&mut server);
        }
    }
    assert_eq!(server.poll_delay(), None, "nothing left to do");
    assert!(!readable_now(server.as_fd()));

    // One byte from every client: one event per connection, all pending.
    for mut client in &clients {
        client.write_all(b"x").unwrap();
    }
    for client in &clients {
        wait_acknowledged(client, deadline);
    }
    assert!(readable_now(server.as_fd()), "events wait");
    assert!(
        readable_now(server.as_fd()),
        "and still wait: level, not edge"
    );

    turn_now(&mut server);
    assert_eq!(
        server.stats().bytes_in,
        EVENTS_PER_TURN as u64,
        "one turn's events"
    );
    assert!(
        readable_now(server.as_fd()),
        "the events the turn left are still announced"
    );
    turn_now(&mut server);
    assert_eq!(server.stats().bytes_in, CLIENTS as u64, "the rest");
    assert!(!readable_now(server.as_fd()), "all taken");
}
