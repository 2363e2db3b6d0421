//! Faults on demand: a peer that misbehaves on purpose, reproducibly.
//!
//! A [`Fault`] is written `PROTO:KIND[=VALUE][,SELECTOR...]`, the same on
//! the command line (`--fault udp:drop,p=0.1`) and in Rust
//! (`"udp:drop,p=0.1".parse::<Fault>()`). Each message (a line, once
//! mode's first bytes, a datagram) is judged on arrival: every fault of its
//! protocol whose selectors pick it applies. Delays add up and come first;
//! then the first terminal fault (`drop`, `hang`, `close`, `reset`)
//! replaces the reply; otherwise `truncate`, `corrupt`, `duplicate`,
//! `dribble` and `slow-close` shape it.
//!
//! Reproducible: every random choice is a pure function of the seed, the
//! fault's position in the list, the protocol and the message's ordinals
//! (TCP: the connection's and the message's on it; UDP: the datagram's),
//! hashed with SplitMix64. No generator state depends on how the loop's
//! turns fell, so the same seed and the same arrivals give the same faults.
//!
//! # Examples
//!
//! ```
//! use ackloop::{Fault, FaultKind, Protocol};
//!
//! let fault: Fault = "tcp:delay=100-250,every=3".parse()?;
//! assert_eq!(fault.protocol, Protocol::Tcp);
//! assert_eq!(fault.kind, FaultKind::Delay { min_ms: 100, max_ms: 250 });
//! assert_eq!(fault.select.every, Some(3));
//! assert_eq!(fault.to_string(), "tcp:delay=100-250,every=3");
//! assert!("tcp:drop".parse::<Fault>().is_err(), "drop is UDP only");
//! # Ok::<(), String>(())
//! ```

use std::fmt;
use std::str::FromStr;

use crate::vocab::{Direction, Match, Protocol};

/// One fault: which protocol, what it does, which messages it hits.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// The protocol whose messages it judges.
    pub protocol: Protocol,
    /// What it does to a message's reply.
    pub kind: FaultKind,
    /// Which messages it hits; all of them by default.
    pub select: Selector,
}

/// What a fault does to the reply of a message it hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// The reply leaves no earlier than a delay after the message arrived,
    /// uniform in `min_ms..=max_ms`. TCP and UDP.
    Delay {
        /// Shortest delay, in milliseconds.
        min_ms: u64,
        /// Longest delay, in milliseconds.
        max_ms: u64,
    },
    /// The reply goes out `bytes` at a time, `every_ms` apart. TCP.
    Dribble {
        /// Bytes per write, at least 1.
        bytes: u32,
        /// Milliseconds between writes.
        every_ms: u64,
    },
    /// Only the first bytes of the reply; on TCP the server then closes.
    Truncate(usize),
    /// A reply of the same length with different bytes (in line mode the
    /// `\n` stays). TCP and UDP.
    Corrupt,
    /// The reply twice. UDP.
    Duplicate,
    /// No reply. UDP.
    Drop,
    /// No reply and no close: the connection is read and discarded until
    /// the client or the idle timeout ends it. TCP.
    Hang,
    /// No reply; the server closes (FIN). TCP.
    Close,
    /// No reply; the connection is reset (RST). TCP.
    Reset,
    /// The reply, then the close comes this many milliseconds later. TCP.
    SlowClose(u64),
    /// At most this many KB (1000 bytes) a second, smooth to within
    /// 100 ms; 0 is no limit. A TCP relay's stream only.
    Bandwidth(u64),
    /// No data passes (it is discarded); the connection is closed once
    /// this many milliseconds pass with no data arriving (0: never). A
    /// TCP relay's stream only.
    Timeout(u64),
    /// The connection is reset this many milliseconds after the first
    /// chunk that arrives once it acts; that chunk and later ones are
    /// not passed on. A TCP relay's stream only.
    ResetPeer(u64),
    /// The stream cut into writes of `average` ± `variation` bytes
    /// (seeded), `delay_us` microseconds apart. A TCP relay's stream only.
    Slicer {
        /// Bytes per write on average, at least 1.
        average: u32,
        /// How far a write's size strays from the average, at most.
        variation: u32,
        /// Microseconds between writes.
        delay_us: u64,
    },
}

