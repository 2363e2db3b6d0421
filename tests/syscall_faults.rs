//! Failing system calls: the `ackloop` binary run under strace's fault
//! injection (`strace -e inject=SYSCALL:error=ERRNO:when=A..B`), which
//! fails chosen calls of one system call once the server is serving (the
//! contract: "Nothing the machine does wrong ends the loop").
//!
//! While the calls fail, clients may fail too. Afterwards the server must
//! (1) still be running, (2) serve a fresh TCP and a fresh UDP exchange,
//! (3) not spin: little CPU over an idle second, (4) never have written a
//! panic or an abort on stderr, and (5) still stop cleanly on SIGTERM.
//! Separately, a start-up call that fails ends the program with status 1
//! and one line on stderr.
//!
//! strace does not make an injected call at all: the failure is all the
//! server sees (for `close`, the descriptor even stays open). Only the
//! injected system call is traced, with seccomp, so the server runs at
//! about full speed; log-write failures are limited to stderr's pipe.
//!
//! Black box, loopback only. strace must be installed (CI's `.ci/run`
//! installs it); without it these tests fail saying so. The cases of one
//! test run side by side, each with its own server, to keep the run short.
//!
//! Linux only: strace and `/proc`.
#![cfg(target_os = "linux")]

mod common;

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{
    DEADLINE, Server, connect, cpu_ticks_of, line_exchange, run_wrapped, tcp_request, text,
    udp_request, wait_until,
};

const REPLY: &str = "Received";
const LINE_REPLY: &str = "Received\n";

/// Line mode's longest line here: a longer one makes the server close the
/// connection itself (shutdown, then a lingering close), which a client
/// that closes first never makes it do.
const MAX_LINE: usize = 16;

/// How long a client in the injection window waits for anything: the
/// server may be failing it on purpose, and the next round will come.
const CLIENT_PATIENCE: Duration = Duration::from_millis(500);

/// The idle stretch over which the server's CPU time is measured.
const IDLE_SAMPLE: Duration = Duration::from_secs(1);

/// CPU time over `IDLE_SAMPLE` above which the server counts as spinning:
/// an idle server uses about none (a tick at most), a spinning one most of
/// a core, and still several times this on a loaded machine.
const SPIN_CPU: Duration = Duration::from_millis(100);

/// Failures injected before checking when the fault stays for good: a
/// few log lines' worth.
const LASTING_FAULT_AWAITED: usize = 4;

/// A failure report shows this many failed calls and stderr lines, cut
/// to this many characters.
const EVIDENCE_LINES: usize = 8;
const EVIDENCE_WIDTH: usize = 240;

// ----- the cases -------------------------------------------------------------

/// The TCP framing a case runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Once,
    Line,
}

/// Both modes, for calls that TCP makes.
const BOTH_MODES: &[Mode] = &[Mode::Once, Mode::Line];

/// For calls only UDP makes, the TCP mode does not matter.
const UDP_ONLY: &[Mode] = &[Mode::Once];

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Once => "once",
            Mode::Line => "line",
        }
    }

    /// The server's arguments. Debug logging, so every connection writes
    /// log lines: the log-write case has calls to fail.
    fn args(self) -> Vec<String> {
        let mut args = vec!["--mode", self.name(), "--log-level", "debug"];
        let max_line = MAX_LINE.to_string();
        if self == Mode::Line {
            args.extend(["--max-line", &max_line]);
        }
        args.into_iter().map(String::from).collect()
    }
}

/// Which calls of the system call fail, counted from the first call after
/// start-up (1 is the first).
#[derive(Clone, Copy, Debug)]
enum Calls {
    /// Calls `first` to `last`, both included; then the machine is well.
    Range(u32, u32),
    /// Call `first` and every later one: a fault that stays, like a log
    /// pipe whose reader has gone.
    From(u32),
}

impl fmt::Display for Calls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Calls::Range(first, last) => write!(f, "calls {first}..{last}"),
            Calls::From(first) => write!(f, "calls {first} on"),
        }
    }
}

