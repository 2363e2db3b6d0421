//! Deciding: which faults hit a message, as a pure function of the seed,
//! the fault's position, the protocol and the message's ordinals.

use std::fmt;

use log::warn;

use super::{Fault, FaultKind, KINDS, MAX_FAULTS, Relaying, Selector};
use crate::vocab::{Direction, Protocol};

/// A message's identity for the seeded choices: TCP `[connection ordinal,
/// message ordinal on it]`, UDP `[datagram ordinal, 0]`.
pub(crate) type Ordinals = [u64; 2];

/// What the faults decided for one message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Verdict {
    /// Milliseconds before the reply (or the terminal fault) happens.
    pub delay_ms: u64,
    /// The selected delays as a range, for a relayed stream, which draws
    /// a delay per chunk in it rather than `delay_ms` once.
    pub delay_range: DelayRange,
    /// A terminal fault replacing the reply: drop, hang, close or reset.
    pub terminal: Option<FaultKind>,
    pub truncate: Option<usize>,
    /// Seed for the corrupted bytes, if corrupt applies.
    pub corrupt: Option<u64>,
    pub duplicate: bool,
    /// `(bytes, every_ms)`.
    pub dribble: Option<(u32, u64)>,
    pub slow_close_ms: Option<u64>,
    /// `bandwidth`: KB (1000 bytes) a second, more than 0.
    pub bandwidth: Option<u64>,
    /// `timeout`: milliseconds of quiet before the close (0: never).
    pub timeout_ms: Option<u64>,
    /// `reset-peer`: milliseconds from the first chunk to the reset.
    pub reset_peer_ms: Option<u64>,
    /// `slicer`: the sizes of the writes and their spacing.
    pub slicer: Option<Slices>,
    /// Faults applied, by [`FaultKind::index`]. At most [`MAX_FAULTS`]
    /// each; a `u32` all the same, so no list length can overflow it.
    pub applied: [u32; KINDS],
}

impl Verdict {
    /// Nothing applies: the plain reply, at once.
    pub fn is_clean(&self) -> bool {
        self.applied.iter().all(|&n| n == 0)
    }

    /// A terminal fault replaces the reply: the shapers selected with it
    /// do not apply, and are not counted.
    fn drop_shapers(&mut self) {
        for kind in [
            FaultKind::Truncate(0),
            FaultKind::Corrupt,
            FaultKind::Duplicate,
            FaultKind::Dribble {
                bytes: 1,
                every_ms: 0,
            },
            FaultKind::SlowClose(0),
        ] {
            self.applied[kind.index()] = 0;
        }
        self.truncate = None;
        self.corrupt = None;
        self.duplicate = false;
        self.dribble = None;
        self.slow_close_ms = None;
        for kind in FaultKind::EACH.iter().filter(|kind| kind.needs_stream()) {
            self.applied[kind.index()] = 0;
        }
        self.bandwidth = None;
        self.timeout_ms = None;
        self.reset_peer_ms = None;
        self.slicer = None;
    }
}

/// How `slicer` cuts a stream: writes of `average` ± `variation` bytes
/// (each one's size drawn from `seed` and its number), `delay_us` apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slices {
    pub average: u32,
    pub variation: u32,
    pub delay_us: u64,
    pub seed: u64,
}

impl Slices {
    /// The size of write number `n` (from 0): `average` ± `variation`,
    /// uniform, at least 1.
    pub fn size(&self, n: u64) -> usize {
        let spread = 2 * u64::from(self.variation) + 1;
        let pick = splitmix64(self.seed ^ n) % spread;
        let size = u64::from(self.average) + pick;
        size.saturating_sub(u64::from(self.variation)).max(1) as usize
    }
}

/// The selected delays of a verdict as a range: a relayed stream holds
/// each chunk it reads for a delay drawn in it (SPEC 14: `latency` ±
/// `jitter`, per chunk), where a message takes one delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(not(feature = "relay"), allow(dead_code))] // Only a relay draws.
pub(crate) struct DelayRange {
    /// Every selected delay's least, added up.
    pub least_ms: u64,
    /// How far above `least_ms` a draw may fall: the ranges' widths,
    /// added up.
    pub spread_ms: u64,
    /// The draws' seed: from the fault seed, the faults' positions and
    /// the message's ordinals, as every seeded choice.
    pub seed: u64,
}

