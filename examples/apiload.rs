//! apiload: the client side of `benches/api.sh`, driving a toxiproxy API
//! (ackloop's `--api` or a real toxiproxy) over one keep-alive HTTP/1.1
//! connection, with nothing but std: it creates proxies, times `GET
//! /proxies`, and adds and removes toxics at a steady rate.
//!
//! ```sh
//! apiload create API N UPSTREAM PREFIX   # N proxies PREFIX0..; prints their listen addresses, comma-separated
//! apiload get API N                      # N GET /proxies, one after the other: latency quantiles
//! apiload churn API N RATE SECS PREFIX   # for SECS seconds, RATE toxic changes a second on PREFIX0..PREFIX{N-1}
//! ```
//!
//! `churn` adds a `slow_close` toxic (delay 0) to one proxy, then removes
//! it, and goes on to the next: a toxic change that does nothing to the
//! bytes, so what the relayed traffic feels is the server's cost of the
//! change alone. Each request's time runs from writing it to reading the
//! whole answer; the output is one line of `key=value` fields.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::process::exit;
use std::time::{Duration, Instant};

const USAGE: &str =
    "usage: apiload create API N UPSTREAM PREFIX | get API N | churn API N RATE SECS PREFIX";

/// One keep-alive connection to the API.
struct Api {
    stream: TcpStream,
    /// Bytes read past the last answer's end (none without pipelining,
    /// kept to be exact).
    buf: Vec<u8>,
}

