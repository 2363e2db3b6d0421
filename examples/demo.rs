//! What the article meant to show, in one process: the server on TCP and
//! UDP at once, and both of the article's clients talking to it.
//!
//! ```sh
//! cargo run --release --example demo
//! ```
//!
//! The article's servers never returned from `run_server()`, so its clients
//! never ran. Here the server runs its loop on a thread of its own, and a
//! [`Handle`](ackloop::Handle) stops it when the clients are done.

mod article;

use ackloop::{Config, Server};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Port 0: the OS picks free ports, so the demo never clashes with a
    // server already on 8000. Binding returns the real addresses.
    let mut server = Server::bind(Config::loopback())?;
    let tcp = server.tcp_addr().expect("tcp is on");
    let udp = server.udp_addr().expect("udp is on");
    println!("server: tcp {tcp}, udp {udp}");
    let handle = server.handle();
    let thread = std::thread::spawn(move || server.run());

    let tcp_reply = article::tcp_hello(tcp)?;
    println!("TCP client sent 'Hello, Server', received from server: {tcp_reply}");
    let udp_reply = article::udp_hello(udp)?;
    println!("UDP client sent 'Hello, Server', received from server: {udp_reply}");

    handle.shutdown();
    let stats = thread.join().expect("server thread")?;
    println!("server stopped: {stats}");
    Ok(())
}
