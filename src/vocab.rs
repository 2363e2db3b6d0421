//! The vocabulary every layer speaks: the protocols, which way relayed
//! bytes travel, where a protocol is relayed to, which messages a rule or
//! a `match=` fits, and the longest reply text with its one length check.
//! It sits below its users (the configuration, faults, rules, replies, the
//! journal, the relay, the commands) and imports none of them: every
//! arrow points down to here.

use std::fmt;
use std::str::FromStr;

use memchr::memmem;

use crate::escape::{escape_edges, unescape};

#[cfg(feature = "relay")]
mod upstream;
#[cfg(feature = "relay")]
pub use upstream::Upstream;

/// The protocol a message arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// A TCP message: in once mode the first bytes read, in line mode one
    /// line without its terminator.
    Tcp,
    /// A UDP datagram.
    Udp,
}

impl Protocol {
    /// Its name in specs, logs and the journal: `tcp` or `udp`.
    pub fn name(self) -> &'static str {
        self.pick("tcp", "udp")
    }

    /// `tcp` or `udp`, whichever this protocol is: the one match for
    /// everything kept once per protocol (an upstream, a flag, a slot).
    #[inline]
    pub(crate) fn pick<T>(self, tcp: T, udp: T) -> T {
        match self {
            Protocol::Tcp => tcp,
            Protocol::Udp => udp,
        }
    }
}

impl FromStr for Protocol {
    type Err = String;

    /// Parses `tcp` or `udp`, as specs write them.
    fn from_str(name: &str) -> Result<Protocol, String> {
        match name {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            _ => Err(format!("unknown protocol '{name}' (tcp or udp)")),
        }
    }
}

/// Which way relayed bytes travel, as a fault's `dir=` selector picks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Direction {
    /// From the upstream to the client: the replies. The default, so that
    /// a fault acts on what the client sees, as it does without a relay.
    #[default]
    Down,
    /// From the client to the upstream: the requests.
    Up,
}

impl Direction {
    /// Its name in a spec: `down` or `up`.
    pub fn name(self) -> &'static str {
        match self {
            Direction::Down => "down",
            Direction::Up => "up",
        }
    }
}

impl FromStr for Direction {
    type Err = String;

