//! Batches of one, where there is no `recvmmsg` (not Linux): the same
//! interface as the Linux [`batch`](super::batch), one `recv_from` or
//! `send_to` per datagram. A batch of one is never short, so the callers
//! read on until `WouldBlock`, as mio's other selectors need.

use std::io;
use std::net::SocketAddr;
use std::ops::Range;

use mio::net::UdpSocket;

/// Datagrams per call: one.
pub(crate) const BATCH: usize = 1;

/// The last datagram received: its source, real length and payload.
pub(crate) struct Batch {
    source: Option<SocketAddr>,
    len: usize,
    /// `slot` bytes, made on first use.
    payload: Vec<u8>,
    slot: usize,
}

impl Batch {
    pub fn new(slot: usize) -> Batch {
        Batch {
            source: None,
            len: 0,
            payload: Vec::new(),
            slot: slot.max(1),
        }
    }

    /// Receives one datagram; its payload is kept all the same.
    pub fn receive(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        self.receive_payloads(socket)
    }

    /// Receives one datagram, with as much of its payload as fits.
    pub fn receive_payloads(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        if self.payload.is_empty() {
            self.payload = vec![0; self.slot];
        }
        let (len, from) = socket.recv_from(&mut self.payload)?;
        self.len = len;
        self.source = Some(from);
        Ok(1)
    }

    /// How many datagrams a receive asks for: one.
    pub fn payload_slots(&self) -> usize {
        1
    }

    pub fn len(&self, _: usize) -> usize {
        self.len
    }

    pub fn source(&self, _: usize) -> Option<SocketAddr> {
        self.source
    }

    pub fn payload(&self, _: usize) -> &[u8] {
        &self.payload[..self.len.min(self.slot)]
    }

    /// Sends `reply` to the datagram's source; returns 1.
    pub fn send(&mut self, socket: &UdpSocket, reply: &[u8], _: Range<usize>) -> io::Result<usize> {
        let to = self.source.ok_or_else(|| io::Error::other("no source"))?;
        socket.send_to(reply, to).map(|_| 1)
    }
}
