//! One API connection: read requests, answer them in order, write the
//! answers; keep-alive and pipelining, bounded like a control connection.
//!
//! Bounds: the input held is one request (head up to 16 KiB, body up to
//! 1 MiB) plus one read; answers not yet sent stop the reading past
//! [`MAX_UNSENT`](crate::service::MAX_UNSENT), as on the control port (a
//! client that never reads cannot grow the server);
//! after a refusal (413, a malformed head) the connection answers, shuts
//! down its sending side and reads and discards what the client still
//! sends, at most [`MAX_DISCARD`] bytes, so the answer is not lost to a
//! reset.

use std::io::{ErrorKind, Read};
use std::net::Shutdown;

use mio::net::TcpStream;

use super::http::{self, Answer, CONTINUE, MAX_BODY, MAX_HEAD, Parsed};
use super::registry::Registry;
use crate::service::Unsent;
use crate::turn::Turn;
/// Bytes read and discarded after a refusal, at most, before the close.
const MAX_DISCARD: usize = 4 << 20;
/// Reads per connection per turn.
const READS_PER_TURN: usize = 4;
/// Bytes read at a time.
const READ_SIZE: usize = 16 * 1024;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading requests and answering them.
    Serving,
    /// The last answer is queued: send it, then shut down and discard.
    Closing,
    /// Sent and shut down: discarding the client's bytes until its FIN.
    Discarding { left: usize },
}

/// What serving a connection came to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Waiting for the client (more bytes, or room to write).
    Open,
    /// Its budget ran out with work left: serve it next turn.
    StillReady,
    /// Done: close it.
    Done(&'static str),
}

#[derive(Debug)]
pub(crate) struct ApiConn {
    pub stream: TcpStream,
    /// Bytes read, not yet a whole request.
    input: Vec<u8>,
    /// Answers not yet written.
    pub out: Unsent,
    phase: Phase,
    /// `100 Continue` went out for the request being read.
    continued: bool,
    /// The client shut down its sending side.
    peer_eof: bool,
}

impl ApiConn {
    pub fn new(stream: TcpStream) -> ApiConn {
        ApiConn {
            stream,
            input: Vec::new(),
            out: Unsent::default(),
            phase: Phase::Serving,
            continued: false,
            peer_eof: false,
        }
    }

    /// Answers what can be answered, reads what may be read, writes.
    pub fn serve(&mut self, registry: &mut Registry, t: &mut Turn<'_>) -> Outcome {
        let mut budget = READS_PER_TURN;
        loop {
            self.answer_requests(registry, t);
            if let Err(e) = self.flush() {
                return Outcome::Done(error_text(&e));
            }
            if self.phase == Phase::Closing && self.out.is_empty() {
                let _ = self.stream.shutdown(Shutdown::Write);
                self.input = Vec::new();
                self.phase = Phase::Discarding { left: MAX_DISCARD };
            }
            if self.peer_eof {
                let answered = self.out.is_empty() && self.input.is_empty();
                if answered || matches!(self.phase, Phase::Discarding { .. }) {
                    return Outcome::Done("end of stream, every answer sent");
                }
                if self.out.is_empty() {
                    return Outcome::Done("end of stream inside a request");
                }
                return Outcome::Open; // Answers still to write.
            }
            if !self.takes_input() {
                return Outcome::Open; // Waits for its answers to drain.
            }
            if budget == 0 {
                return Outcome::StillReady;
            }
            budget -= 1;
            match self.read() {
                Ok(true) => continue,
                Ok(false) => return Outcome::Open,
                Err(why) => return Outcome::Done(why),
            }
        }
    }

    /// Whether reading may go on: answers under their bound, and in the
    /// middle of no refusal still to send.
    fn takes_input(&self) -> bool {
        match self.phase {
            Phase::Serving => !self.out.is_full(),
            Phase::Closing => false,
            Phase::Discarding { .. } => true,
        }
    }

    /// One read: `Ok(true)` read something, `Ok(false)` would block.
    fn read(&mut self) -> Result<bool, &'static str> {
        let mut buf = [0; READ_SIZE];
        let n = loop {
            match self.stream.read(&mut buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(error_text(&e)),
            }
        };
        if n == 0 {
            self.peer_eof = true;
            return Ok(true);
        }
        match &mut self.phase {
            Phase::Discarding { left } if *left <= n => return Err("discarded enough"),
            Phase::Discarding { left } => *left -= n,
            _ => self.input.extend_from_slice(&buf[..n]),
        }
        Ok(true)
    }

    /// Answers every whole request read, in order, while answers are
    /// under their bound.
    fn answer_requests(&mut self, registry: &mut Registry, t: &mut Turn<'_>) {
        while self.phase == Phase::Serving && !self.out.is_full() {
            match http::parse(&self.input) {
                Parsed::Incomplete { continue_100 } => {
                    if continue_100 && !self.continued {
                        self.out.buffer().extend_from_slice(CONTINUE);
                        self.continued = true;
                    }
                    // Held input is bounded: a head is refused past
                    // MAX_HEAD, a body past MAX_BODY.
                    debug_assert!(self.input.len() <= MAX_HEAD + MAX_BODY + READ_SIZE);
                    return;
                }
                Parsed::Request(request, used) => {
                    self.input.drain(..used);
                    if self.input.is_empty() && self.input.capacity() > 4 * READ_SIZE {
                        self.input = Vec::new(); // Idle, it holds no buffer.
                    }
                    self.continued = false;
                    let answer = super::routes::answer(&request, registry, t);
                    answer.write_to(self.out.buffer(), request.close);
                    if request.close {
                        self.phase = Phase::Closing;
                    }
                }
                Parsed::Refused(answer) => self.refuse(&answer),
            }
        }
    }

    /// Queues `answer` as the last one.
    fn refuse(&mut self, answer: &Answer) {
        answer.write_to(self.out.buffer(), true);
        self.input = Vec::new();
        self.phase = Phase::Closing;
    }

    /// Writes answers until done or `WouldBlock`.
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush(&mut self.stream)
    }
}

fn error_text(e: &std::io::Error) -> &'static str {
    match e.kind() {
        ErrorKind::ConnectionReset => "reset by the client",
        ErrorKind::BrokenPipe => "the client went away",
        _ => "socket error",
    }
}
