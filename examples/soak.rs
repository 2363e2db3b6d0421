//! Soak: drive ackloop with mixed traffic — TCP in both modes and UDP — for
//! a given number of requests, and count what came back.
//!
//! ```sh
//! cargo run --release --example soak                 # 1,000,000 requests
//! cargo run --release --example soak -- 200000       # fewer
//! ```
//!
//! Two servers run in this process on 127.0.0.1:0, one in once mode, one in
//! line mode (each also serving UDP). Client threads share the work: 70 %
//! pipelined lines, 25 % UDP datagrams (one in flight per socket; no reply
//! within 200 ms is a loss), 5 % once-mode connections. TCP must lose
//! nothing: the program exits 1 if it did.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ackloop::{Config, Handle, Mode, Server};

const LINE_THREADS: u64 = 4;
const UDP_THREADS: u64 = 2;
const ONCE_THREADS: u64 = 2;
/// Lines written before their replies are read.
const PIPELINE: u64 = 64;
const UDP_TIMEOUT: Duration = Duration::from_millis(200);
const TCP_TIMEOUT: Duration = Duration::from_secs(10);

/// Replies expected and received by one kind of traffic.
#[derive(Default, Clone, Copy)]
struct Tally {
    expected: u64,
    received: u64,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.expected += other.expected;
        self.received += other.received;
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let total: u64 = match std::env::args().nth(1) {
        Some(arg) => arg.parse().map_err(|_| format!("not a count: {arg}"))?,
        None => 1_000_000,
    };
    let (once_tcp, once_udp, once_server) = start(Mode::Once)?;
    let (line_tcp, line_udp, line_server) = start(Mode::Line)?;
    let started = Instant::now();

    let lines = spawn(LINE_THREADS, total * 70 / 100, move |n| {
        line_client(line_tcp, n)
    });
    let datagrams = spawn(UDP_THREADS, total * 25 / 100, move |n| {
        udp_client([once_udp, line_udp], n)
    });
    let onces = spawn(ONCE_THREADS, total * 5 / 100, move |n| {
        once_client(once_tcp, n)
    });

    let mut report = Vec::new();
    let mut tcp_lost = 0;
    for (name, threads) in [("tcp line", lines), ("udp", datagrams), ("tcp once", onces)] {
        let mut tally = Tally::default();
        for thread in threads {
            tally.add(thread.join().expect("client thread"));
        }
        if name.starts_with("tcp") {
            tcp_lost += tally.expected - tally.received;
        }
        report.push((name, tally));
    }
    let elapsed = started.elapsed();
    for (name, tally) in &report {
        println!(
            "{name:>8}: expected {:>8}  received {:>8}  lost {}",
            tally.expected,
            tally.received,
            tally.expected - tally.received
        );
    }
    let received: u64 = report.iter().map(|(_, t)| t.received).sum();
    println!(
        "{received} replies in {:.2} s ({:.0}/s)",
        elapsed.as_secs_f64(),
        received as f64 / elapsed.as_secs_f64()
    );
    for (mode, (handle, thread)) in [("once", once_server), ("line", line_server)] {
        handle.shutdown();
        let stats = thread.join().expect("server thread")?;
        println!("server ({mode}): {stats}");
    }
    if tcp_lost > 0 {
        eprintln!("soak: TCP lost {tcp_lost} replies");
        std::process::exit(1);
    }
    Ok(())
}

type Running = (Handle, JoinHandle<std::io::Result<ackloop::Stats>>);

fn start(mode: Mode) -> Result<(SocketAddr, SocketAddr, Running), ackloop::Error> {
    let mut config = Config::loopback();
    config.mode = mode;
    let mut server = Server::bind(config)?;
    let (tcp, udp) = (server.tcp_addr().unwrap(), server.udp_addr().unwrap());
    let handle = server.handle();
    Ok((tcp, udp, (handle, std::thread::spawn(move || server.run()))))
}

/// Splits `count` requests over `threads` threads running `client`.
fn spawn(
    threads: u64,
    count: u64,
    client: impl Fn(u64) -> Tally + Send + Clone + 'static,
) -> Vec<JoinHandle<Tally>> {
    (0..threads)
        .map(|i| {
            let share = count / threads + u64::from(i < count % threads);
            let client = client.clone();
            std::thread::spawn(move || client(share))
        })
        .collect()
}

/// One persistent connection, `PIPELINE` lines in flight at a time.
fn line_client(server: SocketAddr, count: u64) -> Tally {
    let mut tally = Tally {
        expected: count,
        received: 0,
    };
    let Ok(mut stream) = TcpStream::connect(server) else {
        return tally;
    };
    let _ = stream.set_read_timeout(Some(TCP_TIMEOUT));
    let _ = stream.set_nodelay(true);
    let batch = b"Hello, Server\n".repeat(PIPELINE as usize);
    let mut replies = vec![0; b"Received\n".len() * PIPELINE as usize];
    let mut left = count;
    while left > 0 {
        let n = left.min(PIPELINE);
        let bytes = (n * 14) as usize;
        let expect = &mut replies[..(n * 9) as usize];
        if stream.write_all(&batch[..bytes]).is_err() || stream.read_exact(expect).is_err() {
            break;
        }
        tally.received += expect.chunks(9).filter(|r| *r == b"Received\n").count() as u64;
        left -= n;
    }
    tally
}

/// One socket, one datagram in flight, alternating between two servers.
fn udp_client(servers: [SocketAddr; 2], count: u64) -> Tally {
    let mut tally = Tally {
        expected: count,
        received: 0,
    };
    let Ok(socket) = UdpSocket::bind("127.0.0.1:0") else {
        return tally;
    };
    let _ = socket.set_read_timeout(Some(UDP_TIMEOUT));
    let mut reply = [0; 64];
    for i in 0..count {
        let server = servers[(i % 2) as usize];
        if socket.send_to(b"Hello, Server", server).is_err() {
            continue;
        }
        // A late reply to an earlier datagram is not this one's.
        while let Ok((n, from)) = socket.recv_from(&mut reply) {
            if from == server && &reply[..n] == b"Received" {
                tally.received += 1;
                break;
            }
        }
    }
    tally
}

/// The article's client, `count` times: connect, send, read to EOF.
fn once_client(server: SocketAddr, count: u64) -> Tally {
    let mut tally = Tally {
        expected: count,
        received: 0,
    };
    for _ in 0..count {
        let Ok(mut stream) = TcpStream::connect(server) else {
            continue;
        };
        let _ = stream.set_read_timeout(Some(TCP_TIMEOUT));
        let mut reply = Vec::new();
        if stream.write_all(b"Hello, Server").is_ok()
            && stream.read_to_end(&mut reply).is_ok()
            && reply == b"Received"
        {
            tally.received += 1;
        }
    }
    tally
}
