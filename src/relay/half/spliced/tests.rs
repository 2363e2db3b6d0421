//! A half-pipe between real sockets on 127.0.0.1: when it opens its
//! kernel pipe, that the bytes stay in order across the switches, the
//! bound, the FIN.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::TcpStream;

use super::super::shaped::{Shape, Shaped};
use super::*;

const DEADLINE: Duration = Duration::from_secs(20);
const MAX_OWED: usize = 64 * 1024;

/// A direction between two sockets: the client writes into `source`, the
/// half-pipe pumps from `source` to `sink`, the upstream reads from `sink`.
struct Rig {
    half: HalfPipe,
    source: TcpStream,
    sink: TcpStream,
    client: std::net::TcpStream,
    upstream: std::net::TcpStream,
    buf: Vec<u8>,
    read: u64,
    written: u64,
}

/// A connected pair on 127.0.0.1: (ours, non-blocking, as mio's; the
/// peer's, blocking).
fn sockets() -> (TcpStream, std::net::TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (ours, _) = listener.accept().unwrap();
    ours.set_nonblocking(true).unwrap();
    (TcpStream::from_std(ours), peer)
}

impl Rig {
    fn new(half: HalfPipe) -> Rig {
        let (source, client) = sockets();
        let (sink, upstream) = sockets();
        // Small buffers on the way to the upstream, so that a sink that is
        // not read blocks soon (loopback buffers grow to MiBs).
        socket2::SockRef::from(&sink)
            .set_send_buffer_size(64 * 1024)
            .unwrap();
        socket2::SockRef::from(&upstream)
            .set_recv_buffer_size(64 * 1024)
            .unwrap();
        Rig {
            half,
            source,
            sink,
            client,
            upstream,
            buf: vec![0; 64 * 1024],
            read: 0,
            written: 0,
        }
    }

    /// One pump, as the pair makes it.
    fn pump(&mut self) -> Pumped {
        let mut cx = Pump::new(0, &mut self.buf, MAX_OWED);
        let result = self
            .half
            .relay(&mut self.source, Some(&mut self.sink), &mut cx);
        self.read += cx.read;
        self.written += cx.written;
        assert!(self.half.owed() <= MAX_OWED, "holds {}", self.half.owed());
        result.unwrap()
    }

    /// Pumps until `done` (the sockets' bytes arrive when they arrive).
    fn pump_until(&mut self, mut done: impl FnMut(&mut Rig, Pumped) -> bool) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let pumped = self.pump();
            if done(self, pumped) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "read {}, written {}",
                self.read,
                self.written
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The upstream reads `len` bytes on a thread of its own.
    fn read_upstream(&self, len: usize) -> JoinHandle<Vec<u8>> {
        let mut upstream = self.upstream.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut got = vec![0; len];
            upstream.read_exact(&mut got).unwrap();
            got
        })
    }

    /// The client sends `data` on a thread of its own, then its FIN if
    /// `fin`.
    fn send(&self, data: &[u8], fin: bool) -> JoinHandle<()> {
        let (mut client, data) = (self.client.try_clone().unwrap(), data.to_vec());
        std::thread::spawn(move || {
            client.write_all(&data).unwrap();
            if fin {
                client.shutdown(Shutdown::Write).unwrap();
            }
        })
    }
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(seed) % 251) as u8)
        .collect()
}

#[test]
fn short_messages_are_copied_and_bulk_opens_the_pipe() {
    let mut rig = Rig::new(HalfPipe::default());
    rig.client.write_all(b"a short request").unwrap();
    rig.pump_until(|rig, _| rig.written == 15);
    assert!(rig.half.pipe.is_none(), "15 bytes opened a pipe");
    let mut head = [0; 15];
    rig.upstream.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"a short request");
    let data = pattern(4 << 20, 7);
    let (sending, reading) = (rig.send(&data, false), rig.read_upstream(data.len()));
    rig.pump_until(|rig, _| rig.written == 15 + data.len() as u64);
    assert!(rig.half.pipe.is_some(), "4 MiB went without a pipe");
    sending.join().unwrap();
    assert!(reading.join().unwrap() == data, "the bytes changed");
}

