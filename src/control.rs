//! Live control: a line protocol on a third socket, served by the same
//! loop, that changes the peer between a test's steps without a restart.
//!
//! Each command is one line and gets exactly one line back, `ok ...` or
//! `error: ...`:
//!
//! | command | effect |
//! |---|---|
//! | `fault SPEC` | add a fault ([`Fault`] syntax) |
//! | `clear` | remove every fault |
//! | `reply TEXT` | the reply text from now on |
//! | `refuse` | close the TCP listener: new clients are refused |
//! | `accept` | listen again on the same address |
//! | `stats` | `ok accepted=N rejected=N open=N messages=N ...` |
//! | `received N SECS` | answer once N messages in all have arrived, or time out |
//!
//! This module reads, frames and answers control connections; the
//! commands that act on the rest of the server (faults, reply, listener)
//! are [`Command`]s the loop carries out, the same ones a
//! [`Handle`](crate::Handle) sends. A pending `received` is a deadline on
//! the timer heap, never a wait: the loop goes on serving meanwhile, and
//! the connection's later commands wait their turn.

use std::io::{ErrorKind, Read, Write};

use log::{debug, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Token};
use slab::Slab;

use crate::fault::Fault;
use crate::framing::{LineFramer, Piece};
use crate::stats::Stats;
use crate::timer::{Due, Millis, RateLimit, at_least};
use crate::turn::{CONTROL_BASE, Ready, Turn, settle_writable};

/// Control connections open at once, at most; one more is closed at once.
pub const MAX_CONTROL_CONNECTIONS: usize = crate::turn::CONTROL_SLOTS;
/// Longest wait a `received` may ask for, in seconds (a day).
const MAX_WAIT_SECS: u64 = 86_400;
/// Reads per control connection per turn.
const READS_PER_TURN: usize = 4;

/// A change to the running server, from a control connection or a
/// [`Handle`](crate::Handle).
#[derive(Debug, Clone)]
pub(crate) enum Command {
    AddFault(Fault),
    ClearFaults,
    SetReply(Vec<u8>),
    Refuse,
    Accept,
    Stats,
}

/// As a control line says it, for the log (Display rather than Debug: a
/// probability's Debug would link float printing into the binary).
impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::AddFault(fault) => write!(f, "fault {fault}"),
            Command::ClearFaults => f.write_str("clear"),
            Command::SetReply(text) => write!(f, "reply {}", String::from_utf8_lossy(text)),
            Command::Refuse => f.write_str("refuse"),
            Command::Accept => f.write_str("accept"),
            Command::Stats => f.write_str("stats"),
        }
    }
}

/// What a control line asks for.
#[derive(Debug)]
enum Request {
    /// A command the loop carries out.
    Run(Command),
    /// Wait until `count` messages in all have arrived, for `secs` (as
    /// sent), which is `ms` milliseconds.
    Received {
        count: u64,
        secs: String,
        ms: Millis,
    },
}

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
    /// Input read while a `received` waits: its commands come after the
    /// answer. At most one read.
    held: Vec<u8>,
    /// Answers not yet written.
    out: Vec<u8>,
    wait: Option<Wait>,
    write_interest: bool,
}

/// The control listener and its connections.
pub(crate) struct Control {
    listener: Option<TcpListener>,
    /// `None` marks a connection closed this turn, freed when it ends.
    conns: Slab<Option<ControlConn>>,
    closed: Vec<usize>,
    max_line: usize,
    /// Connections with a `received` waiting.
    waiting: usize,
    refuse_log: RateLimit,
}

impl Control {
    pub fn new(listener: TcpListener, max_line: usize) -> Control {
        Control {
            listener: Some(listener),
            conns: Slab::with_capacity(MAX_CONTROL_CONNECTIONS),
            closed: Vec::new(),
            max_line,
            waiting: 0,
            refuse_log: RateLimit::default(),
        }
    }

