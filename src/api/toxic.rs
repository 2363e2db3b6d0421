//! Toxics as the API shows and takes them (SPEC 14): a type, a stream, a
//! toxicity and attributes, each attribute an integer with a default.
//! This module checks and holds them; what each does to the traffic is the
//! relay's.

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use serde_json::{Map, Value};

use crate::fault::{Fault, FaultKind, Relaying, Selector, check_direction};
use crate::vocab::Direction;
use crate::vocab::Protocol;

/// What an attribute takes, and its default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Attr {
    /// A whole number from 0 to [`MAX_ATTRIBUTE`]; its default.
    Number(i64),
    /// A fault's value as `--fault` writes it: a whole number, or text
    /// (`"100-250"`, `"3/20"`); its default, as `--fault` writes it.
    Value(&'static str),
    /// A selector's count (`first`, `after`, `every`): a whole number or
    /// `null` (none, the default).
    Count,
    /// A selector's text (`match`): a string or `null` (the default).
    Text,
}

/// A toxic type and its attributes, in the order shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ToxicType {
    pub name: &'static str,
    pub attributes: &'static [(&'static str, Attr)],
    /// One of toxiproxy's own: its selectors are shown only when set, so
    /// it looks exactly as toxiproxy shows it.
    pub toxiproxys: bool,
}

/// The selectors of section 8, an attribute of every type.
const SELECTORS: [(&str, Attr); 4] = [
    ("first", Attr::Count),
    ("after", Attr::Count),
    ("every", Attr::Count),
    ("match", Attr::Text),
];

