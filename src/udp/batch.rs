//! Many datagrams per system call: `recvmmsg` and `sendmmsg` (Linux).
//!
//! With the fixed reply, every datagram gets the same bytes back and its
//! payload is never looked at. So one `recvmmsg` takes up to [`BATCH`]
//! datagrams without copying their payloads at all (no buffers: only each
//! source address and, through `MSG_TRUNC`, each datagram's real length),
//! and one `sendmmsg` sends the reply to all of their sources. Per datagram
//! that is one system call less than `recv_from` plus `send_to`, and the
//! system call is most of what a datagram costs the server.
//!
//! When the payloads matter (a relay, a responder, a fault judging each
//! datagram), [`Batch::receive_payloads`] takes them too, each into a slot
//! of its own: up to [`BATCH`] slots of `--read-buffer` bytes, 2 MiB at
//! most in all, made on first use and touched only as far as datagrams
//! reach (a datagram longer than its
//! slot keeps its start, as a read into the read buffer would).
//!
//! The loop has one batch, as it has one read buffer: the turn lends it
//! (`Turn::batch`) to every UDP socket and relayed flow, the main
//! sockets' and every named endpoint's, one at a time, and each works
//! through what it read before the next reads. So 256 UDP endpoints cost
//! one set of headers and slots, not 256 (issue 21). This module uses
//! nothing of the crate: the turn, below the handlers, can name it.
//!
//! A batch shorter than asked for means the socket was drained during the
//! call (or an error stopped it: an error found at the start fails the
//! call itself; one that arrives during it also wakes the poll again), so
//! the caller need not make one more call to see `WouldBlock`: on Linux
//! mio's poll is epoll, edge-triggered, and a datagram arriving after the
//! queue emptied brings a new event.
//!
//! This is most of the crate's `unsafe` code: the two calls take arrays of C
//! structures full of raw pointers. Each block says why its pointers are
//! valid. Elsewhere `udp/portable.rs` stands in, with batches of one.

use std::io;
use std::mem::size_of;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::ptr;

use libc::{
    c_uint, c_void, iovec, mmsghdr, sockaddr_in, sockaddr_in6, sockaddr_storage, socklen_t,
};

/// Datagrams per `recvmmsg`/`sendmmsg` call, as many as the C reference
/// takes: near a server's saturation, batches of 32 come full and cost a
/// call more than they would in one of 64.
/// [`DATAGRAMS_PER_TURN`](super::DATAGRAMS_PER_TURN) is a multiple of it.
pub(crate) const BATCH: usize = 64;

/// Payload slots take this many bytes at most, all together: as many
/// slots of `--read-buffer` bytes as fit, [`BATCH`] at most, one at least
/// (2 MiB: 32 slots of the default 64 KiB).
const PAYLOAD_BYTES: usize = 2 << 20;

/// The addresses and lengths of a batch, and the headers the system
/// calls read: about 18 KiB, made once for the loop. The headers are kept from call to
/// call, zeroed once: a call sets only the fields it uses, in the headers
/// it hands over. Zeroing 64 headers on every call cost more than the
/// datagrams of a short batch (about 370 instructions a datagram at 32
/// sockets, callgrind).
struct Headers {
    sources: [sockaddr_storage; BATCH],
    source_lens: [socklen_t; BATCH],
    lens: [u32; BATCH],
    /// `recvmmsg`'s headers: each `msg_name` points at its `sources`
    /// element; with payloads each `msg_iov` at its `slots` element.
    received: [mmsghdr; BATCH],
    slots: [iovec; BATCH],
    /// Whether `received` points at payload slots now.
    with_payloads: bool,
    /// `sendmmsg`'s headers, and the one reply they all send.
    replies: [mmsghdr; BATCH],
    reply: iovec,
}

// SAFETY: the headers' pointers point into this box and into the batch's
// own payload slots, which go wherever the batch goes, and into a reply
// the caller lends for one call; the kernel reads them only during a call
// that borrows the batch mutably. A batch moved to another thread shares
// nothing with this one. (The server is `Send`: a host may run it on a
// thread of its own.)
unsafe impl Send for Headers {}

