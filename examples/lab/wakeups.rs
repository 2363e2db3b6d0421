//! The probes of wake-ups and CPU time: does the server wake for nothing,
//! spin, or die, where it should sleep?
//!
//! CPU time is read from the server thread's `schedstat` over a fixed
//! window; ackloop's log is off meanwhile (see `ackloop_log.rs`).
//! Readiness events are counted only by the probe of `writable-for-life`,
//! which measures no CPU time.

use std::io::{self, Read, Write};
use std::net::{Shutdown, UdpSocket};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::client::{End, STALL, connect, connect_small_window, read_up_to, time_to_close};
use crate::figures::{Finding, count, ms, secs};
use crate::measure::{self, NoDescriptorsLeft};
use crate::server::REPLY;
use crate::target::Target;

/// `writable-for-life` on TCP and on UDP: the symptom on either counts.
pub fn writable_for_life(target: &Target) -> io::Result<Finding> {
    let (tcp, udp) = writable_for_life_parts(target)?;
    Ok(Finding {
        symptom: tcp.symptom || udp.symptom,
        figure: format!("TCP: {}; UDP: {}", tcp.figure, udp.figure),
    })
}

/// The TCP and the UDP probe of `writable-for-life`, each with its verdict.
pub fn writable_for_life_parts(target: &Target) -> io::Result<(Finding, Finding)> {
    let _counting = target.count_events();
    Ok((tcp_rounds(target)?, udp_ping_pong(target)?))
}

/// Rounds on TCP that leave the server's send buffer loaded when a
/// request arrives, then drain it: how many readiness events per round?
///
/// Each round: 3,000 lines, whose 27,000 bytes of replies the server
/// writes at once (they fit) and which wait in its send buffer behind the
/// client's 4 KiB window; then one more line; then the client reads every
/// reply. That line's event finds the send buffer over two thirds full, so
/// Linux reports the room the client's reads free as writable: a wake-up
/// for nothing to a server that owes nothing and registered `WRITABLE` for
/// good; one registered for reading only is not told. (Linux reports a TCP
/// socket writable again only after finding its send buffer that full: a
/// plain ping-pong shows nothing.) The probe fixes the server's send buffer
/// at 16 KiB (`SO_SNDBUF` on its listener, inherited by the connection;
/// Linux doubles it) so that the figures do not hang on autotuning.
fn tcp_rounds(target: &Target) -> io::Result<Finding> {
    const ROUNDS: u64 = 10;
    const LINES: usize = 3_000;
    let listener = measure::listening_socket(target.tcp)
        .ok_or_else(|| io::Error::other("cannot find the server's listener"))?;
    measure::with_socket(listener, |socket| socket.set_send_buffer_size(16 * 1024))?;
    let mut client = connect_small_window(target.tcp, 4096)?;
    let mut replies = vec![0; 64 * 1024];
    wait_until_asleep(target);
    let before = target.events();
    for _ in 0..ROUNDS {
        client.write_all(&b"x\n".repeat(LINES))?;
        wait_until_asleep(target);
        client.write_all(b"x\n")?;
        wait_until_asleep(target);
        let want = (LINES + 1) * REPLY.len();
        let mut got = 0;
        while got < want {
            match client.read(&mut replies[..want - got]) {
                Ok(n) if n > 0 => got += n,
                _ => return Err(io::Error::other("the replies stopped")),
            }
            wait_until_asleep(target);
        }
    }
    let events = target.events() - before;
    let per_round = events as f64 / ROUNDS as f64;
    Ok(Finding {
        symptom: per_round >= 2.5,
        figure: format!("{per_round:.2} readiness events per round ({events} for {ROUNDS})"),
    })
}

/// Datagrams sent one at a time, each once the server sleeps again after
/// the last reply: how many readiness events does it handle per datagram?
fn udp_ping_pong(target: &Target) -> io::Result<Finding> {
    const DATAGRAMS: u64 = 500;
    let client = UdpSocket::bind("127.0.0.1:0")?;
    client.set_read_timeout(Some(STALL))?;
    client.connect(target.udp)?;
    let mut reply = [0; 64];
    let before = target.events();
    for _ in 0..DATAGRAMS {
        wait_until_asleep(target);
        client.send(b"ping")?;
        client.recv(&mut reply)?;
    }
    wait_until_asleep(target);
    let events = target.events() - before;
    if events < DATAGRAMS / 2 {
        // Each datagram, sent to a sleeping server, is an event at least.
        return Err(io::Error::other("the server's events could not be counted"));
    }
    let per_datagram = events as f64 / DATAGRAMS as f64;
    Ok(Finding {
        symptom: per_datagram >= 1.5,
        figure: format!(
            "{per_datagram:.2} readiness events per datagram ({} for {})",
            count(events),
            count(DATAGRAMS)
        ),
    })
}

/// Waits (at most `STALL`) until the server's thread sleeps in
/// `epoll_wait`, its work for the last event done.
fn wait_until_asleep(target: &Target) {
    let deadline = Instant::now() + STALL;
    while !measure::asleep(target.tid) && Instant::now() < deadline {
        std::thread::yield_now();
    }
}

