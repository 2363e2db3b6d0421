//! One probe per trap: the client that exposes it, and what it measures.
//!
//! Every probe runs against any [`Kind`] of server and says, with
//! figures, whether the symptom showed. Waits are bounded by
//! [`STALL`](crate::client::STALL) or a deadline of their own; the
//! verdicts rest on counts, bytes and CPU time, with wide margins.

use std::io::{self, Write};
use std::net::UdpSocket;
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::client::{
    End, STALL, connect, connect_small_window, finish, read_up_to, send_in_background,
    time_to_close,
};
use crate::measure::{self, NoDescriptorsLeft};
use crate::server::{IDLE_TIMEOUT, REPLY, Trap};
use crate::target::{Kind, Target};

/// What a probe saw.
#[derive(Debug, Clone)]
pub struct Finding {
    /// The trap's symptom showed.
    pub symptom: bool,
    /// What was measured, as a sentence.
    pub figure: String,
}

/// Runs `trap`'s probe against a fresh server of `kind`.
pub fn probe(trap: Trap, kind: Kind) -> io::Result<Finding> {
    let target = Target::start(kind)?;
    match trap {
        Trap::NoDrain => burst(&target, 2_000),
        Trap::NoStillReady => burst(&target, 8_192),
        Trap::WritableForLife => udp_ping_pong(&target),
        Trap::WriteAll => slow_reader(&target),
        Trap::OkZero => half_close(&target),
        Trap::NoDeadlineTimeout => idle_client(&target),
        Trap::EmfileSpin => out_of_descriptors(&target),
        Trap::CloseWithoutLinger => overlong_line(&target),
        Trap::NoBackpressure => never_reader(&target),
        Trap::Interrupted => signals(&target),
    }
}

/// `lines` lines of 32 bytes sent at once (several reads' worth, several
/// turns' budget), read back while sending.
fn burst(target: &Target, lines: usize) -> io::Result<Finding> {
    let line = [&[b'x'; 31][..], b"\n"].concat();
    let client = connect(target.tcp)?;
    let writer = send_in_background(&client, line.repeat(lines))?;
    let (got, end) = read_up_to(&client, lines * REPLY.len());
    finish(&client, writer);
    let replies = got / REPLY.len();
    let figure = match end {
        End::All => format!("the client got all {} replies", count(lines)),
        _ => format!(
            "the client got {} of {} replies, {}",
            count(replies),
            count(lines),
            end.says(),
        ),
    };
    Ok(Finding {
        symptom: replies < lines,
        figure,
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
            count(events as usize),
            count(DATAGRAMS as usize)
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

/// Waits until the server has taken all `sent` bytes, or its count
/// stopped moving for a while; returns its count.
fn wait_until_taken(target: &Target, sent: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut taken = target.bytes_read();
    while taken < sent && Instant::now() < deadline {
        sleep(Duration::from_millis(200));
        let now = target.bytes_read();
        if now == taken {
            break;
        }
        taken = now;
    }
    taken
}

/// 1 MiB of empty lines (9 MiB of replies, more than any send buffer)
/// from a client with a 4 KiB window that starts reading only once the
/// server has taken what it will.
fn slow_reader(target: &Target) -> io::Result<Finding> {
    const LINES: usize = 1024 * 1024;
    let client = connect_small_window(target.tcp, 4096)?;
    let writer = send_in_background(&client, vec![b'\n'; LINES])?;
    wait_until_taken(target, LINES as u64);
    let want = LINES * REPLY.len();
    let (got, end) = read_up_to(&client, want);
    finish(&client, writer);
    Ok(Finding {
        symptom: got < want,
        figure: format!(
            "the client got {} of {} reply bytes, {}",
            mib(got as u64),
            mib(want as u64),
            end.says()
        ),
    })
}

/// One exchange, then the client shuts down its side: does the server
/// close too, and what CPU does it burn meanwhile?
fn half_close(target: &Target) -> io::Result<Finding> {
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

/// A client that connects and sends nothing: closed after the idle
/// timeout?
fn idle_client(target: &Target) -> io::Result<Finding> {
    let limit = IDLE_TIMEOUT * 2;
    let client = connect(target.tcp)?;
    let closed = time_to_close(&client, limit);
    let idle = secs(IDLE_TIMEOUT);
    let figure = match closed {
        Some(after) => format!(
            "the idle client was closed after {} (timeout {idle})",
            secs(after)
        ),
        None => format!(
            "the idle client was still connected after {} (timeout {idle})",
            secs(limit)
        ),
    };
    Ok(Finding {
        symptom: closed.is_none(),
        figure,
    })
}

/// A client arrives while the process has no descriptor left: is it
/// closed promptly, and what CPU does the server burn meanwhile?
fn out_of_descriptors(target: &Target) -> io::Result<Finding> {
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
        Some((after, before)) => format!(", {} failed accepts", count((after - before) as usize)),
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

/// 2,000 lines, then a line far over the limit, from a client with a
/// small window that reads only once it has sent everything: the server
/// closes with input unread and replies still in its send buffer.
fn overlong_line(target: &Target) -> io::Result<Finding> {
    const LINES: usize = 2_000;
    let client = connect_small_window(target.tcp, 4096)?;
    let mut input = b"x\n".repeat(LINES);
    input.extend_from_slice(&[b'y'; 64 * 1024]);
    let writer = send_in_background(&client, input)?;
    let sent = writer.join().unwrap_or_default(); // done, or failed on the reset
    wait_until_taken(target, sent.bytes);
    let want = LINES * REPLY.len();
    let (got, mut end) = read_up_to(&client, want);
    if end == End::Closed && sent.reset {
        end = End::Reset; // the writer saw it first
    }
    Ok(Finding {
        symptom: got < want,
        figure: format!(
            "the client got {} of {} reply bytes, {}",
            count(got),
            count(want),
            end.says()
        ),
    })
}

/// 2 MiB of empty lines from a client that never reads: how much does
/// the server take, and how much memory does it grow?
fn never_reader(target: &Target) -> io::Result<Finding> {
    const INPUT: usize = 2 * 1024 * 1024;
    let input = vec![b'\n'; INPUT];
    let client = connect(target.tcp)?;
    let rss_before = measure::rss();
    let writer = send_in_background(&client, input)?;
    let taken = wait_until_taken(target, INPUT as u64);
    let grown = measure::rss().saturating_sub(rss_before);
    finish(&client, writer);
    Ok(Finding {
        symptom: grown > 8 * 1024 * 1024,
        figure: format!(
            "the server took {} of {} from a client that never reads; RSS grew {}",
            mib(taken),
            mib(INPUT as u64),
            mib(grown)
        ),
    })
}

/// 20 exchanges, each followed by `SIGUSR1` to the server's thread while
/// it waits in `epoll_wait`. The next exchange starts only once the
/// signal was handled: `epoll_wait` returns events it has rather than
/// `EINTR`, so a request arriving first would hide the signal.
fn signals(target: &Target) -> io::Result<Finding> {
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
            count(replies)
        ),
    })
}

/// 12345678 as "12,345,678".
pub fn count(n: usize) -> String {
    let digits = n.to_string();
    let mut grouped = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

/// A size in MiB, or in KiB below one MiB.
fn mib(bytes: u64) -> String {
    const KIB: f64 = 1024.0;
    match bytes as f64 {
        b if b < KIB * KIB => format!("{:.1} KiB", b / KIB),
        b => format!("{:.1} MiB", b / (KIB * KIB)),
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}
