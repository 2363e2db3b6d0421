//! The article's two clients, shared by the examples that run them.
//!
//! Each example uses only some of these functions.
//!
//! They are deliberately the article's blocking clients: connect (or bind),
//! send `Hello, Server`, print what comes back. A read timeout keeps them
//! from hanging forever if no server answers.

#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
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

/// The address from the first argument, or the article's `localhost:8000`.
pub fn server_from_args() -> SocketAddr {
    let arg = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8000".into());
    arg.parse().unwrap_or_else(|_| {
        eprintln!("usage: pass the server address, like 127.0.0.1:8000 (got '{arg}')");
        std::process::exit(2)
    })
}
