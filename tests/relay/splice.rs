//! Bulk through the relay, where a plain direction moves its bytes with
//! `splice(2)` through a pipe of its own: several MiB each way arrive
//! byte for byte, the FIN after them, a reset mid-stream resets the other
//! side, SIGTERM delivers what the pipes hold, the counters count spliced
//! bytes, a fault added at run time acts on the next pair, and a relay
//! with no descriptor left for a pipe copies instead. The pipes are seen
//! in `/proc/PID/fd`: one per direction that carried bulk, none for an
//! idle pair, closed with the pair.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::common::upstream::{echo_upstream, reset, tcp_upstream};
use crate::common::{
    self, DEADLINE, End, Server, connect, counter, read_exactly, read_until_closed, wait_until,
};
use crate::{ask, echo_through, relay_summary};
use proptest::prelude::*;

const MIB: usize = 1 << 20;

/// `len` bytes that show a byte out of place: a pattern with a period
/// (251) that no power-of-two piece divides.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i % 251) as u8).wrapping_mul(7).wrapping_add(seed))
        .collect()
}

/// The pipe ends process `pid` holds open (two per pipe).
fn pipes(pid: u32) -> usize {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap();
    fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("pipe:"))
        .count()
}

/// Sends `data` on a thread of its own, then the FIN if `fin`.
fn send(stream: &TcpStream, data: Vec<u8>, fin: bool) -> JoinHandle<()> {
    let mut writer = stream.try_clone().unwrap();
    std::thread::spawn(move || {
        writer.write_all(&data).unwrap();
        if fin {
            writer.shutdown(Shutdown::Write).unwrap();
        }
    })
}

/// Whether `a` and `b` are the same bytes (without printing MiBs).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a == b
}

/// `len` bytes from `seed` (xorshift): random, and cheap to make by MiBs.
fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]

    /// Any size up to a few MiB, any split: a direction copies at first
    /// and splices once it carries bulk, at whatever point the pieces
    /// bring it there: the echo is byte for byte. (The unit tests of
    /// `relay::half::spliced` hold bytes at the switch on purpose.)
    #[test]
    fn any_split_across_the_switch_to_splicing_arrives_unchanged(
        len in 0usize..3 * MIB,
        seed in any::<u64>(),
        pieces in proptest::collection::vec(1usize..300_000, 1..8),
    ) {
        let relay = spliced_relay(echo_upstream(), &[]);
        let data = random_bytes(len, seed);
        let back = echo_through(relay.tcp(), data.clone(), pieces);
        prop_assert!(same(&back, &data), "{} bytes back of {}", back.len(), data.len());
    }
}

#[test]
fn bulk_both_ways_goes_through_a_pipe_each_way_unchanged_and_counted() {
    let relay = spliced_relay(echo_upstream(), &[]);
    let idle = pipes(relay.pid());
    let client = connect(relay.tcp());
    // A short exchange opens no pipe: an idle or chatty pair holds none.
    (&client).write_all(b"hello").unwrap();
    assert_eq!(read_exactly(&client, 5), b"hello");
    assert_eq!(pipes(relay.pid()), idle, "a short exchange opened a pipe");
    let data = pattern(8 * MIB, 1);
    let sending = send(&client, data.clone(), false);
    let back = read_exactly(&client, data.len());
    common::join(sending);
    assert!(same(&back, &data), "the echo changed");
    assert_eq!(
        pipes(relay.pid()),
        idle + 4,
        "a pipe (two ends) per direction"
    );
    client.shutdown(Shutdown::Write).unwrap();
    let drained = read_until_closed(&client, DEADLINE);
    assert_eq!((drained.bytes.len(), drained.end), (0, End::Eof));
    assert!(
        wait_until(DEADLINE, || pipes(relay.pid()) == idle),
        "the pipes outlived their pair"
    );
    let (_, summary, _) = relay_summary(relay);
    let moved = Some(8 * MIB as u64 + 5);
    for name in ["bytes in", "up bytes out", "up bytes in", "bytes out"] {
        assert_eq!(counter(&summary, name), moved, "{name}: {summary}");
    }
}

