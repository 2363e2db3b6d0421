//! The journal: one JSON object a line for every message, reply, greeting,
//! push and relayed chunk, so a test in any language can read back what
//! its client sent and what it got.
//!
//! ```text
//! {"t_ms":12,"proto":"tcp","conn":3,"msg":0,"dir":"in","len":14,"text":"Hello, Server\n","peer":"127.0.0.1:50312"}
//! ```
//!
//! The loop hands each [`JournalEvent`] to a [`Journal`], which encodes it
//! into a buffer (and to the library user's callback, if any); the buffer
//! is written once a turn. A write that fails is counted and logged once,
//! the journal stops, and serving goes on. Without a journal nothing here
//! runs: the loop holds an `Option` and tests it once per event.

#[cfg(test)]
pub(crate) mod recording;
mod sink;

pub(crate) use sink::open;

use std::fmt;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::PathBuf;

use base64::display::Base64Display;
use log::warn;
use serde::{Serialize, Serializer};

use crate::fault::KINDS;
use crate::vocab::Protocol;

/// Where a journal is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JournalTarget {
    /// Appended to this file, created if need be (`--journal FILE`).
    File(PathBuf),
    /// Standard output, after the address lines (`--journal -`).
    Stdout,
}

impl fmt::Display for JournalTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JournalTarget::File(path) => write!(f, "{}", path.display()),
            JournalTarget::Stdout => f.write_str("-"),
        }
    }
}

/// Which way the bytes of a journal line went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum JournalDirection {
    /// From a client.
    In,
    /// To a client: a reply, a greeting, a push.
    Out,
    /// On a relay, from the client towards the upstream.
    Up,
    /// On a relay, from the upstream towards the client.
    Down,
}

impl JournalDirection {
    /// Its name in the journal: `in`, `out`, `up`, `down`.
    pub fn name(self) -> &'static str {
        match self {
            JournalDirection::In => "in",
            JournalDirection::Out => "out",
            JournalDirection::Up => "up",
            JournalDirection::Down => "down",
        }
    }
}

/// Fault kinds applied to a message, by [`FaultKind`](crate::FaultKind)
/// order; a journal's `out` line lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct AppliedFaults(u16);

// One bit per fault kind.
const _: () = assert!(KINDS <= 16);

impl AppliedFaults {
    /// The kinds a verdict applied (its counts by kind).
    pub(crate) fn of(applied: &[u32; KINDS]) -> AppliedFaults {
        let bits = (applied.iter().enumerate())
            .filter(|(_, n)| **n > 0)
            .fold(0, |bits, (kind, _)| bits | 1 << kind);
        AppliedFaults(bits)
    }

    /// None applied.
    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    /// The names of the kinds applied, in [`FaultKind`](crate::FaultKind)
    /// order (`delay`, `truncate`, ...).
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        let names = crate::FaultCounts::default()
            .by_kind()
            .map(|(name, _)| name);
        (names.into_iter().enumerate())
            .filter(|(kind, _)| self.0 & 1 << kind != 0)
            .map(|(_, name)| name)
    }
}

/// One journal line: bytes that crossed the wire, and where.
#[derive(Debug, Clone, Copy)]
pub struct JournalEvent<'a> {
    /// Milliseconds since the server started; never decreasing.
    pub t_ms: u64,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// The named endpoint (SPEC 14) whose connection the line is of;
    /// `None` on the main sockets.
    pub endpoint: Option<&'a str>,
    /// TCP: the connection's accept ordinal (from 1). UDP: `None`.
    pub conn: Option<u64>,
    /// TCP: the message's ordinal on its connection (from 1; a greeting
    /// or a push is 0). UDP: the datagram's ordinal (from 1). On a relay,
    /// the ordinal in its direction: of the write (stream mode), the
    /// line (line mode) or the datagram.
    pub msg: u64,
    /// Which way the bytes went.
    pub dir: JournalDirection,
    /// The bytes as they crossed the wire, terminator included.
    pub bytes: &'a [u8],
    /// The client: on a connection's first line and on every UDP line.
    pub peer: Option<SocketAddr>,
    /// Faults applied to the message, on its `out` line (on a relay, its
    /// `up` or `down` line).
    pub faults: AppliedFaults,
}