#[test]
fn a_shaped_or_line_direction_never_opens_a_pipe() {
    let slow_close = Shape {
        slow_close_ms: Some(1),
        ..Shape::default()
    };
    for half in [
        HalfPipe::new(slow_close, false),
        HalfPipe::new(Shape::default(), true),
    ] {
        let lines = half.judges_lines();
        let mut rig = Rig::new(half);
        assert!(
            !rig.half.is_bare(&Pump::new(0, &mut [], 1)),
            "lines {lines}"
        );
        if lines {
            continue; // A line-mode pump needs its LineCx: the pair's.
        }
        let data = pattern(1 << 20, 3);
        let (sending, reading) = (rig.send(&data, false), rig.read_upstream(data.len()));
        rig.pump_until(|rig, _| rig.written == data.len() as u64);
        assert!(rig.half.pipe.is_none(), "a shaped direction spliced");
        sending.join().unwrap();
        assert!(reading.join().unwrap() == data);
    }
}

/// The sink blocks while the pipe holds bytes; a fault then comes to
/// need the bytes: what the pipe holds goes out before any copied byte,
/// and the pipe is closed.
#[test]
fn a_switch_to_copying_sends_the_pipe_first() {
    let mut rig = Rig::new(HalfPipe::default());
    let data = pattern(8 << 20, 11);
    let sending = rig.send(&data, false);
    // The upstream reads nothing yet: its buffers fill, then the pipe.
    rig.pump_until(|rig, pumped| {
        let piped = rig.half.pipe.as_ref().is_some_and(|p| p.held() > 0);
        pumped == Pumped::Waiting && rig.half.wants_writable() && piped
    });
    // Something needs the bytes from now on (a truncate that cuts
    // nothing: it changes no byte).
    let needs_bytes = Shape {
        truncate: Some(u64::MAX),
        ..Shape::default()
    };
    rig.half.shaped = Some(Box::new(Shaped::new(needs_bytes, false)));
    let reading = rig.read_upstream(data.len());
    rig.pump_until(|rig, _| rig.written == data.len() as u64);
    assert!(rig.half.pipe.is_none(), "the pipe outlived the switch");
    sending.join().unwrap();
    assert!(reading.join().unwrap() == data, "bytes out of order");
}

#[test]
fn a_blocked_sink_stops_the_reads_within_the_bound() {
    let mut rig = Rig::new(HalfPipe::default());
    let data = pattern(8 << 20, 5);
    let sending = rig.send(&data, false);
    rig.pump_until(|rig, pumped| {
        pumped == Pumped::Waiting && rig.half.wants_writable() && rig.half.pipe.is_some()
    });
    // The upstream reads nothing: each pump finds the sink blocked, and
    // reads the source only once what the pipe held went out.
    for _ in 0..10 {
        let (held, read, written) = (rig.half.owed() as u64, rig.read, rig.written);
        rig.pump();
        let out = rig.written - written;
        assert!(
            rig.read == read || out >= held,
            "read with {held} held, {out} out"
        );
    }
    let reading = rig.read_upstream(data.len());
    rig.pump_until(|rig, _| rig.written == data.len() as u64);
    sending.join().unwrap();
    assert!(reading.join().unwrap() == data);
}

#[test]
fn the_fin_follows_the_spliced_bytes() {
    let mut rig = Rig::new(HalfPipe::default());
    let data = pattern(2 << 20, 13);
    let sending = rig.send(&data, true);
    let mut upstream = rig.upstream.try_clone().unwrap();
    let reading = std::thread::spawn(move || {
        let mut got = Vec::new();
        upstream.read_to_end(&mut got).unwrap();
        got
    });
    rig.pump_until(|_, pumped| pumped == Pumped::Ended);
    assert!(rig.half.pipe.is_some(), "2 MiB went without a pipe");
    assert!(rig.half.ended());
    sending.join().unwrap();
    assert!(
        reading.join().unwrap() == data,
        "the FIN came early or late"
    );
}