/// Which messages a fault hits. The conditions combine with AND; the
/// counts are of the protocol's messages since the fault was added.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Selector {
    /// With this probability, 0 to 1.
    pub p: Option<f64>,
    /// Only the first N messages.
    pub first: Option<u64>,
    /// All but the first N messages.
    pub after: Option<u64>,
    /// The Nth, 2Nth, ... message; N at least 1.
    pub every: Option<u64>,
    /// Only messages this fits (`match=MATCH`, as in a rule); `first`,
    /// `after` and `every` still count every message.
    pub matches: Option<Match>,
    /// On a relay (section 11), the direction whose messages it judges:
    /// `None` is [`Direction::Down`], what the client receives. Only a
    /// relayed protocol takes it.
    pub dir: Option<Direction>,
}

/// Faults applied, by kind, as [`Stats`](crate::Stats) counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// `delay` applied.
    pub delay: u64,
    /// `dribble` applied.
    pub dribble: u64,
    /// `truncate` applied.
    pub truncate: u64,
    /// `corrupt` applied.
    pub corrupt: u64,
    /// `duplicate` applied.
    pub duplicate: u64,
    /// `drop` applied.
    pub drop: u64,
    /// `hang` applied.
    pub hang: u64,
    /// `close` applied.
    pub close: u64,
    /// `reset` applied.
    pub reset: u64,
    /// `slow-close` applied.
    pub slow_close: u64,
    /// `bandwidth` applied.
    pub bandwidth: u64,
    /// `timeout` applied.
    pub timeout: u64,
    /// `reset-peer` applied.
    pub reset_peer: u64,
    /// `slicer` applied.
    pub slicer: u64,
}

impl FaultCounts {
    /// All faults applied.
    pub fn total(&self) -> u64 {
        self.by_kind().iter().map(|(_, n)| n).sum()
    }