/// Where the datagrams of the last receive came from (where their replies
/// go), how long they were, and, when asked for, what they held.
pub(crate) struct Batch {
    headers: Box<Headers>,
    /// `slots` slots of `slot` bytes; empty until payloads are first kept.
    payloads: Vec<u8>,
    slot: usize,
    slots: usize,
}

impl Batch {
    /// A batch whose payload slots, once made, hold `slot` bytes each.
    pub fn new(slot: usize) -> Batch {
        // SAFETY: these are plain C structures and integers, for which
        // all zero bytes is a valid value (family AF_UNSPEC, length 0,
        // null pointers).
        let mut headers: Box<Headers> = Box::new(unsafe { std::mem::zeroed() });
        let h = &mut *headers;
        // In the box, the sources stay where they are for good.
        for (header, source) in h.received.iter_mut().zip(h.sources.iter_mut()) {
            header.msg_hdr.msg_name = ptr::from_mut(source).cast::<c_void>();
        }
        Batch {
            headers,
            payloads: Vec::new(),
            slot: slot.max(1),
            slots: (PAYLOAD_BYTES / slot.max(1)).clamp(1, BATCH),
        }
    }

    /// How many datagrams [`receive_payloads`](Batch::receive_payloads)
    /// asks for: fewer is a short batch.
    pub fn payload_slots(&self) -> usize {
        self.slots
    }

    /// Receives up to [`BATCH`] datagrams; returns how many. Their payloads
    /// are discarded by the kernel; [`len`](Batch::len) and
    /// [`source`](Batch::source) tell what arrived.
    ///
    /// # Errors
    ///
    /// `WouldBlock` when no datagram is waiting, as for `recv_from`.
    pub fn receive(&mut self, socket: &impl AsRawFd) -> io::Result<usize> {
        self.receive_into(socket, false)
    }

    /// Receives up to [`payload_slots`](Batch::payload_slots) datagrams
    /// with their payloads, each in a slot of its own
    /// ([`payload`](Batch::payload)); returns how many.
    ///
    /// # Errors
    ///
    /// As for [`receive`](Batch::receive).
    pub fn receive_payloads(&mut self, socket: &impl AsRawFd) -> io::Result<usize> {
        if self.payloads.is_empty() {
            // Zeroed memory from the system comes as pages mapped on first
            // touch: only what datagrams reach becomes resident.
            self.payloads = vec![0; self.slots * self.slot];
        }
        self.receive_into(socket, true)
    }