/// One exchange, then the client shuts down its side: does the server
/// close too, and what CPU does it burn meanwhile?
pub fn half_close(target: &Target) -> io::Result<Finding> {
    const WINDOW: Duration = Duration::from_millis(500); // well within the idle timeout
    let mut client = connect(target.tcp)?;
    client.write_all(b"Hello, Server\n")?;
    let (got, _) = read_up_to(&client, REPLY.len());
    if got < REPLY.len() {
        return Err(io::Error::other("no reply before the half-close"));
    }
    let cpu = target.cpu()?;
    let (start, used_before) = (Instant::now(), cpu.used());
    client.shutdown(std::net::Shutdown::Write)?;
    let closed = time_to_close(&client, WINDOW);
    sleep(WINDOW.saturating_sub(start.elapsed()));
    let used = cpu.used().saturating_sub(used_before);
    let wall = start.elapsed();
    let figure = match closed {
        Some(after) => format!(
            "the server closed {} after the client's FIN; {} of CPU in {}",
            ms(after),
            secs(used),
            secs(wall)
        ),
        None => format!(
            "the server never closed; it burned {} of CPU in {}",
            secs(used),
            secs(wall)
        ),
    };
    Ok(Finding {
        symptom: closed.is_none() || spins(used, wall),
        figure,
    })
}

/// More than a quarter of a core over `wall` is a loop that never sleeps
/// (a waiting server uses well under 1%); a spinning thread gets far
/// more than a quarter even on a loaded two-core machine.
fn spins(used: Duration, wall: Duration) -> bool {
    used > wall / 4
}

/// A client arrives while the process has no descriptor left: is it
/// closed promptly, and what CPU does the server burn meanwhile?
pub fn out_of_descriptors(target: &Target) -> io::Result<Finding> {
    const WINDOW: Duration = Duration::from_secs(1);
    use socket2::{Domain, Socket, Type};
    // Everything the probe needs is opened before the descriptors run out.
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    let cpu = target.cpu()?;
    let failures_before = target.out_of_descriptors();
    let exhausted = NoDescriptorsLeft::take()?;
    let (start, used_before) = (Instant::now(), cpu.used());
    let connected = socket.connect(&target.tcp.into()); // waits in the backlog
    let client = std::net::TcpStream::from(socket);
    let closed = connected.ok().and_then(|()| time_to_close(&client, WINDOW));
    sleep(WINDOW.saturating_sub(start.elapsed()));
    let used = cpu.used().saturating_sub(used_before);
    let wall = start.elapsed();
    let failures = target.out_of_descriptors().zip(failures_before);
    drop(exhausted); // the server may accept again
    let failed = match failures {
        Some((after, before)) => format!(", {} failed accepts", count(after - before)),
        None => String::new(),
    };
    let figure = match closed {
        Some(after) => format!(
            "the waiting client was closed after {}; {} of CPU in {}{failed}",
            ms(after),
            secs(used),
            secs(wall)
        ),
        None => format!(
            "the client waited {} unanswered; {} of CPU in {}{failed}",
            secs(WINDOW),
            secs(used),
            secs(wall)
        ),
    };
    Ok(Finding {
        symptom: closed.is_none() || spins(used, wall),
        figure,
    })
}

/// The listener fails every accept from now on: the probe shuts it down
/// under the server (`shutdown(SHUT_RD)` on a listening socket), and each
/// `accept` fails with `EINVAL`, again at once, as `ENOBUFS`, `ENOMEM` or
/// `EPERM` would. Does the server spin, and does it still answer UDP?
pub fn accept_error(target: &Target) -> io::Result<Finding> {
    const WINDOW: Duration = Duration::from_secs(1);
    let listener = measure::listening_socket(target.tcp)
        .ok_or_else(|| io::Error::other("cannot find the server's listener"))?;
    let udp = UdpSocket::bind("127.0.0.1:0")?;
    udp.set_read_timeout(Some(STALL))?;
    udp.connect(target.udp)?;
    let cpu = target.cpu()?;
    let errors_before = target.accept_errors();
    let (start, used_before) = (Instant::now(), cpu.used());
    measure::with_socket(listener, |socket| socket.shutdown(Shutdown::Read))?;
    sleep(WINDOW); // the window CPU time is measured over
    let used = cpu.used().saturating_sub(used_before);
    let wall = start.elapsed();
    // Paused a second between tries: two or three in the window, not more.
    let errors = target.accept_errors().zip(errors_before);
    let errors = errors.map(|(after, before)| after - before);
    udp.send(b"ping")?;
    let answered = udp.recv(&mut [0; 64]).is_ok();
    let udp = if answered {
        "UDP still answered"
    } else {
        "UDP unanswered"
    };
    let failed = match errors {
        Some(n) => format!(", {} failed accepts", count(n)),
        None => String::new(),
    };
    Ok(Finding {
        symptom: spins(used, wall) || errors.is_some_and(|n| n > 10) || !answered,
        figure: format!(
            "every accept failing: {} of CPU in {}{failed}; {udp}",
            secs(used),
            secs(wall)
        ),
    })
}

/// 20 exchanges, each followed by `SIGUSR1` to the server's thread while
/// it waits in `epoll_wait`. The next exchange starts only once the
/// signal was handled: `epoll_wait` returns events it has rather than
/// `EINTR`, so a request arriving first would hide the signal.
pub fn signals(target: &Target) -> io::Result<Finding> {
    const ROUNDS: usize = 20;
    measure::catch_sigusr1()?;
    let mut client = connect(target.tcp)?;
    let (mut replies, mut signals) = (0, 0);
    for _ in 0..ROUNDS {
        if client.write_all(b"ping\n").is_err() || read_up_to(&client, REPLY.len()).1 != End::All {
            break;
        }
        replies += 1;
        wait_until_asleep(target);
        if measure::signal_thread(target.tid).is_err() {
            break; // the thread is gone
        }
        signals += 1;
        let deadline = Instant::now() + STALL;
        while measure::sigusr1_pending(target.tid) && Instant::now() < deadline {
            std::thread::yield_now();
        }
    }
    let alive = target.alive();
    let state = if alive {
        "still running"
    } else {
        "then it died"
    };
    Ok(Finding {
        symptom: replies < ROUNDS || !alive,
        figure: format!(
            "{} of {ROUNDS} replies, signals sent: {signals}, {state}",
            count(replies as u64)
        ),
    })
}