    /// The listener is readable: accept until `WouldBlock`.
    pub fn accept(
        &mut self,
        t: &mut Turn<'_>,
        run: &mut impl FnMut(Command, &mut Turn<'_>) -> Reply,
    ) {
        while let Some(listener) = &self.listener {
            let (mut stream, peer) = match listener.accept() {
                Ok(accepted) => accepted,
                // Drained: the next connection brings a new event.
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return debug!("control: accept failed: {e}"),
            };
            if self.conns.len() >= MAX_CONTROL_CONNECTIONS {
                if self.refuse_log.allow(t.now) {
                    warn!(
                        "control: {peer} closed: {MAX_CONTROL_CONNECTIONS} control connections open"
                    );
                }
                continue; // Dropping it closes it.
            }
            let entry = self.conns.vacant_entry();
            let key = entry.key();
            let token = Token(CONTROL_BASE.0 + key);
            if let Err(e) = t.registry.register(&mut stream, token, Interest::READABLE) {
                warn!("control: cannot register {peer}: {e}");
                continue;
            }
            debug!("control {key}: accepted {peer}");
            entry.insert(Some(ControlConn {
                stream,
                framer: LineFramer::new(self.max_line),
                line: Vec::new(),
                held: Vec::new(),
                out: Vec::new(),
                wait: None,
                write_interest: false,
            }));
            self.drive(key, t, run);
        }
    }

    /// A readiness event for control connection `key` (or a turn after its
    /// budget ran out).
    pub fn drive(
        &mut self,
        key: usize,
        t: &mut Turn<'_>,
        run: &mut impl FnMut(Command, &mut Turn<'_>) -> Reply,
    ) {
        let Some(Some(conn)) = self.conns.get_mut(key) else {
            return; // Closed earlier in this batch: a stale event.
        };
        let outcome = conn.serve(key, t, run);
        self.waiting = (self.conns.iter())
            .filter(|(_, c)| c.as_ref().is_some_and(|c| c.wait.is_some()))
            .count();
        if let Err(why) = outcome {
            self.close(key, &why, t);
        }
    }

    /// Answers the `received` waits whose count arrived or whose time is
    /// up. Cheap when none waits; called at the end of every turn.
    pub fn check_waits(
        &mut self,
        t: &mut Turn<'_>,
        run: &mut impl FnMut(Command, &mut Turn<'_>) -> Reply,
    ) {
        if self.waiting == 0 {
            return;
        }
        let arrived = arrived(&t.counters.snapshot());
        let due: Vec<usize> = self
            .conns
            .iter()
            .filter_map(|(key, conn)| {
                let wait = conn.as_ref()?.wait.as_ref()?;
                (arrived >= wait.count || t.now >= wait.deadline).then_some(key)
            })
            .collect();
        for key in due {
            if let Some(Some(conn)) = self.conns.get_mut(key) {
                if let Some(wait) = conn.wait.take() {
                    conn.out
                        .extend_from_slice(answer_wait(&wait, arrived).as_bytes());
                }
            }
            // Its held commands and unread input now get their turn.
            self.drive(key, t, run);
        }
    }

    /// Closes every control connection and the listener: the server stops.
    pub fn close_all(&mut self, t: &mut Turn<'_>) {
        if let Some(mut listener) = self.listener.take() {
            let _ = t.registry.deregister(&mut listener);
        }
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.close(key, "shutting down", t);
        }
    }

    /// Frees the slots of connections closed this turn.
    pub fn end_turn(&mut self) {
        for key in self.closed.drain(..) {
            self.conns.remove(key);
        }
    }

    fn close(&mut self, key: usize, why: &str, t: &mut Turn<'_>) {
        let Some(slot) = self.conns.get_mut(key) else {
            return;
        };
        if let Some(mut conn) = slot.take() {
            debug!("control {key}: closed: {why}");
            let _ = t.registry.deregister(&mut conn.stream);
            self.closed.push(key);
        }
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

/// The result of a command the loop carried out: `Ok(text)` is answered
/// `ok` (then the text, if any), `Err(why)` is answered `error: why`.
pub(crate) type Reply = Result<String, String>;

impl ControlConn {
    /// Takes held input and reads new input, carrying out each command,
    /// until `WouldBlock`, a `received` that must wait, or the budget;
    /// then writes the answers. `Err` closes the connection.
    fn serve(
        &mut self,
        key: usize,
        t: &mut Turn<'_>,
        run: &mut impl FnMut(Command, &mut Turn<'_>) -> Reply,
    ) -> Result<(), String> {
        if self.wait.is_none() && !self.held.is_empty() {
            let held = std::mem::take(&mut self.held);
            self.take(&held, t, run)?;
        }
        let mut budget = READS_PER_TURN;
        let mut buf = [0; 4096];
        while self.wait.is_none() {
            if budget == 0 {
                t.ready.push(Ready::Control { key });
                break;
            }
            budget -= 1;
            let n = match self.stream.read(&mut buf) {
                Ok(0) => return Err("end of stream".into()),
                Ok(n) => n,
                // Drained: the next bytes bring a new event.
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.to_string()),
            };
            self.take(&buf[..n], t, run)?;
        }
        self.flush()?;
        self.settle_interest(key, t)
    }

    /// Frames `input` into command lines and answers each; input after a
    /// `received` that must wait is held for later.
    fn take(
        &mut self,
        mut input: &[u8],
        t: &mut Turn<'_>,
        run: &mut impl FnMut(Command, &mut Turn<'_>) -> Reply,
    ) -> Result<(), String> {
        while !input.is_empty() {
            if self.wait.is_some() {
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
                    self.answer(&line, t, run);
                }
            }
        }
        Ok(())
    }

    /// Carries out one command line and queues its one-line answer.
    fn answer(
        &mut self,
        line: &[u8],
        t: &mut Turn<'_>,
        run: &mut impl FnMut(Command, &mut Turn<'_>) -> Reply,
    ) {
        let answer = match parse(line) {
            Err(why) => format!("error: {why}\n"),
            Ok(Request::Run(command)) => match run(command, t) {
                Ok(text) if text.is_empty() => "ok\n".to_string(),
                Ok(text) => format!("ok {text}\n"),
                Err(why) => format!("error: {why}\n"),
            },
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
                    t.timers.arm(wait.deadline, Due::ControlWait);
                    self.wait = Some(wait);
                    return;
                }
            }
        };
        self.out.extend_from_slice(answer.as_bytes());
    }

    /// Writes answers until done or `WouldBlock`.
    fn flush(&mut self) -> Result<(), String> {
        while !self.out.is_empty() {
            match self.stream.write(&self.out) {
                Ok(0) => return Err("write returned 0".into()),
                Ok(n) => {
                    self.out.drain(..n);
                }
                // The rest waits for a writable event.
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    }

    /// `WRITABLE` interest exactly while answers are owed.
    fn settle_interest(&mut self, key: usize, t: &Turn<'_>) -> Result<(), String> {
        let token = Token(CONTROL_BASE.0 + key);
        let want = !self.out.is_empty();
        settle_writable(
            t.registry,
            &mut self.stream,
            token,
            &mut self.write_interest,
            want,
        )
        .map_err(|e| e.to_string())
    }
}

/// Parses one command line.
fn parse(line: &[u8]) -> Result<Request, String> {
    let line = std::str::from_utf8(line).map_err(|_| "a command is UTF-8 text".to_string())?;
    let (word, rest) = match line.split_once(' ') {
        Some((word, rest)) => (word, Some(rest)),
        None => (line, None),
    };
    let no_argument = |command: Command| match rest {
        None => Ok(Request::Run(command)),
        Some(_) => Err(format!("{word} takes no argument")),
    };
    match word {
        "" => Err("empty command (fault, clear, reply, refuse, accept, stats, received)".into()),
        "fault" => {
            let spec = rest.ok_or("fault needs a spec, like fault udp:drop,p=0.5")?;
            Ok(Request::Run(Command::AddFault(spec.parse()?)))
        }
        "reply" => {
            let text = rest.unwrap_or_default();
            Ok(Request::Run(Command::SetReply(text.as_bytes().to_vec())))
        }
        "clear" => no_argument(Command::ClearFaults),
        "refuse" => no_argument(Command::Refuse),
        "accept" => no_argument(Command::Accept),
        "stats" => no_argument(Command::Stats),
        "received" => {
            let usage = "received needs N SECS, like received 10 2.5";
            let (count, secs) = rest.and_then(|r| r.split_once(' ')).ok_or(usage)?;
            let count = count.parse().map_err(|_| usage.to_string())?;
            let ms = crate::fault::decimal(secs, 3).ok_or(usage)?;
            if ms > MAX_WAIT_SECS * 1000 {
                return Err(format!("received: SECS must be 0 to {MAX_WAIT_SECS}"));
            }
            let secs = secs.to_string();
            Ok(Request::Received { count, secs, ms })
        }
        _ => Err(format!(
            "unknown command '{word}' (fault, clear, reply, refuse, accept, stats, received)"
        )),
    }
}

/// The `stats` answer: `accepted=N rejected=N ...`.
pub(crate) fn stats_line(s: &Stats) -> String {
    format!(
        "accepted={} rejected={} open={} messages={} datagrams={} bytes_in={} bytes_out={} \
         dropped={} upstream_failed={} up_bytes_in={} up_bytes_out={} faults={}",
        s.accepted,
        s.rejected,
        s.open,
        s.messages,
        s.datagrams,
        s.bytes_in,
        s.bytes_out,
        s.replies_dropped,
        s.upstream_failed,
        s.up_bytes_in,
        s.up_bytes_out,
        s.faults.total()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(line: &str) -> Result<Request, String> {
        parse(line.as_bytes())
    }

    #[test]
    fn commands_parse() {
        assert!(matches!(
            command("fault udp:drop"),
            Ok(Request::Run(Command::AddFault(_)))
        ));
        assert!(matches!(
            command("clear"),
            Ok(Request::Run(Command::ClearFaults))
        ));
        assert!(matches!(
            command("refuse"),
            Ok(Request::Run(Command::Refuse))
        ));
        assert!(matches!(
            command("accept"),
            Ok(Request::Run(Command::Accept))
        ));
        assert!(matches!(command("stats"), Ok(Request::Run(Command::Stats))));
        match command("reply  two words ") {
            Ok(Request::Run(Command::SetReply(text))) => assert_eq!(text, b" two words "),
            other => panic!("{other:?}"),
        }
        match command("received 10 0.25") {
            Ok(Request::Received { count, secs, ms }) => {
                assert_eq!((count, secs.as_str(), ms), (10, "0.25", 250));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_commands_are_errors() {
        for line in [
            "",
            "frobnicate",
            "fault",
            "fault tcp:drop",
            "clear now",
            "stats please",
            "received",
            "received 10",
            "received x 1",
            "received 1 -1",
            "received 1 nan",
            "received 1 1e9",
        ] {
            let err = command(line)
                .err()
                .unwrap_or_else(|| panic!("{line:?} accepted"));
            assert!(!err.contains('\n'), "{line:?}: {err}");
        }
        assert!(parse(b"\xff").is_err(), "not UTF-8");
    }
}
