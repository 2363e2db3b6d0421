//! The probes' clients: plain blocking std sockets, every wait bounded.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A client gives up on a server that sent nothing for this long.
pub const STALL: Duration = Duration::from_secs(1);

pub fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(STALL))?;
    Ok(stream)
}

/// Connects with a receive buffer of about `bytes` and segments of 1 KiB
/// (set before the handshake, so the window the client offers is small
/// from the start; loopback's 64 KiB segments would overrun it).
pub fn connect_small_window(addr: SocketAddr, bytes: usize) -> io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.set_recv_buffer_size(bytes)?;
    socket.set_tcp_mss(1024)?;
    socket.connect(&addr.into())?;
    let stream = TcpStream::from(socket);
    stream.set_read_timeout(Some(STALL))?;
    Ok(stream)
}

/// What a background writer did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Sent {
    pub bytes: u64,
    /// A write failed on a reset from the server.
    pub reset: bool,
}

/// Writes `bytes` from a thread of its own, so the client can read while
/// it sends; a write blocked longer than `STALL` ends it.
pub fn send_in_background(stream: &TcpStream, bytes: Vec<u8>) -> io::Result<JoinHandle<Sent>> {
    let mut stream = stream.try_clone()?;
    stream.set_write_timeout(Some(STALL))?;
    Ok(std::thread::spawn(move || {
        let mut sent = Sent::default();
        for chunk in bytes.chunks(64 * 1024) {
            match stream.write_all(chunk) {
                Ok(()) => sent.bytes += chunk.len() as u64,
                Err(e) => {
                    sent.reset = e.kind() == ErrorKind::ConnectionReset;
                    break; // blocked for good, or reset
                }
            }
        }
        sent
    }))
}

/// Ends a background writer: a write blocked on a full window fails once
/// the socket is shut down.
pub fn finish(stream: &TcpStream, writer: JoinHandle<Sent>) -> Sent {
    let _ = stream.shutdown(Shutdown::Both);
    writer.join().unwrap_or_default()
}

/// How a client's reading ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Everything expected arrived.
    All,
    /// The connection ended (a FIN, or a reset another call reported).
    Closed,
    /// The server reset the connection.
    Reset,
    /// Nothing arrived for `STALL`.
    Stalled,
}

impl End {
    pub fn says(self) -> &'static str {
        match self {
            End::All => "all arrived",
            End::Closed => "then the connection ended",
            End::Reset => "then a reset",
            End::Stalled => "then nothing for 1 s",
        }
    }
}

/// Reads until `want` bytes arrived, the server closed or reset, or it
/// stalled; returns the bytes read and why it stopped.
pub fn read_up_to(stream: &TcpStream, want: usize) -> (usize, End) {
    let mut buf = vec![0; 64 * 1024];
    let mut got = 0;
    let mut reader = stream;
    while got < want {
        match reader.read(&mut buf) {
            Ok(0) => return (got, End::Closed),
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return (got, End::Reset),
            Err(_) => return (got, End::Stalled), // the read timeout
        }
    }
    (got, End::All)
}

/// Waits up to `limit` for the server to close the connection; returns
/// how long it took, or `None`. Bytes that arrive meanwhile are ignored.
pub fn time_to_close(stream: &TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut reader = stream;
    let mut buf = [0; 4096];
    loop {
        let left = limit
            .checked_sub(start.elapsed())
            .filter(|d| !d.is_zero())?;
        let _ = stream.set_read_timeout(Some(left));
        match reader.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Some(start.elapsed()),
            Err(_) => return None,
        }
    }
}