const fn toxiproxys(name: &'static str, attributes: &'static [(&'static str, Attr)]) -> ToxicType {
    ToxicType {
        name,
        attributes,
        toxiproxys: true,
    }
}

const fn ackloops(name: &'static str, attributes: &'static [(&'static str, Attr)]) -> ToxicType {
    ToxicType {
        name,
        attributes,
        toxiproxys: false,
    }
}

/// The types of SPEC 14's table, then every other fault kind of section 8
/// under its own name, its value an attribute of the same name.
pub(crate) const TYPES: [ToxicType; 16] = [
    toxiproxys(
        "latency",
        &[("latency", Attr::Number(0)), ("jitter", Attr::Number(0))],
    ),
    toxiproxys("bandwidth", &[("rate", Attr::Number(0))]),
    toxiproxys("slow_close", &[("delay", Attr::Number(0))]),
    toxiproxys("timeout", &[("timeout", Attr::Number(0))]),
    toxiproxys("reset_peer", &[("timeout", Attr::Number(0))]),
    toxiproxys(
        "slicer",
        &[
            ("average_size", Attr::Number(0)),
            ("size_variation", Attr::Number(0)),
            ("delay", Attr::Number(0)),
        ],
    ),
    toxiproxys("limit_data", &[("bytes", Attr::Number(0))]),
    ackloops("delay", &[("delay", Attr::Value("0"))]),
    ackloops("dribble", &[("dribble", Attr::Value("1/0"))]),
    ackloops("truncate", &[("truncate", Attr::Number(0))]),
    ackloops("corrupt", &[]),
    ackloops("duplicate", &[]),
    ackloops("drop", &[]),
    ackloops("hang", &[]),
    ackloops("close", &[]),
    ackloops("reset", &[]),
];

impl ToxicType {
    /// Its attributes, then the selectors.
    fn all_attributes(&self) -> impl Iterator<Item = &(&'static str, Attr)> {
        self.attributes.iter().chain(SELECTORS.iter())
    }
}

/// Largest attribute value taken: about 31 years in milliseconds, far
/// from any overflow in the loop's deadlines once added to its clock.
pub(crate) const MAX_ATTRIBUTE: i64 = 1 << 40;

/// One toxic on an endpoint.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Toxic {
    pub name: String,
    pub kind: ToxicType,
    /// The stream as given (any case), shown back as given.
    pub stream: String,
    pub dir: Direction,
    /// The probability that it acts on a connection, 0 to 1.
    pub toxicity: f64,
    /// One value per attribute of `kind`, in its order, then one per
    /// selector (`null`: none).
    pub values: Vec<Value>,
}

/// Why a toxic body was refused: toxiproxy's messages, each a 400.
pub(crate) type Refusal = String;

/// The stream's direction: `upstream` is the client's bytes (`dir=up`),
/// `downstream` the server's (`dir=down`); any case.
fn parse_stream(stream: &str) -> Result<Direction, Refusal> {
    match stream.to_ascii_lowercase().as_str() {
        "upstream" => Ok(Direction::Up),
        "downstream" => Ok(Direction::Down),
        _ => Err("stream was invalid, can be either upstream or downstream".into()),
    }
}

/// The fields a new toxic's body may give, already checked for type.
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub(crate) struct ToxicInput {
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub stream: Option<String>,
    pub toxicity: Option<f64>,
    pub attributes: Option<Map<String, Value>>,
}

/// The changes a toxic update may give (`name`, `type`, `stream` ignored).
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct ToxicChange {
    pub toxicity: Option<f64>,
    pub attributes: Option<Map<String, Value>>,
}

impl Toxic {
    /// A toxic from its input, in toxiproxy's order of checks: the stream,
    /// then the type, then (by the caller) the name, then the attributes.
    /// `taken` says whether a name is in use on the endpoint.
    pub fn new(input: ToxicInput, taken: impl Fn(&str) -> bool) -> Result<Toxic, (u16, String)> {
        let stream = input.stream.unwrap_or_else(|| "downstream".into());
        let dir = parse_stream(&stream).map_err(|why| (400, why))?;
        let kind_name = input.kind.unwrap_or_default();
        let name = input
            .name
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| format!("{kind_name}_{stream}"));
        let kind = TYPES
            .into_iter()
            .find(|t| t.name == kind_name)
            .ok_or((400, "invalid toxic type".to_string()))?;
        if taken(&name) {
            return Err((409, "toxic already exists".into()));
        }
        let mut toxic = Toxic {
            name,
            kind,
            stream,
            dir,
            toxicity: 1.0,
            values: kind
                .all_attributes()
                .map(|(_, attr)| attr.default())
                .collect(),
        };
        toxic
            .change(ToxicChange {
                toxicity: input.toxicity,
                attributes: input.attributes,
            })
            .map_err(|why| (400, why))?;
        Ok(toxic)
    }

    /// Merges `change` into this toxic, checking every value first:
    /// nothing changes on a refusal.
    pub fn change(&mut self, change: ToxicChange) -> Result<(), Refusal> {
        let mut changed = self.clone();
        for ((attribute, attr), value) in self.kind.all_attributes().zip(&mut changed.values) {
            match change.attributes.as_ref().and_then(|a| a.get(*attribute)) {
                None => {}
                // A selector's `null` takes it away; any other stays.
                Some(Value::Null) if !attr.is_selector() => {}
                Some(given) => *value = attr.check(attribute, given)?,
            }
        }
        if let Some(p) = change.toxicity {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("bad request body: toxicity {p} is not from 0 to 1"));
            }
            changed.toxicity = p;
        }
        // What the values make must be a fault `--fault` would take, on
        // a TCP proxy or a UDP one (which one is the proxy's to check:
        // `check_toxic`).
        if let Err(why) = changed.try_faults_on(Protocol::Tcp) {
            changed.try_faults_on(Protocol::Udp).map_err(|_| why)?;
        }
        *self = changed;
        Ok(())
    }
}

impl Toxic {
    /// The number in attribute `name` (0 if it has none such, or text).
    fn value(&self, name: &str) -> u64 {
        let at = self.kind.all_attributes().position(|(a, _)| *a == name);
        at.and_then(|i| self.values[i].as_u64()).unwrap_or(0)
    }