    fn receive_into(&mut self, socket: &impl AsRawFd, payloads: bool) -> io::Result<usize> {
        #[cfg(test)]
        RECEIVES.set(RECEIVES.get() + 1);
        let asked = if payloads { self.slots } else { BATCH };
        let h = &mut *self.headers;
        if h.with_payloads != payloads {
            h.with_payloads = payloads;
            let slots = self.payloads.chunks_exact_mut(self.slot);
            let pointed = h.received.iter_mut().zip(h.slots.iter_mut());
            for (i, (header, iov)) in pointed.enumerate() {
                // Without payloads, msg_iov is null with msg_iovlen 0: no
                // payload is copied. Either way MSG_TRUNC makes msg_len
                // the datagram's real length.
                (header.msg_hdr.msg_iov, header.msg_hdr.msg_iovlen) = (ptr::null_mut(), 0);
                if payloads && i < self.slots {
                    header.msg_hdr.msg_iov = ptr::from_mut(iov);
                    header.msg_hdr.msg_iovlen = 1;
                }
            }
            for (iov, slot) in h.slots.iter_mut().zip(slots) {
                iov.iov_base = slot.as_mut_ptr().cast::<c_void>();
                iov.iov_len = slot.len();
            }
        }
        // The one field the kernel changed: each address's length.
        for header in &mut h.received[..asked] {
            header.msg_hdr.msg_namelen = size_of::<sockaddr_storage>() as socklen_t;
        }
        // SAFETY: `h.received` holds BATCH valid mmsghdr values, of which
        // the kernel reads the first `asked` (BATCH, or `self.slots`, at
        // most BATCH). Each msg_name points at its element of `h.sources`
        // (set when the box was made; the box has not moved its contents
        // since), exactly msg_namelen bytes. With payloads, each of the
        // first `self.slots` msg_iov points at its iovec in `h.slots`,
        // which describes one distinct `slot`-byte slot of
        // `self.payloads` (made before the first call with payloads, never
        // reallocated after); without, there are none. All of it is
        // borrowed mutably for the whole call. The kernel writes nothing
        // else (no control buffer, no timeout).
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                h.received.as_mut_ptr(),
                asked as c_uint,
                libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                ptr::null_mut(),
            )
        };
        let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
        for (i, header) in h.received.iter().enumerate().take(n) {
            h.lens[i] = header.msg_len;
            h.source_lens[i] = header.msg_hdr.msg_namelen;
        }
        Ok(n)
    }

    /// The length of received datagram `i`: its real length, which may be
    /// more than its payload slot holds.
    pub fn len(&self, i: usize) -> usize {
        self.headers.lens[i] as usize
    }

    /// The source of received datagram `i`, if it is an IP address.
    pub fn source(&self, i: usize) -> Option<SocketAddr> {
        socket_addr(&self.headers.sources[i], self.headers.source_lens[i])
    }

    /// The payload of datagram `i` of the last
    /// [`receive_payloads`](Batch::receive_payloads): as much of it as its
    /// slot holds.
    pub fn payload(&self, i: usize) -> &[u8] {
        let start = i * self.slot;
        &self.payloads[start..start + self.len(i).min(self.slot)]
    }

    /// Sends `reply` to the sources of the received datagrams in `range`,
    /// in order; returns how many were sent, at least one.
    ///
    /// # Errors
    ///
    /// `WouldBlock` when the socket cannot take the first one; any other
    /// error concerns the first datagram only.
    ///
    /// # Panics
    ///
    /// If `range` is empty or reaches past [`BATCH`]: the kernel is told
    /// how many headers to read, so it must never be more than were filled.
    pub fn send(
        &mut self,
        socket: &impl AsRawFd,
        reply: &[u8],
        range: Range<usize>,
    ) -> io::Result<usize> {
        assert!(
            !range.is_empty() && range.end <= BATCH,
            "send range {range:?} outside 0..{BATCH}"
        );
        let h = &mut *self.headers;
        h.reply = iovec {
            iov_base: reply.as_ptr().cast_mut().cast::<c_void>(),
            iov_len: reply.len(),
        };
        let count = range.len();
        for (header, i) in h.replies.iter_mut().zip(range) {
            header.msg_hdr.msg_name = ptr::from_mut(&mut h.sources[i]).cast::<c_void>();
            header.msg_hdr.msg_namelen = h.source_lens[i];
            header.msg_hdr.msg_iov = ptr::from_mut(&mut h.reply);
            header.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: the first `count` headers of `h.replies` (1 to BATCH,
        // asserted above) are filled in: msg_name points at an address the
        // kernel itself wrote, with its length; msg_iov points at
        // `h.reply`, which describes `reply`, borrowed for the whole call;
        // their other fields are zero from the start (no control data).
        // sendmmsg only reads them (it writes msg_len in the headers,
        // which we own).
        let n = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                h.replies.as_mut_ptr(),
                count as c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }
}

#[cfg(test)]
thread_local! {
    /// Tests: `recvmmsg` calls made on this thread so far.
    pub(super) static RECEIVES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

pub(super) fn zeroed_headers() -> [mmsghdr; BATCH] {
    // SAFETY: mmsghdr is a plain C structure; all zero bytes is a valid
    // value (null pointers, zero lengths).
    unsafe { std::mem::zeroed() }
}

/// Reads an IPv4 or IPv6 address the kernel wrote into `storage`.
fn socket_addr(storage: &sockaddr_storage, len: socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET if len >= size_of::<sockaddr_in>() => {
            // SAFETY: the family says `storage` holds a sockaddr_in, and
            // sockaddr_storage is large and aligned enough for every
            // address type (that is what it is for).
            let a = unsafe { &*ptr::from_ref(storage).cast::<sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddrV4::new(ip, u16::from_be(a.sin_port)).into())
        }
        libc::AF_INET6 if len >= size_of::<sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { &*ptr::from_ref(storage).cast::<sockaddr_in6>() };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            let port = u16::from_be(a.sin6_port);
            Some(SocketAddrV6::new(ip, port, a.sin6_flowinfo, a.sin6_scope_id).into())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn a_batch_receives_lengths_and_sources_and_answers_each() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server.set_nonblocking(true).unwrap();
        let clients: Vec<UdpSocket> = (0..3)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        let sizes = [0, 5, 65_507];
        for (client, &size) in clients.iter().zip(&sizes) {
            client
                .send_to(&vec![7; size], server.local_addr().unwrap())
                .unwrap();
        }
        let mut batch = Batch::new(65_536);
        // On loopback, `send_to` puts the datagram on the receiving
        // socket's queue before it returns: all three are waiting now.
        let n = batch.receive(&server).unwrap();
        assert_eq!(n, 3);
        for (i, client) in clients.iter().enumerate() {
            assert_eq!(batch.len(i), sizes[i]);
            assert_eq!(batch.source(i), Some(client.local_addr().unwrap()));
        }
        let err = batch.receive(&server).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(batch.send(&server, b"Received", 0..3).unwrap(), 3);
        for client in &clients {
            let mut buf = [0; 16];
            client
                .set_read_timeout(Some(std::time::Duration::from_secs(10)))
                .unwrap();
            let n = client.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"Received");
        }
    }

    #[test]
    fn a_batch_with_payloads_keeps_each_in_its_slot_and_a_long_one_s_start() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server.set_nonblocking(true).unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = server.local_addr().unwrap();
        for datagram in [&b"one"[..], b"", b"three", b"a longer one"] {
            client.send_to(datagram, to).unwrap();
        }
        let mut batch = Batch::new(8);
        assert_eq!(batch.receive_payloads(&server).unwrap(), 4, "a short batch");
        let payloads: Vec<&[u8]> = (0..4).map(|i| batch.payload(i)).collect();
        assert_eq!(payloads, [&b"one"[..], b"", b"three", b"a longer"]);
        assert_eq!(batch.len(3), 12, "the real length");
        assert_eq!(batch.source(2), Some(client.local_addr().unwrap()));
        let err = batch.receive_payloads(&server).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    }

    /// The headers are kept from call to call: a batch that switches
    /// between payloads and none (faults added and removed at run time)
    /// reads each datagram as a fresh batch would.
    #[test]
    fn a_batch_switches_between_payloads_and_none_and_back() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server.set_nonblocking(true).unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = server.local_addr().unwrap();
        let mut batch = Batch::new(8);
        for round in 0..3 {
            let datagrams = [&b"one"[..], b"", b"a longer one"];
            for datagram in datagrams {
                client.send_to(datagram, to).unwrap();
            }
            let with_payloads = round == 1;
            let n = match with_payloads {
                true => batch.receive_payloads(&server).unwrap(),
                false => batch.receive(&server).unwrap(),
            };
            assert_eq!(n, 3, "round {round}");
            for (i, datagram) in datagrams.iter().enumerate() {
                assert_eq!(batch.len(i), datagram.len(), "round {round}");
                assert_eq!(batch.source(i), Some(client.local_addr().unwrap()));
            }
            if with_payloads {
                assert_eq!(batch.payload(2), b"a longer");
            }
            assert_eq!(batch.send(&server, b"ok", 0..3).unwrap(), 3);
            for _ in 0..3 {
                let mut buf = [0; 4];
                client
                    .set_read_timeout(Some(std::time::Duration::from_secs(10)))
                    .unwrap();
                assert_eq!(client.recv(&mut buf).unwrap(), 2);
            }
        }
    }
}
