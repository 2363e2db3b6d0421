//! A test of a client's retry logic: the test thread flips faults on the
//! test server between its steps, through the server's handle.
//!
//! `cargo run --release --example flip_faults`
//!
//! The "client under test" is `fetch_with_retry`: it sends a UDP request
//! and tries again after a timeout, up to three times. The test checks
//! that it succeeds at once when the peer is healthy, succeeds on its
//! third try when the peer drops the first two replies, and gives up when
//! the peer drops everything.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use ackloop::testing::TestServer;

/// The client under test: one request, up to `tries` attempts.
fn fetch_with_retry(server: SocketAddr, tries: usize) -> Option<(String, usize)> {
    let socket = UdpSocket::bind("127.0.0.1:0").ok()?;
    socket.connect(server).ok()?;
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .ok()?;
    let mut reply = [0; 64];
    for attempt in 1..=tries {
        socket.send(b"Hello, Server").ok()?;
        if let Ok(n) = socket.recv(&mut reply) {
            return Some((String::from_utf8_lossy(&reply[..n]).into(), attempt));
        }
    }
    None
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = TestServer::start()?;
    let handle = server.handle();

    // Step 1: healthy.
    let (reply, attempts) = fetch_with_retry(server.udp_addr(), 3).ok_or("no reply")?;
    assert_eq!((reply.as_str(), attempts), ("Received", 1));
    println!("healthy:           {reply:?} after {attempts} attempt(s)");

    // Step 2: the next two replies are lost; the third attempt succeeds.
    handle.add_fault("udp:drop,first=2".parse()?)?;
    let (reply, attempts) = fetch_with_retry(server.udp_addr(), 3).ok_or("no reply")?;
    assert_eq!(attempts, 3);
    println!("two replies lost:  {reply:?} after {attempts} attempt(s)");

    // Step 3: everything is lost; the client gives up after three tries.
    handle.clear_faults()?;
    handle.add_fault("udp:drop".parse()?)?;
    assert_eq!(fetch_with_retry(server.udp_addr(), 3), None);
    println!("all replies lost:  gave up after 3 attempts");

    // Recovery.
    handle.clear_faults()?;
    assert!(fetch_with_retry(server.udp_addr(), 1).is_some());
    println!("recovered:         answered at once");

    // Every request reached the server, dropped replies included.
    server.expect_messages(1 + 3 + 3 + 1);
    Ok(())
}