    /// `(name, count)` for every kind, in the order of [`FaultKind`].
    pub fn by_kind(&self) -> [(&'static str, u64); KINDS] {
        [
            ("delay", self.delay),
            ("dribble", self.dribble),
            ("truncate", self.truncate),
            ("corrupt", self.corrupt),
            ("duplicate", self.duplicate),
            ("drop", self.drop),
            ("hang", self.hang),
            ("close", self.close),
            ("reset", self.reset),
            ("slow-close", self.slow_close),
            ("bandwidth", self.bandwidth),
            ("timeout", self.timeout),
            ("reset-peer", self.reset_peer),
            ("slicer", self.slicer),
        ]
    }

    pub(crate) fn from_array(n: [u64; KINDS]) -> FaultCounts {
        let [
            delay,
            dribble,
            truncate,
            corrupt,
            duplicate,
            drop,
            hang,
            close,
            reset,
            slow_close,
            bandwidth,
            timeout,
            reset_peer,
            slicer,
        ] = n;
        FaultCounts {
            delay,
            dribble,
            truncate,
            corrupt,
            duplicate,
            drop,
            hang,
            close,
            reset,
            slow_close,
            bandwidth,
            timeout,
            reset_peer,
            slicer,
        }
    }
}

/// The number of fault kinds.
pub(crate) const KINDS: usize = 14;

impl FaultKind {
    /// Its name in a spec.
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::Delay { .. } => "delay",
            FaultKind::Dribble { .. } => "dribble",
            FaultKind::Truncate(_) => "truncate",
            FaultKind::Corrupt => "corrupt",
            FaultKind::Duplicate => "duplicate",
            FaultKind::Drop => "drop",
            FaultKind::Hang => "hang",
            FaultKind::Close => "close",
            FaultKind::Reset => "reset",
            FaultKind::SlowClose(_) => "slow-close",
            FaultKind::Bandwidth(_) => "bandwidth",
            FaultKind::Timeout(_) => "timeout",
            FaultKind::ResetPeer(_) => "reset-peer",
            FaultKind::Slicer { .. } => "slicer",
        }
    }

    /// Its index in [`FaultCounts::by_kind`].
    pub(crate) fn index(&self) -> usize {
        match self {
            FaultKind::Delay { .. } => 0,
            FaultKind::Dribble { .. } => 1,
            FaultKind::Truncate(_) => 2,
            FaultKind::Corrupt => 3,
            FaultKind::Duplicate => 4,
            FaultKind::Drop => 5,
            FaultKind::Hang => 6,
            FaultKind::Close => 7,
            FaultKind::Reset => 8,
            FaultKind::SlowClose(_) => 9,
            FaultKind::Bandwidth(_) => 10,
            FaultKind::Timeout(_) => 11,
            FaultKind::ResetPeer(_) => 12,
            FaultKind::Slicer { .. } => 13,
        }
    }

    /// One of each kind, in the order of [`FaultCounts::by_kind`].
    const EACH: [FaultKind; KINDS] = [
        FaultKind::Delay {
            min_ms: 0,
            max_ms: 0,
        },
        FaultKind::Dribble {
            bytes: 1,
            every_ms: 0,
        },
        FaultKind::Truncate(0),
        FaultKind::Corrupt,
        FaultKind::Duplicate,
        FaultKind::Drop,
        FaultKind::Hang,
        FaultKind::Close,
        FaultKind::Reset,
        FaultKind::SlowClose(0),
        FaultKind::Bandwidth(0),
        FaultKind::Timeout(0),
        FaultKind::ResetPeer(0),
        FaultKind::Slicer {
            average: 1,
            variation: 0,
            delay_us: 0,
        },
    ];

    /// The kinds `protocol` has, as specs name them: `delay, truncate, ...`.
    fn names_for(protocol: Protocol) -> String {
        let names: Vec<&str> = (FaultKind::EACH.iter())
            .filter(|kind| kind.applies_to(protocol))
            .map(FaultKind::name)
            .collect();
        names.join(", ")
    }

    /// Whether `protocol` has this kind.
    pub fn applies_to(&self, protocol: Protocol) -> bool {
        match self {
            FaultKind::Delay { .. } | FaultKind::Truncate(_) | FaultKind::Corrupt => true,
            FaultKind::Duplicate | FaultKind::Drop => protocol == Protocol::Udp,
            FaultKind::Dribble { .. }
            | FaultKind::Hang
            | FaultKind::Close
            | FaultKind::Reset
            | FaultKind::SlowClose(_)
            | FaultKind::Bandwidth(_)
            | FaultKind::Timeout(_)
            | FaultKind::ResetPeer(_)
            | FaultKind::Slicer { .. } => protocol == Protocol::Tcp,
        }
    }

    /// Whether it acts on a relayed byte stream only (SPEC 14's toxics:
    /// a rate, a quiet time, a reset after a chunk, slices), not on a
    /// served reply or a relayed line: a TCP relay in stream mode.
    pub fn needs_stream(&self) -> bool {
        matches!(
            self,
            FaultKind::Bandwidth(_)
                | FaultKind::Timeout(_)
                | FaultKind::ResetPeer(_)
                | FaultKind::Slicer { .. }
        )
    }
}

/// Faults in force at once, at most: each message is judged by every one
/// of its protocol, so the list bounds the work per message. A 65th is an
/// error (`error: ...` on control, `Err` from the library).
pub const MAX_FAULTS: usize = 64;

impl Fault {
    /// Whether the seed decides anything for this fault: a probability
    /// strictly between 0 and 1, a delay range, or the bytes of `corrupt`.
    pub fn is_random(&self) -> bool {
        let chance = self.select.p.is_some_and(|p| p > 0.0 && p < 1.0);
        let range = matches!(self.kind, FaultKind::Delay { min_ms, max_ms } if min_ms < max_ms);
        let sizes = matches!(self.kind, FaultKind::Slicer { variation, .. } if variation > 0);
        chance || range || sizes || self.kind == FaultKind::Corrupt
    }

