//! Shared helpers for the black-box tests of the `ackloop` binary: start it
//! on 127.0.0.1:0, learn its ports from stdout, signal and stop it, watch
//! its memory and CPU, and talk to it with deadlines.
//!
//! Every wait here is bounded by a deadline that only ends a test that has
//! already failed; none decides success. The binary is
//! `CARGO_BIN_EXE_ackloop`; `ACKLOOP_BIN` overrides it for local
//! experiments against another server speaking the same command line.

#![allow(dead_code)] // Each test file uses a subset.

mod client;
pub mod control;
pub mod journal;
pub mod upstream;

pub use client::*;

use std::io::{self, BufRead, BufReader, ErrorKind, Read};
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Bounds every wait; generous, so it only ends a test that already failed.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// How often a condition is polled while waiting for it.
const POLL_EVERY: Duration = Duration::from_millis(10);

/// Signal numbers, sent with the `kill` command.
pub const SIGINT: i32 = 2;
pub const SIGTERM: i32 = 15;

/// The counters the exit summary names (SPEC section 1).
pub const SUMMARY_COUNTERS: [&str; 6] = [
    "accepted",
    "rejected",
    "messages",
    "datagrams",
    "bytes in",
    "bytes out",
];

/// The binary under test.
pub fn bin() -> String {
    std::env::var("ACKLOOP_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_ackloop").to_string())
}

/// The binary, or `wrapper[0]` given `wrapper[1..]` then the binary's path.
fn wrapped(wrapper: &[&str]) -> Command {
    match wrapper.split_first() {
        None => Command::new(bin()),
        Some((program, rest)) => {
            let mut command = Command::new(program);
            command.args(rest).arg(bin());
            command
        }
    }
}

/// Options every server in these tests gets before its own, from the
/// environment: `ACKLOOP_TEST_ARGS="--read-buffer 512 --max-owed 1"` runs
/// a suite with the smallest settings (the test's own options win).
fn settings_from_env() -> Vec<String> {
    std::env::var("ACKLOOP_TEST_ARGS")
        .map(|args| args.split_whitespace().map(String::from).collect())
        .unwrap_or_default()
}

/// Loopback, port 0, for both protocols: what every test starts with.
const PORT_ZERO: [&str; 4] = ["--tcp", "127.0.0.1:0", "--udp", "127.0.0.1:0"];

/// Text a child wrote to a pipe, and whether the pipe has closed.
#[derive(Default)]
struct Captured {
    text: String,
    closed: bool,
}

/// Copies a pipe into `Captured` until it closes.
fn capture(mut pipe: impl Read + Send + 'static) -> Arc<Mutex<Captured>> {
    let captured = Arc::new(Mutex::new(Captured::default()));
    let sink = Arc::clone(&captured);
    std::thread::spawn(move || {
        let mut buf = [0; 4096];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => sink
                    .lock()
                    .unwrap()
                    .text
                    .push_str(&String::from_utf8_lossy(&buf[..n])),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        sink.lock().unwrap().closed = true;
    });
    captured
}

/// Sends stdout line by line over a channel, so reading the address lines
/// can have a deadline.
fn stdout_lines(pipe: ChildStdout) -> Receiver<String> {
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if send.send(line).is_err() {
                break;
            }
        }
    });
    receive
}

/// Starts `command` with no stdin and piped stdout and stderr.
#[track_caller]
fn spawn_piped(command: &mut Command) -> Child {
    spawn_with(command, Stdio::piped(), Stdio::piped())
}

/// Starts `command` with no stdin and these stdout and stderr.
#[track_caller]
fn spawn_with(command: &mut Command, stdout: Stdio, stderr: Stdio) -> Child {
    command
        // The log level is the tests' choice, not the environment's.
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("ackloop starts")
}

/// The write end of a pipe whose read end is already closed: every write
/// to it fails with `EPIPE`, as to a reader that has gone away. Closed
/// before the child starts, so no write of the child can race the close.
#[track_caller]
pub fn closed_pipe() -> Stdio {
    let mut fds = [0; 2];
    // Close-on-exec: no other test's child inherits the read end, which
    // would keep the pipe open. (The child's own copy, dup2'ed onto its
    // stdout or stderr, is not close-on-exec.)
    // SAFETY: pipe2 writes two descriptors into `fds`.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(r, 0, "pipe2: {}", io::Error::last_os_error());
    // SAFETY: two fresh descriptors, owned by nothing else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    Stdio::from(write)
}