/// One system call failing with one errno, in one TCP mode.
#[derive(Clone, Copy, Debug)]
struct Case {
    syscall: &'static str,
    errno: &'static str,
    calls: Calls,
    mode: Mode,
}

impl Case {
    fn name(&self) -> String {
        let Case {
            syscall,
            errno,
            calls,
            mode,
        } = self;
        format!("{syscall} {errno} {calls} ({} mode)", mode.name())
    }

    /// A name for the case's trace file, unique in the table.
    fn file_name(&self) -> String {
        let calls = match self.calls {
            Calls::Range(first, last) => format!("{first}-{last}"),
            Calls::From(first) => format!("{first}-on"),
        };
        let Case {
            syscall,
            errno,
            mode,
            ..
        } = self;
        format!("{syscall}-{errno}-{calls}-{}", mode.name())
    }

    /// Only writes to stderr (the log) fail in the `write` case: stdout's
    /// address lines come before serving, and a socket write is `sendto`.
    fn stderr_only(&self) -> bool {
        self.syscall == "write"
    }

    /// strace's `when=`, which counts from the process's first call, so
    /// after the `startup` calls of the same system call.
    fn when(&self, startup: u32) -> String {
        match self.calls {
            Calls::Range(first, last) => format!("{}..{}", startup + first, startup + last),
            Calls::From(first) => format!("{}+", startup + first),
        }
    }

    /// Injected failures to wait for before checking the server.
    fn awaited(&self) -> usize {
        match self.calls {
            Calls::Range(first, last) => (last - first + 1) as usize,
            Calls::From(_) => LASTING_FAULT_AWAITED,
        }
    }
}

