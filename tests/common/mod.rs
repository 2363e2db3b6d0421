//! Shared helpers for the tests that run the `ackloop` binary: start it on
//! 127.0.0.1:0, learn its ports from stdout, stop it, and talk to it with
//! deadlines.

#![allow(dead_code)] // Each test file uses a subset.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Bounds every wait; generous, so it only ends a test that already failed.
pub const DEADLINE: Duration = Duration::from_secs(15);

pub const BIN: &str = env!("CARGO_BIN_EXE_ackloop");

/// A running `ackloop` process, killed if the test ends early.
pub struct Process {
    child: Child,
    pub tcp: Option<SocketAddr>,
    pub udp: Option<SocketAddr>,
    stderr: Arc<Mutex<String>>,
}

impl Process {
    /// Starts the binary with `args` after the loopback port-0 addresses.
    #[track_caller]
    pub fn start(args: &[&str]) -> Process {
        let mut all = vec!["--tcp", "127.0.0.1:0", "--udp", "127.0.0.1:0"];
        all.extend_from_slice(args);
        Process::spawn(Command::new(BIN).args(&all), address_lines(args))
    }

    /// Starts it with at most `limit` open file descriptors.
    #[track_caller]
    pub fn start_with_fd_limit(limit: u32, args: &[&str]) -> Process {
        let script = format!("ulimit -n {limit} && exec \"$0\" \"$@\"");
        let mut command = Command::new("sh");
        command
            .args([
                "-c",
                &script,
                BIN,
                "--tcp",
                "127.0.0.1:0",
                "--udp",
                "127.0.0.1:0",
            ])
            .args(args);
        Process::spawn(&mut command, address_lines(args))
    }

    #[track_caller]
    fn spawn(command: &mut Command, expected: usize) -> Process {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ackloop starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().unwrap();
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut text = String::new();
            let mut buf = [0; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                text.push_str(&String::from_utf8_lossy(&buf[..n]));
                *sink.lock().unwrap() = text.clone();
            }
        });
        let mut lines = BufReader::new(child.stdout.take().unwrap());
        let (mut tcp, mut udp) = (None, None);
        // The address lines come before serving; the pipe closing early
        // (a startup failure) ends this loop.
        let mut line = String::new();
        for _ in 0..expected {
            line.clear();
            if lines.read_line(&mut line).unwrap_or(0) == 0 {
                break; // Exited before serving.
            }
            match line.split_once(' ') {
                Some(("tcp", addr)) => tcp = Some(addr.trim().parse().unwrap()),
                Some(("udp", addr)) => udp = Some(addr.trim().parse().unwrap()),
                _ => panic!("unexpected stdout line {line:?}"),
            }
        }
        Process {
            child,
            tcp,
            udp,
            stderr,
        }
    }

    pub fn tcp(&self) -> SocketAddr {
        self.tcp.expect("tcp address printed")
    }

    pub fn udp(&self) -> SocketAddr {
        self.udp.expect("udp address printed")
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        assert_eq!(unsafe { libc::kill(self.pid(), signal) }, 0);
    }

    /// Waits for the process to exit, at most `DEADLINE`.
    #[track_caller]
    pub fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "ackloop did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// CPU time used so far, in clock ticks (utime + stime).
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }

    /// Resident memory in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How many address lines a server started with `args` prints.
fn address_lines(args: &[&str]) -> usize {
    2 - args
        .iter()
        .filter(|a| **a == "--no-tcp" || **a == "--no-udp")
        .count()
}

/// Runs the binary with `args` to completion: exit status, stdout, stderr.
pub fn run(args: &[&str]) -> (ExitStatus, String, String) {
    let output = Command::new(BIN).args(args).output().expect("runs");
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).into(),
        String::from_utf8_lossy(&output.stderr).into(),
    )
}

#[track_caller]
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.set_write_timeout(Some(DEADLINE)).unwrap();
    stream
}

/// Sends `request`, reads until the server closes.
#[track_caller]
pub fn tcp_request(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = connect(addr);
    stream.write_all(request).unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).expect("reply then EOF");
    reply
}

/// Sends one datagram, returns the reply datagram.
#[track_caller]
pub fn udp_request(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(DEADLINE)).unwrap();
    socket.send_to(request, addr).unwrap();
    let mut buf = vec![0; 70_000];
    let n = socket.recv(&mut buf).expect("a reply datagram");
    buf.truncate(n);
    buf
}