/// Which of the child's outputs `run_closed` makes a closed pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    Stdout,
    Stderr,
    Both,
}

/// A running `ackloop` process. Dropping it kills and reaps the process,
/// so a failing test never leaves a server behind.
pub struct Server {
    child: Child,
    /// The bound TCP address from the `tcp ADDR` line, if one was printed.
    pub tcp: Option<SocketAddr>,
    /// The bound UDP address from the `udp ADDR` line, if one was printed.
    pub udp: Option<SocketAddr>,
    /// The control address from the `control ADDR` line (`--control`).
    pub control: Option<SocketAddr>,
    /// The API address from the `api ADDR` line (`--api`).
    pub api: Option<SocketAddr>,
    stdout: Receiver<String>,
    stderr: Arc<Mutex<Captured>>,
    /// Stderr's pipe, not read, when started with `start_with_stderr_held`.
    held_stderr: Option<ChildStderr>,
    exited: Option<ExitStatus>,
}

impl Server {
    /// Starts the binary on `127.0.0.1:0` for both protocols, then `args`,
    /// and reads the address lines it prints before serving.
    #[track_caller]
    pub fn start(args: &[&str]) -> Server {
        Server::start_wrapped(&[], args)
    }

    /// Like `start`, run by a wrapper program (`wrapper[0]`, given
    /// `wrapper[1..]`, then the binary and its arguments), such as strace.
    /// The pid is the wrapper's.
    #[track_caller]
    pub fn start_wrapped(wrapper: &[&str], args: &[&str]) -> Server {
        let mut command = wrapped(wrapper);
        command.args(PORT_ZERO).args(settings_from_env()).args(args);
        Server::spawn(command, args, true)
    }

    /// Like `start`, but stderr is not read: the test holds its pipe, to
    /// close it with `close_stderr`. `stderr()` is then always empty.
    #[track_caller]
    pub fn start_with_stderr_held(args: &[&str]) -> Server {
        let mut command = Command::new(bin());
        command.args(PORT_ZERO).args(settings_from_env()).args(args);
        Server::spawn(command, args, false)
    }

    /// Closes the read end of stderr's pipe (held since the start): from
    /// now on every write the server makes to stderr fails with `EPIPE`.
    #[track_caller]
    pub fn close_stderr(&mut self) {
        let pipe = self.held_stderr.take();
        assert!(pipe.is_some(), "started with start_with_stderr_held");
        drop(pipe);
    }

    /// Like `start`, with at most `limit` open file descriptors
    /// (`ulimit -n`, set by a shell that then `exec`s the binary, so the pid
    /// is the server's).
    #[track_caller]
    pub fn start_with_fd_limit(limit: u32, args: &[&str]) -> Server {
        let script = format!("ulimit -n {limit} && exec \"$0\" \"$@\"");
        Server::start_wrapped(&["sh", "-c", &script], args)
    }