    /// Checks what parsing checks, for a fault built by hand. Every way a
    /// fault comes in (the command line, a control line, [`Config`], the
    /// test server's builder, [`Handle::add_fault`]) runs this check, so
    /// a fault that could not be written as text is never in force.
    ///
    /// [`Config`]: crate::Config
    /// [`Handle::add_fault`]: crate::Handle::add_fault
    ///
    /// # Errors
    ///
    /// A one-line message naming the fault, `fault 'SPEC': why`.
    pub fn validate(&self) -> Result<(), String> {
        let bad = |why: String| Err(format!("fault '{self}': {why}"));
        if !self.kind.applies_to(self.protocol) {
            let protocol = self.protocol.name();
            let kinds = FaultKind::names_for(self.protocol);
            let kind = self.kind.name();
            return bad(format!(
                "{protocol} has no {kind} fault (its kinds: {kinds})"
            ));
        }
        match self.kind {
            FaultKind::Delay { min_ms, max_ms } if min_ms > max_ms => {
                return bad(format!(
                    "delay minimum {min_ms} is above its maximum {max_ms}"
                ));
            }
            FaultKind::Dribble { bytes: 0, .. } => return bad("dribble of 0 bytes".into()),
            FaultKind::Slicer { average: 0, .. } => {
                return bad("slicer of 0 bytes on average".into());
            }
            _ => {}
        }
        if let Some(p) = self.select.p {
            if !(0.0..=1.0).contains(&p) {
                return bad("p is not a probability from 0 to 1".into());
            }
        }
        if self.select.every == Some(0) {
            return bad("every=0 selects nothing".into());
        }
        Ok(())
    }
}

/// How a protocol is relayed, as far as its faults care (section 11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Relaying {
    /// Not relayed: `dir=` is a bad value.
    Not,
    /// A TCP relay in stream mode: no messages, so `match=` is a bad value.
    Streams,
    /// Relayed as messages: lines (`--mode line`) or datagrams.
    Messages,
}

/// A fault's `dir=` needs its protocol relayed, and its `match=` needs
/// messages (`relaying` says how each protocol is relayed).
///
/// # Errors
///
/// A one-line message naming the fault.
pub(crate) fn check_direction(
    fault: &Fault,
    relaying: impl Fn(Protocol) -> Relaying,
) -> Result<(), String> {
    let relaying = relaying(fault.protocol);
    if fault.kind.needs_stream() && relaying != Relaying::Streams {
        let why = match relaying {
            Relaying::Messages => "and --mode line relays lines",
            _ => "and TCP is not relayed here",
        };
        return Err(format!(
            "fault '{fault}': {} acts on a relayed stream only (--upstream tcp:ADDR \
             without --mode line), {why}",
            fault.kind.name()
        ));
    }
    match relaying {
        Relaying::Not if fault.select.dir.is_some() => Err(format!(
            "fault '{fault}': dir= needs a relay (--upstream {}:ADDR)",
            fault.protocol.name()
        )),
        // A stream-mode relay reads no messages to match.
        Relaying::Streams if fault.select.matches.is_some() => Err(format!(
            "fault '{fault}': match= needs messages, and a TCP relay in stream mode \
             has none (--mode line makes each line one)"
        )),
        _ => Ok(()),
    }
}

impl FromStr for Fault {
    type Err = String;

    /// Parses `PROTO:KIND[=VALUE][,SELECTOR...]`.
    fn from_str(spec: &str) -> Result<Fault, String> {
        let bad = |why: &str| format!("fault '{spec}': {why}");
        let mut parts = spec.split(',');
        let head = parts.next().unwrap_or_default();
        let (proto, kind) = head
            .split_once(':')
            .ok_or_else(|| bad("expected PROTO:KIND, like udp:drop"))?;
        let protocol: Protocol = proto.parse().map_err(|why: String| bad(&why))?;
        let (name, value) = match kind.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (kind, None),
        };
        let kind = parse_kind(protocol, name, value).map_err(|why| bad(&why))?;
        let mut select = Selector::default();
        for selector in parts {
            let (key, value) = selector
                .split_once('=')
                .ok_or_else(|| bad(&unnamed_selector(selector)))?;
            match key {
                "p" => select.p = Some(probability(value).map_err(|why| bad(&why))?),
                "first" => select.first = Some(integer(key, value).map_err(|why| bad(&why))?),
                "after" => select.after = Some(integer(key, value).map_err(|why| bad(&why))?),
                "every" => select.every = Some(integer(key, value).map_err(|why| bad(&why))?),
                // Its text cannot hold a comma: `\x2c` writes one.
                "match" => select.matches = Some(value.parse().map_err(|why: String| bad(&why))?),
                "dir" => select.dir = Some(value.parse().map_err(|why: String| bad(&why))?),
                _ => return Err(bad(&format!("unknown selector '{key}' ({SELECTORS})"))),
            }
        }

