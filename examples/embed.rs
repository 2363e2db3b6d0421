//! Embedding ackloop in a host that has its own main loop: the host owns
//! the thread, and gives the server one turn at a time.
//!
//! ```sh
//! cargo run --release --example embed
//! ```
//!
//! The server answers line-mode TCP and UDP with a reply of its host's
//! making (`ack #N: M bytes`). A client thread stands in for the outside
//! world; the host does its own periodic work (a tick) between turns.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use ackloop::{Config, Mode, Request, Server, Status};

/// The host's own periodic work.
const TICK: Duration = Duration::from_millis(100);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = Config::loopback();
    config.mode = Mode::Line;
    // Custom replies: a closure that numbers the messages it answers.
    // It writes into `reply`, a buffer the server reuses: no allocation.
    let mut answered = 0u64;
    let responder = move |request: &Request<'_>, reply: &mut Vec<u8>| {
        answered += 1;
        // Writing into a Vec<u8> cannot fail.
        let _ = write!(reply, "ack #{answered}: {} bytes", request.message.len());
        true
    };
    let mut server = Server::with_responder(config, responder)?;
    let tcp = server.tcp_addr().expect("tcp is on");
    println!("host: serving on {tcp}");

    let client = std::thread::spawn(move || -> std::io::Result<()> {
        let mut stream = TcpStream::connect(tcp)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut replies = BufReader::new(stream.try_clone()?);
        for line in ["Hello, Server", "a second line", ""] {
            writeln!(stream, "{line}")?;
            let mut reply = String::new();
            replies.read_line(&mut reply)?;
            println!("client: sent {line:?}, got {:?}", reply.trim_end());
        }
        Ok(())
    });

    let mut next_tick = Instant::now() + TICK;
    loop {
        // Wait for socket events, but no longer than the host's next tick.
        // `turn` also never sleeps past the server's own next deadline
        // (`server.poll_delay()` says when that is).
        let until_tick = next_tick.saturating_duration_since(Instant::now());
        if server.turn(Some(until_tick))? == Status::Stopped {
            break;
        }
        if Instant::now() >= next_tick {
            next_tick += TICK;
            println!("host: tick; server counters: {}", server.stats());
        }
        if client.is_finished() {
            // Ask for a graceful stop; the next turns finish owed replies.
            server.shutdown();
        }
    }
    client.join().expect("client thread")?;
    println!("host: server stopped: {}", server.stats());
    Ok(())
}