    /// The faults of sections 8 and 14 that do what this toxic does to a
    /// `protocol` relay's connections or datagrams, on its stream, with
    /// its toxicity as `p=` and its selectors (none for a toxic that does
    /// nothing, as `latency` 0). A toxic's values were checked when it
    /// was made, and its proxy checked its protocol.
    pub fn faults_on(&self, protocol: Protocol) -> Vec<Fault> {
        self.try_faults_on(protocol).unwrap_or_default()
    }

    /// [`faults_on`](Toxic::faults_on), or why its values make no fault
    /// on `protocol`: the message of `--fault`'s check, for a 400.
    pub(crate) fn try_faults_on(&self, protocol: Protocol) -> Result<Vec<Fault>, Refusal> {
        let v = |name| self.value(name);
        let kinds = match self.kind.name {
            "latency" => match (v("latency"), v("jitter")) {
                (0, 0) => vec![],
                (ms, jitter) => vec![FaultKind::Delay {
                    min_ms: ms.saturating_sub(jitter),
                    max_ms: ms + jitter,
                }],
            },
            "bandwidth" => match v("rate") {
                0 => vec![],
                rate => vec![FaultKind::Bandwidth(rate)],
            },
            "slow_close" => vec![FaultKind::SlowClose(v("delay"))],
            "timeout" => vec![FaultKind::Timeout(v("timeout"))],
            "reset_peer" => vec![FaultKind::ResetPeer(v("timeout"))],
            // toxiproxy's slicer of 0 bytes cuts nothing.
            "slicer" => match v("average_size") {
                0 => vec![],
                size => vec![FaultKind::Slicer {
                    average: size.min(u64::from(u32::MAX)) as u32,
                    variation: v("size_variation").min(u64::from(u32::MAX)) as u32,
                    delay_us: v("delay"),
                }],
            },
            "limit_data" => vec![FaultKind::Truncate(v("bytes") as usize)],
            // Section 8's own kinds: parsed as `--fault` parses them.
            name => return self.parsed(name, protocol).map(|fault| vec![fault]),
        };
        let select = self.selector()?;
        let faults = (kinds.into_iter()).map(|kind| Fault {
            protocol,
            kind,
            select: select.clone(),
        });
        faults.map(checked).collect()
    }

    /// This toxic's selectors, stream and toxicity, as `--fault` takes
    /// them: `,first=N,...,dir=D[,p=P]`.
    fn selector_text(&self) -> String {
        let mut text = String::new();
        for ((name, _), value) in self.kind.all_attributes().zip(&self.values) {
            if !SELECTORS.iter().any(|(s, _)| s == name) || value.is_null() {
                continue;
            }
            match value {
                // Its text cannot hold a comma: `\x2c` writes one.
                Value::String(text_value) => {
                    let escaped = text_value.replace(',', r"\x2c");
                    text.push_str(&format!(",{name}={escaped}"));
                }
                other => text.push_str(&format!(",{name}={other}")),
            }
        }
        text.push_str(&format!(",dir={}", self.dir));
        if self.toxicity < 1.0 {
            text.push_str(&format!(",p={}", Probability(self.toxicity).text()));
        }
        text
    }

    /// The selectors of [`selector_text`](Toxic::selector_text), parsed.
    fn selector(&self) -> Result<Selector, Refusal> {
        let spec = format!("tcp:corrupt{}", self.selector_text());
        let fault: Fault = spec.parse().map_err(|why: String| bad_fault(&why))?;
        Ok(fault.select)
    }