        let fault = Fault {
            protocol,
            kind,
            select,
        };
        fault.validate()?;
        Ok(fault)
    }
}

/// The selectors, as a spec writes them.
const SELECTORS: &str = "p=, first=, after=, every=, match=, dir=";

/// Why a selector without `=` is no selector: a probability written as
/// `10%` or `0.1` names the `p=` it meant.
fn unnamed_selector(selector: &str) -> String {
    let billionths = match selector.strip_suffix('%') {
        // A percentage with 7 decimals is a probability with 9.
        Some(percent) => decimal(percent, 7),
        None => decimal(selector, 9),
    };
    match billionths.filter(|&b| b <= BILLION) {
        Some(billionths) => format!(
            "selector '{selector}' has no name: did you mean p={}? (a probability from 0 to 1)",
            Billionths(billionths)
        ),
        None => format!("selector '{selector}' needs NAME=VALUE ({SELECTORS})"),
    }
}

/// The kind `name` with its `value`, checked for presence and form.
fn parse_kind(protocol: Protocol, name: &str, value: Option<&str>) -> Result<FaultKind, String> {
    let needs = |what: &str| match value {
        Some(v) => Ok(v),
        None => Err(format!("{name} needs a value: {name}={what}")),
    };
    let kind = match name {
        "delay" => {
            let v = needs("MS or MIN-MAX")?;
            match v.split_once('-') {
                Some((min, max)) => FaultKind::Delay {
                    min_ms: integer(name, min)?,
                    max_ms: integer(name, max)?,
                },
                None => {
                    let ms = integer(name, v)?;
                    FaultKind::Delay {
                        min_ms: ms,
                        max_ms: ms,
                    }
                }
            }
        }
        "dribble" => {
            let v = needs("BYTES/MS")?;
            let (bytes, ms) = v
                .split_once('/')
                .ok_or_else(|| format!("dribble needs BYTES/MS, got '{v}'"))?;
            FaultKind::Dribble {
                bytes: integer(name, bytes)?,
                every_ms: integer(name, ms)?,
            }
        }
        "truncate" => FaultKind::Truncate(integer(name, needs("N")?)?),
        "slow-close" => FaultKind::SlowClose(integer(name, needs("MS")?)?),
        "bandwidth" => FaultKind::Bandwidth(integer(name, needs("KB_PER_S")?)?),
        "timeout" => FaultKind::Timeout(integer(name, needs("MS")?)?),
        "reset-peer" => FaultKind::ResetPeer(integer(name, needs("MS")?)?),
        "slicer" => slicer(needs("AVG[/VARIATION[/DELAY_US]]")?)?,
        "corrupt" | "duplicate" | "drop" | "hang" | "close" | "reset" => {
            if let Some(v) = value {
                return Err(format!("{name} takes no value, got '{v}'"));
            }
            match name {
                "corrupt" => FaultKind::Corrupt,
                "duplicate" => FaultKind::Duplicate,
                "drop" => FaultKind::Drop,
                "hang" => FaultKind::Hang,
                "close" => FaultKind::Close,
                _ => FaultKind::Reset,
            }
        }
        _ => {
            let kinds = FaultKind::names_for(protocol);
            let protocol = protocol.name();
            return Err(format!(
                "unknown fault kind '{name}' ({protocol} has {kinds})"
            ));
        }
    };
    Ok(kind)
}

/// `slicer=AVG[/VARIATION[/DELAY_US]]`: what is left out is 0.
fn slicer(value: &str) -> Result<FaultKind, String> {
    let mut parts = value.split('/');
    let average = integer("slicer", parts.next().unwrap_or_default())?;
    let variation = parts.next().map_or(Ok(0), |v| integer("slicer", v))?;
    let delay_us = parts.next().map_or(Ok(0), |v| integer("slicer", v))?;
    if parts.next().is_some() {
        return Err(format!(
            "slicer needs AVG[/VARIATION[/DELAY_US]], got '{value}'"
        ));
    }
    Ok(FaultKind::Slicer {
        average,
        variation,
        delay_us,
    })
}

