//! No heap allocation per message in steady state: a counting global
//! allocator watches the server's thread while clients send thousands of
//! messages in each mode, after a warm-up that lets every reusable buffer
//! reach its working size.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use ackloop::{Config, Echo, Handle, Mode, Server};

/// Counts allocations made on threads that opted in (each server's
/// thread, into its own counter: tests run in parallel).
struct Counting;

thread_local! {
    static COUNTER: Cell<Option<&'static AtomicU64>> = const { Cell::new(None) };
}

fn count_one() {
    if let Some(counter) = COUNTER.with(Cell::get) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const DEADLINE: Duration = Duration::from_secs(20);

/// A server under test: its addresses, handle, thread and allocations.
struct Running {
    tcp: SocketAddr,
    udp: SocketAddr,
    handle: Handle,
    thread: JoinHandle<()>,
    allocations: &'static AtomicU64,
}

impl Running {
    /// Runs `work` twice: a warm-up, then the measured run. Returns the
    /// server thread's allocations during the measured run.
    fn allocations_in_steady_state(&self, mut work: impl FnMut()) -> u64 {
        work();
        let before = self.allocations.load(Ordering::SeqCst);
        work();
        self.allocations.load(Ordering::SeqCst) - before
    }

    fn stop(self) {
        self.handle.shutdown();
        self.thread.join().unwrap();
    }
}

/// Starts a server on its own thread, counting that thread's allocations.
fn start(mode: Mode, echo: bool) -> Running {
    start_with_faults(mode, echo, &[])
}

/// As [`start`], with `faults` in force.
fn start_with_faults(mode: Mode, echo: bool, faults: &[&str]) -> Running {
    let mut config = Config::loopback();
    config.mode = mode;
    config.faults = faults.iter().map(|f| f.parse().unwrap()).collect();
    let server = if echo {
        Server::with_responder(config, Echo)
    } else {
        Server::bind(config)
    };
    let mut server = server.expect("binds");
    let (tcp, udp, handle) = (
        server.tcp_addr().unwrap(),
        server.udp_addr().unwrap(),
        server.handle(),
    );
    let allocations: &'static AtomicU64 = Box::leak(Box::new(AtomicU64::new(0)));
    let thread = std::thread::spawn(move || {
        COUNTER.with(|c| c.set(Some(allocations)));
        server.run().expect("runs");
    });
    Running {
        tcp,
        udp,
        handle,
        thread,
        allocations,
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connects");
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// `count` once-mode exchanges, one connection each.
fn once_exchanges(addr: SocketAddr, count: usize) {
    for _ in 0..count {
        let mut stream = connect(addr);
        stream.write_all(b"Hello, Server").unwrap();
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).unwrap();
        assert_eq!(reply, b"Received");
    }
}

/// `count` line-mode round trips on one connection, `expected` each.
fn line_exchanges(stream: &mut TcpStream, count: usize, expected: &[u8]) {
    let mut reply = vec![0; expected.len()];
    for _ in 0..count {
        stream.write_all(b"Hello, Server\n").unwrap();
        stream.read_exact(&mut reply).unwrap();
        assert_eq!(reply, expected);
    }
}

/// `count` UDP round trips.
fn udp_exchanges(socket: &UdpSocket, addr: SocketAddr, count: usize, expected: &[u8]) {
    let mut reply = [0; 64];
    for _ in 0..count {
        socket.send_to(b"Hello, Server", addr).unwrap();
        let (n, _) = socket.recv_from(&mut reply).unwrap();
        assert_eq!(&reply[..n], expected);
    }
}

fn udp_socket() -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(DEADLINE)).unwrap();
    socket
}

#[test]
fn fixed_reply_allocates_nothing_per_message() {
    let server = start(Mode::Once, false);
    let allocations = server.allocations_in_steady_state(|| once_exchanges(server.tcp, 2_000));
    assert_eq!(allocations, 0, "once mode: 2000 connections");
    let socket = udp_socket();
    let allocations = server
        .allocations_in_steady_state(|| udp_exchanges(&socket, server.udp, 5_000, b"Received"));
    assert_eq!(allocations, 0, "udp: 5000 datagrams");
    server.stop();

    let server = start(Mode::Line, false);
    let mut stream = connect(server.tcp);
    let allocations =
        server.allocations_in_steady_state(|| line_exchanges(&mut stream, 5_000, b"Received\n"));
    assert_eq!(allocations, 0, "line mode: 5000 lines");
    server.stop();
}

#[test]
fn custom_responder_allocates_nothing_per_message() {
    let server = start(Mode::Line, true);
    let mut stream = connect(server.tcp);
    let echo = b"Hello, Server\n";
    let allocations =
        server.allocations_in_steady_state(|| line_exchanges(&mut stream, 5_000, echo));
    assert_eq!(allocations, 0, "echo, line mode: 5000 lines");
    let socket = udp_socket();
    let allocations = server.allocations_in_steady_state(|| {
        udp_exchanges(&socket, server.udp, 5_000, b"Hello, Server")
    });
    assert_eq!(allocations, 0, "echo, udp: 5000 datagrams");
    server.stop();
}

/// A fault in force that selects none of these messages costs nothing
/// per message: judged clean, each takes the fault-free path.
#[test]
fn faults_in_force_that_select_nothing_allocate_nothing_per_message() {
    let unselective = [
        "tcp:reset,first=0",
        "tcp:delay=100,every=1000000",
        "udp:drop,first=0",
    ];
    for echo in [false, true] {
        let server = start_with_faults(Mode::Line, echo, &unselective);
        let mut stream = connect(server.tcp);
        let expected: &[u8] = if echo {
            b"Hello, Server\n"
        } else {
            b"Received\n"
        };
        let allocations =
            server.allocations_in_steady_state(|| line_exchanges(&mut stream, 5_000, expected));
        assert_eq!(allocations, 0, "line mode, echo {echo}: 5000 lines");
        let socket = udp_socket();
        let expected: &[u8] = if echo { b"Hello, Server" } else { b"Received" };
        let allocations = server
            .allocations_in_steady_state(|| udp_exchanges(&socket, server.udp, 5_000, expected));
        assert_eq!(allocations, 0, "udp, echo {echo}: 5000 datagrams");
        server.stop();
    }
}