impl Api {
    fn connect(addr: &str) -> io::Result<Api> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Api {
            stream,
            buf: Vec::new(),
        })
    }

    /// Sends one request and reads its whole answer: status and body.
    fn request(&mut self, method: &str, path: &str, body: &str) -> io::Result<(u16, Vec<u8>)> {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: apiload\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        );
        self.stream
            .write_all([head.as_bytes(), body.as_bytes()].concat().as_slice())?;
        let end = self.fill_until(|buf| find(buf, b"\r\n\r\n").map(|i| i + 4))?;
        let head = String::from_utf8_lossy(&self.buf[..end]).to_ascii_lowercase();
        self.buf.drain(..end);
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("no status"))?;
        let header = |name: &str| {
            head.lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
        };
        let body = if header("transfer-encoding:").is_some_and(|v| v == "chunked") {
            self.chunked()?
        } else {
            let len = header("content-length:")
                .map_or(Ok(0), |v| v.parse().map_err(|_| bad("length")))?;
            self.fill_until(|buf| (buf.len() >= len).then_some(len))?;
            self.buf.drain(..len).collect()
        };
        Ok((status, body))
    }

    /// A chunked body (Go's net/http sends one past a few KiB).
    fn chunked(&mut self) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line = self.fill_until(|buf| find(buf, b"\r\n"))?;
            let size = std::str::from_utf8(&self.buf[..line]).map_err(|_| bad("chunk"))?;
            let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| bad("chunk size"))?;
            self.buf.drain(..line + 2);
            self.fill_until(|buf| (buf.len() >= size + 2).then_some(size))?;
            body.extend(self.buf.drain(..size));
            self.buf.drain(..2);
            if size == 0 {
                return Ok(body);
            }
        }
    }

    /// Reads until `done` finds what it wants in the buffer.
    fn fill_until(&mut self, done: impl Fn(&[u8]) -> Option<usize>) -> io::Result<usize> {
        let mut chunk = [0; 64 * 1024];
        loop {
            if let Some(at) = done(&self.buf) {
                return Ok(at);
            }
            match self.stream.read(&mut chunk)? {
                0 => return Err(bad("closed mid-answer")),
                n => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// `request`, timed, expecting `status`.
    fn timed(&mut self, method: &str, path: &str, body: &str, status: u16) -> io::Result<Duration> {
        let started = Instant::now();
        let (got, answer) = self.request(method, path, body)?;
        let took = started.elapsed();
        if got != status {
            let answer = String::from_utf8_lossy(&answer);
            return Err(bad(&format!("{method} {path}: {got} {answer}")));
        }
        Ok(took)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn bad(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.to_owned())
}

/// `p50_us= p99_us= max_us=` of `times`.
fn quantiles(times: &mut [Duration]) -> String {
    times.sort();
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    format!(
        "p50_us={:.0} p99_us={:.0} max_us={:.0}",
        us(at(0.5)),
        us(at(0.99)),
        us(times[times.len() - 1])
    )
}

fn create(api: &mut Api, n: usize, upstream: &str, prefix: &str) -> io::Result<()> {
    let mut listens = Vec::new();
    for i in 0..n {
        let body =
            format!(r#"{{"name":"{prefix}{i}","listen":"127.0.0.1:0","upstream":"{upstream}"}}"#);
        let (status, answer) = api.request("POST", "/proxies", &body)?;
        let answer = String::from_utf8_lossy(&answer);
        if status != 201 {
            return Err(bad(&format!("POST /proxies: {status} {answer}")));
        }
        let listen = answer
            .split(r#""listen":""#)
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .ok_or_else(|| bad("no listen address"))?;
        listens.push(listen.to_owned());
    }
    println!("{}", listens.join(","));
    Ok(())
}

fn get(api: &mut Api, n: usize) -> io::Result<()> {
    let mut times = Vec::with_capacity(n);
    let mut bytes = 0;
    for _ in 0..n {
        let started = Instant::now();
        let (status, body) = api.request("GET", "/proxies", "")?;
        times.push(started.elapsed());
        if status != 200 {
            return Err(bad(&format!("GET /proxies: {status}")));
        }
        bytes = body.len();
    }
    println!("requests={n} body_bytes={bytes} {}", quantiles(&mut times));
    Ok(())
}

fn churn(api: &mut Api, n: usize, rate: f64, secs: f64, prefix: &str) -> io::Result<()> {
    let toxic =
        r#"{"name":"churn","type":"slow_close","stream":"downstream","attributes":{"delay":0}}"#;
    let (interval, started) = (Duration::from_secs_f64(1.0 / rate), Instant::now());
    let end = started + Duration::from_secs_f64(secs);
    let mut times = Vec::new();
    let mut i = 0usize;
    while Instant::now() < end {
        // Paced from the start, not from the last answer: a slow answer
        // is followed by the next change at once, as a steady rate wants.
        let due = started + interval * i as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let proxy = format!("{prefix}{}", (i / 2) % n);
        times.push(match i % 2 {
            0 => api.timed("POST", &format!("/proxies/{proxy}/toxics"), toxic, 200)?,
            _ => api.timed("DELETE", &format!("/proxies/{proxy}/toxics/churn"), "", 204)?,
        });
        i += 1;
    }
    let rate = i as f64 / started.elapsed().as_secs_f64();
    if i % 2 == 1 {
        // The last change added a toxic: removed, so the next run starts
        // where this one did.
        let proxy = format!("{prefix}{}", (i / 2) % n);
        api.timed("DELETE", &format!("/proxies/{proxy}/toxics/churn"), "", 204)?;
    }
    println!("changes={i} rate={rate:.1}/s {}", quantiles(&mut times));
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    let number = |s: &str| -> usize { s.parse().unwrap_or_else(|_| usage()) };
    let seconds = |s: &str| -> f64 { s.parse().unwrap_or_else(|_| usage()) };
    let connect = |addr: &str| {
        Api::connect(addr).unwrap_or_else(|e| {
            eprintln!("apiload: {addr}: {e}");
            exit(1)
        })
    };
    let result = match words.as_slice() {
        ["create", api, n, upstream, prefix] => {
            create(&mut connect(api), number(n), upstream, prefix)
        }
        ["get", api, n] => get(&mut connect(api), number(n)),
        ["churn", api, n, rate, secs, prefix] => churn(
            &mut connect(api),
            number(n),
            seconds(rate),
            seconds(secs),
            prefix,
        ),
        _ => usage(),
    };
    if let Err(e) = result {
        eprintln!("apiload: {e}");
        exit(1);
    }
}

fn usage() -> ! {
    eprintln!("{USAGE}");
    exit(2)
}
