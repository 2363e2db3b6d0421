//! One probe per trap: the client that exposes it, and what it measures.
//!
//! Every probe runs against any [`Kind`] of server and says, with
//! figures, whether the symptom showed. Waits are bounded by
//! [`STALL`](crate::client::STALL) or a deadline of their own, and end on
//! a condition (the bytes arrived, the server stopped reading), never on a
//! quiet moment; the verdicts rest on counts, bytes and CPU time, with wide
//! margins. This file holds the probes of what a client receives; those of
//! wake-ups and CPU time are in `wakeups.rs`.

use std::io;
use std::net::TcpStream;
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::client::{
    End, connect, connect_small_window, finish, read_up_to, send_in_background, time_to_close,
};
use crate::figures::{Finding, count, mib, secs};
use crate::measure;
use crate::server::{IDLE_TIMEOUT, READS_PER_TURN, REPLY, Trap};
use crate::target::{Kind, Target};
use crate::wakeups;

/// Runs `trap`'s probe against a fresh server of `kind`.
pub fn probe(trap: Trap, kind: Kind) -> io::Result<Finding> {
    let target = Target::start(kind)?;
    match trap {
        Trap::NoDrain => burst(&target, 2_000),
        Trap::NoStillReady => burst(&target, 8_192),
        Trap::WritableForLife => wakeups::writable_for_life(&target),
        Trap::WriteAll => slow_reader(&target),
        Trap::OkZero => wakeups::half_close(&target),
        Trap::NoDeadlineTimeout => idle_client(&target),
        Trap::EmfileSpin => wakeups::out_of_descriptors(&target),
        Trap::CloseWithoutLinger => overlong_line(&target),
        Trap::NoBackpressure => never_reader(&target),
        Trap::Interrupted => wakeups::signals(&target),
    }
}

/// Not a trap of the list but the same class as `emfile-spin`: the
/// listener fails every accept, again at once (see
/// [`wakeups::accept_error`]). Does the server spin?
pub fn accept_error(kind: Kind) -> io::Result<Finding> {
    wakeups::accept_error(&Target::start(kind)?)
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
    let mut figure = match end {
        End::All => format!("the client got all {} replies", count(lines as u64)),
        _ => format!(
            "the client got {} of {} replies, {}",
            count(replies as u64),
            count(lines as u64),
            end.says(),
        ),
    };
    // One budget a turn: more reads in a turn than the budget means the
    // still-ready list served the connection twice in one turn.
    let most = target.most_reads_in_a_turn();
    if let Some(most) = most {
        figure += &format!("; reads of it in one turn: at most {most} (budget {READS_PER_TURN})");
    }
    let over_budget = most.is_some_and(|most| most > READS_PER_TURN as u64);
    Ok(Finding {
        symptom: replies < lines || over_budget,
        figure,
    })
}

/// Waits until the server has taken all `sent` bytes from `client`, has
/// closed the connection, or has stopped reading; returns what it took.
///
/// "Stopped reading" is a condition, not a quiet moment: the server's
/// thread asleep in `epoll_wait` while input waits unread in its socket.
/// Input arriving wakes a server that drained its socket, so asleep with
/// input unread means it chose not to read (or missed its event: the same
/// for what comes next). It must be seen twice, 20 ms apart, with no byte
/// read between: one sample could fall in the microseconds between the
/// input's arrival and the wake-up.
fn wait_until_taken(target: &Target, client: &TcpStream, sent: u64) -> io::Result<u64> {
    const DEADLINE: Duration = Duration::from_secs(10);
    let peer = client.local_addr()?;
    let start = Instant::now();
    let mut stopped_at: Option<u64> = None; // bytes taken when last seen stopped
    loop {
        let taken = target.bytes_read();
        let stopped = match measure::tcp_socket(target.tcp, peer) {
            Some((true, unread)) => unread > 0 && measure::asleep(target.tid),
            _ => return Ok(taken), // closed: it takes nothing more
        };
        if taken >= sent || (stopped && stopped_at == Some(taken)) {
            return Ok(taken);
        }
        stopped_at = stopped.then_some(taken);
        if start.elapsed() > DEADLINE {
            let e = "the server neither took all the input nor stopped reading in 10 s";
            return Err(io::Error::other(e));
        }
        sleep(Duration::from_millis(20));
    }
}

/// 1 MiB of empty lines (9 MiB of replies, more than the send and
/// receive buffers hold) from a client that starts reading only once the
/// server has taken what it will. Its window is 64 KiB: a smaller one
/// (4 KiB) can stall on TCP's persist timer for longer than the idle
/// timeout when the client's reads lag on a loaded machine.
fn slow_reader(target: &Target) -> io::Result<Finding> {
    const LINES: usize = 1024 * 1024;
    let client = connect_small_window(target.tcp, 64 * 1024)?;
    let writer = send_in_background(&client, vec![b'\n'; LINES])?;
    wait_until_taken(target, &client, LINES as u64)?;
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
    wait_until_taken(target, &client, sent.bytes)?;
    let want = LINES * REPLY.len();
    let (got, mut end) = read_up_to(&client, want);
    if end == End::Closed && sent.reset {
        end = End::Reset; // the writer saw it first
    }
    Ok(Finding {
        symptom: got < want,
        figure: format!(
            "the client got {} of {} reply bytes, {}",
            count(got as u64),
            count(want as u64),
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
    let taken = wait_until_taken(target, &client, INPUT as u64)?;
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