    #[track_caller]
    fn spawn(mut command: Command, args: &[&str], read_stderr: bool) -> Server {
        let mut child = spawn_piped(&mut command);
        let pipe = child.stderr.take().unwrap();
        let (stderr, held_stderr) = if read_stderr {
            (capture(pipe), None)
        } else {
            let nothing = Captured {
                text: String::new(),
                closed: true,
            };
            (Arc::new(Mutex::new(nothing)), Some(pipe))
        };
        let stdout = stdout_lines(child.stdout.take().unwrap());
        let mut server = Server {
            child,
            tcp: None,
            udp: None,
            control: None,
            api: None,
            stdout,
            stderr,
            held_stderr,
            exited: None,
        };
        let off = |flag: &str| args.contains(&flag);
        let mut expected: Vec<&str> = [("tcp", "--no-tcp"), ("udp", "--no-udp")]
            .into_iter()
            .filter(|(_, flag)| !off(flag))
            .map(|(protocol, _)| protocol)
            .collect();
        if off("--control") {
            expected.push("control");
        }
        if off("--api") {
            expected.push("api");
        }
        // The address lines come first: tcp, udp, control, api, one per socket.
        for protocol in expected {
            let line = match server.stdout.recv_timeout(DEADLINE) {
                Ok(line) => line,
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no `{protocol} ADDR` line on stdout within {DEADLINE:?}")
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = server.wait_timeout(DEADLINE);
                    panic!(
                        "stdout closed before the `{protocol} ADDR` line; \
                         exit status {status:?}, stderr:\n{}",
                        server.final_stderr()
                    )
                }
            };
            let addr = match line.split_once(' ') {
                Some((name, addr)) if name == protocol => addr.parse::<SocketAddr>(),
                _ => panic!("expected a `{protocol} ADDR` line on stdout, got {line:?}"),
            }
            .unwrap_or_else(|e| panic!("{line:?}: not an address: {e}"));
            assert_eq!(addr.ip().to_string(), "127.0.0.1", "{line:?}");
            assert_ne!(addr.port(), 0, "{line:?}: port 0 must be resolved");
            match protocol {
                "tcp" => server.tcp = Some(addr),
                "udp" => server.udp = Some(addr),
                "api" => server.api = Some(addr),
                _ => server.control = Some(addr),
            }
        }
        server
    }

    #[track_caller]
    pub fn tcp(&self) -> SocketAddr {
        self.tcp.expect("a `tcp ADDR` line was printed")
    }

    #[track_caller]
    pub fn udp(&self) -> SocketAddr {
        self.udp.expect("a `udp ADDR` line was printed")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Lines printed on stdout after the address lines, so far.
    pub fn extra_stdout(&self) -> Vec<String> {
        self.stdout.try_iter().collect()
    }

    /// Everything written on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().text.clone()
    }

    /// Waits until stderr satisfies `done`; returns it.
    #[track_caller]
    pub fn wait_for_stderr(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let mut text = String::new();
        let found = wait_until(DEADLINE, || {
            text = self.stderr();
            done(&text)
        });
        assert!(
            found,
            "stderr never showed {what} within {DEADLINE:?}:\n{text}"
        );
        text
    }

    /// Stderr once the pipe has closed (the process exited), bounded.
    pub fn final_stderr(&self) -> String {
        wait_until(DEADLINE, || self.stderr.lock().unwrap().closed);
        self.stderr()
    }

    /// Sends `signal` with the `kill` command.
    #[track_caller]
    pub fn signal(&self, signal: i32) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("the kill command runs");
        assert!(status.success(), "kill -{signal} {}: {status}", self.pid());
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.poll_exit().is_none()
    }

    fn poll_exit(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().expect("try_wait");
        }
        self.exited
    }

    /// Waits at most `within` for the process to exit.
    pub fn wait_timeout(&mut self, within: Duration) -> Option<ExitStatus> {
        let mut status = None;
        wait_until(within, || {
            status = self.poll_exit();
            status.is_some()
        });
        status
    }

    /// Waits for the process to exit, at most `DEADLINE`.
    #[track_caller]
    pub fn wait(&mut self) -> ExitStatus {
        match self.wait_timeout(DEADLINE) {
            Some(status) => status,
            None => panic!(
                "ackloop did not exit within {DEADLINE:?}; stderr:\n{}",
                self.stderr()
            ),
        }
    }

    /// SIGTERM, then waits for the exit: its status and all of stderr.
    #[track_caller]
    pub fn terminate(&mut self) -> (ExitStatus, String) {
        self.signal(SIGTERM);
        let status = self.wait();
        (status, self.final_stderr())
    }

    /// Resident memory in KiB, from /proc/PID/status.
    #[track_caller]
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("/proc/PID/status of a running server");
        let line = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .expect("VmRSS line");
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// CPU time used so far in clock ticks (utime + stime, /proc/PID/stat).
    #[track_caller]
    pub fn cpu_ticks(&self) -> u64 {
        cpu_ticks_of(self.pid())
    }
}

/// CPU time process `pid` used so far in clock ticks (utime + stime,
/// /proc/PID/stat): for a server run by a wrapper, whose pid is not the
/// server's.
#[track_caller]
pub fn cpu_ticks_of(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .expect("/proc/PID/stat of a running server");
    // The command name may hold spaces: count fields after its ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    // Fields 14 and 15 of stat(5); the first after ')' is field 3.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `done` every few milliseconds until it holds or `within` passes;
/// returns whether it held.
pub fn wait_until(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL_EVERY);
    }
}