    /// A section 8 kind `name` with its value attribute and selectors,
    /// parsed from `--fault` text.
    fn parsed(&self, name: &str, protocol: Protocol) -> Result<Fault, Refusal> {
        let value = match self.kind.attributes.first().map(|_| &self.values[0]) {
            // A comma would start a selector of its own.
            Some(Value::String(text)) if text.contains(',') => {
                return Err(refusal(name, &self.values[0], "a value has no comma"));
            }
            Some(Value::String(text)) => format!("={text}"),
            Some(number) => format!("={number}"),
            None => String::new(),
        };
        let spec = format!("{}:{name}{value}{}", protocol.name(), self.selector_text());
        let fault: Fault = spec.parse().map_err(|why: String| bad_fault(&why))?;
        checked(fault)
    }
}

/// A fault as an endpoint takes it: a TCP one relays streams (no
/// `match=`: no messages), a UDP one datagrams, each a message.
fn checked(fault: Fault) -> Result<Fault, Refusal> {
    let relaying = |protocol| match protocol {
        Protocol::Tcp => Relaying::Streams,
        Protocol::Udp => Relaying::Messages,
    };
    if !fault.kind.applies_to(fault.protocol) {
        return Err(bad_fault(&format!(
            "fault '{fault}': {} is not a {} fault",
            fault.kind.name(),
            fault.protocol.name()
        )));
    }
    check_direction(&fault, relaying).map_err(|why| bad_fault(&why))?;
    Ok(fault)
}

/// A fault's message as a 400's.
fn bad_fault(why: &str) -> Refusal {
    format!("bad request body: {why}")
}

impl Attr {
    /// Its value before any is given.
    fn default(&self) -> Value {
        match self {
            Attr::Number(n) => Value::from(*n),
            Attr::Value(text) => match text.parse::<i64>() {
                Ok(n) => Value::from(n),
                Err(_) => Value::from(*text),
            },
            Attr::Count | Attr::Text => Value::Null,
        }
    }

    fn is_selector(&self) -> bool {
        matches!(self, Attr::Count | Attr::Text)
    }

    /// `given` as a value of this attribute, or why not (a 400).
    fn check(&self, attribute: &str, given: &Value) -> Result<Value, Refusal> {
        match (self, given) {
            (Attr::Count | Attr::Text, Value::Null) => Ok(Value::Null),
            (Attr::Text | Attr::Value(_), Value::String(text)) => {
                if text.len() > MAX_TEXT {
                    let why = format!("at most {MAX_TEXT} bytes");
                    return Err(refusal(attribute, given, &why));
                }
                Ok(given.clone())
            }
            (Attr::Text, _) => Err(refusal(attribute, given, "not a string")),
            _ => attribute_value(attribute, given).map(Value::from),
        }
    }
}

/// The longest text an attribute takes (a `match`, a value).
const MAX_TEXT: usize = 4096;

fn refusal(attribute: &str, given: &Value, why: &str) -> Refusal {
    format!("bad request body: attribute {attribute}: {why}, got {given}")
}

/// An attribute's value: a whole number from 0 to [`MAX_ATTRIBUTE`].
fn attribute_value(attribute: &str, given: &Value) -> Result<i64, Refusal> {
    let bad = |why: &str| refusal(attribute, given, why);
    let n = given.as_i64().ok_or_else(|| bad("not a whole number"))?;
    if !(0..=MAX_ATTRIBUTE).contains(&n) {
        return Err(bad(&format!("must be 0 to {MAX_ATTRIBUTE}")));
    }
    Ok(n)
}

/// The attributes as a JSON object, in the type's order.
struct Attributes<'a>(&'a Toxic);