#[test]
fn a_half_close_after_bulk_reaches_the_other_side_after_the_bytes() {
    let (up_data, down_data) = (pattern(6 * MIB, 2), pattern(5 * MIB, 3));
    let expected = up_data.clone();
    let answer = down_data.clone();
    let (tell, told) = mpsc::channel();
    let upstream = tcp_upstream(move |_, mut stream| {
        let mut request = Vec::new();
        stream.read_to_end(&mut request).unwrap();
        tell.send(same(&request, &expected)).unwrap();
        stream.write_all(&answer).unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        let _ = stream.read(&mut [0; 1]);
    });
    let relay = spliced_relay(upstream, &[]);
    let client = connect(relay.tcp());
    let sending = send(&client, up_data, true);
    assert!(
        told.recv_timeout(DEADLINE).unwrap(),
        "the upstream's bytes before the FIN"
    );
    let drained = read_until_closed(&client, DEADLINE);
    common::join(sending);
    assert_eq!(drained.end, End::Eof);
    assert!(same(&drained.bytes, &down_data), "the client's bytes");
}

#[test]
fn an_upstream_reset_mid_bulk_resets_the_client() {
    let upstream = tcp_upstream(|_, mut stream| {
        let mut buf = vec![0; MIB];
        stream.read_exact(&mut buf).unwrap();
        reset(stream);
    });
    let relay = spliced_relay(upstream, &[]);
    let client = connect(relay.tcp());
    let chunk = pattern(64 * 1024, 4);
    // The reset fails a write, or the read after the writes: whichever
    // comes first takes the socket's error.
    let failed = loop {
        match (&client).write(&chunk) {
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => break e,
        }
    };
    let reset_seen =
        crate::is_reset(&failed) || read_until_closed(&client, DEADLINE).end == End::Reset;
    assert!(reset_seen, "{failed}");
    let (_, summary, _) = relay_summary(relay);
    assert_eq!(counter(&summary, "upstream failed"), Some(1), "{summary}");
}

#[test]
fn a_client_reset_mid_bulk_resets_the_upstream() {
    let (tell, told) = mpsc::channel();
    let upstream = tcp_upstream(move |_, mut stream| {
        let chunk = pattern(64 * 1024, 5);
        let end = loop {
            match stream.write(&chunk) {
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => break e.kind(),
            }
        };
        tell.send(end).unwrap();
    });
    let relay = spliced_relay(upstream, &[]);
    let client = connect(relay.tcp());
    let got = read_exactly(&client, 4 * MIB);
    let chunk = pattern(64 * 1024, 5);
    assert!(
        got.chunks(64 * 1024).all(|c| c == chunk),
        "the bytes before the reset"
    );
    reset(client);
    let end = told.recv_timeout(DEADLINE).unwrap();
    assert!(
        matches!(end, ErrorKind::ConnectionReset | ErrorKind::BrokenPipe),
        "{end:?}"
    );
}

/// Stream mode judges faults once per pair, when it is accepted: one
/// added over control while a pair splices acts on the next pair, and the
/// splicing pair goes on unchanged.
#[test]
fn a_fault_added_mid_stream_acts_on_the_next_pair() {
    let relay = spliced_relay(echo_upstream(), &["--control", "127.0.0.1:0"]);
    let control = relay.control.unwrap();
    let first = connect(relay.tcp());
    let data = pattern(4 * MIB, 6);
    let sending = send(&first, data[..2 * MIB].to_vec(), false);
    assert!(same(&read_exactly(&first, 2 * MIB), &data[..2 * MIB]));
    common::join(sending);
    let answer = ask(control, "fault tcp:corrupt,dir=down");
    assert!(answer.starts_with("ok"), "{answer}");
    let second = connect(relay.tcp());
    let sending = send(&second, data.clone(), true);
    let drained = read_until_closed(&second, DEADLINE);
    common::join(sending);
    assert_eq!(drained.bytes.len(), data.len());
    let changed = drained.bytes.iter().zip(&data).filter(|(a, b)| a != b);
    assert!(changed.count() > data.len() / 2, "the new pair's bytes");
    let sending = send(&first, data[2 * MIB..].to_vec(), true);
    let drained = read_until_closed(&first, DEADLINE);
    common::join(sending);
    assert_eq!(drained.end, End::Eof);
    assert!(same(&drained.bytes, &data[2 * MIB..]), "the first pair's");
}

