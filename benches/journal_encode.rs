//! The journal's cost per line, by encoder: the hand-written one the
//! server ships ([`JournalEvent::write_json`]) against the same line made
//! with `serde_json` and the `base64` crate (issue 21 asked to move to
//! them "if it stays as fast"). Prints nanoseconds a line, best of
//! several rounds, for lines the journal writes most: a short message, a
//! relayed 4 KiB chunk of text, one of binary (base64), text that needs
//! escapes.
//!
//!   cargo bench --bench journal_encode
//!   benches/journal_encode.sh   # the same, in instructions (callgrind)
//!
//! `--once` encodes each line 2,000 times, for an instruction count that
//! does not depend on the machine's load; `--only=hand|serde` and
//! `--case=PREFIX` pick one encoder and one line. Both encoders' lines are checked to parse as the same
//! JSON value before anything is timed.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Instant;

use ackloop::{AppliedFaults, JournalDirection, JournalEvent, Protocol};
use base64::Engine;
use serde::Serialize;
use serde::ser::Serializer;

/// The journal line as serde would write it: the same fields, the same
/// order, the optional ones left out when absent.
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
    b64: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    peer: Option<SocketAddr>,
    #[serde(skip_serializing_if = "AppliedFaults::is_empty")]
    #[serde(serialize_with = "fault_names")]
    fault: AppliedFaults,
}

fn fault_names<S: Serializer>(faults: &AppliedFaults, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(faults.names())
}

/// `event` through serde_json, base64 in `scratch` (kept between lines,
/// as a journal would keep it).
#[inline(never)]
fn serde_line(event: &JournalEvent<'_>, scratch: &mut String, out: &mut Vec<u8>) {
    let text = std::str::from_utf8(event.bytes).ok();
    if text.is_none() {
        scratch.clear();
        base64::engine::general_purpose::STANDARD.encode_string(event.bytes, scratch);
    }
    let line = Line {
        t_ms: event.t_ms,
        proto: event.protocol.name(),
        endpoint: event.endpoint,
        conn: event.conn,
        msg: event.msg,
        dir: event.dir.name(),
        len: event.bytes.len(),
        text,
        b64: text.is_none().then_some(scratch.as_str()),
        peer: event.peer,
        fault: event.faults,
    };
    serde_json::to_writer(&mut *out, &line).expect("a Vec takes every byte");
    out.push(b'\n');
}

fn event(bytes: &[u8], peer: Option<SocketAddr>) -> JournalEvent<'_> {
    JournalEvent {
        t_ms: 123_456,
        protocol: Protocol::Tcp,
        endpoint: None,
        conn: Some(42),
        msg: 7,
        dir: JournalDirection::Down,
        bytes,
        peer,
        faults: AppliedFaults::default(),
    }
}

/// The lines measured: a name and the bytes.
fn cases() -> Vec<(&'static str, Vec<u8>)> {
    let text: Vec<u8> = (0..4096).map(|i| b'a' + (i % 26) as u8).collect();
    let binary: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 0x80) as u8).collect();
    let escapes: Vec<u8> = b"GET / HTTP/1.1\r\nHost: \"x\"\r\n\r\n".repeat(8);
    vec![
        ("14 B text", b"Hello, Server\n".to_vec()),
        ("4 KiB text", text),
        ("4 KiB binary", binary),
        ("232 B escapes", escapes),
    ]
}

/// Nanoseconds a line, best of `rounds` rounds of `lines` lines.
fn time(rounds: usize, lines: usize, mut encode: impl FnMut(&mut Vec<u8>)) -> f64 {
    let mut out = Vec::with_capacity(1 << 20);
    let mut best = f64::MAX;
    for _ in 0..rounds {
        let started = Instant::now();
        for _ in 0..lines {
            out.clear();
            encode(&mut out);
            black_box(&out);
        }
        best = best.min(started.elapsed().as_nanos() as f64 / lines as f64);
    }
    best
}

fn main() {
    let once = std::env::args().any(|a| a == "--once");
    let arg = |name: &str| std::env::args().find_map(|a| a.strip_prefix(name).map(String::from));
    let which = arg("--only=");
    let case = arg("--case=");
    let peer: SocketAddr = "127.0.0.1:50312".parse().unwrap();
    let (rounds, lines) = if once { (1, 2_000) } else { (7, 200_000) };
    println!("| line | hand-written ns | serde_json + base64 ns | ratio |");
    println!("|---|---:|---:|---:|");
    for (name, bytes) in cases() {
        if case.as_deref().is_some_and(|c| !name.starts_with(c)) {
            continue;
        }
        let e = event(&bytes, Some(peer));
        let mut scratch = String::new();
        let (mut hand, mut serde) = (Vec::new(), Vec::new());
        e.write_json(&mut hand);
        serde_line(&e, &mut scratch, &mut serde);
        let parse = |line: &[u8]| serde_json::from_slice::<serde_json::Value>(line).unwrap();
        assert_eq!(parse(&hand), parse(&serde), "{name}: the same values");
        let hand_ns = match which.as_deref() {
            Some("serde") => f64::NAN,
            _ => time(rounds, lines, |out| black_box(&e).write_json(out)),
        };
        let serde_ns = match which.as_deref() {
            Some("hand") => f64::NAN,
            _ => time(rounds, lines, |out| serde_line(black_box(&e), &mut scratch, out)),
        };
        let ratio = serde_ns / hand_ns;
        println!("| {name} | {hand_ns:.0} | {serde_ns:.0} | {ratio:.2} |");
    }
}