/// A decimal integer: digits only (no sign, no exponent).
fn integer<N: FromStr>(what: &str, value: &str) -> Result<N, String> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{what}: '{value}' is not a decimal integer"));
    }
    value
        .parse()
        .map_err(|_| format!("{what}: '{value}' is too large"))
}

/// A probability written as a decimal: `0`, `1`, `0.25`, `.5`, with at
/// most 9 decimals.
fn probability(value: &str) -> Result<f64, String> {
    match decimal(value, 9) {
        Some(billionths) if billionths <= BILLION => Ok(billionths as f64 / BILLION as f64),
        _ => Err(format!(
            "p: '{value}' is not a probability from 0 to 1 (at most 9 decimals)"
        )),
    }
}

const BILLION: u64 = 1_000_000_000;

/// A non-negative decimal (`12`, `0.25`, `.5`, `3.`) in units of
/// 10^-`decimals`, or `None` if it is not one or has more decimals. Parsed
/// by hand: float parsing and printing would add some 30 KiB of tables
/// and code to a binary meant for small hosts.
pub(crate) fn decimal(text: &str, decimals: u32) -> Option<u64> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let places = decimals as usize;
    if (whole.is_empty() && fraction.is_empty())
        || !all_digits(whole)
        || !all_digits(fraction)
        || fraction.len() > places
    {
        return None;
    }
    let padding = std::iter::repeat_n(b'0', places - fraction.len());
    let mut value: u64 = 0;
    for digit in whole.bytes().chain(fraction.bytes()).chain(padding) {
        value = value
            .checked_mul(10)?
            .checked_add(u64::from(digit - b'0'))?;
    }
    Some(value)
}

/// Writes a probability as the shortest decimal of at most 9 places.
fn write_probability(f: &mut fmt::Formatter<'_>, p: f64) -> fmt::Result {
    write!(f, "{}", Billionths((p * BILLION as f64 + 0.5) as u64))
}

/// A probability in billionths, written as the shortest decimal.
struct Billionths(u64);

impl fmt::Display for Billionths {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, fraction) = (self.0 / BILLION, self.0 % BILLION);
        if fraction == 0 {
            return write!(f, "{whole}");
        }
        let digits = format!("{fraction:09}");
        write!(f, "{whole}.{}", digits.trim_end_matches('0'))
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.protocol.name(), self.kind.name())?;
        match self.kind {
            FaultKind::Delay { min_ms, max_ms } if min_ms == max_ms => write!(f, "={min_ms}")?,
            FaultKind::Delay { min_ms, max_ms } => write!(f, "={min_ms}-{max_ms}")?,
            FaultKind::Dribble { bytes, every_ms } => write!(f, "={bytes}/{every_ms}")?,
            FaultKind::Truncate(n) => write!(f, "={n}")?,
            FaultKind::SlowClose(ms)
            | FaultKind::Bandwidth(ms)
            | FaultKind::Timeout(ms)
            | FaultKind::ResetPeer(ms) => write!(f, "={ms}")?,
            FaultKind::Slicer {
                average,
                variation,
                delay_us,
            } => {
                write!(f, "={average}")?;
                if variation > 0 || delay_us > 0 {
                    write!(f, "/{variation}")?;
                }
                if delay_us > 0 {
                    write!(f, "/{delay_us}")?;
                }
            }
            _ => {}
        }
        let s = &self.select;
        if let Some(p) = s.p {
            f.write_str(",p=")?;
            write_probability(f, p)?;
        }
        for (name, n) in [("first", s.first), ("after", s.after), ("every", s.every)] {
            if let Some(n) = n {
                write!(f, ",{name}={n}")?;
            }
        }
        if let Some(dir) = s.dir {
            write!(f, ",dir={dir}")?;
        }
        if let Some(matches) = &s.matches {
            let text = matches.to_string().replace(',', r"\x2c");
            write!(f, ",match={text}")?;
        }
        Ok(())
    }
}

mod judge;
#[cfg(feature = "relay")]
pub(crate) use judge::DelayRange;

pub(crate) use judge::{Faults, Verdict, corrupt, random_seed};
#[cfg(feature = "relay")]
pub(crate) use judge::{Slices, corrupt_at};

#[cfg(test)]
mod tests;
