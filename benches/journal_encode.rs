//! The journal's cost per line, by encoder: the one the server ships
//! ([`JournalEvent::write_json`], serde_json and the `base64` crate)
//! against the hand-written encoder it replaced (issue 21 asked for the
//! move "if it stays as fast"; docs/performance.md has the figures), kept
//! here as it was so the comparison can be run again. Prints nanoseconds
//! a line, best of several rounds, for the lines a journal writes most: a
//! short message, a relayed 4 KiB chunk of text, one of binary (base64),
//! text that needs escapes.
//!
//!   cargo bench --bench journal_encode
//!   benches/journal_encode.sh   # the same, in instructions (callgrind)
//!
//! `--once` encodes each line 2,000 times, for an instruction count that
//! does not depend on the machine's load; `--only=hand|serde` and
//! `--case=NAME` pick one encoder and one line. Both encoders' lines are
//! checked to parse as the same JSON value before anything is timed.

use std::hint::black_box;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::Instant;

use ackloop::{AppliedFaults, JournalDirection, JournalEvent, Protocol};

/// The hand-written encoder as it was shipped before serde_json.
#[inline(never)]
fn hand_line(event: &JournalEvent<'_>, out: &mut Vec<u8>) {
    let _ = hand_fields(event, out);
}

fn hand_fields(e: &JournalEvent<'_>, out: &mut Vec<u8>) -> io::Result<()> {
    let proto = e.protocol.name();
    write!(out, r#"{{"t_ms":{},"proto":"{proto}""#, e.t_ms)?;
    if let Some(endpoint) = e.endpoint {
        out.extend_from_slice(br#","endpoint":"#);
        json_string(endpoint, out);
    }
    if let Some(conn) = e.conn {
        write!(out, r#","conn":{conn}"#)?;
    }
    let (msg, dir, len) = (e.msg, e.dir.name(), e.bytes.len());
    write!(out, r#","msg":{msg},"dir":"{dir}","len":{len}"#)?;
    match std::str::from_utf8(e.bytes) {
        Ok(text) => {
            out.extend_from_slice(br#","text":"#);
            json_string(text, out);
        }
        Err(_) => {
            out.extend_from_slice(br#","b64":""#);
            base64(e.bytes, out);
            out.push(b'"');
        }
    }
    if let Some(peer) = e.peer {
        write!(out, r#","peer":"{peer}""#)?;
    }
    if !e.faults.is_empty() {
        out.extend_from_slice(br#","fault":["#);
        for (i, name) in e.faults.names().enumerate() {
            let comma = if i == 0 { "" } else { "," };
            write!(out, r#"{comma}"{name}""#)?;
        }
        out.push(b']');
    }
    out.extend_from_slice(b"}\n");
    Ok(())
}

fn json_string(text: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    let bytes = text.as_bytes();
    let mut plain = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        let escaped: &[u8] = match byte {
            b'"' => br#"\""#,
            b'\\' => br"\\",
            b'\n' => br"\n",
            b'\r' => br"\r",
            b'\t' => br"\t",
            0..0x20 => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[plain..i]);
        plain = i + 1;
        match escaped {
            b"" => {
                let _ = write!(out, r"\u{byte:04x}");
            }
            escaped => out.extend_from_slice(escaped),
        }
    }
    out.extend_from_slice(&bytes[plain..]);
    out.push(b'"');
}

fn base64(bytes: &[u8], out: &mut Vec<u8>) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]);
            } else {
                out.push(b'=');
            }
        }
    }
}

/// The shipped encoder, in a frame of its own for callgrind.
#[inline(never)]
fn serde_line(event: &JournalEvent<'_>, out: &mut Vec<u8>) {
    event.write_json(out);
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

/// The lines measured: a name, the bytes, whether the line names the
/// peer (a connection's first line does).
fn cases() -> Vec<(&'static str, Vec<u8>, bool)> {
    let text: Vec<u8> = (0..4096).map(|i| b'a' + (i % 26) as u8).collect();
    let binary: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 0x80) as u8).collect();
    let escapes: Vec<u8> = b"GET / HTTP/1.1\r\nHost: \"x\"\r\n\r\n".repeat(8);
    let hello = b"Hello, Server\n".to_vec();
    vec![
        ("14 B text", hello.clone(), false),
        ("14 B text, peer", hello, true),
        ("4 KiB text", text, false),
        ("4 KiB binary", binary, false),
        ("232 B escapes", escapes, false),
    ]
}

/// Nanoseconds a line, best of `rounds` rounds of `lines` lines.
fn time(
    rounds: usize,
    lines: usize,
    encode: fn(&JournalEvent<'_>, &mut Vec<u8>),
    e: &JournalEvent<'_>,
) -> f64 {
    let mut out = Vec::with_capacity(1 << 20);
    let mut best = f64::MAX;
    for _ in 0..rounds {
        let started = Instant::now();
        for _ in 0..lines {
            out.clear();
            encode(black_box(e), &mut out);
            black_box(&out);
        }
        best = best.min(started.elapsed().as_nanos() as f64 / lines as f64);
    }
    best
}

fn main() {
    let arg = |name: &str| std::env::args().find_map(|a| a.strip_prefix(name).map(String::from));
    let once = std::env::args().any(|a| a == "--once");
    let (only, case) = (arg("--only="), arg("--case="));
    let peer: SocketAddr = "127.0.0.1:50312".parse().unwrap();
    let (rounds, lines) = if once { (1, 2_000) } else { (7, 200_000) };
    println!("| line | hand-written ns | serde_json + base64 ns | ratio |");
    println!("|---|---:|---:|---:|");
    for (name, bytes, names_peer) in cases() {
        if case.as_deref().is_some_and(|c| name != c) {
            continue;
        }
        let e = event(&bytes, names_peer.then_some(peer));
        let (mut hand, mut serde) = (Vec::new(), Vec::new());
        hand_line(&e, &mut hand);
        serde_line(&e, &mut serde);
        let parse = |line: &[u8]| serde_json::from_slice::<serde_json::Value>(line).unwrap();
        assert_eq!(parse(&hand), parse(&serde), "{name}: the same values");
        let run = |which, encode| match only.as_deref() {
            Some(other) if other != which => f64::NAN,
            _ => time(rounds, lines, encode, &e),
        };
        let (hand_ns, serde_ns) = (run("hand", hand_line), run("serde", serde_line));
        let ratio = serde_ns / hand_ns;
        println!("| {name} | {hand_ns:.0} | {serde_ns:.0} | {ratio:.2} |");
    }
}
