//! Live control: a line protocol on a third socket, served by the same
//! loop, that changes the peer between a test's steps without a restart.
//!
//! Each command is one line and gets exactly one line back, `ok ...` or
//! `error: ...`:
//!
//! | command | effect |
//! |---|---|
//! | `fault SPEC` | add a fault ([`Fault`](crate::Fault) syntax) |
//! | `clear` | remove every fault |
//! | `reply TEXT` | the reply text from now on |
//! | `refuse` | close the TCP listener: new clients are refused |
//! | `accept` | listen again on the same address |
//! | `stats` | `ok accepted=N rejected=N open=N messages=N ...` |
//! | `received N SECS` | answer once N messages in all have arrived, or time out |
//! | `endpoints` | `ok N`, then one line per named endpoint (SPEC 14) |
//! | `@NAME COMMAND` | `fault`, `clear`, `stats`, `refuse` or `accept` on endpoint `NAME` |
//!
//! This module reads, frames and answers control connections; parsing a
//! line and carrying out its command belong to [`crate::command`],
//! the same code a [`Handle`](crate::Handle)'s calls go through. A pending
//! `received` is a deadline on the timer heap, never a wait: the loop goes
//! on serving meanwhile, and the connection's later commands wait their
//! turn.

use std::io::{ErrorKind, Read};
use std::net::SocketAddr;

use mio::Registry;
use mio::net::{TcpListener, TcpStream};

use crate::bind::bind_tcp;
use crate::command::{self, Request, Target};
use crate::config::Config;
use crate::error::Error;
use crate::framing::{LineFramer, Piece};
use crate::handle::Changes;
use crate::service::{Connection, Service, Unsent};
use crate::stats::Stats;
use crate::timer::{Due, Entry, Millis, at_least};
use crate::turn::{CONTROL_BASE, CONTROL_LISTENER, Ready, Turn};

/// Control connections open at once, at most; one more is closed at once.
pub const MAX_CONTROL_CONNECTIONS: usize = crate::turn::CONTROL_SLOTS;
/// Reads per control connection per turn.
const READS_PER_TURN: usize = 4;
/// Bytes a control connection reads at a time.
const READ_SIZE: usize = 4096;

/// A `received` waiting for its count.
#[derive(Debug)]
struct Wait {
    count: u64,
    /// The wait as the command gave it, for the answer.
    secs: String,
    deadline: Millis,
}

/// One control connection.
#[derive(Debug)]
struct ControlConn {
    stream: TcpStream,
    framer: LineFramer,
    /// The command line so far; bounded by `--max-line`.
    line: Vec<u8>,
    /// Input read while commands must wait (a `received` waits, or too
    /// many answers are unsent): its commands come later, in order. At
    /// most one read.
    held: Vec<u8>,
    /// Answers not yet written; past their bound commands wait, and the
    /// connection is not read: a client that sends without reading
    /// cannot grow the server (SPEC 9).
    out: Unsent,
    wait: Option<Wait>,
    /// The client shut down its sending side: once every command read is
    /// answered and sent, the connection closes.
    peer_eof: bool,
}

impl Connection for ControlConn {
    fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }
}

/// The control socket `config` asks for (`--control`), bound, and its
/// address; `(None, None)` for none.
///
/// # Errors
///
/// [`Error::Bind`] when the address cannot be bound.
pub(crate) fn from_config(
    registry: &Registry,
    config: &Config,
) -> Result<(Option<Control>, Option<SocketAddr>), Error> {
    let Some(addr) = config.control else {
        return Ok((None, None));
    };
    // Never shared: each process has its own control socket.
    let (listener, bound) = bind_tcp(registry, addr, false, CONTROL_LISTENER, "control")?;
    Ok((Some(Control::new(listener, config.max_line)), Some(bound)))
}

/// Carries out the changes other threads asked for through a
/// [`Handle`](crate::Handle), in order, and sends each its reply.
pub(crate) fn apply_changes(changes: &Changes, target: &mut impl Target, t: &mut Turn<'_>) {
    for (command, reply_to) in changes.take() {
        let reply = command::execute(command, target, t);
        let _ = reply_to.send(reply);
    }
}

/// The control listener and its connections.
pub(crate) struct Control {
    service: Service<ControlConn>,
    max_line: usize,
    /// Connections with a `received` waiting.
    waiting: usize,
}

impl Control {
    pub fn new(listener: TcpListener, max_line: usize) -> Control {
        let max = MAX_CONTROL_CONNECTIONS;
        let tokens = (CONTROL_BASE, max, max);
        Control {
            service: Service::new("control", listener, tokens, Due::ControlAcceptRetry),
            max_line,
            waiting: 0,
        }
    }