    fn from_str(s: &str) -> Result<Direction, String> {
        match s {
            "down" => Ok(Direction::Down),
            "up" => Ok(Direction::Up),
            _ => Err(format!("dir: '{s}' is not down or up")),
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which messages a rule (or a fault's `match=` selector) fits, compared
/// byte for byte, case sensitive, with the message: a line without its
/// terminator, once mode's first bytes as read, or a datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// `exact:TEXT`: the whole message is TEXT.
    Exact(Vec<u8>),
    /// `prefix:TEXT`: the message starts with TEXT.
    Prefix(Vec<u8>),
    /// `contains:TEXT`: TEXT occurs in the message.
    Contains(Vec<u8>),
    /// `*`: every message.
    Any,
}

impl Match {
    /// Whether `message` fits.
    pub fn matches(&self, message: &[u8]) -> bool {
        match self {
            Match::Exact(text) => message == text.as_slice(),
            Match::Prefix(text) => message.starts_with(text),
            Match::Contains(text) => memmem::find(message, text).is_some(),
            Match::Any => true,
        }
    }
}

impl FromStr for Match {
    type Err = String;

    /// Parses `exact:TEXT`, `prefix:TEXT`, `contains:TEXT` or `*`; TEXT is
    /// unescaped, not trimmed (a rule trims before it gets here).
    fn from_str(spec: &str) -> Result<Match, String> {
        if spec == "*" {
            return Ok(Match::Any);
        }
        let (kind, text) = spec.split_once(':').ok_or_else(|| {
            format!("match '{spec}': expected exact:TEXT, prefix:TEXT, contains:TEXT or *")
        })?;
        let text = unescape(text).map_err(|why| format!("match '{spec}': {why}"))?;
        match kind {
            "exact" => Ok(Match::Exact(text)),
            "prefix" => Ok(Match::Prefix(text)),
            "contains" => Ok(Match::Contains(text)),
            _ => Err(format!(
                "match '{spec}': unknown kind '{kind}' (exact, prefix, contains or *)"
            )),
        }
    }
}

impl fmt::Display for Match {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, text) = match self {
            Match::Any => return f.write_str("*"),
            Match::Exact(text) => ("exact", text),
            Match::Prefix(text) => ("prefix", text),
            Match::Contains(text) => ("contains", text),
        };
        write!(f, "{kind}:{}", escape_edges(text))
    }
}

/// Longest reply text, in bytes: a `--reply`, a rule's reply, a greeting,
/// a push. A UDP reply must fit in one datagram, and a short fixed reply
/// keeps the owed-bytes bookkeeping cheap.
pub const MAX_REPLY_LEN: usize = 1024;

/// The one check of a reply text's length, wherever a text comes in (the
/// command line, a control line, a script, a rule, the handle): at most
/// [`MAX_REPLY_LEN`] bytes, and at least one unless `may_be_empty` (a
/// rule's reply or a push may send nothing; the reply text and a greeting
/// may not). `what` names the text in the message.
pub(crate) fn check_reply_len(what: &str, text: &[u8], may_be_empty: bool) -> Result<(), String> {
    let len = text.len();
    match (
        len <= MAX_REPLY_LEN && (may_be_empty || len > 0),
        may_be_empty,
    ) {
        (true, _) => Ok(()),
        (false, true) => Err(format!("{what}: at most {MAX_REPLY_LEN} bytes, got {len}")),
        (false, false) => Err(format!(
            "{what}: must be 1 to {MAX_REPLY_LEN} bytes, got {len}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reply_length_check_names_the_text_and_the_bounds() {
        let long = vec![b'x'; MAX_REPLY_LEN + 1];
        assert_eq!(check_reply_len("push", b"", true), Ok(()));
        assert_eq!(check_reply_len("push", &long[1..], true), Ok(()));
        assert_eq!(
            check_reply_len("push", &long, true),
            Err("push: at most 1024 bytes, got 1025".into())
        );
        assert_eq!(check_reply_len("reply", b"x", false), Ok(()));
        assert_eq!(
            check_reply_len("reply", b"", false),
            Err("reply: must be 1 to 1024 bytes, got 0".into())
        );
        assert_eq!(
            check_reply_len("--greeting", &long, false),
            Err("--greeting: must be 1 to 1024 bytes, got 1025".into())
        );
    }

    #[test]
    fn a_fault_names_its_direction() {
        let fault: crate::Fault = "tcp:delay=5,every=2,dir=up".parse().unwrap();
        assert_eq!(fault.select.dir, Some(Direction::Up));
        assert_eq!(fault.to_string(), "tcp:delay=5,every=2,dir=up");
        let plain: crate::Fault = "udp:drop".parse().unwrap();
        assert_eq!(plain.select.dir, None, "down unless said");
        assert!("udp:drop,dir=both".parse::<crate::Fault>().is_err());
    }

    #[test]
    fn each_direction_counts_its_own_messages() {
        let faults = ["tcp:close,every=2,dir=up", "tcp:reset,every=2"];
        let faults: Vec<crate::Fault> = faults.iter().map(|f| f.parse().unwrap()).collect();
        let mut set =
            crate::fault::Faults::relaying(7, &faults, [crate::fault::Relaying::Messages; 2]);
        let mut judge = |dir, n| set.judge_in(Protocol::Tcp, dir, [n, 0]).terminal;
        // Up messages 1, 2, 3 and down messages 1, 2 interleaved: each
        // fault sees only its direction's, so every=2 picks the second.
        use crate::FaultKind::{Close, Reset};
        assert_eq!(judge(Direction::Up, 1), None);
        assert_eq!(judge(Direction::Down, 1), None);
        assert_eq!(judge(Direction::Up, 2), Some(Close));
        assert_eq!(judge(Direction::Up, 3), None);
        assert_eq!(judge(Direction::Down, 2), Some(Reset));
    }

    #[test]
    fn directions_parse() {
        assert_eq!("up".parse(), Ok(Direction::Up));
        assert_eq!("down".parse(), Ok(Direction::Down));
        assert!("sideways".parse::<Direction>().is_err());
        assert_eq!(Direction::default(), Direction::Down);
    }
}
