//! The article's two clients, shared by the examples that run them.
//!
//! Each example uses only some of these functions.
//!
//! They are deliberately the article's blocking clients: connect (or bind),
//! send `Hello, Server`, print what comes back. A read timeout keeps them
//! from hanging forever if no server answers.

#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::time::Duration;

/// What the article's clients send.
pub const HELLO: &[u8] = b"Hello, Server";
/// How long a client waits for its reply.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The TCP client: send, then read the reply until the server closes.
pub fn tcp_hello(server: SocketAddr) -> io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&server, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.write_all(HELLO)?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    Ok(reply)
}

/// The UDP client: one datagram out, one back.
///
/// Unlike the article's, the socket is connected to the server: then only
/// the server's datagrams are received, and a datagram sent where nothing
/// listens fails with "connection refused" instead of a silent timeout.
pub fn udp_hello(server: SocketAddr) -> io::Result<String> {
    let socket = UdpSocket::bind(("127.0.0.1", 0))?;
    socket.set_read_timeout(Some(TIMEOUT))?;
    socket.connect(server)?;
    socket.send(HELLO)?;
    let mut reply = [0; 2048];
    let len = socket.recv(&mut reply)?;
    Ok(String::from_utf8_lossy(&reply[..len]).into_owned())
}

/// The server's address from the first argument, `HOST:PORT` with a name or
/// an IP address, or the article's `localhost:8000`.
///
/// A name is resolved, IPv4 first: ackloop binds `127.0.0.1` by default,
/// and `localhost` often resolves to `::1` before it.
pub fn server_from_args() -> SocketAddr {
    let arg = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "localhost:8000".into());
    let resolved = arg.to_socket_addrs().map(|addrs| {
        let mut addrs: Vec<SocketAddr> = addrs.collect();
        addrs.sort_by_key(|addr| !addr.is_ipv4());
        addrs.first().copied()
    });
    match resolved {
        Ok(Some(addr)) => addr,
        Ok(None) => usage(&arg, "it names no address"),
        Err(e) => usage(&arg, &e.to_string()),
    }
}

fn usage(arg: &str, why: &str) -> ! {
    eprintln!("usage: pass the server as HOST:PORT, like localhost:8000 ('{arg}': {why})");
    std::process::exit(2)
}
