//! A delay is latency, not a bandwidth cap (issue 21, SPEC 14's
//! `latency`): a delayed direction keeps reading while its bytes wait,
//! up to `--max-delayed`, and each chunk draws its own delay in the
//! fault's range, in order.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::control::Control;
use crate::common::upstream::{echo_upstream, tcp_upstream};
use crate::common::{self, connect, read_exactly};
use crate::tcp_relay;

/// `--max-delayed` at its default, and `--max-owed` at its own for the
/// direction with no delay, passed explicitly: the smallest settings
/// (`ACKLOOP_TEST_ARGS`) must not shrink what these tests hold (under
/// `--max-owed 1` a plain direction relays a byte at a time).
const BULK_BOUNDS: [&str; 4] = ["--max-delayed", "4194304", "--max-owed", "65536"];

/// 1 MiB each way through `delay=600`, against the echo upstream: it
/// arrives about 0.6 s after it was sent, not the 10 s a direction held
/// to `--max-owed` took.
#[test]
fn a_delayed_megabyte_arrives_after_the_delay_not_ten_seconds() {
    let body: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
    for dir in ["down", "up"] {
        let fault = format!("tcp:delay=600,dir={dir}");
        let mut args = vec!["--fault", fault.as_str()];
        args.extend(BULK_BOUNDS);
        let relay = tcp_relay(echo_upstream(), &args);
        let client = connect(relay.tcp());
        let writer = client.try_clone().unwrap();
        let sent = body.clone();
        let started = Instant::now();
        let writing = std::thread::spawn(move || (&writer).write_all(&sent).unwrap());
        let back = read_exactly(&client, body.len());
        let took = started.elapsed();
        common::join(writing);
        assert!(back == body, "{dir}: the bytes changed");
        assert!(took >= Duration::from_millis(600), "{dir}: {took:?}");
        assert!(took < Duration::from_millis(1500), "{dir}: {took:?}");
    }
}

/// An upstream that accepts and never reads: what is sent to it stays
/// in the kernel's buffers, then in the relay.
fn never_reading_upstream() -> SocketAddr {
    let kept: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
    tcp_upstream(move |_, stream| kept.lock().unwrap().push(stream))
}

/// 8 clients push all they can through `delay=20000,dir=up` to an
/// upstream that never reads: each direction reads on past `--max-owed`
/// while its bytes wait (none comes due during the test), and stops at
/// `--max-delayed`; the relay's memory grows by no more than that allows.
#[test]
fn a_delayed_direction_holds_at_most_max_delayed() {
    const CLIENTS: u64 = 8;
    const MAX: u64 = 1 << 20;
    const READ: u64 = 64 * 1024;
    let max = MAX.to_string();
    let args = [
        "--fault",
        "tcp:delay=20000,dir=up",
        "--max-delayed",
        max.as_str(),
        "--read-buffer",
        "65536",
        "--idle-timeout",
        "0",
        "--control",
        "127.0.0.1:0",
        "--log-level",
        "off",
    ];
    let relay = tcp_relay(never_reading_upstream(), &args);
    let before = relay.rss_kib();
    let addr = relay.tcp();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            std::thread::spawn(move || {
                let client = connect(addr);
                // Blocked this long: the relay stopped reading it.
                client
                    .set_write_timeout(Some(Duration::from_millis(500)))
                    .unwrap();
                let sent = common::write_until_blocked(&client, 64 << 20, &[7; 64 * 1024]);
                (client, sent)
            })
        })
        .collect();
    let clients: Vec<_> = clients.into_iter().map(common::join).collect();
    for (_, sent) in &clients {
        assert!(*sent < 64 << 20, "{sent} bytes: never pushed back");
    }
    let mut control = Control::open(&relay);
    let held = control.stat("bytes_in") - control.stat("up_bytes_out");
    // Each direction holds up to the bound, which a read may pass by
    // itself: far past the 64 KiB `--max-owed` allows other faults.
    assert!(held <= CLIENTS * (MAX + READ), "held {held} bytes");
    assert!(
        held >= CLIENTS * (MAX - READ),
        "held {held} bytes: reading stopped early"
    );
    let grown = relay.rss_kib().saturating_sub(before) * 1024;
    // The held bytes' buffer keeps what went out until it is as long as
    // what is left: twice the bound at most, and room for the allocator.
    let bound = CLIENTS * 2 * (MAX + READ) + (4 << 20);
    assert!(grown < bound, "RSS grew {grown} bytes, bound {bound}");
}

/// One round trip of `bytes` on an open connection: how long it took.
fn round_trip(stream: &TcpStream, bytes: &[u8]) -> Duration {
    let started = Instant::now();
    let mut writer = stream;
    writer.write_all(bytes).unwrap();
    assert_eq!(read_exactly(stream, bytes.len()), bytes);
    started.elapsed()
}

/// `delay=MIN-MAX` on a relayed stream is toxiproxy's `latency` ±
/// `jitter`: each chunk draws its own delay (one round trip at a time,
/// each a chunk), where a message would take one for the connection.
#[test]
fn each_chunk_of_a_stream_draws_its_own_delay() {
    let args = ["--fault", "tcp:delay=100-500", "--seed", "7"];
    let relay = tcp_relay(echo_upstream(), &args);
    let client = connect(relay.tcp());
    let took: Vec<Duration> = (0..8).map(|_| round_trip(&client, b"ping")).collect();
    let (least, most) = (took.iter().min().unwrap(), took.iter().max().unwrap());
    assert!(*least >= Duration::from_millis(100), "{took:?}");
    assert!(
        most.saturating_sub(*least) >= Duration::from_millis(150),
        "{took:?}"
    );
}

#[test]
fn max_delayed_out_of_range_exits_2_naming_it() {
    for value in ["65535", "268435457", "-1", "lots"] {
        let args = ["--upstream", "tcp:127.0.0.1:1", "--max-delayed", value];
        let (status, stdout, stderr) = common::run(&args);
        assert_eq!(status.code(), Some(2), "{value}: {stderr}");
        assert!(stdout.is_empty(), "{value}: {stdout}");
        assert_eq!(stderr.lines().count(), 1, "{value}: {stderr}");
        assert!(stderr.contains("--max-delayed"), "{value}: {stderr}");
    }
    for value in ["65536", "268435456"] {
        let relay = tcp_relay(echo_upstream(), &["--max-delayed", value]);
        round_trip(&connect(relay.tcp()), b"in range: served");
    }
}
