//! strace itself: required, the wrapper and its options, the injected calls
//! read back from its trace, the start-up calls counted once; and turning
//! a failure (a panic, a crash line on stderr) into a readable report.

use std::any::Any;
use std::collections::HashMap;
use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::Mode;
use crate::common::{Server, text};
use crate::traced::{signal, traced_pid};

/// Fails, saying why, when strace is not installed.
#[track_caller]
pub fn require_strace() {
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
pub fn strace_wrapper(
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
pub fn injected_count(trace: &Path) -> usize {
    injected_calls(trace).len()
}

/// strace's lines for the calls it failed so far.
pub fn injected_calls(trace: &Path) -> Vec<String> {
    fs::read_to_string(trace)
        .unwrap_or_default()
        .lines()
        .filter(|line| line.ends_with("(INJECTED)"))
        .map(String::from)
        .collect()
}

/// A file for strace's trace, in the target's temporary directory.
pub fn trace_path(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("syscall_faults");
    fs::create_dir_all(&dir).expect("a directory for the traces");
    dir.join(format!("{name}.strace"))
}

/// How many calls of each system call the server makes before it prints
/// its addresses (start-up), from one traced run, so that every case's
/// window lands after start-up whatever the loader and libc do. `write`
/// counts writes to stderr only, the ones the log case fails. Start-up
/// is the same in both modes.
pub fn startup_calls() -> &'static HashMap<String, u32> {
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
pub fn attempt<T>(what: &str, check: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(check))
        .map_err(|panic| format!("{what} failed: {}", panic_message(&*panic)))
}

pub fn panic_message(panic: &(dyn Any + Send)) -> String {
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
pub fn crash_line(stderr: &str) -> Option<&str> {
    stderr.lines().find(|line| {
        let line = line.to_lowercase().replace("connection abort", "");
        line.contains("panicked") || line.contains("abort")
    })
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

pub fn indented(text: &str) -> String {
    text.lines()
        .map(|line| format!("    {line}\n"))
        .collect::<String>()
}
