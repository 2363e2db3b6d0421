//! Upstreams the relay tests start themselves: real servers on
//! `127.0.0.1:0`, each connection served on a thread of its own, and a
//! listener whose connects hang (a full backlog, never accepted).

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::DEADLINE;

/// A TCP server on `127.0.0.1:0` that hands each accepted connection and
/// its ordinal (from 0) to `serve`, on a thread of its own. It serves
/// until the test process ends.
pub fn tcp_upstream(serve: impl Fn(usize, TcpStream) + Send + Sync + 'static) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let serve = Arc::new(serve);
    std::thread::spawn(move || {
        for (ordinal, stream) in listener.incoming().enumerate() {
            let Ok(stream) = stream else { continue };
            stream.set_read_timeout(Some(DEADLINE)).unwrap();
            stream.set_write_timeout(Some(DEADLINE)).unwrap();
            let serve = Arc::clone(&serve);
            std::thread::spawn(move || serve(ordinal, stream));
        }
    });
    addr
}

/// Sends back every byte, then passes the client's FIN on (RFC 862 over
/// a stream, half-close included).
pub fn echo(mut stream: TcpStream) {
    let mut buf = vec![0; 64 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
    let _ = stream.shutdown(Shutdown::Write);
    // Hold the socket until the relay closes its side.
    let _ = stream.read(&mut buf);
}

/// An echo upstream.
pub fn echo_upstream() -> SocketAddr {
    tcp_upstream(|_, stream| echo(stream))
}

/// Resets `stream`: a zero linger makes the close send RST.
pub fn reset(stream: TcpStream) {
    socket2::SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(stream);
}

/// An address where nothing listens: connects to it are refused.
pub fn refusing_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
    // Dropped: the port is closed, and a connect gets RST.
}

/// A listener whose connects hang: its accept queue (backlog 0) is full
/// of connections it never accepts, so Linux drops every further SYN and
/// a connect neither succeeds nor fails until it times out. Keep the
/// returned guard alive for as long as connects must hang.
pub struct HangingListener {
    pub addr: SocketAddr,
    _listener: socket2::Socket,
    _queued: Vec<TcpStream>,
}

impl HangingListener {
    #[track_caller]
    pub fn new() -> HangingListener {
        use socket2::{Domain, Socket, Type};
        let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        listener.bind(&any.into()).unwrap();
        listener.listen(0).unwrap();
        let addr = listener.local_addr().unwrap().as_socket().unwrap();
        // Fill the queue until a connect no longer completes: that one
        // proves the queue is full (its SYN was dropped).
        let mut queued = Vec::new();
        loop {
            assert!(queued.len() < 16, "the accept queue of {addr} never filled");
            match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
                Ok(stream) => queued.push(stream),
                Err(e) if e.kind() == ErrorKind::TimedOut => break,
                Err(e) => panic!("filling {addr}'s queue: {e}"),
            }
        }
        HangingListener {
            addr,
            _listener: listener,
            _queued: queued,
        }
    }
}

/// A UDP server on `127.0.0.1:0` that answers each datagram with what
/// `answer` makes of it (nothing for `None`), and records every source
/// address it saw, in order.
pub struct UdpUpstream {
    pub addr: SocketAddr,
    pub sources: Arc<Mutex<Vec<SocketAddr>>>,
    pub received: Arc<AtomicUsize>,
}

impl UdpUpstream {
    pub fn start(answer: impl Fn(&[u8]) -> Option<Vec<u8>> + Send + 'static) -> UdpUpstream {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let sources = Arc::new(Mutex::new(Vec::new()));
        let received = Arc::new(AtomicUsize::new(0));
        let (seen, count) = (Arc::clone(&sources), Arc::clone(&received));
        std::thread::spawn(move || {
            let mut buf = vec![0; 65_536];
            while let Ok((n, from)) = super::retrying(|| socket.recv_from(&mut buf)) {
                seen.lock().unwrap().push(from);
                count.fetch_add(1, Ordering::SeqCst);
                if let Some(reply) = answer(&buf[..n]) {
                    let _ = socket.send_to(&reply, from);
                }
            }
        });
        UdpUpstream {
            addr,
            sources,
            received,
        }
    }

    /// An upstream that sends every datagram back.
    pub fn echo() -> UdpUpstream {
        UdpUpstream::start(|datagram| Some(datagram.to_vec()))
    }
}
