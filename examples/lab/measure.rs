//! What the probes read from the kernel about a server thread and the
//! process: CPU time, liveness, memory. Linux `/proc`, no sampling tools.

use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, RawFd};
use std::os::unix::fs::FileExt;

use socket2::SockRef;
use std::path::PathBuf;
use std::time::Duration;

/// The kernel's id of the calling thread.
pub fn current_tid() -> i32 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::gettid() }
}

fn task(tid: i32) -> PathBuf {
    PathBuf::from(format!("/proc/self/task/{tid}"))
}

/// The thread of this process whose name starts with `name` (at most 15
/// bytes are kept by the kernel), if exactly one does.
pub fn thread_named(name: &str) -> Option<i32> {
    let name = &name[..name.len().min(15)];
    let mut found = None;
    for entry in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.trim_end() == name {
            if found.is_some() {
                return None;
            }
            found = entry.file_name().to_str()?.parse().ok();
        }
    }
    found
}

/// A thread's CPU time, from `schedstat` (nanoseconds, unlike the clock
/// ticks of `stat`). The file is opened once, so reading it needs no new
/// descriptor: the `emfile-spin` probe reads it with none left.
pub struct CpuClock {
    schedstat: File,
}

impl CpuClock {
    pub fn of(tid: i32) -> io::Result<CpuClock> {
        let schedstat = File::open(task(tid).join("schedstat"))?;
        Ok(CpuClock { schedstat })
    }

    /// CPU time used so far; zero once the thread has ended.
    pub fn used(&self) -> Duration {
        let mut text = [0u8; 128];
        let n = self.schedstat.read_at(&mut text, 0).unwrap_or(0);
        let text = std::str::from_utf8(&text[..n]).unwrap_or("");
        let nanos = text.split_whitespace().next().and_then(|f| f.parse().ok());
        Duration::from_nanos(nanos.unwrap_or(0))
    }
}

/// Whether the thread still runs.
pub fn alive(tid: i32) -> bool {
    task(tid).exists()
}

/// Whether the thread is asleep (state `S`): for a poll loop, waiting in
/// `epoll_wait`, the only call in it that blocks.
pub fn asleep(tid: i32) -> bool {
    let stat = std::fs::read_to_string(task(tid).join("stat")).unwrap_or_default();
    // The state follows the name, which is in parentheses.
    let after_name = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
    after_name.starts_with('S')
}

/// Whether a `SIGUSR1` sent to the thread has not been handled yet.
pub fn sigusr1_pending(tid: i32) -> bool {
    let status = std::fs::read_to_string(task(tid).join("status")).unwrap_or_default();
    let pending = status
        .lines()
        .find_map(|line| line.strip_prefix("SigPnd:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .unwrap_or(0);
    pending & (1 << (libc::SIGUSR1 - 1)) != 0
}

/// The process's resident memory in bytes.
pub fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        });
    kib.unwrap_or(0) * 1024
}

/// Descriptors used up to a lowered limit, given back on drop.
pub struct NoDescriptorsLeft {
    limit: libc::rlimit,
    fillers: Vec<File>,
}

impl NoDescriptorsLeft {
    /// Lowers `RLIMIT_NOFILE` near what is open and opens `/dev/null`
    /// until nothing is left, so the next `accept` fails with `EMFILE`.
    /// The limit is process-wide: nothing else may open files meanwhile.
    pub fn take() -> io::Result<NoDescriptorsLeft> {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we own.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let open = std::fs::read_dir("/proc/self/fd")?.count() as libc::rlim_t;
        let lowered = libc::rlimit {
            rlim_cur: (open + 16).min(limit.rlim_cur),
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lowered) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut taken = NoDescriptorsLeft {
            limit,
            fillers: Vec::new(),
        };
        while let Ok(file) = File::open("/dev/null") {
            taken.fillers.push(file);
        }
        Ok(taken)
    }
}