impl JournalEvent<'_> {
    /// Appends the event as one line of JSON, `\n` included.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        // Writing to a Vec cannot fail, nor can any field's serializing.
        let _ = serde_json::to_writer(&mut *out, &Line::of(self));
        out.push(b'\n');
    }
}

/// A journal line's fields, in the order they are written; the optional
/// ones are left out when absent. `serde_json` escapes the strings (RFC
/// 8259); bytes that are not UTF-8 go as `b64` (RFC 4648, padded), encoded
/// straight into the line.
#[derive(Serialize)]
struct Line<'a> {
    t_ms: u64,
    proto: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoint: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    conn: Option<u64>,
    msg: u64,
    dir: &'static str,
    len: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(serialize_with = "base64")]
    b64: Option<&'a [u8]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    peer: Option<SocketAddr>,
    #[serde(skip_serializing_if = "AppliedFaults::is_empty")]
    #[serde(serialize_with = "fault_names")]
    fault: AppliedFaults,
}

impl<'a> Line<'a> {
    fn of(event: &JournalEvent<'a>) -> Line<'a> {
        let text = std::str::from_utf8(event.bytes).ok();
        Line {
            t_ms: event.t_ms,
            proto: event.protocol.name(),
            endpoint: event.endpoint,
            conn: event.conn,
            msg: event.msg,
            dir: event.dir.name(),
            len: event.bytes.len(),
            text,
            b64: text.is_none().then_some(event.bytes),
            peer: event.peer,
            fault: event.faults,
        }
    }
}

fn base64<S: Serializer>(bytes: &Option<&[u8]>, s: S) -> Result<S::Ok, S::Error> {
    let engine = &base64::engine::general_purpose::STANDARD;
    s.collect_str(&Base64Display::new(bytes.unwrap_or_default(), engine))
}

fn fault_names<S: Serializer>(faults: &AppliedFaults, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(faults.names())
}

/// Journal bytes waiting for the next turn's write, at most. A journal
/// that cannot keep up (a slow pipe) loses lines past this, counted,
/// rather than holding the loop or growing without bound.
pub const MAX_JOURNAL_BUFFER: usize = 1024 * 1024;

/// A library user's journal callback.
pub type JournalCallback = Box<dyn FnMut(&JournalEvent<'_>) + Send>;

/// Where the lines go: a writer (a file, stdout), a callback, or both.
pub(crate) struct Journal {
    sink: Option<Box<dyn Write + Send>>,
    /// What `sink` is, for the one warning: the file name, or `stdout`.
    name: String,
    callback: Option<JournalCallback>,
    /// Encoded lines not yet written; at most [`MAX_JOURNAL_BUFFER`].
    pending: Vec<u8>,
    /// Lines not written: the buffer was full or a write failed.
    lost: u64,
    /// The first write error, once seen: the sink is dropped, and every
    /// later line counts as lost.
    failed: bool,
}

impl fmt::Debug for Journal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Journal")
            .field("name", &self.name)
            .field("pending", &self.pending.len())
            .field("lost", &self.lost)
            .finish_non_exhaustive()
    }
}

impl Journal {
    /// A journal written to `sink`, called `name` in its warning.
    pub fn to_writer(sink: Box<dyn Write + Send>, name: String) -> Journal {
        Journal {
            sink: Some(sink),
            name,
            callback: None,
            pending: Vec::new(),
            lost: 0,
            failed: false,
        }
    }

    /// A journal that only calls `callback`.
    pub fn to_callback(callback: JournalCallback) -> Journal {
        Journal {
            sink: None,
            name: String::new(),
            callback: Some(callback),
            pending: Vec::new(),
            lost: 0,
            failed: false,
        }
    }

    /// Adds (or replaces) the callback.
    pub fn set_callback(&mut self, callback: JournalCallback) {
        self.callback = Some(callback);
    }

