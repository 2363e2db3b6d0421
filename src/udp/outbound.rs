//! Datagrams for the public socket, gathered over a turn and sent together:
//! on Linux one `sendmmsg` takes up to [`GATHERED`] of them, to as many
//! clients. A relay's flows each bring back a datagram or two per turn;
//! sent as they come, each would cost a call of its own.
//!
//! Gathered datagrams are not queued: the socket has not refused them. They
//! leave when the gathering is full, when the handler that gathered them
//! returns, and at the end of the turn; what the socket then refuses goes
//! to the queue behind them, in order, under its bound (see
//! [`Udp::flush_outbound`](super::Udp)). Memory is bounded: [`GATHERED`]
//! addresses and [`GATHERED_BYTES`] (or one longer datagram).

#[cfg(test)]
use std::cell::Cell;
use std::io;
use std::net::SocketAddr;

use mio::net::UdpSocket;

/// Datagrams gathered at most: on Linux, what one `sendmmsg` takes.
pub(super) const GATHERED: usize = 64;

#[cfg(target_os = "linux")]
const _: () = assert!(
    GATHERED <= super::batch::BATCH,
    "one sendmmsg per gathering"
);

/// Bytes gathered at most before they are sent; a longer datagram is
/// gathered alone.
const GATHERED_BYTES: usize = 64 * 1024;

#[cfg(test)]
thread_local! {
    /// Tests: how many more datagrams the socket takes before it is full
    /// (`None`: as many as it will). On loopback a UDP send never blocks.
    pub(super) static TAKES: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The datagrams gathered: where each goes, and its bytes. (The
/// addresses as the kernel takes them are made on the stack as they are
/// sent: kept here, 136 bytes each, they were most of what a socket that
/// ever sent anything held, a named endpoint's too.)
pub(super) struct Outbound {
    to: Vec<SocketAddr>,
    /// Where each datagram ends in `bytes`.
    ends: Vec<usize>,
    bytes: Vec<u8>,
}

impl Outbound {
    /// Nothing gathered; nothing allocated until the first datagram.
    pub fn new() -> Outbound {
        Outbound {
            to: Vec::new(),
            ends: Vec::new(),
            bytes: Vec::new(),
        }
    }

    /// Datagrams gathered.
    pub fn len(&self) -> usize {
        self.to.len()
    }

    pub fn is_empty(&self) -> bool {
        self.to.is_empty()
    }

    /// Whether a datagram of `len` bytes must wait until those gathered
    /// have left.
    pub fn is_full_for(&self, len: usize) -> bool {
        self.to.len() >= GATHERED || (!self.is_empty() && self.bytes.len() + len > GATHERED_BYTES)
    }

    /// Gathers `datagram` for `to`; the caller has made room
    /// ([`is_full_for`](Outbound::is_full_for)).
    pub fn push(&mut self, to: SocketAddr, datagram: &[u8]) {
        if self.to.capacity() == 0 {
            self.to.reserve_exact(GATHERED);
            self.ends.reserve_exact(GATHERED);
        }
        self.to.push(to);
        self.bytes.extend_from_slice(datagram);
        self.ends.push(self.bytes.len());
    }

    /// Gathered datagram `i` and where it goes.
    pub fn get(&self, i: usize) -> (SocketAddr, &[u8]) {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        (self.to[i], &self.bytes[start..self.ends[i]])
    }

    /// Forgets every datagram gathered (sent or queued by now).
    pub fn clear(&mut self) {
        self.to.clear();
        self.ends.clear();
        self.bytes.clear();
    }

    /// Sends the gathered datagrams from `from` on, in order, with one
    /// `sendmmsg`; returns how many left, at least one.
    ///
    /// # Errors
    ///
    /// `WouldBlock` when the socket cannot take the first; any other error
    /// concerns the first only.
    ///
    /// # Panics
    ///
    /// If nothing is gathered from `from` on.
    #[cfg(target_os = "linux")]
    pub fn send(&self, socket: &UdpSocket, from: usize) -> io::Result<usize> {
        use libc::{c_uint, c_void, iovec};
        use std::mem::MaybeUninit;
        use std::os::fd::AsRawFd;
        use std::ptr;

        let count = self.to.len() - from;
        assert!((1..=GATHERED).contains(&count), "{count} datagrams to send");
        let count = socket_takes(count)?;
        // The addresses of the first `count`, as the kernel takes them,
        // made as they are sent: the work they took when they were kept,
        // and none for the slots beyond `count` (an array of 64 `Option`s
        // took 1.4 µs a call to make, even for one datagram; this, 21 ns).
        let mut names = [const { MaybeUninit::<socket2::SockAddr>::uninit() }; GATHERED];
        for (name, to) in names.iter_mut().zip(&self.to[from..from + count]) {
            name.write((*to).into());
        }
        let mut headers = super::batch::zeroed_headers();
        let mut iovs = [const {
            iovec {
                iov_base: ptr::null_mut(),
                iov_len: 0,
            }
        }; GATHERED];
        let slots = headers.iter_mut().zip(iovs.iter_mut()).zip(&names);
        for (k, ((header, iov), name)) in slots.take(count).enumerate() {
            // SAFETY: the loop above wrote the first `count` names
            // (`self.to` holds `from + count` addresses or more).
            let name = unsafe { name.assume_init_ref() };
            let (_, bytes) = self.get(from + k);
            iov.iov_base = bytes.as_ptr().cast_mut().cast::<c_void>();
            iov.iov_len = bytes.len();
            header.msg_hdr.msg_name = name.as_ptr().cast_mut().cast::<c_void>();
            header.msg_hdr.msg_namelen = name.len();
            header.msg_hdr.msg_iov = ptr::from_mut(iov);
            header.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: the first `count` headers (1 to GATHERED, asserted above)
        // are filled in: msg_name points at a socket address in `names`
        // with its length, msg_iov at one iovec of `iovs` (both on this
        // stack frame) describing a datagram in `self.bytes`; `self` is
        // borrowed for the whole call. sendmmsg only reads them (it writes
        // msg_len in the headers, which we own).
        let n = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                headers.as_mut_ptr(),
                count as c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }

    /// Sends gathered datagram `from` (one call per datagram here);
    /// returns 1.
    ///
    /// # Errors
    ///
    /// As `send_to`'s, `WouldBlock` when the socket cannot take it.
    #[cfg(not(target_os = "linux"))]
    pub fn send(&self, socket: &UdpSocket, from: usize) -> io::Result<usize> {
        socket_takes(1)?;
        let (to, bytes) = self.get(from);
        socket.send_to(bytes, to).map(|_| 1)
    }
}

/// How many of `count` datagrams to try: all of them, but in tests as
/// many as [`TAKES`] says the socket takes (none: `WouldBlock`).
#[allow(clippy::unnecessary_wraps)] // Fails in tests only.
fn socket_takes(count: usize) -> io::Result<usize> {
    #[cfg(test)]
    if let Some(takes) = TAKES.get() {
        if takes == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        TAKES.set(Some(takes - count.min(takes)));
        return Ok(count.min(takes));
    }
    Ok(count)
}
