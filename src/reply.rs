//! What the server answers: the [`Responder`] trait and its two stock
//! implementations, [`FixedReply`] and [`Echo`].

use std::net::SocketAddr;

use crate::rules::{Rule, Rules};
pub(crate) use crate::vocab::Protocol;

/// One message, as a [`Responder`] sees it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Where it arrived.
    pub protocol: Protocol,
    /// Who sent it.
    pub peer: SocketAddr,
    /// The bytes: a line without `\n` or `\r\n`, the first bytes of a
    /// once-mode connection (one read, at most 64 KiB), or a whole datagram.
    pub message: &'a [u8],
}

/// Decides the reply to each message.
///
/// `respond` appends the reply to `reply`, which is empty on entry and whose
/// allocation the server reuses (so a responder that only copies bytes
/// allocates nothing in steady state), and returns `true` to send it or
/// `false` to send nothing. In line mode the server adds the `\n` after the
/// reply; the responder writes only the content. In once mode a connection
/// that gets no reply is closed without one.
///
/// Closures of the same shape are responders too.
///
/// # Examples
///
/// ```
/// use ackloop::{Protocol, Request, Responder};
///
/// // Shout TCP messages back; ignore UDP.
/// let mut shout = |request: &Request<'_>, reply: &mut Vec<u8>| {
///     reply.extend(request.message.iter().map(u8::to_ascii_uppercase));
///     request.protocol == Protocol::Tcp
/// };
/// let peer = "127.0.0.1:9".parse()?;
/// let mut reply = Vec::new();
/// let tcp = Request { protocol: Protocol::Tcp, peer, message: b"hi" };
/// assert!(shout.respond(&tcp, &mut reply));
/// assert_eq!(reply, b"HI");
/// # Ok::<(), std::net::AddrParseError>(())
/// ```
pub trait Responder {
    /// Appends the reply to `request` to `reply`; `false` means no reply.
    fn respond(&mut self, request: &Request<'_>, reply: &mut Vec<u8>) -> bool;

    /// Changes the reply text from now on, for live control (`reply TEXT`,
    /// [`Handle::set_reply`](crate::Handle::set_reply)); returns whether
    /// this responder has a text to change. By default it has none.
    fn set_reply_text(&mut self, text: &[u8]) -> bool {
        let _ = text;
        false
    }

    /// Shows this responder a message that a [`Rule`](crate::Rule)
    /// answered instead of it (rules are tried first), so that one that
    /// records or counts messages sees them all. By default it ignores
    /// them.
    fn answered_by_rule(&mut self, request: &Request<'_>) {
        let _ = request;
    }
}

impl<F> Responder for F
where
    F: FnMut(&Request<'_>, &mut Vec<u8>) -> bool,
{
    fn respond(&mut self, request: &Request<'_>, reply: &mut Vec<u8>) -> bool {
        self(request, reply)
    }
}

/// The same reply to every message: the server's default (`Received`).
///
/// A server built with [`Server::bind`](crate::Server::bind) does not call
/// this: it knows every reply is the same and keeps only a count of the
/// bytes it owes each connection. It is here for hosts that wrap it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixedReply(pub Vec<u8>);

impl Responder for FixedReply {
    fn respond(&mut self, _request: &Request<'_>, reply: &mut Vec<u8>) -> bool {
        reply.extend_from_slice(&self.0);
        true
    }

    fn set_reply_text(&mut self, text: &[u8]) -> bool {
        self.0 = text.to_vec();
        true
    }
}

/// Sends every message back unchanged, as the Echo Protocol (RFC 862)
/// does: each datagram, each line (in line mode, with `\n` after it), or
/// the first bytes of a once-mode connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Echo;

impl Responder for Echo {
    fn respond(&mut self, request: &Request<'_>, reply: &mut Vec<u8>) -> bool {
        reply.extend_from_slice(request.message);
        true
    }
}

/// How the server makes replies: a shared pattern for the fixed reply, or
/// a responder with a reusable scratch buffer.
pub(crate) enum Replies {
    /// Every reply is the same, so a connection owes "n bytes of the
    /// periodic stream `reply reply reply ...`" and writes them straight
    /// from one shared buffer: no per-connection output buffer at all.
    Fixed(Pattern),
    /// Replies come from the host's responder, one message at a time.
    Custom {
        responder: Scripted,
        /// Where the responder writes; cleared, never freed, between uses.
        scratch: Vec<u8>,
    },
}

impl Replies {
    /// The rules, if replies come from a responder; the fixed reply has
    /// none (see [`make_responder`](Replies::make_responder)).
    pub fn rules(&mut self) -> Option<&mut Rules> {
        match self {
            Replies::Custom { responder, .. } => Some(&mut responder.rules),
            Replies::Fixed(_) => None,
        }
    }

    /// Turns the fixed reply into a responder with the same text (rules,
    /// `match=` faults and the journal need each message whole, which
    /// only the responder path keeps). Returns the old pattern, whose owed
    /// bytes each connection must keep (`Connection::keep_owed_bytes`);
    /// `None` if replies already come from a responder.
    pub fn make_responder(&mut self) -> Option<Pattern> {
        let Replies::Fixed(pattern) = self else {
            return None;
        };
        let fixed = FixedReply(pattern.text().to_vec());
        let responder = Replies::Custom {
            responder: Scripted::new(Vec::new(), Box::new(fixed)),
            scratch: Vec::new(),
        };
        match std::mem::replace(self, responder) {
            Replies::Fixed(old) => Some(old),
            Replies::Custom { .. } => None,
        }
    }
}

/// A responder with scripted rules in front: the first rule that fits a
/// message answers it (an empty reply: no reply at all), and a message no
/// rule fits goes to the inner responder (the fixed reply, the echo, or
/// the host's own).
pub(crate) struct Scripted {
    pub rules: Rules,
    inner: Box<dyn Responder + Send>,
}

impl Scripted {
    pub fn new(rules: Vec<Rule>, inner: Box<dyn Responder + Send>) -> Scripted {
        Scripted {
            rules: Rules::new(&rules),
            inner,
        }
    }
}

impl Responder for Scripted {
    fn respond(&mut self, request: &Request<'_>, reply: &mut Vec<u8>) -> bool {
        if self.rules.is_empty() {
            return self.inner.respond(request, reply);
        }
        match self.rules.answer(request.message) {
            Some(text) => {
                self.inner.answered_by_rule(request);
                reply.extend_from_slice(text);
                !text.is_empty()
            }
            None => self.inner.respond(request, reply),
        }
    }

    fn set_reply_text(&mut self, text: &[u8]) -> bool {
        self.inner.set_reply_text(text)
    }
}

impl Scripted {
    /// The responder behind the rules, for a message no rule may see (a
    /// line cut by the switch to whole messages).
    pub fn unscripted(&mut self) -> &mut (dyn Responder + Send) {
        &mut *self.inner
    }
}

/// Asks `responder` for the reply to `request`, written into `scratch`
/// (cleared first, its allocation kept): the reply, or `None` when the
/// responder sends nothing. TCP connections and UDP both ask through here.
pub(crate) fn ask<'s>(
    responder: &mut (dyn Responder + Send),
    scratch: &'s mut Vec<u8>,
    request: &Request<'_>,
) -> Option<&'s [u8]> {
    scratch.clear();
    let answered = responder.respond(request, scratch);
    answered.then_some(scratch.as_slice())
}

