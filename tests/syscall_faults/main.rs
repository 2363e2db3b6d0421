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

#[path = "../common/mod.rs"]
mod common;
mod run;
mod strace;
mod traced;

use std::fmt;
use std::fs;
use std::time::Duration;

use common::run_wrapped;
use run::run_cases;
use strace::{
    crash_line, indented, injected_count, require_strace, startup_calls, strace_wrapper, trace_path,
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