#[cfg_attr(not(feature = "relay"), allow(dead_code))]
impl DelayRange {
    /// The delay of the `nth` chunk (from 0): `least_ms` plus a whole
    /// number of milliseconds in `0..=spread_ms`, uniform; the same seed
    /// gives the same sequence.
    pub fn draw(&self, nth: u64) -> u64 {
        if self.spread_ms == 0 {
            return self.least_ms;
        }
        let hash = splitmix64(self.seed ^ splitmix64(nth));
        // The whole u64 range has no `spread + 1`: any hash is in it.
        let pick = match self.spread_ms.checked_add(1) {
            Some(values) => hash % values,
            None => hash,
        };
        self.least_ms.saturating_add(pick)
    }
}

/// The faults applied, as the debug log shows them: `delay 120 ms, truncate 4`.
impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.delay_ms > 0 || self.applied[0] > 0 {
            parts.push(format!("delay {} ms", self.delay_ms));
        }
        if let Some(kind) = self.terminal {
            parts.push(kind.name().to_string());
        }
        if let Some(n) = self.truncate {
            parts.push(format!("truncate {n}"));
        }
        if self.corrupt.is_some() {
            parts.push("corrupt".into());
        }
        if self.duplicate {
            parts.push("duplicate".into());
        }
        if let Some((bytes, ms)) = self.dribble {
            parts.push(format!("dribble {bytes}/{ms} ms"));
        }
        if let Some(ms) = self.slow_close_ms {
            parts.push(format!("slow-close {ms} ms"));
        }
        if let Some(rate) = self.bandwidth {
            parts.push(format!("bandwidth {rate} KB/s"));
        }
        if let Some(ms) = self.timeout_ms {
            parts.push(format!("timeout {ms} ms"));
        }
        if let Some(ms) = self.reset_peer_ms {
            parts.push(format!("reset-peer {ms} ms"));
        }
        if let Some(s) = self.slicer {
            let (average, variation, delay) = (s.average, s.variation, s.delay_us);
            parts.push(format!("slicer {average}±{variation} bytes {delay} µs"));
        }
        f.write_str(&parts.join(", "))
    }
}

/// A fault in force, with its own count of the messages it has judged.
#[derive(Debug, Clone)]
struct Active {
    fault: Fault,
    /// Messages of its protocol judged since it was added.
    seen: u64,
}

impl Active {
    /// Whether it judges `protocol`'s messages travelling in `dir`.
    fn acts_on(&self, protocol: Protocol, dir: Direction) -> bool {
        self.fault.protocol == protocol && self.fault.select.dir.unwrap_or_default() == dir
    }
}

/// The faults in force and the seed.
#[derive(Debug, Clone)]
pub(crate) struct Faults {
    seed: u64,
    active: Vec<Active>,
    /// Whether any fault of each protocol is in force: the hot paths check
    /// only this.
    tcp: bool,
    udp: bool,
    /// How TCP and UDP are relayed (section 11).
    relayed: [Relaying; 2],
}

impl Faults {
    /// Faults on a server that relays nothing (tests).
    #[cfg(test)]
    pub fn new(seed: u64, faults: &[Fault]) -> Faults {
        Faults::relaying(seed, faults, [Relaying::Not; 2])
    }

