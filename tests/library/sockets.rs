//! Finding the server's own sockets in this process, to give them receive
//! buffers large enough that a burst waits there whole.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::RawFd;

fn address(
    fd: RawFd,
    get: unsafe extern "C" fn(
        libc::c_int,
        *mut libc::sockaddr,
        *mut libc::socklen_t,
    ) -> libc::c_int,
) -> Option<SocketAddr> {
    // SAFETY: an all-zero sockaddr_in is valid.
    let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: `addr` is writable for `len` bytes; a descriptor that is
    // not an IPv4 socket only makes the call fail.
    let rc = unsafe { get(fd, (&raw mut addr).cast(), &mut len) };
    if rc != 0 || i32::from(addr.sin_family) != libc::AF_INET {
        return None;
    }
    let ip = Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr));
    Some(SocketAddrV4::new(ip, u16::from_be(addr.sin_port)).into())
}

/// This process's socket bound to `local` and connected to `peer`
/// (`None`: not connected).
#[track_caller]
pub fn find(local: SocketAddr, peer: Option<SocketAddr>) -> RawFd {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .find(|&fd| {
            address(fd, libc::getsockname) == Some(local) && address(fd, libc::getpeername) == peer
        })
        .unwrap_or_else(|| panic!("no socket {local} -> {peer:?} in this process"))
}

#[track_caller]
fn set(fd: RawFd, option: libc::c_int, value: libc::c_int) {
    // SAFETY: setsockopt with a pointer to a live c_int of the size
    // passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&raw const value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt: {}", std::io::Error::last_os_error());
}

/// This process's socket bound to `local` and connected to `peer`, once
/// it exists (another thread may be about to accept it).
#[track_caller]
pub fn find_soon(local: SocketAddr, peer: SocketAddr) -> RawFd {
    let deadline = std::time::Instant::now() + super::DEADLINE;
    loop {
        let found = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
            .find(|&fd| {
                address(fd, libc::getsockname) == Some(local)
                    && address(fd, libc::getpeername) == Some(peer)
            });
        if let Some(fd) = found {
            return fd;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never accepted: {local} -> {peer}"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Sets SO_SNDBUF (the kernel doubles it, within `wmem_max`).
#[track_caller]
pub fn set_send_buffer(fd: RawFd, bytes: usize) {
    set(fd, libc::SO_SNDBUF, bytes as libc::c_int);
}

/// Sets SO_RCVBUF (the kernel doubles it, within `rmem_max`).
#[track_caller]
pub fn set_receive_buffer(fd: RawFd, bytes: usize) {
    set(fd, libc::SO_RCVBUF, bytes as libc::c_int);
}

/// SO_RCVBUF as the kernel set it.
#[track_caller]
pub fn receive_buffer(fd: RawFd) -> usize {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `value`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&raw mut value).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "getsockopt: {}", std::io::Error::last_os_error());
    value as usize
}

/// Bytes of a TCP socket's send queue not yet acknowledged by the peer.
#[track_caller]
pub fn unacknowledged(fd: RawFd) -> usize {
    try_unacknowledged(fd)
        .unwrap_or_else(|| panic!("TIOCOUTQ: {}", std::io::Error::last_os_error()))
}

/// The same, or `None` if `fd` is no longer a socket (closed).
pub fn try_unacknowledged(fd: RawFd) -> Option<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: TIOCOUTQ writes one c_int.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &raw mut n) };
    (rc == 0).then_some(n as usize)
}
