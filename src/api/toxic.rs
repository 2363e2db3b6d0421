//! Toxics as the API shows and takes them (SPEC 14): a type, a stream, a
//! toxicity and attributes, each attribute an integer with a default.
//! This module checks and holds them; what each does to the traffic is the
//! relay's.

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use serde_json::{Map, Value};

use crate::fault::{Fault, FaultKind, Selector};
use crate::vocab::Direction;
use crate::vocab::Protocol;

/// A toxic type and its attributes, in the order toxiproxy shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ToxicType {
    pub name: &'static str,
    pub attributes: &'static [&'static str],
}

/// The types of SPEC 14's table.
pub(crate) const TYPES: [ToxicType; 7] = [
    ToxicType {
        name: "latency",
        attributes: &["latency", "jitter"],
    },
    ToxicType {
        name: "bandwidth",
        attributes: &["rate"],
    },
    ToxicType {
        name: "slow_close",
        attributes: &["delay"],
    },
    ToxicType {
        name: "timeout",
        attributes: &["timeout"],
    },
    ToxicType {
        name: "reset_peer",
        attributes: &["timeout"],
    },
    ToxicType {
        name: "slicer",
        attributes: &["average_size", "size_variation", "delay"],
    },
    ToxicType {
        name: "limit_data",
        attributes: &["bytes"],
    },
];

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
    /// One value per attribute of `kind`, in its order.
    pub values: Vec<i64>,
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
            values: vec![0; kind.attributes.len()],
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
        let mut values = self.values.clone();
        for (attribute, value) in self.kind.attributes.iter().zip(&mut values) {
            match change.attributes.as_ref().and_then(|a| a.get(*attribute)) {
                None | Some(Value::Null) => {}
                Some(given) => *value = attribute_value(attribute, given)?,
            }
        }
        if let Some(p) = change.toxicity {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("bad request body: toxicity {p} is not from 0 to 1"));
            }
            self.toxicity = p;
        }
        self.values = values;
        Ok(())
    }
}

impl Toxic {
    /// The value of attribute `name` (0 if its type has none such).
    fn value(&self, name: &str) -> u64 {
        let at = self.kind.attributes.iter().position(|a| *a == name);
        at.map_or(0, |i| self.values[i] as u64)
    }

    /// The faults of section 8 that do what this toxic does to a stream
    /// relay's new connections, on its stream, with its toxicity as `p=`
    /// (none for a toxic that does nothing, as `latency` 0).
    pub fn faults(&self) -> Vec<Fault> {
        let v = |name| self.value(name);
        let kinds = match self.kind.name {
            "latency" => match (v("latency"), v("jitter")) {
                (0, 0) => vec![],
                (ms, jitter) => vec![FaultKind::Delay {
                    min_ms: ms.saturating_sub(jitter),
                    max_ms: ms + jitter,
                }],
            },
            // rate KB/s is rate bytes a millisecond: a tenth of a
            // second's worth every 100 ms.
            "bandwidth" => match v("rate") {
                0 => vec![],
                rate => vec![FaultKind::Dribble {
                    bytes: (rate * 100).min(u64::from(u32::MAX)) as u32,
                    every_ms: 100,
                }],
            },
            "slow_close" => vec![FaultKind::SlowClose(v("delay"))],
            "timeout" => vec![FaultKind::Hang],
            "reset_peer" => {
                let ms = v("timeout");
                let delay = FaultKind::Delay {
                    min_ms: ms,
                    max_ms: ms,
                };
                vec![delay, FaultKind::Reset]
            }
            "slicer" => match v("average_size") {
                0 => vec![],
                size => vec![FaultKind::Dribble {
                    bytes: size.min(u64::from(u32::MAX)) as u32,
                    every_ms: v("delay") / 1000,
                }],
            },
            "limit_data" => vec![FaultKind::Truncate(v("bytes") as usize)],
            _ => vec![],
        };
        let select = Selector {
            p: (self.toxicity < 1.0).then_some(self.toxicity),
            dir: Some(self.dir),
            ..Selector::default()
        };
        (kinds.into_iter())
            .map(|kind| Fault {
                protocol: Protocol::Tcp,
                kind,
                select: select.clone(),
            })
            .collect()
    }
}

/// An attribute's value: a whole number from 0 to [`MAX_ATTRIBUTE`].
fn attribute_value(attribute: &str, given: &Value) -> Result<i64, Refusal> {
    let bad = |why: &str| format!("bad request body: attribute {attribute}: {why}, got {given}");
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
        let mut map = serializer.serialize_map(Some(toxic.values.len()))?;
        for (name, value) in toxic.kind.attributes.iter().zip(&toxic.values) {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

/// A probability as toxiproxy writes it: `1`, not `1.0`.
struct Probability(f64);

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
        assert_eq!(t.values, [0, 3], "latency, jitter");
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
        assert_eq!(t.values, [5, 2]);
        let bad: ToxicChange =
            serde_json::from_str(r#"{"attributes":{"latency":9,"jitter":-1}}"#).unwrap();
        assert!(t.change(bad).is_err());
        assert_eq!(t.values, [5, 2], "nothing changed");
    }
}
