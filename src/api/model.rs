//! The API's JSON: what a proxy body may give, how a proxy is shown, and
//! the error every refusal carries.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::http::Answer;
use super::toxic::{Toxic, ToxicInput};
use crate::vocab::Protocol;

/// A refusal: an HTTP status and toxiproxy's message for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub status: u16,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_body(why: impl std::fmt::Display) -> ApiError {
        ApiError::new(400, format!("bad request body: {why}"))
    }

    pub fn missing(field: &str) -> ApiError {
        ApiError::new(400, format!("missing required field: {field}"))
    }

    pub fn proxy_not_found() -> ApiError {
        ApiError::new(404, "proxy not found")
    }

    pub fn toxic_not_found() -> ApiError {
        ApiError::new(404, "toxic not found")
    }

    pub fn answer(&self) -> Answer {
        Answer::error(self.status, &self.message)
    }
}

/// Parses a JSON body into `T`; a body that is not JSON of that shape is
/// `bad request body: ...`.
pub(crate) fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(ApiError::bad_body)
}

/// What a proxy body may give: `POST /proxies`, each `/populate` entry,
/// each `--config` entry, and (every field optional) an update.
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub(crate) struct ProxyInput {
    pub name: Option<String>,
    pub listen: Option<String>,
    pub upstream: Option<String>,
    pub enabled: Option<bool>,
    /// An extension: toxics to add with a new proxy (toxiproxy ignores
    /// them).
    #[serde(default, deserialize_with = "toxics_or_null")]
    pub toxics: Vec<ToxicInput>,
}

fn toxics_or_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<ToxicInput>, D::Error> {
    let toxics: Option<Vec<ToxicInput>> = serde::Deserialize::deserialize(d)?;
    Ok(toxics.unwrap_or_default())
}

/// A new proxy's fields, checked present.
#[derive(Debug, Clone)]
pub(crate) struct ProxySpec {
    pub name: String,
    pub listen: String,
    pub upstream: String,
    pub enabled: bool,
    pub toxics: Vec<ToxicInput>,
}

impl ProxyInput {
    /// The fields a new proxy needs; `at` names the entry of a list in the
    /// error (`name at proxy 2`).
    pub fn spec(self, at: Option<usize>) -> Result<ProxySpec, ApiError> {
        let place = |field: &str| match at {
            Some(i) => format!("{field} at proxy {i}"),
            None => field.to_string(),
        };
        let name = self.name.filter(|n| !n.is_empty());
        let name = name.ok_or_else(|| ApiError::missing(&place("name")))?;
        let upstream = self.upstream.filter(|u| !u.is_empty());
        let upstream = upstream.ok_or_else(|| ApiError::missing(&place("upstream")))?;
        let listen = self.listen.unwrap_or_default();
        protocol_of(&listen, &upstream)?;
        Ok(ProxySpec {
            name,
            listen,
            upstream,
            enabled: self.enabled.unwrap_or(true),
            toxics: self.toxics,
        })
    }
}

/// What `address` names: `udp:HOST:PORT` a UDP address (SPEC 14's
/// extension), anything else a TCP one; and the address without the
/// prefix.
pub(crate) fn split_protocol(address: &str) -> (Protocol, &str) {
    match address.strip_prefix("udp:") {
        Some(rest) => (Protocol::Udp, rest),
        None => (Protocol::Tcp, address),
    }
}

/// What a proxy of `listen` and `upstream` relays: both `udp:`, or
/// neither (an empty `listen` follows the upstream's protocol).
pub(crate) fn protocol_of(listen: &str, upstream: &str) -> Result<Protocol, ApiError> {
    let (protocol, _) = split_protocol(upstream);
    let listens = match listen {
        "" => protocol,
        listen => split_protocol(listen).0,
    };
    if listens != protocol {
        let message = format!(
            "listen '{listen}' is {} but upstream '{upstream}' is {}: \
             a UDP proxy has udp: on both, a TCP proxy on neither",
            listens.name().to_uppercase(),
            protocol.name().to_uppercase()
        );
        return Err(ApiError::new(400, message));
    }
    Ok(protocol)
}

/// A proxy as the API shows it.
#[derive(Debug, Serialize)]
pub(crate) struct ProxyView<'a> {
    pub name: &'a str,
    pub listen: &'a str,
    pub upstream: &'a str,
    pub enabled: bool,
    pub toxics: Vec<&'a Toxic>,
    /// The endpoint's own counters (`GET /proxies/{name}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats: Option<StatsView>,
}

/// An endpoint's counters as `GET /proxies/{name}` shows them, named as
/// the control port's `stats` names them.
#[derive(Debug, Serialize)]
pub(crate) struct StatsView {
    pub accepted: u64,
    pub rejected: u64,
    pub open: u64,
    /// Datagrams received from clients (a UDP endpoint's).
    pub datagrams: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Datagrams dropped: the queue full, no flow to be had.
    pub dropped: u64,
    pub upstream_failed: u64,
    pub up_bytes_in: u64,
    pub up_bytes_out: u64,
    pub faults: u64,
}

impl StatsView {
    pub fn of(s: &crate::stats::Stats) -> StatsView {
        StatsView {
            accepted: s.accepted,
            rejected: s.rejected,
            open: s.open,
            datagrams: s.datagrams,
            bytes_in: s.bytes_in,
            bytes_out: s.bytes_out,
            dropped: s.replies_dropped,
            upstream_failed: s.upstream_failed,
            up_bytes_in: s.up_bytes_in,
            up_bytes_out: s.up_bytes_out,
            faults: s.faults.total(),
        }
    }
}

/// `value` as JSON bytes.
pub(crate) fn to_json(value: &impl Serialize) -> Vec<u8> {
    // Serializing these types cannot fail: no map has non-string keys.
    serde_json::to_vec(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_needs_a_name_and_an_upstream() {
        let input: ProxyInput = parse_body(br#"{"upstream":"x:1"}"#).unwrap();
        let e = input.spec(Some(2)).unwrap_err();
        assert_eq!(e, ApiError::missing("name at proxy 2"));
        let input: ProxyInput = parse_body(br#"{"name":"a","upstream":"x:1"}"#).unwrap();
        let spec = input.spec(None).unwrap();
        assert!(spec.enabled, "enabled unless said");
        assert_eq!(spec.listen, "");
        let mixed: ProxyInput =
            parse_body(br#"{"name":"a","listen":"udp:127.0.0.1:0","upstream":"x:1"}"#).unwrap();
        let e = mixed.spec(None).unwrap_err();
        assert_eq!(e.status, 400);
        assert!(
            e.message.contains("is UDP but upstream 'x:1' is TCP"),
            "{e:?}"
        );
        assert_eq!(protocol_of("", "udp:x:1"), Ok(Protocol::Udp));
        assert_eq!(protocol_of("udp:y:2", "udp:x:1"), Ok(Protocol::Udp));
        assert_eq!(protocol_of("y:2", "x:1"), Ok(Protocol::Tcp));
        assert_eq!(protocol_of("y:2", "udp:x:1").unwrap_err().status, 400);
        let wrong = parse_body::<ProxyInput>(br#"{"name":1}"#).unwrap_err();
        assert!(wrong.message.starts_with("bad request body: "), "{wrong:?}");
        assert_eq!(wrong.status, 400);
    }
}
