//! ackloop nested in a host's own `poll(2)` loop: one `poll` call waits on
//! the server's descriptor and on a descriptor of the host's, for no
//! longer than the server's `poll_delay()`.
//!
//! ```sh
//! cargo run --release --example host_poll
//! ```
//!
//! The host's own descriptor is one end of a Unix socket pair (a two-way
//! pipe). A client thread stands in for the outside world: it talks TCP
//! and UDP to the server and, after each exchange, writes a note into the
//! pipe. When it is done it closes its end; the host reads the end of the
//! notes, asks the server to stop, and turns it until it has.
//!
//! Unix only: elsewhere it says so and exits.

#[cfg(unix)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    host::main()
}

#[cfg(not(unix))]
fn main() {
    eprintln!("host_poll waits with poll(2): Unix only");
}

#[cfg(unix)]
mod host {
    use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
    use std::net::{SocketAddr, TcpStream, UdpSocket};
    use std::os::fd::{AsRawFd, RawFd};
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    use ackloop::{Config, Mode, Server, Status};

    /// How long the client waits for a reply before giving up.
    const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

    pub fn main() -> Result<(), Box<dyn std::error::Error>> {
        let mut config = Config::loopback();
        config.mode = Mode::Line;
        let mut server = Server::bind(config)?;
        let tcp = server.tcp_addr().expect("tcp is on");
        let udp = server.udp_addr().expect("udp is on");
        println!("host: serving TCP on {tcp} and UDP on {udp}");

        // The host's own descriptor: notes from the client thread.
        let (mut notes, note_writer) = UnixStream::pair()?;
        notes.set_nonblocking(true)?;
        let client = std::thread::spawn(move || client(tcp, udp, note_writer));

        let mut watching_notes = true;
        loop {
            // poll(2) skips a negative descriptor: how to stop watching
            // one without rebuilding the array.
            let notes_fd = if watching_notes {
                notes.as_raw_fd()
            } else {
                -1
            };
            let mut fds = [pollfd(server.as_raw_fd()), pollfd(notes_fd)];
            // Sleep until something is readable, but no longer than the
            // server allows: it has deadlines (idle timeouts, ...) and, at
            // times, work left that no descriptor will announce.
            let timeout = timeout_ms(server.poll_delay());
            // SAFETY: `fds` is an array of valid `pollfd`s, alive for the
            // whole call, and its length is passed with it.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == ErrorKind::Interrupted {
                    continue; // A signal cut the wait short: wait again.
                }
                return Err(e.into());
            }

            // The server: its descriptor is readable, or its delay has
            // passed (asked again now, `poll_delay()` is then zero). A
            // turn with a zero timeout never blocks.
            let server_due = fds[0].revents != 0 || server.poll_delay() == Some(Duration::ZERO);
            if server_due {
                let status = server.turn(Some(Duration::ZERO))?;
                if status == Status::Stopped {
                    break;
                }
            }

            // The host's own descriptor.
            if fds[1].revents != 0 && !read_notes(&mut notes)? {
                println!("host: the client closed its end; stopping the server");
                watching_notes = false;
                // Graceful: the next turns finish what is owed, then stop.
                server.shutdown();
            }
        }
        client.join().expect("client thread")?;
        println!("host: server stopped: {}", server.stats());
        Ok(())
    }

    /// Asks `poll` about one descriptor's readability.
    fn pollfd(fd: RawFd) -> libc::pollfd {
        libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        }
    }

    /// `poll(2)`'s timeout in milliseconds: -1 (no limit) for `None`, and
    /// rounded up, so that the host never wakes just before the server's
    /// deadline and spins until it comes.
    fn timeout_ms(delay: Option<Duration>) -> libc::c_int {
        match delay {
            None => -1,
            Some(delay) => {
                let ms = delay.as_nanos().div_ceil(1_000_000);
                libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX)
            }
        }
    }

    /// Prints the notes waiting in the pipe, reading until `WouldBlock`.
    /// Returns `false` once the client has closed its end.
    fn read_notes(notes: &mut UnixStream) -> io::Result<bool> {
        let mut buf = [0; 1024];
        loop {
            match notes.read(&mut buf) {
                Ok(0) => return Ok(false), // End of file: the client is done.
                Ok(n) => {
                    // Each note is a short line, written with one call.
                    for note in String::from_utf8_lossy(&buf[..n]).lines() {
                        println!("host: note from the client: {note}");
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The outside world: two TCP lines and one datagram, with blocking
    /// sockets on a thread of its own. Dropping `notes` at the end closes
    /// the client's end of the pipe.
    fn client(tcp: SocketAddr, udp: SocketAddr, mut notes: UnixStream) -> io::Result<()> {
        let stream = TcpStream::connect(tcp)?;
        stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
        let mut replies = BufReader::new(&stream);
        for line in ["Hello, Server", "a second line"] {
            writeln!(&stream, "{line}")?;
            let mut reply = String::new();
            replies.read_line(&mut reply)?;
            note(
                &mut notes,
                format!("TCP: sent {line:?}, got {:?}", reply.trim_end()),
            )?;
        }

        let socket = UdpSocket::bind("127.0.0.1:0")?;
        socket.set_read_timeout(Some(REPLY_TIMEOUT))?;
        socket.send_to(b"Hello, Server", udp)?;
        let mut reply = [0; 64];
        let n = socket.recv(&mut reply)?;
        let reply = String::from_utf8_lossy(&reply[..n]);
        note(
            &mut notes,
            format!("UDP: sent \"Hello, Server\", got {:?}", reply.trim_end()),
        )
    }

    /// Writes one note, a line, with one call: `writeln!` straight into
    /// the socket would write it in pieces, and the host might read half.
    fn note(notes: &mut UnixStream, mut text: String) -> io::Result<()> {
        text.push('\n');
        notes.write_all(text.as_bytes())
    }
}
