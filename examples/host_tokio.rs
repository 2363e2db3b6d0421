//! ackloop nested in a tokio runtime on one thread: tokio watches the
//! server's descriptor through `AsyncFd`, and a `sleep` stands for the
//! server's `poll_delay()`. A tokio task of the host's own, a client of
//! the server, runs on the same thread.
//!
//! ```sh
//! cargo run --release --example host_tokio
//! ```
//!
//! The pattern, for any readiness-based runtime:
//!
//! 1. wait until the descriptor is readable, or `poll_delay()` has passed;
//! 2. `turn(Some(Duration::ZERO))`, which never blocks the runtime's thread;
//! 3. clear tokio's readiness, but only once the descriptor is no longer
//!    readable: tokio reports when it *becomes* readable, and a turn takes
//!    at most a bounded number of events.
//!
//! Unix only: elsewhere it says so and exits.

#[cfg(unix)]
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    host::main().await
}

#[cfg(not(unix))]
fn main() {
    eprintln!("host_tokio waits with tokio's AsyncFd: Unix only");
}

#[cfg(unix)]
mod host {
    use std::io;
    use std::net::SocketAddr;
    use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
    use std::time::Duration;

    use ackloop::{Config, Mode, Server, Status};
    use tokio::io::unix::AsyncFd;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Interest};
    use tokio::net::{TcpStream, UdpSocket};

    /// How long the client task may take before giving up.
    const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

    pub async fn main() -> Result<(), Box<dyn std::error::Error>> {
        let mut config = Config::loopback();
        config.mode = Mode::Line;
        let server = Server::bind(config)?;
        let tcp = server.tcp_addr().expect("tcp is on");
        let udp = server.udp_addr().expect("udp is on");
        println!("host: serving TCP on {tcp} and UDP on {udp}");

        // tokio watches the server's descriptor. `AsyncFd` owns the server
        // (it takes anything with `AsRawFd`), and lends it back to us.
        // SAFETY: `register` asks that the descriptor stay open, and be the
        // same one, while the `AsyncFd` owns it: the server's poll is
        // created with the server and closed only when the server drops.
        let mut server = unsafe { AsyncFd::register_with_interest(server, Interest::READABLE)? };

        // The host's own task, on this same thread.
        let mut client = tokio::spawn(tokio::time::timeout(CLIENT_TIMEOUT, client(tcp, udp)));
        let mut client_done = false;

        loop {
            let delay = server.get_ref().poll_delay();
            let status = tokio::select! {
                // The server's descriptor is readable: events are waiting.
                guard = server.readable_mut() => {
                    let mut guard = guard?;
                    let status = guard.get_inner_mut().turn(Some(Duration::ZERO))?;
                    if !is_readable(guard.get_inner().as_fd()) {
                        guard.clear_ready();
                    }
                    status
                }
                // The server's deadline, or work it left for the next
                // turn (then the delay is zero: no waiting at all).
                () = sleep_for(delay) => server.get_mut().turn(Some(Duration::ZERO))?,
                // The host's own task finished.
                finished = &mut client, if !client_done => {
                    client_done = true;
                    // Three layers: the task ran (no panic), in time, and well.
                    let in_time = finished?;
                    in_time.map_err(|_| "the client timed out")??;
                    println!("host: the client task is done; stopping the server");
                    // Graceful: the next turns finish what is owed, then stop.
                    server.get_mut().shutdown();
                    Status::Running
                }
            };
            if status == Status::Stopped {
                break;
            }
        }
        // Off tokio's poll first, then the server (and its descriptor) goes.
        let server = server.into_inner();
        println!("host: server stopped: {}", server.stats());
        Ok(())
    }

    /// Sleeps for the server's poll delay; with none, forever (only its
    /// descriptor can bring it work then).
    async fn sleep_for(delay: Option<Duration>) {
        match delay {
            Some(delay) => tokio::time::sleep(delay).await,
            None => std::future::pending().await,
        }
    }

    /// Whether the descriptor is readable right now: `poll(2)` with a zero
    /// timeout. Level, not edge: the question tokio cannot answer.
    fn is_readable(fd: BorrowedFd<'_>) -> bool {
        let mut fds = [libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: `fds` is an array of one valid `pollfd`, alive for the
        // whole call.
        unsafe { libc::poll(fds.as_mut_ptr(), 1, 0) > 0 }
    }

    /// The host's own work: two TCP lines and one datagram, with tokio's
    /// sockets, served by ackloop on the very same thread.
    async fn client(tcp: SocketAddr, udp: SocketAddr) -> io::Result<()> {
        let stream = TcpStream::connect(tcp).await?;
        let (reader, mut writer) = stream.into_split();
        let mut replies = BufReader::new(reader);
        for line in ["Hello, Server", "a second line"] {
            writer.write_all(format!("{line}\n").as_bytes()).await?;
            let mut reply = String::new();
            replies.read_line(&mut reply).await?;
            println!("client: TCP: sent {line:?}, got {:?}", reply.trim_end());
        }

        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        socket.send_to(b"Hello, Server", udp).await?;
        let mut reply = [0; 64];
        let n = socket.recv(&mut reply).await?;
        let reply = String::from_utf8_lossy(&reply[..n]);
        println!(
            "client: UDP: sent \"Hello, Server\", got {:?}",
            reply.trim_end()
        );
        Ok(())
    }
}