impl Drop for NoDescriptorsLeft {
    fn drop(&mut self) {
        self.fillers.clear();
        // SAFETY: setrlimit reads the struct we own; raising the soft limit
        // back to its old value (at most the hard limit) cannot fail.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &self.limit) };
    }
}

/// Installs a do-nothing handler for `SIGUSR1` without `SA_RESTART`, so a
/// signal makes a blocked `epoll_wait` return `EINTR`.
pub fn catch_sigusr1() -> io::Result<()> {
    extern "C" fn ignore(_: libc::c_int) {}
    // SAFETY: the handler is async-signal-safe (it does nothing); the
    // struct is zeroed then filled as sigaction(2) describes.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = ignore as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = 0; // no SA_RESTART: interrupted calls fail with EINTR
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Sends `SIGUSR1` to one thread of this process.
pub fn signal_thread(tid: i32) -> io::Result<()> {
    // SAFETY: tgkill takes plain integers.
    let sent = unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, libc::SIGUSR1) };
    if sent != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The descriptor of this process's socket listening on `addr`: the
/// server's listener, for a probe to change from outside (the probes and
/// the servers share one process).
pub fn listening_socket(addr: SocketAddr) -> Option<RawFd> {
    sockets().find(|&fd| {
        with_socket(fd, |socket| {
            socket.local_addr().ok().and_then(|a| a.as_socket()) == Some(addr)
                && socket.is_listener().unwrap_or(false)
        })
    })
}

/// The descriptor of this process's TCP socket from `local` to `peer`.
pub fn connected_socket(local: SocketAddr, peer: SocketAddr) -> Option<RawFd> {
    let addr = |a: io::Result<socket2::SockAddr>| a.ok().and_then(|a| a.as_socket());
    sockets().find(|&fd| {
        with_socket(fd, |socket| {
            addr(socket.local_addr()) == Some(local) && addr(socket.peer_addr()) == Some(peer)
        })
    })
}

/// This process's open sockets.
fn sockets() -> impl Iterator<Item = RawFd> {
    let entries = std::fs::read_dir("/proc/self/fd").into_iter().flatten();
    entries.flatten().filter_map(|entry| {
        let link = std::fs::read_link(entry.path()).ok()?;
        link.to_string_lossy()
            .starts_with("socket:")
            .then_some(())?;
        entry.file_name().to_str()?.parse().ok()
    })
}

/// Runs `query` on a socket of this process.
pub fn with_socket<T>(fd: RawFd, query: impl FnOnce(SockRef<'_>) -> T) -> T {
    // SAFETY: the descriptor is only borrowed for `query`; on one closed
    // meanwhile its calls fail with EBADF (no memory is at stake), and the
    // probes change a socket only while its server holds it open.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    query(SockRef::from(&fd))
}

/// Whether a poll of the descriptor would report it (readable, hung up
/// or in error), without waiting.
pub fn ready(fd: RawFd) -> bool {
    let mut poll = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll reads and writes the one struct we own.
    unsafe { libc::poll(&mut poll, 1, 0) == 1 }
}

/// What the kernel says of the TCP socket from `local` to `peer`, from
/// `/proc/net/tcp`: whether it is established, and the bytes in its
/// receive queue (arrived, not yet read). `None` once it is gone.
pub fn tcp_socket(local: SocketAddr, peer: SocketAddr) -> Option<(bool, u64)> {
    let hex = |addr: SocketAddr| match addr {
        SocketAddr::V4(a) => Some(format!(
            "{:08X}:{:04X}",
            u32::from_ne_bytes(a.ip().octets()),
            a.port()
        )),
        SocketAddr::V6(_) => None,
    };
    let (local, peer) = (hex(local)?, hex(peer)?);
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) != Some(&local.as_str()) || fields.get(2) != Some(&peer.as_str()) {
            return None;
        }
        let established = fields.get(3) == Some(&"01");
        let rx_queue = fields.get(4)?.split_once(':')?.1;
        Some((established, u64::from_str_radix(rx_queue, 16).ok()?))
    })
}
