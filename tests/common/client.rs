//! The client's side in the black-box tests: connect, read with a
//! deadline (to a close, or exactly n bytes), one-shot TCP and UDP
//! requests, floods that stop when the server pushes back.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{DEADLINE, wait_until};

/// Bytes as text, for readable assertions.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Connects with read and write timeouts of `DEADLINE`.
#[track_caller]
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, DEADLINE)
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.set_write_timeout(Some(DEADLINE)).unwrap();
    stream
}

/// How a stream read to its end ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// An orderly close (FIN): `read` returned 0.
    Eof,
    /// A reset or abort from the peer.
    Reset,
    /// Neither within the deadline: the peer left the stream hanging.
    TimedOut,
}

/// What was read up to the end of a stream, and how it ended.
#[derive(Debug)]
pub struct Drained {
    pub bytes: Vec<u8>,
    pub end: End,
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
    )
}

/// Reads until the peer closes the stream or `within` passes.
#[track_caller]
pub fn read_until_closed(stream: &TcpStream, within: Duration) -> Drained {
    read_until_closed_by(stream, Instant::now() + within)
}

/// Reads until the peer closes the stream or `deadline` comes (a deadline
/// shared by many streams read one after the other).
#[track_caller]
pub fn read_until_closed_by(mut stream: &TcpStream, deadline: Instant) -> Drained {
    let mut bytes = Vec::new();
    let mut buf = vec![0; 64 * 1024];
    let end = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break End::TimedOut;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => break End::Eof,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => {}
            Err(e) if is_reset(&e) => break End::Reset,
            Err(e) => panic!("read: {e}"),
        }
    };
    Drained { bytes, end }
}

/// Reads exactly `n` bytes within `DEADLINE`, or fails saying what came.
#[track_caller]
pub fn read_exactly(mut stream: &TcpStream, n: usize) -> Vec<u8> {
    let deadline = Instant::now() + DEADLINE;
    let mut bytes = vec![0; n];
    let mut got = 0;
    while got < n {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "only {got} of {n} bytes within {DEADLINE:?}: {:?}",
            String::from_utf8_lossy(&bytes[..got])
        );
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut bytes[got..]) {
            Ok(0) => panic!(
                "EOF after {got} of {n} bytes: {:?}",
                String::from_utf8_lossy(&bytes[..got])
            ),
            Ok(k) => got += k,
            Err(e) if e.kind() == ErrorKind::Interrupted || is_timeout(&e) => {}
            Err(e) => panic!(
                "{e} after {got} of {n} bytes: {:?}",
                String::from_utf8_lossy(&bytes[..got])
            ),
        }
    }
    bytes
}

/// Waits, without consuming anything, until the stream has bytes to read.
#[track_caller]
pub fn wait_readable(stream: &TcpStream) {
    let deadline = Instant::now() + DEADLINE;
    let mut byte = [0; 1];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "nothing to read within {DEADLINE:?}");
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.peek(&mut byte) {
            Ok(0) => panic!("EOF while waiting for bytes"),
            Ok(_) => return,
            Err(e) if e.kind() == ErrorKind::Interrupted || is_timeout(&e) => {}
            Err(e) => panic!("peek: {e}"),
        }
    }
}

/// Sends `request` on a new connection and reads until the server closes
/// it with a FIN, within `DEADLINE`: the reply.
#[track_caller]
pub fn tcp_request(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = connect(addr);
    stream.write_all(request).expect("request sent");
    let drained = read_until_closed(&stream, DEADLINE);
    assert_eq!(
        drained.end,
        End::Eof,
        "the reply must end with an orderly close; got {:?}",
        String::from_utf8_lossy(&drained.bytes)
    );
    drained.bytes
}

/// Line mode: sends `line` (with its terminator) and reads one reply of
/// `reply_len` bytes on an open connection.
#[track_caller]
pub fn line_exchange(mut stream: &TcpStream, line: &[u8], reply_len: usize) -> Vec<u8> {
    stream.write_all(line).expect("line sent");
    read_exactly(stream, reply_len)
}

/// A UDP client bound to loopback, connected to `server` (only its
/// datagrams are received), reading within `DEADLINE`.
#[track_caller]
pub fn connected_udp(server: SocketAddr) -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(server).unwrap();
    socket.set_read_timeout(Some(DEADLINE)).unwrap();
    socket
}

/// Sends one datagram from a fresh socket, returns the reply datagram
/// (received within `DEADLINE`).
#[track_caller]
pub fn udp_request(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    // Connected: only the server's datagrams are received.
    socket.connect(addr).unwrap();
    socket.set_read_timeout(Some(DEADLINE)).unwrap();
    let sent = socket.send(request).expect("datagram sent");
    assert_eq!(sent, request.len());
    let mut buf = vec![0; 65_536];
    let n = retrying(|| socket.recv(&mut buf))
        .unwrap_or_else(|e| panic!("no reply datagram within {DEADLINE:?}: {e}"));
    buf.truncate(n);
    buf
}

/// Runs `receive` again while a signal interrupts it (`EINTR`): a signal
/// for another test's child may land on any thread of the test process.
pub fn retrying<T>(mut receive: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match receive() {
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            done => return done,
        }
    }
}

/// Joins a helper thread, within `DEADLINE`; its panic becomes ours.
#[track_caller]
pub fn join<T>(thread: JoinHandle<T>) -> T {
    assert!(
        wait_until(DEADLINE, || thread.is_finished()),
        "a helper thread did not finish within {DEADLINE:?}"
    );
    match thread.join() {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Writes `bytes` in `chunk`-sized writes until done, an error, or a
/// write timeout: how many bytes went out. For floods whose writes are
/// expected to block once the server pushes back.
pub fn write_until_blocked(mut stream: &TcpStream, bytes: u64, chunk: &[u8]) -> u64 {
    let mut sent = 0;
    while sent < bytes {
        match stream.write(chunk) {
            Ok(0) => break,
            Ok(n) => sent += n as u64,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break, // Timed out (pushed back), or closed by the server.
        }
    }
    sent
}
