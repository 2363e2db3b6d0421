//! The API as an HTTP server under misuse: browsers, keep-alive and
//! pipelining, huge bodies, requests split byte by byte, half requests,
//! clients that never read, many connections at once. Each gets a clear
//! answer or a bounded refusal, and other clients are served meanwhile.

use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::{DEADLINE, connect, join};
use crate::http::Client;
use crate::{Target, assert_error, target, target_with, unique};

#[test]
fn a_browser_is_refused() {
    let t = target();
    let mut client = t.client();
    client.user_agent = Some("Mozilla/5.0 (X11; Linux x86_64)".into());
    for path in ["/version", "/proxies"] {
        let response = client.get(path);
        assert_eq!(response.status, 403, "{path}");
    }
    let name = unique("browser");
    let body = format!(r#"{{"name":"{name}","upstream":"127.0.0.1:9"}}"#);
    assert_eq!(client.post("/proxies", &body).status, 403);
    client.user_agent = None;
    assert_eq!(client.get("/version").status, 200, "no user agent is fine");
    let missing = client.get(&format!("/proxies/{name}"));
    assert_eq!(missing.status, 404, "the refused request changed nothing");
}

#[test]
fn one_connection_carries_many_requests_even_pipelined() {
    let t = target();
    let mut client = t.client();
    for _ in 0..20 {
        assert_eq!(client.get("/version").status, 200);
    }
    let name = unique("pipe");
    let mut batch = client.request_bytes(
        "POST",
        "/proxies",
        Some(&format!(
            r#"{{"name":"{name}","listen":"127.0.0.1:0","upstream":"127.0.0.1:9"}}"#
        )),
    );
    batch.extend(client.request_bytes("GET", &format!("/proxies/{name}"), None));
    batch.extend(client.request_bytes("DELETE", &format!("/proxies/{name}"), None));
    batch.extend(client.request_bytes("GET", "/version", None));
    client.stream().write_all(&batch).unwrap();
    let statuses: Vec<u16> = (0..4).map(|_| client.response().unwrap().status).collect();
    assert_eq!(statuses, [201, 200, 204, 200]);
}

#[test]
fn a_request_split_byte_by_byte_is_answered() {
    let t = target();
    let client = t.client();
    let name = unique("split");
    let body = format!(r#"{{"name":"{name}","listen":"127.0.0.1:0","upstream":"127.0.0.1:9"}}"#);
    let bytes = client.request_bytes("POST", "/proxies", Some(&body));
    let mut stream = client.stream();
    for byte in &bytes {
        stream.write_all(std::slice::from_ref(byte)).unwrap();
        // Pacing, so that bytes arrive in separate segments; nothing
        // waits on it.
        std::thread::sleep(Duration::from_micros(200));
    }
    let mut client = client;
    let response = client.response().unwrap();
    assert_eq!(response.status, 201, "{}", response.text());
    assert_eq!(response.json()["name"], name.as_str());
}

#[test]
fn a_body_over_one_mebibyte_is_refused() {
    let t = target();
    let mut client = t.client();
    let name = unique("huge");
    let padding = "x".repeat(2 << 20);
    let body = format!(
        r#"{{"name":"{name}","upstream":"127.0.0.1:9","listen":"127.0.0.1:0","pad":"{padding}"}}"#
    );
    let bytes = client.request_bytes("POST", "/proxies", Some(&body));
    // The server may answer before reading it all, and then close: write
    // from a thread, read the answer here.
    let writer = client.stream().try_clone().unwrap();
    let sent = std::thread::spawn(move || (&writer).write_all(&bytes).is_ok());
    let response = client.response().expect("an answer");
    let _ = join(sent);
    match t.flavor {
        // toxiproxy has no limit: it creates the proxy.
        crate::Flavor::Toxiproxy => assert_eq!(response.status, 201),
        crate::Flavor::Ackloop => {
            assert_error(&response, 413, "");
            let mut other = t.client();
            let path = format!("/proxies/{name}");
            assert_error(&other.get(&path), 404, "proxy not found");
        }
    }
    assert_eq!(t.client().get("/version").status, 200);
}

/// Another client's requests are answered promptly while `t` is busy.
#[track_caller]
fn still_served(t: &Target) {
    let mut client = t.client();
    for _ in 0..5 {
        let started = Instant::now();
        assert_eq!(client.get("/version").status, 200);
        let took = started.elapsed();
        assert!(took < Duration::from_secs(2), "an answer took {took:?}");
    }
}

#[test]
fn half_requests_hold_no_one_up() {
    let t = target();
    let mut halves = Vec::new();
    for _ in 0..20 {
        let mut stream = connect(t.api);
        stream
            .write_all(b"POST /proxies HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"na")
            .unwrap();
        halves.push(stream);
        let mut head_only = connect(t.api);
        head_only.write_all(b"GET /vers").unwrap();
        halves.push(head_only);
    }
    still_served(&t);
    drop(halves);
    still_served(&t);
}

#[test]
fn a_client_that_never_reads_costs_bounded_memory() {
    let t = target();
    let before = t.server.as_ref().map(|s| s.rss_kib());
    let reader = connect(t.api);
    let client = Client::connect(t.api);
    let request = client.request_bytes("GET", "/proxies", None);
    let flood: Vec<u8> = request.repeat(64);
    // Pipelined requests, never reading the answers: the server must stop
    // reading this connection rather than buffer its answers without end.
    let writer = client.stream().try_clone().unwrap();
    writer
        .set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let flooding = std::thread::spawn(move || {
        let mut sent = 0u64;
        let deadline = Instant::now() + DEADLINE;
        while Instant::now() < deadline && sent < 64 << 20 {
            match (&writer).write(&flood) {
                Ok(n) => sent += n as u64,
                Err(_) => break, // Blocked: the server stopped reading.
            }
        }
        sent
    });
    let sent = join(flooding);
    assert!(sent < 64 << 20, "the server read {sent} bytes without end");
    still_served(&t);
    if let (Some(server), Some(before)) = (&t.server, before) {
        let grown = server.rss_kib().saturating_sub(before);
        assert!(grown < 16 * 1024, "RSS grew {grown} KiB");
    }
    drop(reader);
    drop(client);
    still_served(&t);
}

#[test]
fn five_hundred_connections_at_once() {
    let t = target();
    crate::common::raise_descriptor_limit(2048);
    let request = b"GET /version HTTP/1.1\r\nHost: api\r\n\r\n";
    let streams: Vec<TcpStream> = (0..500)
        .map(|_| {
            let stream = connect(t.api);
            let _ = (&stream).write_all(request);
            stream
        })
        .collect();
    let (mut answered, mut refused) = (0, 0);
    for stream in streams {
        match Client::from_stream(stream).response() {
            Ok(response) => {
                assert_eq!(response.status, 200, "{}", response.text());
                answered += 1;
            }
            Err(e) => {
                let timed_out = matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut);
                assert!(!timed_out, "no answer and no close within {DEADLINE:?}");
                refused += 1;
            }
        }
    }
    assert_eq!(answered + refused, 500);
    assert!(
        answered >= 64,
        "only {answered} answered, {refused} refused"
    );
    if !t.is_ackloop() {
        assert_eq!(refused, 0);
    }
    still_served(&t);
}

/// SPEC 14 allows 256 endpoints; an idle one costs its listener, its
/// entry and its configuration, not a table of empty pair slots (issue
/// 21: under 4 KiB of RSS each). Against ackloop only: the measure is
/// its process's.
#[test]
fn an_idle_endpoint_costs_under_4_kib() {
    let t = target_with(&["--max-connections", "10000"]);
    let Some(server) = &t.server else { return };
    let upstream = "127.0.0.1:9";
    t.create(&unique("warm"), upstream);
    let before = server.rss_kib();
    const PROXIES: u64 = 100;
    for _ in 0..PROXIES {
        t.create(&unique("idle"), upstream);
    }
    let per_proxy = (server.rss_kib().saturating_sub(before)) * 1024 / PROXIES;
    assert!(
        per_proxy < 4096,
        "{per_proxy} bytes of RSS per idle endpoint"
    );
}