/// SIGTERM while the upstream does not read: what the relay took from
/// the client (in its pipe too) reaches the upstream, then the FIN.
#[test]
fn sigterm_delivers_what_the_pipes_hold() {
    let (go, reading) = mpsc::channel::<()>();
    let reading = std::sync::Mutex::new(reading);
    let (tell, told) = mpsc::channel();
    let upstream = tcp_upstream(move |_, mut stream| {
        reading.lock().unwrap().recv_timeout(DEADLINE).unwrap();
        let mut got = Vec::new();
        stream.read_to_end(&mut got).unwrap();
        tell.send(got).unwrap();
    });
    let mut relay = spliced_relay(upstream, &[]);
    let idle = pipes(relay.pid());
    let client = connect(relay.tcp());
    client
        .set_write_timeout(Some(std::time::Duration::from_millis(500)))
        .unwrap();
    let data = pattern(64 * MIB, 7);
    common::write_until_blocked(&client, data.len() as u64, &data[..64 * 1024]);
    assert!(pipes(relay.pid()) > idle, "the bulk opened no pipe");
    relay.signal(common::SIGTERM);
    go.send(()).unwrap();
    let got = told.recv_timeout(DEADLINE).unwrap();
    let status = relay.wait();
    let stderr = relay.final_stderr();
    assert!(status.success(), "{stderr}");
    let summary = common::assert_summary(&stderr);
    assert_eq!(counter(&summary, "bytes in"), Some(got.len() as u64));
    assert_eq!(counter(&summary, "up bytes out"), Some(got.len() as u64));
    let period = |b: &[u8]| b.chunks(64 * 1024).all(|c| c == &data[..c.len()]);
    assert!(period(&got), "the bytes the upstream got changed");
}

/// With no descriptor left for a pipe, a pair copies: the bytes arrive
/// all the same, and the pair is not failed.
#[test]
fn no_descriptor_for_a_pipe_copies_instead() {
    let upstream = echo_upstream();
    let probe = fd_limited(upstream, 64);
    let open = std::fs::read_dir(format!("/proc/{}/fd", probe.pid()))
        .unwrap()
        .count();
    drop(probe);
    // Room for the pair's two sockets, none for a pipe.
    let relay = fd_limited(upstream, open as u32 + 2);
    let idle = pipes(relay.pid());
    let client = connect(relay.tcp());
    let data = pattern(4 * MIB, 8);
    let sending = send(&client, data.clone(), false);
    let back = read_exactly(&client, data.len());
    common::join(sending);
    assert!(same(&back, &data), "copied bytes");
    assert_eq!(pipes(relay.pid()), idle, "a pipe past the limit");
    client.shutdown(Shutdown::Write).unwrap();
    let drained = read_until_closed(&client, DEADLINE);
    assert_eq!((drained.bytes.len(), drained.end), (0, End::Eof));
}

/// A TCP relay to `upstream` with at most `limit` descriptors.
/// Bounds of its own (the test's options win over ACKLOOP_TEST_ARGS): a
/// pipe opens after a 64 KiB read, which the smallest settings (a 512-byte
/// read buffer, one owed byte) never make, and these tests count pipes.
const BULK_BOUNDS: [&str; 4] = ["--max-owed", "131072", "--read-buffer", "65536"];

/// A TCP relay to `upstream` with [`BULK_BOUNDS`] and `extra`.
fn spliced_relay(upstream: SocketAddr, extra: &[&str]) -> Server {
    let mut args = BULK_BOUNDS.to_vec();
    args.extend_from_slice(extra);
    crate::tcp_relay(upstream, &args)
}

fn fd_limited(upstream: SocketAddr, limit: u32) -> Server {
    let spec = format!("tcp:{upstream}");
    let mut args = vec!["--no-udp", "--upstream", &spec];
    args.extend(BULK_BOUNDS);
    Server::start_with_fd_limit(limit, &args)
}