/// `syscall` failing with each of `errnos`, in each of `modes`.
fn cases(
    syscall: &'static str,
    errnos: &[&'static str],
    calls: Calls,
    modes: &[Mode],
) -> Vec<Case> {
    errnos
        .iter()
        .flat_map(|&errno| {
            modes.iter().map(move |&mode| Case {
                syscall,
                errno,
                calls,
                mode,
            })
        })
        .collect()
}

// ----- the tests ---------------------------------------------------------------

#[test]
fn failing_accepts_cost_at_most_the_clients_waiting() {
    // EMFILE takes the out-of-descriptors path (the backlog is shed); the
    // others pause accepting for a second each, so the window is short.
    run_cases(&cases(
        "accept4",
        &["ECONNABORTED", "EMFILE", "ENOBUFS", "EPERM"],
        Calls::Range(1, 3),
        BOTH_MODES,
    ));
}

#[test]
fn failing_tcp_reads_cost_at_most_their_connection() {
    run_cases(&cases(
        "recvfrom",
        &["ECONNRESET", "ENOMEM", "EINTR"],
        Calls::Range(1, 6),
        BOTH_MODES,
    ));
}

#[test]
fn failing_tcp_writes_cost_at_most_their_connection() {
    run_cases(&cases(
        "sendto",
        &["EPIPE", "ENOBUFS", "EINTR"],
        Calls::Range(1, 4),
        BOTH_MODES,
    ));
}

#[test]
fn failing_registrations_cost_at_most_their_connection() {
    // After start-up, epoll_ctl registers each accepted connection.
    run_cases(&cases(
        "epoll_ctl",
        &["ENOMEM", "ENOSPC"],
        Calls::Range(1, 3),
        BOTH_MODES,
    ));
}

#[test]
fn an_interrupted_poll_is_polled_again() {
    // Each failing wait returns at once: twenty go by in a moment.
    run_cases(&cases(
        "epoll_wait",
        &["EINTR"],
        Calls::Range(1, 20),
        BOTH_MODES,
    ));
}

#[test]
fn failing_shutdowns_socket_options_and_closes_cost_at_most_their_connection() {
    // An injected close(2) is not run at all, so the descriptor stays
    // open, unlike a real EIO after which Linux has released it.
    let mut all = cases("shutdown", &["ENOTCONN"], Calls::Range(1, 3), BOTH_MODES);
    // Once mode with the fixed reply sets no option per connection (Nagle
    // cannot delay its one write and FIN): line mode's TCP_NODELAY it is.
    all.extend(cases(
        "setsockopt",
        &["ENOMEM"],
        Calls::Range(1, 3),
        &[Mode::Line],
    ));
    all.extend(cases("close", &["EIO"], Calls::Range(1, 3), BOTH_MODES));
    run_cases(&all);
}

#[test]
fn failing_udp_receives_cost_at_most_the_datagrams_waiting() {
    run_cases(&cases(
        "recvmmsg",
        &["ENOMEM", "EINTR", "ENOBUFS", "EAGAIN"],
        Calls::Range(1, 6),
        UDP_ONLY,
    ));
}

#[test]
fn failing_udp_sends_cost_at_most_their_replies() {
    run_cases(&cases(
        "sendmmsg",
        &["ENOMEM", "EINTR", "ENOBUFS", "EAGAIN"],
        Calls::Range(1, 4),
        UDP_ONLY,
    ));
}

#[test]
fn a_log_that_can_no_longer_be_written_drops_lines_not_the_server() {
    // Every log write after start-up fails, as when the reader of the
    // stderr pipe has gone; shutting down logs too.
    run_cases(&cases("write", &["EPIPE"], Calls::From(1), BOTH_MODES));
}

/// Start-up calls that fail: the system call, the errno, and which call
/// of that system call fails (counted from the process's first).
const START_UP_FAULTS: [(&str, &str, u32); 7] = [
    ("epoll_create1", "EMFILE", 1), // The poll.
    ("eventfd2", "ENFILE", 1),      // The poll's waker.
    ("socket", "EMFILE", 1),        // The TCP listener.
    ("bind", "EADDRINUSE", 1),      // TCP.
    ("bind", "EACCES", 2),          // UDP.
    ("listen", "EADDRINUSE", 1),    // TCP.
    ("socketpair", "EMFILE", 1),    // The signal pipe.
];

#[test]
fn a_failing_start_up_call_exits_1_with_one_line_on_stderr() {
    require_strace();
    let startup = startup_calls();
    let mut failures = Vec::new();
    for (syscall, errno, call) in START_UP_FAULTS {
        let made = startup.get(syscall).copied().unwrap_or(0);
        assert!(
            call <= made,
            "{syscall}: call {call} is not a start-up call (start-up makes {made})"
        );
        let trace = trace_path(&format!("startup-{syscall}-{errno}-{call}"));
        let _ = fs::remove_file(&trace);
        let strace = strace_wrapper(syscall, errno, &call.to_string(), false, &trace);
        let wrapper: Vec<&str> = strace.iter().map(String::as_str).collect();
        // The default log level: what a user starting it would see.
        let (status, stdout, stderr) = run_wrapped(&wrapper, &[]);
        let injected = injected_count(&trace);
        let lines: Vec<&str> = stderr.lines().collect();
        let mut wrong = Vec::new();
        if injected == 0 {
            wrong.push("the call was never failed (a fault in this test)".to_string());
        }
        if status.code() != Some(1) {
            wrong.push(format!("exit status {status}, not 1"));
        }
        if lines.len() != 1 {
            wrong.push(format!("{} lines on stderr, not 1", lines.len()));
        }
        if let Some(line) = crash_line(&stderr) {
            wrong.push(format!("a crash on stderr: {line:?}"));
        }
        if !stdout.is_empty() {
            wrong.push(format!("stdout announced addresses: {stdout:?}"));
        }
        let name = format!("{syscall} {errno} call {call}");
        if wrong.is_empty() {
            println!("ok   {name}: {stderr:?}");
        } else {
            println!("FAIL {name}: {}", wrong.join("; "));
            failures.push(format!(
                "{name}: {}\n  {status}; stderr:\n{}",
                wrong.join("; "),
                indented(&stderr)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} start-up faults handled wrongly:\n\n{}",
        failures.len(),
        START_UP_FAULTS.len(),
        failures.join("\n\n")
    );
}

// ----- running a case ---------------------------------------------------------

/// Runs every case side by side, each with its own traced server, and
/// fails listing every case that failed, with its evidence.
#[track_caller]
fn run_cases(cases: &[Case]) {
    require_strace();
    let startup = startup_calls();
    let running: Vec<_> = cases
        .iter()
        .map(|&case| {
            let startup = startup.get(case.syscall).copied().unwrap_or(0);
            let thread = std::thread::spawn(move || {
                let began = Instant::now();
                (run_case(&case, startup), began.elapsed())
            });
            (case, thread)
        })
        .collect();
    let mut failures = Vec::new();
    for (case, thread) in running {
        // Not `common::join`: a case is bounded by its own deadlines, and
        // a slow failing one (several of them) may take longer than one.
        let (outcome, took) = thread.join().unwrap_or_else(|panic| {
            let why = format!("the case itself panicked: {}", panic_message(&*panic));
            (Err(why), Duration::ZERO)
        });
        match outcome {
            Ok(()) => println!("ok   {} ({took:.1?})", case.name()),
            Err(why) => {
                println!("FAIL {} ({took:.1?})", case.name());
                failures.push(format!("{}: {why}", case.name()));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

/// Starts the server under strace, fails its calls, checks it.
fn run_case(case: &Case, startup: u32) -> Result<(), String> {
    let trace = trace_path(&case.file_name());
    let _ = fs::remove_file(&trace);
    let when = case.when(startup);
    let strace = strace_wrapper(case.syscall, case.errno, &when, case.stderr_only(), &trace);
    let mut traced = attempt("start under strace", || {
        let wrapper: Vec<&str> = strace.iter().map(String::as_str).collect();
        let args = case.mode.args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Traced::new(Server::start_wrapped(&wrapper, &args), trace.clone())
    })?;
    check(&mut traced, case).map_err(|failure| format!("{failure}\n{}", traced.evidence()))
}

/// The checks of one case, in order; the first that fails ends it.
fn check(traced: &mut Traced, case: &Case) -> Result<(), String> {
    drive_through_window(traced, case)?;
    if !is_alive(traced.pid) {
        return Err("(1) the server is gone after the failing calls".into());
    }
    let (tcp, udp) = (traced.server.tcp(), traced.server.udp());
    attempt("(2) a fresh TCP exchange", || match case.mode {
        Mode::Once => assert_eq!(text(&tcp_request(tcp, b"Hello, Server")), REPLY),
        Mode::Line => {
            let stream = connect(tcp);
            let reply = line_exchange(&stream, b"Hello, Server\n", LINE_REPLY.len());
            assert_eq!(text(&reply), LINE_REPLY);
        }
    })?;
    attempt("(2) a fresh UDP exchange", || {
        assert_eq!(text(&udp_request(udp, b"Hello, Server")), REPLY);
    })?;
    let used = attempt("(3) CPU time of the server", || {
        let before = cpu_ticks_of(traced.pid);
        std::thread::sleep(IDLE_SAMPLE);
        ticks_to_time(cpu_ticks_of(traced.pid) - before)
    })?;
    if used > SPIN_CPU {
        return Err(format!(
            "(3) spinning: {used:?} of CPU over an idle {IDLE_SAMPLE:?} (limit {SPIN_CPU:?})"
        ));
    }
    signal(traced.pid, libc::SIGTERM);
    match traced.server.wait_timeout(DEADLINE) {
        Some(status) if status.success() => {}
        Some(status) => return Err(format!("(5) after SIGTERM: exit status {status}")),
        None => return Err(format!("(5) still running {DEADLINE:?} after SIGTERM")),
    }
    if let Some(line) = crash_line(&traced.server.final_stderr()) {
        return Err(format!("(4) a crash on stderr: {line:?}"));
    }
    // When the log is what fails, a crash message fails to be written
    // too; strace still shows what was tried.
    if case.stderr_only() {
        if let Some(line) = crash_line(&injected_calls(&traced.trace).join("\n")) {
            return Err(format!("(4) a crash written to the failing stderr: {line}"));
        }
    }
    Ok(())
}

/// Drives rounds of clients until strace has failed the awaited number of
/// calls, or the server is gone (which the checks then report).
fn drive_through_window(traced: &Traced, case: &Case) -> Result<(), String> {
    let (tcp, udp) = (traced.server.tcp(), traced.server.udp());
    let awaited = case.awaited();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let injected = injected_count(&traced.trace);
        if injected >= awaited || !is_alive(traced.pid) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "only {injected} of {awaited} calls failed within {DEADLINE:?}: the \
                 clients never reached the window (a fault in this test)"
            ));
        }
        drive_round(tcp, udp, case.mode);
    }
}

/// One round of clients that make the server use every kind of call it
/// makes after start-up: TCP clients (accept, register, read, write, shut
/// down, close, log lines) and UDP datagrams one at a time (receive,
/// send). Every failure is tolerated: the server may be failing them.
fn drive_round(tcp: SocketAddr, udp: SocketAddr, mode: Mode) {
    let too_long = format!("Hello\n{}\n", "x".repeat(MAX_LINE * 2));
    // In line mode, half close their side after a line (the server closes
    // after them), half send a line over --max-line (it closes first).
    let requests: [(&[u8], bool); 4] = match mode {
        Mode::Once => [(b"Hello, Server", false); 4],
        Mode::Line => [
            (b"Hello\n", true),
            (too_long.as_bytes(), false),
            (b"Hello\n", true),
            (too_long.as_bytes(), false),
        ],
    };
    let clients: Vec<TcpStream> = requests
        .iter()
        .filter_map(|&(request, then_shut_down)| {
            let mut stream = TcpStream::connect_timeout(&tcp, CLIENT_PATIENCE).ok()?;
            let _ = stream.write_all(request);
            if then_shut_down {
                let _ = stream.shutdown(Shutdown::Write);
            }
            Some(stream)
        })
        .collect();
    let deadline = Instant::now() + CLIENT_PATIENCE;
    for stream in &clients {
        read_until_closed_or(stream, deadline);
    }
    drop(clients);
    let Ok(socket) = UdpSocket::bind("127.0.0.1:0") else {
        return;
    };
    if socket.connect(udp).is_err() || socket.set_read_timeout(Some(CLIENT_PATIENCE)).is_err() {
        return;
    }
    let mut reply = [0; 64];
    for _ in 0..3 {
        let _ = socket.send(b"Hello, Server");
        let _ = socket.recv(&mut reply);
    }
}

/// Reads until the server closes the stream, anything goes wrong, or
/// `deadline`: a tolerant client, unlike the helpers that assert.
fn read_until_closed_or(mut stream: &TcpStream, deadline: Instant) {
    let mut buf = [0; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

// ----- the traced server --------------------------------------------------------

/// A server run by strace, with its own pid (strace's is `server.pid()`).
/// Dropping it kills the server, then `Server`'s drop kills and reaps
/// strace, so a failing case leaves nothing running.
struct Traced {
    server: Server,
    pid: u32,
    trace: PathBuf,
}

impl Traced {
    #[track_caller]
    fn new(server: Server, trace: PathBuf) -> Traced {
        let pid = traced_pid(&server);
        Traced { server, pid, trace }
    }

    /// What a failure report shows: how the server ended, the failures
    /// strace injected, and the end of stderr.
    fn evidence(&mut self) -> String {
        let alive = is_alive(self.pid);
        let (state, stderr) = if alive {
            ("still running".to_string(), self.server.stderr())
        } else {
            let state = match self.server.wait_timeout(DEADLINE) {
                Some(status) => format!("exited, strace reporting its status: {status}"),
                None => "gone, strace still running".to_string(),
            };
            (state, self.server.final_stderr())
        };
        let trace = fs::read_to_string(&self.trace).unwrap_or_default();
        let last_traced = trace.lines().last().unwrap_or("(nothing traced)");
        let injected = injected_calls(&self.trace);
        let first_injected: Vec<String> = injected
            .iter()
            .take(EVIDENCE_LINES)
            .map(|call| call.chars().take(EVIDENCE_WIDTH).collect())
            .collect();
        format!(
            "  server {state}; strace's last line: {last_traced}\n  \
             {} calls failed, the first:\n{}  stderr, last lines:\n{}",
            injected.len(),
            indented(&first_injected.join("\n")),
            indented(&tail(&stderr, EVIDENCE_LINES))
        )
    }
}

impl Drop for Traced {
    fn drop(&mut self) {
        // Only our server: a pid that is still strace's child.
        if is_alive(self.pid) && child_pids(self.server.pid()).contains(&self.pid) {
            signal(self.pid, libc::SIGKILL);
        }
    }
}

/// The server's pid: strace's one child, there once the address lines
/// have been printed.
#[track_caller]
fn traced_pid(server: &Server) -> u32 {
    let strace = server.pid();
    let mut children = Vec::new();
    wait_until(DEADLINE, || {
        children = child_pids(strace);
        !children.is_empty()
    });
    assert_eq!(
        children.len(),
        1,
        "strace (pid {strace}) runs one child, the server: {children:?}"
    );
    children[0]
}

/// The children of every thread of process `pid`.
fn child_pids(pid: u32) -> Vec<u32> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|children| {
            children
                .split_whitespace()
                .filter_map(|child| child.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// Whether process `pid` is running: there, and neither a zombie nor dead.
fn is_alive(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state is the first field after the command name's ')'.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, None | Some("Z" | "X" | "x"))
}

/// Sends `signal` to `pid`.
#[track_caller]
fn signal(pid: u32, signal: i32) {
    let pid = libc::pid_t::try_from(pid).expect("a pid fits pid_t");
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    let rc = unsafe { libc::kill(pid, signal) };
    assert_eq!(
        rc,
        0,
        "kill -{signal} {pid}: {}",
        std::io::Error::last_os_error()
    );
}

/// CPU clock ticks as time.
fn ticks_to_time(ticks: u64) -> Duration {
    // SAFETY: sysconf only reads a system constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let per_second = u64::try_from(per_second).expect("_SC_CLK_TCK");
    Duration::from_millis(ticks * 1000 / per_second)
}

// ----- strace -------------------------------------------------------------------

/// Fails, saying why, when strace is not installed.
#[track_caller]
fn require_strace() {
    static FOUND: OnceLock<Result<String, String>> = OnceLock::new();
    let found = FOUND.get_or_init(|| match Command::new("strace").arg("-V").output() {
        Ok(output) if output.status.success() => Ok(text(&output.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .to_string()),
        Ok(output) => Err(format!("`strace -V` failed: {}", output.status)),
        Err(e) => Err(format!("cannot run strace: {e}")),
    });
    if let Err(why) = found {
        panic!(
            "these tests fail system calls with strace, which is missing ({why}); \
             install it (`apt-get install strace`), as CI's .ci/run does"
        );
    }
}

/// The wrapper that runs the server under strace failing `syscall` with
/// `errno` at calls `when`, tracing only that system call into `trace`.
/// A shell `exec`s strace, so the wrapper's pid is strace's: it turns off
/// core dumps (an abort must leave no core file in the work tree) and,
/// for `stderr_only`, gives `-P` the name of its stderr pipe, which the
/// server inherits: then only writes to that pipe count and fail.
fn strace_wrapper(
    syscall: &str,
    errno: &str,
    when: &str,
    stderr_only: bool,
    trace: &Path,
) -> Vec<String> {
    let only_stderr = if stderr_only {
        r#"-P "$(readlink /proc/self/fd/2)""#
    } else {
        ""
    };
    let script = format!(r#"ulimit -c 0 && exec strace {only_stderr} "$@""#);
    let mut wrapper = vec!["sh".to_string(), "-c".to_string(), script, "sh".to_string()];
    wrapper.extend(strace_options(trace));
    wrapper.extend([
        "-e".to_string(),
        format!("trace={syscall}"),
        "-e".to_string(),
        format!("inject={syscall}:error={errno}:when={when}"),
    ]);
    wrapper
}

/// Follow forks (which `--seccomp-bpf` needs), stop the server only at
/// the traced system call (seccomp), so that tracing costs little, and
/// write the trace to a file, with strings long enough to read a panic
/// message that a failing log write swallowed.
fn strace_options(trace: &Path) -> Vec<String> {
    ["-f", "--seccomp-bpf", "-s", "200", "-o"]
        .map(String::from)
        .into_iter()
        .chain([trace.display().to_string()])
        .collect()
}

/// How many calls strace failed so far: it writes each line as it goes.
fn injected_count(trace: &Path) -> usize {
    injected_calls(trace).len()
}

/// strace's lines for the calls it failed so far.
fn injected_calls(trace: &Path) -> Vec<String> {
    fs::read_to_string(trace)
        .unwrap_or_default()
        .lines()
        .filter(|line| line.ends_with("(INJECTED)"))
        .map(String::from)
        .collect()
}

/// A file for strace's trace, in the target's temporary directory.
fn trace_path(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("syscall_faults");
    fs::create_dir_all(&dir).expect("a directory for the traces");
    dir.join(format!("{name}.strace"))
}

/// How many calls of each system call the server makes before it prints
/// its addresses (start-up), from one traced run, so that every case's
/// window lands after start-up whatever the loader and libc do. `write`
/// counts writes to stderr only, the ones the log case fails. Start-up
/// is the same in both modes.
fn startup_calls() -> &'static HashMap<String, u32> {
    static CALLS: OnceLock<HashMap<String, u32>> = OnceLock::new();
    CALLS.get_or_init(|| {
        let trace = trace_path("startup-calibration");
        let _ = fs::remove_file(&trace);
        let mut wrapper = vec!["sh", "-c", r#"ulimit -c 0 && exec strace "$@""#, "sh"];
        let options = strace_options(&trace);
        wrapper.extend(options.iter().map(String::as_str));
        let args = Mode::Once.args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut server = Server::start_wrapped(&wrapper, &args);
        let pid = traced_pid(&server);
        // Strace writes a call's line after the call: wait for it to end.
        signal(pid, libc::SIGKILL);
        server.wait();
        let traced = fs::read_to_string(&trace).expect("the start-up trace");
        count_startup_calls(&traced)
    })
}

/// Counts each system call in `trace` (strace -f lines: `PID  name(args)
/// = result`) up to the write of the `tcp ADDR` line.
#[track_caller]
fn count_startup_calls(trace: &str) -> HashMap<String, u32> {
    let mut counts = HashMap::new();
    for line in trace.lines() {
        let call = line
            .split_once(char::is_whitespace)
            .map_or("", |(_, rest)| rest.trim_start());
        let Some((name, args)) = call.split_once('(') else {
            continue;
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue; // A signal (`--- SIGCHLD ...`) or an exit (`+++ ...`).
        }
        if name == "write" && args.starts_with("1, \"tcp ") {
            return counts;
        }
        if name == "write" && !args.starts_with("2, ") {
            continue;
        }
        *counts.entry(name.to_string()).or_insert(0) += 1;
    }
    panic!("no write of the `tcp ADDR` line in the start-up trace:\n{trace}");
}

// ----- reporting ----------------------------------------------------------------

/// Runs `check`, turning its panic into an error naming `what`.
fn attempt<T>(what: &str, check: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(check))
        .map_err(|panic| format!("{what} failed: {}", panic_message(&*panic)))
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(message) = panic.downcast_ref::<String>() {
        message.clone()
    } else if let Some(message) = panic.downcast_ref::<&str>() {
        message.to_string()
    } else {
        "(no message)".to_string()
    }
}

/// The first line of stderr that shows a panic or an abort. "connection
/// abort" is the OS's text for ECONNABORTED, which a log line may quote.
fn crash_line(stderr: &str) -> Option<&str> {
    stderr.lines().find(|line| {
        let line = line.to_lowercase().replace("connection abort", "");
        line.contains("panicked") || line.contains("abort")
    })
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn indented(text: &str) -> String {
    text.lines()
        .map(|line| format!("    {line}\n"))
        .collect::<String>()
}