impl Serialize for Attributes<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let toxic = self.0;
        let mut map = serializer.serialize_map(None)?;
        for ((name, attr), value) in toxic.kind.all_attributes().zip(&toxic.values) {
            // toxiproxy's types look as toxiproxy shows them.
            if attr.is_selector() && value.is_null() && toxic.kind.toxiproxys {
                continue;
            }
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

/// A probability as toxiproxy writes it: `1`, not `1.0`.
struct Probability(f64);

impl Probability {
    /// As `p=` takes it: at most 9 decimals.
    fn text(&self) -> String {
        let billionths = (self.0 * 1e9).round() as u64;
        let digits = format!("{:09}", billionths % 1_000_000_000);
        let fraction = digits.trim_end_matches('0');
        match fraction {
            "" => format!("{}", billionths / 1_000_000_000),
            _ => format!("{}.{fraction}", billionths / 1_000_000_000),
        }
    }
}

impl Serialize for Probability {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let p = self.0;
        if p.fract() == 0.0 {
            serializer.serialize_u64(p as u64)
        } else {
            serializer.serialize_f64(p)
        }
    }
}

impl Serialize for Toxic {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(5))?;
        map.serialize_entry("attributes", &Attributes(self))?;
        map.serialize_entry("name", &self.name)?;
        map.serialize_entry("type", self.kind.name)?;
        map.serialize_entry("stream", &self.stream)?;
        map.serialize_entry("toxicity", &Probability(self.toxicity))?;
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toxic(json: &str) -> Result<Toxic, (u16, String)> {
        let input: ToxicInput = serde_json::from_str(json).unwrap();
        Toxic::new(input, |name| name == "taken")
    }

    #[test]
    fn defaults_fill_what_is_not_given() {
        let t = toxic(r#"{"type":"latency","attributes":{"jitter":3,"other":"x"}}"#).unwrap();
        assert_eq!(
            (t.name.as_str(), t.dir, t.toxicity),
            ("latency_downstream", Direction::Down, 1.0)
        );
        assert_eq!(t.values[..2], [0, 3], "latency, jitter");
        let shown = serde_json::to_string(&t).unwrap();
        assert_eq!(
            shown,
            r#"{"attributes":{"latency":0,"jitter":3},"name":"latency_downstream","type":"latency","stream":"downstream","toxicity":1}"#
        );
        let up = toxic(r#"{"type":"slicer","stream":"UpStream","toxicity":0.5}"#).unwrap();
        assert_eq!(
            (up.name.as_str(), up.dir),
            ("slicer_UpStream", Direction::Up)
        );
        assert!(
            serde_json::to_string(&up)
                .unwrap()
                .contains(r#""toxicity":0.5"#)
        );
    }

    #[test]
    fn bad_toxics_are_refused_with_toxiproxys_words() {
        fn refused(json: &str) -> (u16, String) {
            toxic(json).unwrap_err()
        }
        assert_eq!(
            refused(r#"{"type":"nope"}"#),
            (400, "invalid toxic type".into())
        );
        assert_eq!(refused(r#"{"type":"latency","stream":"x"}"#).0, 400);
        assert_eq!(refused(r#"{"type":"latency","name":"taken"}"#).0, 409);
        for bad in [
            r#"{"latency":-1}"#,
            r#"{"latency":1.5}"#,
            r#"{"latency":"1"}"#,
        ] {
            let json = format!(r#"{{"type":"latency","attributes":{bad}}}"#);
            let (status, why) = refused(&json);
            assert_eq!(status, 400, "{json}");
            assert!(why.starts_with("bad request body"), "{why}");
        }
        assert_eq!(refused(r#"{"type":"latency","toxicity":1.5}"#).0, 400);
    }

    #[test]
    fn a_change_merges_and_checks_everything_first() {
        let mut t = toxic(r#"{"type":"latency","attributes":{"latency":5}}"#).unwrap();
        let change: ToxicChange = serde_json::from_str(r#"{"attributes":{"jitter":2}}"#).unwrap();
        t.change(change).unwrap();
        assert_eq!(t.values[..2], [5, 2]);
        let bad: ToxicChange =
            serde_json::from_str(r#"{"attributes":{"latency":9,"jitter":-1}}"#).unwrap();
        assert!(t.change(bad).is_err());
        assert_eq!(t.values[..2], [5, 2], "nothing changed");
    }
}