    /// The faults of a configuration, which [`Config::validate`] checked,
    /// on a server that relays TCP (`relayed[0]`) and UDP (`relayed[1]`)
    /// as they say: only their faults may say `dir=`, and only those of
    /// a relay of messages `match=`. One that fails
    /// [`add`](Faults::add)'s check anyway is left out and logged, never
    /// put in force.
    ///
    /// [`Config::validate`]: crate::Config::validate
    pub fn relaying(seed: u64, faults: &[Fault], relayed: [Relaying; 2]) -> Faults {
        let mut set = Faults {
            seed,
            active: Vec::new(),
            tcp: false,
            udp: false,
            relayed,
        };
        for fault in faults {
            if let Err(e) = set.add(fault.clone()) {
                warn!("{e}: left out");
            }
        }
        set
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Adds a fault; its selectors count from now. Every way in comes
    /// through here, so the check is made whoever built the fault.
    ///
    /// # Errors
    ///
    /// The fault fails [`Fault::validate`], says `dir=` on a protocol
    /// that is not relayed or `match=` on a stream-mode TCP relay, or
    /// [`MAX_FAULTS`] are in force already; nothing changes.
    pub fn add(&mut self, fault: Fault) -> Result<(), String> {
        self.check(&fault)?;
        self.active.push(Active { fault, seen: 0 });
        self.refresh();
        Ok(())
    }

    /// Whether [`add`](Faults::add) would take `fault`, changing nothing.
    ///
    /// # Errors
    ///
    /// As [`add`](Faults::add).
    pub fn check(&self, fault: &Fault) -> Result<(), String> {
        fault.validate()?;
        let relayed = |p: Protocol| p.pick(self.relayed[0], self.relayed[1]);
        super::check_direction(fault, relayed)?;
        if self.active.len() >= MAX_FAULTS {
            return Err(format!(
                "fault '{fault}': {MAX_FAULTS} faults are in force already (clear them first)"
            ));
        }
        Ok(())
    }

    /// Removes every fault.
    pub fn clear(&mut self) {
        self.active.clear();
        self.refresh();
    }

    fn refresh(&mut self) {
        let has = |p| self.active.iter().any(|a| a.fault.protocol == p);
        (self.tcp, self.udp) = (has(Protocol::Tcp), has(Protocol::Udp));
    }

    /// Whether any fault of `protocol` is in force.
    #[inline]
    pub fn any(&self, protocol: Protocol) -> bool {
        protocol.pick(self.tcp, self.udp)
    }

    /// Judges a message with no bytes (for tests of the counting).
    #[cfg(test)]
    pub fn judge(&mut self, protocol: Protocol, ordinals: Ordinals) -> Verdict {
        self.judge_in(protocol, Direction::Down, ordinals)
    }

    /// Judges one relayed message travelling in direction `dir`: only the
    /// faults of that direction see it, so each direction counts its own
    /// messages. Without a relay every message is `Down`. A message with
    /// no bytes at hand (a stream-mode pair) matches no `match=`.
    pub fn judge_in(&mut self, protocol: Protocol, dir: Direction, ordinals: Ordinals) -> Verdict {
        self.judge_seen(protocol, dir, ordinals, None)
    }

    /// Judges one message of `protocol` going `dir`, which has `ordinals`
    /// and is `message`: counts it for every fault of its protocol and
    /// direction, and returns what applies.
    pub fn judge_message(
        &mut self,
        protocol: Protocol,
        dir: Direction,
        ordinals: Ordinals,
        message: &[u8],
    ) -> Verdict {
        self.judge_seen(protocol, dir, ordinals, Some(message))
    }

    /// [`judge_message`](Faults::judge_message), for a message whose
    /// bytes may be unknown (`None`): then no `match=` picks it, and the
    /// other selectors judge it as any.
    pub fn judge_seen(
        &mut self,
        protocol: Protocol,
        dir: Direction,
        ordinals: Ordinals,
        message: Option<&[u8]>,
    ) -> Verdict {
        let mut verdict = Verdict::default();
        let seed = self.seed;
        for (position, active) in self.active.iter_mut().enumerate() {
            if !active.acts_on(protocol, dir) {
                continue;
            }
            active.seen += 1;
            let key = Key {
                seed,
                position: position as u64,
                protocol,
                ordinals,
            };
            if selects(&active.fault.select, active.seen, &key, message) {
                apply(&mut verdict, active.fault.kind, &key);
            }
        }
        if verdict.terminal.is_some() {
            verdict.drop_shapers();
        }
        verdict
    }
}

/// Whether `select` picks `message`, the `nth` (from 1) its fault judged;
/// a message whose bytes are unknown (`None`) fits no `match=`.
fn selects(select: &Selector, nth: u64, key: &Key, message: Option<&[u8]>) -> bool {
    select.first.is_none_or(|n| nth <= n)
        && select.after.is_none_or(|n| nth > n)
        && select.every.is_none_or(|n| n > 0 && nth % n == 0)
        && select
            .p
            .is_none_or(|p| unit_interval(key.hash(Purpose::Select)) < p)
        && (select.matches.as_ref()).is_none_or(|m| message.is_some_and(|bytes| m.matches(bytes)))
}

/// Adds one selected fault to the verdict, in composition order.
fn apply(verdict: &mut Verdict, kind: FaultKind, key: &Key) {
    let applied = match kind {
        FaultKind::Delay { min_ms, max_ms } => {
            let span = max_ms - min_ms;
            let hash = key.hash(Purpose::Delay);
            // The whole u64 range has no `span + 1`: any hash is in it.
            let pick = match span.checked_add(1) {
                Some(values) => hash % values,
                None => hash,
            };
            verdict.delay_ms = verdict.delay_ms.saturating_add(min_ms + pick);
            let range = &mut verdict.delay_range;
            range.least_ms = range.least_ms.saturating_add(min_ms);
            range.spread_ms = range.spread_ms.saturating_add(span);
            range.seed ^= splitmix64(hash);
            true
        }
        FaultKind::Drop | FaultKind::Hang | FaultKind::Close | FaultKind::Reset => {
            let first = verdict.terminal.is_none();
            if first {
                verdict.terminal = Some(kind);
            }
            first
        }
        FaultKind::Truncate(n) => set_once(&mut verdict.truncate, n),
        FaultKind::Corrupt => set_once(&mut verdict.corrupt, key.hash(Purpose::Corrupt)),
        FaultKind::Duplicate => !std::mem::replace(&mut verdict.duplicate, true),
        FaultKind::Dribble { bytes, every_ms } => set_once(&mut verdict.dribble, (bytes, every_ms)),
        FaultKind::SlowClose(ms) => set_once(&mut verdict.slow_close_ms, ms),
        // A rate of 0 is no limit: it applies, and changes nothing.
        FaultKind::Bandwidth(0) => true,
        FaultKind::Bandwidth(rate) => set_once(&mut verdict.bandwidth, rate),
        FaultKind::Timeout(ms) => set_once(&mut verdict.timeout_ms, ms),
        FaultKind::ResetPeer(ms) => set_once(&mut verdict.reset_peer_ms, ms),
        FaultKind::Slicer {
            average,
            variation,
            delay_us,
        } => {
            let slices = Slices {
                average,
                variation,
                delay_us,
                seed: key.hash(Purpose::Slices),
            };
            set_once(&mut verdict.slicer, slices)
        }
    };
    if applied {
        verdict.applied[kind.index()] += 1;
    }
}

/// Sets `slot` if it is empty; whether it did (the first one wins).
fn set_once<T>(slot: &mut Option<T>, value: T) -> bool {
    let first = slot.is_none();
    if first {
        *slot = Some(value);
    }
    first
}

/// What a hash is for: the same message gets independent choices.
#[derive(Clone, Copy)]
enum Purpose {
    Select = 1,
    Delay = 2,
    Corrupt = 3,
    Slices = 4,
}

/// Everything a seeded choice depends on.
struct Key {
    seed: u64,
    position: u64,
    protocol: Protocol,
    ordinals: Ordinals,
}

impl Key {
    fn hash(&self, purpose: Purpose) -> u64 {
        let protocol = self.protocol.pick(1, 2);
        [
            self.position,
            protocol,
            self.ordinals[0],
            self.ordinals[1],
            purpose as u64,
        ]
        .into_iter()
        .fold(splitmix64(self.seed), |h, part| splitmix64(h ^ part))
    }
}

/// SplitMix64's output function: a fast, well-mixed 64-bit hash.
pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A hash mapped to `[0, 1)`, from its top 53 bits.
fn unit_interval(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// Overwrites every byte of `text` with a different one, chosen from
/// `seed`; never a `\n`, so corrupted lines still split.
pub(crate) fn corrupt(text: &mut [u8], seed: u64) {
    corrupt_at(text, seed, 0);
}

/// [`corrupt`] for the piece of a stream that starts at `offset`: each
/// byte's replacement depends on its place in the stream only, not on how
/// reads happened to cut it (a relayed stream, SPEC 11).
pub(crate) fn corrupt_at(text: &mut [u8], seed: u64, offset: u64) {
    for (i, byte) in text.iter_mut().enumerate() {
        let mut pick = splitmix64(seed ^ offset.wrapping_add(i as u64)) as u8;
        while pick == *byte || pick == b'\n' {
            pick = pick.wrapping_add(1);
        }
        *byte = pick;
    }
}

/// A seed when none was given: the clock and the process id, mixed.
pub(crate) fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    splitmix64(nanos ^ u64::from(std::process::id()).rotate_left(32))
}