/// Bytes of the shared fixed-reply pattern at most: writes of owed replies
/// go out in slices of up to this size.
pub(crate) const PATTERN_BYTES: usize = 64 * 1024;

/// The fixed reply repeated: `Received\nReceived\n...` in line mode.
pub(crate) struct Pattern {
    /// A whole number of replies, so that the stream's phase wraps cleanly.
    bytes: Box<[u8]>,
    /// One reply's length on the wire, the `\n` of line mode included.
    unit: usize,
    /// The reply text's length, without the `\n`.
    text_len: usize,
}

impl Pattern {
    /// The reply `text` (with `\n` in line mode) repeated to fill at most
    /// `size` bytes, [`PATTERN_BYTES`] at most, one reply at least. The
    /// server sizes it to the owed-bytes bound: a connection seldom owes
    /// more, so longer slices would seldom be written, and a small host
    /// keeps the memory.
    pub fn new(text: &[u8], newline: bool, size: usize) -> Pattern {
        let unit = text.len() + usize::from(newline);
        let count = (size.min(PATTERN_BYTES) / unit).max(1);
        let mut bytes = Vec::with_capacity(count * unit);
        for _ in 0..count {
            bytes.extend_from_slice(text);
            if newline {
                bytes.push(b'\n');
            }
        }
        Pattern {
            bytes: bytes.into_boxed_slice(),
            unit,
            text_len: text.len(),
        }
    }

    /// The reply as a datagram: the text without any `\n`.
    pub fn text(&self) -> &[u8] {
        &self.bytes[..self.text_len]
    }

    /// One TCP reply's length on the wire.
    pub fn unit(&self) -> usize {
        self.unit
    }

    /// The whole pattern.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}