/// Runs the binary with `args` after the port-0 addresses (an address in
/// `args` overrides them) to completion, killing it if it is still running
/// after `DEADLINE`: exit status, stdout, stderr.
#[track_caller]
pub fn run(args: &[&str]) -> (ExitStatus, String, String) {
    run_wrapped(&[], args)
}

/// Like `run`, run by a wrapper program, as for `Server::start_wrapped`.
#[track_caller]
pub fn run_wrapped(wrapper: &[&str], args: &[&str]) -> (ExitStatus, String, String) {
    let (status, stdout, stderr) = run_with(wrapper, args, Stdio::piped(), Stdio::piped());
    let Some(status) = status else {
        panic!("{args:?}: still running after {DEADLINE:?}; stdout {stdout:?}, stderr {stderr:?}");
    };
    (status, stdout, stderr)
}

/// Like `run`, with `closed` a pipe whose read end is closed before the
/// start (what it returns for a closed output is empty). The status is
/// `None` if the process was still running after `DEADLINE` (then killed).
#[track_caller]
pub fn run_closed(closed: Closed, args: &[&str]) -> (Option<ExitStatus>, String, String) {
    let output = |which| match closed {
        Closed::Both => closed_pipe(),
        _ if closed == which => closed_pipe(),
        _ => Stdio::piped(),
    };
    run_with(&[], args, output(Closed::Stdout), output(Closed::Stderr))
}

#[track_caller]
fn run_with(
    wrapper: &[&str],
    args: &[&str],
    stdout: Stdio,
    stderr: Stdio,
) -> (Option<ExitStatus>, String, String) {
    let mut command = wrapped(wrapper);
    for pair in PORT_ZERO.chunks(2) {
        if !args.contains(&pair[0]) {
            command.args(pair);
        }
    }
    command.args(settings_from_env());
    let mut child = spawn_with(command.args(args), stdout, stderr);
    let stdout = child.stdout.take().map(capture);
    let stderr = child.stderr.take().map(capture);
    let mut status = None;
    wait_until(DEADLINE, || {
        status = child.try_wait().expect("try_wait");
        status.is_some()
    });
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let text = |captured: Option<Arc<Mutex<Captured>>>| {
        let Some(captured) = captured else {
            return String::new();
        };
        wait_until(DEADLINE, || captured.lock().unwrap().closed);
        captured.lock().unwrap().text.clone()
    };
    (status, text(stdout), text(stderr))
}

/// The value of a counter in the exit summary, written either `name N`
/// (with an optional `:` or `=`) or `N name`.
pub fn counter(summary: &str, name: &str) -> Option<u64> {
    let at = summary.rfind(name)?;
    let after = summary[at + name.len()..].trim_start_matches([' ', ':', '=']);
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    if !digits.is_empty() {
        return digits.parse().ok();
    }
    let before = summary[..at].trim_end_matches([' ', ':', '=']);
    let start = before
        .rfind(|c: char| !c.is_ascii_digit())
        .map_or(0, |i| i + 1);
    before[start..].parse().ok()
}

/// Asserts that `stderr` holds the exit summary naming every counter;
/// returns the summary line.
#[track_caller]
pub fn assert_summary(stderr: &str) -> String {
    let line = stderr
        .lines()
        .rev()
        .find(|line| SUMMARY_COUNTERS.iter().all(|c| line.contains(c)))
        .unwrap_or_else(|| {
            panic!("no summary line naming {SUMMARY_COUNTERS:?} on stderr:\n{stderr}")
        });
    for name in SUMMARY_COUNTERS {
        assert!(
            counter(line, name).is_some(),
            "summary {line:?}: no value for {name:?}"
        );
    }
    line.to_string()
}

/// Raises this process's soft limit on open descriptors to `needed` (a
/// server started as a child inherits it), if the hard limit allows.
#[track_caller]
pub fn raise_descriptor_limit(needed: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: both calls take a pointer to one valid `rlimit`.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        if limit.rlim_cur < needed && limit.rlim_max >= needed {
            limit.rlim_cur = needed;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        }
    }
    assert!(
        limit.rlim_cur >= needed,
        "this test needs {needed} descriptors; the limit is {}",
        limit.rlim_cur
    );
}