    /// Records one event: the callback sees it now, the writer with the
    /// turn's other lines.
    pub fn record(&mut self, event: &JournalEvent<'_>) {
        if let Some(callback) = &mut self.callback {
            callback(event);
        }
        if self.sink.is_none() {
            if self.failed {
                self.lost += 1;
            }
            return;
        }
        let before = self.pending.len();
        event.write_json(&mut self.pending);
        if self.pending.len() > MAX_JOURNAL_BUFFER {
            self.pending.truncate(before);
            self.lost += 1;
        }
    }

    /// Lines not written so far.
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// Whether lines wait for [`flush`](Journal::flush).
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Writes the waiting lines, as many as the writer takes now: a
    /// writer that would block (a pipe no one reads) keeps the rest for a
    /// later turn. A write error drops the writer and its lines, logged
    /// once at `warn`: the journal is lost, not the server.
    pub fn flush(&mut self) {
        let Some(sink) = &mut self.sink else { return };
        let mut written = 0;
        while written < self.pending.len() {
            match sink.write(&self.pending[written..]) {
                Ok(0) => return self.fail(&io::ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                // The reader is slow: the rest waits for a later turn.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return self.fail(&e),
            }
        }
        self.pending.drain(..written);
        if let Err(e) = sink.flush() {
            self.fail(&e);
        }
    }

    fn fail(&mut self, e: &io::Error) {
        let lines = self.pending.iter().filter(|&&b| b == b'\n').count() as u64;
        self.lost += lines;
        self.pending = Vec::new();
        self.sink = None;
        self.failed = true;
        warn!(
            "journal {}: write failed, journal stopped ({e}); serving goes on",
            self.name
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn event(bytes: &[u8]) -> JournalEvent<'_> {
        JournalEvent {
            t_ms: 7,
            protocol: Protocol::Tcp,
            endpoint: None,
            conn: Some(3),
            msg: 2,
            dir: JournalDirection::In,
            bytes,
            peer: None,
            faults: AppliedFaults::default(),
        }
    }

    fn json(event: &JournalEvent<'_>) -> String {
        let mut out = Vec::new();
        event.write_json(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_line_as_the_spec_shows_it() {
        assert_eq!(
            json(&event(b"Hello, Server\n")),
            r#"{"t_ms":7,"proto":"tcp","conn":3,"msg":2,"dir":"in","len":14,"text":"Hello, Server\n"}"#
                .to_owned()
                + "\n"
        );
    }

    #[test]
    fn a_named_endpoints_line_names_it_after_the_protocol() {
        let e = JournalEvent {
            endpoint: Some("db \"1\""),
            ..event(b"x")
        };
        assert_eq!(
            json(&e),
            r#"{"t_ms":7,"proto":"tcp","endpoint":"db \"1\"","conn":3,"msg":2,"dir":"in","len":1,"text":"x"}"#
                .to_owned()
                + "\n"
        );
    }

    #[test]
    fn udp_lines_have_a_peer_and_no_conn_and_faults_are_named() {
        let mut applied = [0; KINDS];
        applied[crate::FaultKind::Delay {
            min_ms: 0,
            max_ms: 0,
        }
        .index()] = 1;
        applied[crate::FaultKind::Truncate(0).index()] = 1;
        let e = JournalEvent {
            protocol: Protocol::Udp,
            conn: None,
            msg: 9,
            dir: JournalDirection::Out,
            peer: Some("127.0.0.1:5000".parse().unwrap()),
            faults: AppliedFaults::of(&applied),
            ..event(b"Rec")
        };
        assert_eq!(
            json(&e),
            r#"{"t_ms":7,"proto":"udp","msg":9,"dir":"out","len":3,"text":"Rec","peer":"127.0.0.1:5000","fault":["delay","truncate"]}"#
                .to_owned()
                + "\n"
        );
    }

    #[test]
    fn strings_are_escaped_for_json() {
        let line = json(&event("q\"b\\s\r\n\t\x00\x1f\x7fé€".as_bytes()));
        assert!(
            line.contains(r#""text":"q\"b\\s\r\n\t\u0000\u001f"#),
            "{line}"
        );
        assert!(line.contains("\x7fé€\""), "{line}");
        assert_eq!(line.matches('\n').count(), 1, "one line: {line}");
    }

    #[test]
    fn bytes_that_are_not_utf8_are_base64() {
        // RFC 4648 section 10's vectors, made non-UTF-8 by a leading 0xff.
        for (bytes, b64) in [
            (&b"\xff"[..], "/w=="),
            (b"\xfff", "/2Y="),
            (b"\xffoo", "/29v"),
            (b"\xff\xfe\xfd\x00\x01", "//79AAE="),
            (b"\xc3\x28foobar", "wyhmb29iYXI="),
        ] {
            let line = json(&event(bytes));
            assert!(line.contains(&format!(r#""b64":"{b64}""#)), "{line}");
            assert!(!line.contains(r#""text""#), "{line}");
            let len = format!(r#""len":{}"#, bytes.len());
            assert!(line.contains(&len), "{line}");
        }
    }

    proptest::proptest! {
        /// Any bytes and any endpoint name make one line of JSON that
        /// gives them back: `text` when UTF-8, else `b64`.
        #[test]
        fn any_line_parses_back_to_its_bytes(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            endpoint in proptest::option::of(".{0,12}"),
        ) {
            let e = JournalEvent { endpoint: endpoint.as_deref(), ..event(&bytes) };
            let line = json(&e);
            proptest::prop_assert_eq!(line.matches('\n').count(), 1);
            let value: serde_json::Value = serde_json::from_str(&line).unwrap();
            let back = match (&value["text"], &value["b64"]) {
                (serde_json::Value::String(text), serde_json::Value::Null) => text.clone().into_bytes(),
                (serde_json::Value::Null, serde_json::Value::String(b64)) => {
                    use base64::Engine;
                    proptest::prop_assert!(std::str::from_utf8(&bytes).is_err());
                    base64::engine::general_purpose::STANDARD.decode(b64).unwrap()
                }
                _ => panic!("text or b64: {line}"),
            };
            proptest::prop_assert_eq!(back, bytes.clone());
            proptest::prop_assert_eq!(&value["len"], bytes.len());
            proptest::prop_assert_eq!(value["endpoint"].as_str(), endpoint.as_deref());
        }
    }

    /// A writer that collects, or fails every write.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>, bool);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.1 {
                return Err(io::Error::from_raw_os_error(28)); // ENOSPC
            }
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_wait_for_the_flush_and_a_failed_write_stops_only_the_journal() {
        let good = Shared::default();
        let mut journal = Journal::to_writer(Box::new(good.clone()), "j".into());
        journal.record(&event(b"a"));
        journal.record(&event(b"b"));
        assert!(good.0.lock().unwrap().is_empty(), "written once a turn");
        assert!(journal.has_pending());
        journal.flush();
        assert_eq!(good.0.lock().unwrap().split(|&b| b == b'\n').count(), 3);
        assert!(!journal.has_pending());

        let mut journal =
            Journal::to_writer(Box::new(Shared(Default::default(), true)), "full".into());
        journal.record(&event(b"a"));
        journal.record(&event(b"b"));
        journal.flush();
        assert_eq!(journal.lost(), 2);
        journal.record(&event(b"c"));
        journal.flush();
        assert_eq!(journal.lost(), 3, "later lines count as lost");
        assert!(!journal.has_pending());
    }

    #[test]
    fn a_full_buffer_loses_lines_not_memory() {
        let mut journal = Journal::to_writer(Box::new(Shared::default()), "j".into());
        let big = vec![b'x'; 64 * 1024];
        for _ in 0..20 {
            journal.record(&event(&big));
        }
        assert!(journal.pending.len() <= MAX_JOURNAL_BUFFER);
        assert!(journal.lost() >= 5, "{}", journal.lost());
    }

    #[test]
    fn the_callback_sees_every_event() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let mut journal = Journal::to_callback(Box::new(move |e: &JournalEvent<'_>| {
            log.lock().unwrap().push((e.dir, e.bytes.to_vec()));
        }));
        journal.record(&event(b"ping"));
        journal.flush();
        assert_eq!(
            *seen.lock().unwrap(),
            [(JournalDirection::In, b"ping".to_vec())]
        );
        assert_eq!(journal.lost(), 0);
    }
}