    /// The listener is readable: accept until `WouldBlock`.
    pub fn accept(&mut self, t: &mut Turn<'_>, target: &mut impl Target) {
        let max_line = self.max_line;
        let conn = |stream| ControlConn {
            stream,
            framer: LineFramer::new(max_line),
            line: Vec::new(),
            held: Vec::new(),
            out: Unsent::default(),
            wait: None,
            peer_eof: false,
        };
        while let Some(key) = self.service.accept_next(t, &conn) {
            self.drive(key, t, target);
        }
    }

    /// A readiness event for control connection `key` (or a turn after its
    /// budget ran out).
    pub fn drive(&mut self, key: usize, t: &mut Turn<'_>, target: &mut impl Target) {
        let conns = &mut self.service.conns;
        let token = conns.token(key);
        let Some(conn) = conns.get_mut(key) else {
            return; // Closed earlier in this batch: a stale event.
        };
        let waited = conn.wait.is_some();
        let outcome = conn.serve(key, t, target).and_then(|()| {
            (conn.out.settle(t.registry, &mut conn.stream, token)).map_err(|e| e.to_string())
        });
        if let (false, Some(wait)) = (waited, &conn.wait) {
            // A `received` began to wait: its one timer entry.
            let due = Due::ControlWait { key: key as u32 };
            t.timers.arm(wait.deadline, due);
        }
        let done = conn.is_done();
        self.waiting = conns.iter().filter(|(_, c)| c.wait.is_some()).count();
        match outcome {
            Err(why) => self.service.close(key, &why, t),
            Ok(()) if done => self
                .service
                .close(key, "end of stream, every answer sent", t),
            Ok(()) => {}
        }
    }

    /// Answers the `received` waits whose count arrived or whose time is
    /// up. Cheap when none waits; called at the end of every turn.
    pub fn check_waits(&mut self, t: &mut Turn<'_>, target: &mut impl Target) {
        if self.waiting == 0 {
            return;
        }
        let arrived = arrived(&t.counters.snapshot());
        let due: Vec<usize> = (self.service.conns.iter())
            .filter_map(|(key, conn)| {
                let wait = conn.wait.as_ref()?;
                (arrived >= wait.count || t.now >= wait.deadline).then_some(key)
            })
            .collect();
        for key in due {
            if let Some(conn) = self.service.conns.get_mut(key) {
                if let Some(wait) = conn.wait.take() {
                    let answer = answer_wait(&wait, arrived);
                    conn.out.buffer().extend_from_slice(answer.as_bytes());
                }
            }
            // Its held commands and unread input now get their turn.
            self.drive(key, t, target);
        }
    }

    /// The accept-retry entry due `at` came due.
    pub fn on_accept_retry(&mut self, at: Millis, t: &mut Turn<'_>, target: &mut impl Target) {
        if self.service.is_current_pause(at) {
            self.accept(t, target);
        }
    }

    /// How many timer entries of control can be current at once: one per
    /// waiting `received`, and the listener's pause.
    pub fn timers_current(&self) -> usize {
        self.waiting + 1
    }

    /// Whether a control timer entry is the one its owner armed last (see
    /// [`Timers::sweep`](crate::timer::Timers::sweep)).
    pub fn is_current(&self, entry: &Entry) -> bool {
        match entry.due {
            Due::ControlWait { key } => (self.service.conns.get(key as usize))
                .and_then(|conn| conn.wait.as_ref())
                .is_some_and(|wait| wait.deadline == entry.at),
            Due::ControlAcceptRetry => self.service.is_current_pause(entry.at),
            _ => false,
        }
    }

    /// Closes every control connection and the listener: the server stops.
    pub fn close_all(&mut self, t: &mut Turn<'_>) {
        self.service.close_all(t);
    }

    /// Frees the keys of connections closed this turn.
    pub fn end_turn(&mut self) {
        self.service.end_turn();
    }
}

/// Messages that count for `received`: TCP messages and datagrams.
fn arrived(stats: &Stats) -> u64 {
    stats.messages + stats.datagrams
}

fn answer_wait(wait: &Wait, arrived: u64) -> String {
    if arrived >= wait.count {
        format!("ok {}\n", wait.count)
    } else {
        format!("error: timeout after {} s with {arrived}\n", wait.secs)
    }
}

/// Why a control connection stopped reading for now.
enum Reads {
    /// `WouldBlock`, or the end of stream: an event or nothing will come.
    Drained,
    /// The budget ran out with input perhaps left: serve it next turn.
    OutOfBudget,
    /// Commands must wait (a `received`, or unsent answers at the bound).
    Waiting,
}

