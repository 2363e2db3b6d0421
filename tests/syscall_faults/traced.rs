//! The traced server: strace's child found by pid, signalled, watched
//! for CPU, stopped when dropped.
use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use crate::common::{DEADLINE, Server, wait_until};
use crate::strace::{indented, injected_calls, tail};
use crate::{EVIDENCE_LINES, EVIDENCE_WIDTH};

/// A server run by strace, with its own pid (strace's is `server.pid()`).
/// Dropping it kills the server, then `Server`'s drop kills and reaps
/// strace, so a failing case leaves nothing running.
pub struct Traced {
    pub server: Server,
    pub pid: u32,
    pub trace: PathBuf,
}

impl Traced {
    #[track_caller]
    pub fn new(server: Server, trace: PathBuf) -> Traced {
        let pid = traced_pid(&server);
        Traced { server, pid, trace }
    }

    /// What a failure report shows: how the server ended, the failures
    /// strace injected, and the end of stderr.
    pub fn evidence(&mut self) -> String {
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
pub fn traced_pid(server: &Server) -> u32 {
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
pub fn is_alive(pid: u32) -> bool {
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
pub fn signal(pid: u32, signal: i32) {
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
pub fn ticks_to_time(ticks: u64) -> Duration {
    // SAFETY: sysconf only reads a system constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let per_second = u64::try_from(per_second).expect("_SC_CLK_TCK");
    Duration::from_millis(ticks * 1000 / per_second)
}