impl ControlConn {
    /// Whether the next command may be carried out now: no `received`
    /// waits, and the unsent answers are under their bound.
    fn takes_commands(&self) -> bool {
        self.wait.is_none() && !self.out.is_full()
    }

    /// The client will send nothing more, and every command it sent is
    /// answered and the answer sent.
    fn is_done(&self) -> bool {
        self.peer_eof && self.wait.is_none() && self.held.is_empty() && self.out.is_empty()
    }

    /// Carries out held input and reads new input, command by command,
    /// then writes the answers; goes on while writing them lets commands
    /// go on (nothing else would report the input left). `Err` closes the
    /// connection.
    fn serve(
        &mut self,
        key: usize,
        t: &mut Turn<'_>,
        target: &mut impl Target,
    ) -> Result<(), String> {
        let mut budget = READS_PER_TURN;
        loop {
            if self.takes_commands() && !self.held.is_empty() {
                let held = std::mem::take(&mut self.held);
                self.take(&held, t, target)?;
            }
            let reads = self.read_commands(&mut budget, t, target)?;
            self.flush()?;
            match reads {
                Reads::Waiting if self.takes_commands() => continue,
                Reads::OutOfBudget => t.ready.push(Ready::Control { key }),
                Reads::Waiting | Reads::Drained => {}
            }
            return Ok(());
        }
    }

    /// Reads and carries out commands while they may go on, until
    /// `WouldBlock`, the end of stream or the end of `budget`.
    fn read_commands(
        &mut self,
        budget: &mut usize,
        t: &mut Turn<'_>,
        target: &mut impl Target,
    ) -> Result<Reads, String> {
        let mut buf = [0; READ_SIZE];
        loop {
            if self.peer_eof {
                return Ok(Reads::Drained);
            }
            if !self.takes_commands() || !self.held.is_empty() {
                return Ok(Reads::Waiting);
            }
            if *budget == 0 {
                return Ok(Reads::OutOfBudget);
            }
            *budget -= 1;
            match self.stream.read(&mut buf) {
                Ok(0) => self.on_eof(t, target)?,
                Ok(n) => self.take(&buf[..n], t, target)?,
                // Drained: the next bytes bring a new event.
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(Reads::Drained),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// The client shut down its sending side. A last line without `\n`
    /// is still a command, as on data connections; nothing is held then,
    /// since input is read only while commands go on.
    fn on_eof(&mut self, t: &mut Turn<'_>, target: &mut impl Target) -> Result<(), String> {
        self.peer_eof = true;
        match self.framer.finish() {
            Ok(Some(_)) => {
                let line = std::mem::take(&mut self.line);
                self.answer(&line, t, target);
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(_) => Err("line over --max-line".into()),
        }
    }

    /// Frames `input` into command lines and answers each; once commands
    /// must wait, the rest is held for later.
    fn take(
        &mut self,
        mut input: &[u8],
        t: &mut Turn<'_>,
        target: &mut impl Target,
    ) -> Result<(), String> {
        while !input.is_empty() {
            if !self.takes_commands() {
                self.held.extend_from_slice(input);
                return Ok(());
            }
            let (used, piece) = self.framer.next(input);
            input = &input[used..];
            match piece {
                Piece::Partial(bytes) => self.line.extend_from_slice(bytes),
                Piece::TooLong => return Err("line over --max-line".into()),
                Piece::Line(end) => {
                    if end.carried_cr {
                        self.line.pop();
                    }
                    self.line.extend_from_slice(end.tail);
                    let line = std::mem::take(&mut self.line);
                    self.answer(&line, t, target);
                }
            }
        }
        Ok(())
    }

    /// Carries out one command line and queues its one-line answer.
    fn answer(&mut self, line: &[u8], t: &mut Turn<'_>, target: &mut impl Target) {
        let answer = match command::parse(line) {
            Err(why) => command::answer_line(&Err(why)),
            Ok(Request::Run(order)) => command::answer_line(&command::execute(order, target, t)),
            Ok(Request::Received { count, secs, ms }) => {
                let wait = Wait {
                    count,
                    secs,
                    deadline: at_least(t.now, ms),
                };
                let arrived = arrived(&t.counters.snapshot());
                if arrived >= count {
                    answer_wait(&wait, arrived)
                } else {
                    self.wait = Some(wait);
                    return;
                }
            }
        };
        self.out.buffer().extend_from_slice(answer.as_bytes());
    }

    /// Writes answers until done or `WouldBlock`.
    fn flush(&mut self) -> Result<(), String> {
        self.out.flush(&mut self.stream).map_err(|e| e.to_string())
    }
}
