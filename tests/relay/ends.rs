//! How a pair ends when its peers end it: a reset that comes after a
//! half-close, and the `hang` fault, which lasts only until the client
//! ends it. Each test runs with `--idle-timeout 0`, so that nothing but
//! the peers can end a pair.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::mpsc;

use crate::common::upstream::{echo_upstream, reset, tcp_upstream};
use crate::common::{DEADLINE, End, connect, read_until_closed, text, wait_until};
use crate::{ask, tcp_relay};

/// Open pairs, as `stats` counts them.
pub fn open_pairs(control: SocketAddr) -> u64 {
    let stats = ask(control, "stats");
    let open = stats
        .split_whitespace()
        .find_map(|f| f.strip_prefix("open="));
    open.and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no open= in {stats:?}"))
}

/// Whether a reset reached `stream` once its peer's FIN had: a read then
/// returns 0 as before, but the socket keeps the error the RST left.
fn was_reset(stream: &TcpStream) -> bool {
    wait_until(DEADLINE, || stream.take_error().unwrap().is_some())
}

const NO_IDLE: [&str; 4] = ["--idle-timeout", "0", "--control", "127.0.0.1:0"];

#[test]
fn a_client_reset_after_its_half_close_resets_the_upstream() {
    let (tell, told) = mpsc::channel();
    let upstream = tcp_upstream(move |_, mut stream| {
        let mut request = Vec::new();
        stream.read_to_end(&mut request).unwrap();
        tell.send(Some(request)).unwrap();
        tell.send(was_reset(&stream).then(Vec::new)).unwrap();
    });
    let relay = tcp_relay(upstream, &NO_IDLE);
    let control = relay.control.unwrap();
    let mut client = connect(relay.tcp());
    client.write_all(b"request").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let request = told.recv_timeout(DEADLINE).unwrap().unwrap();
    assert_eq!(text(&request), "request", "the FIN came after the bytes");
    reset(client);
    let reset_seen = told.recv_timeout(2 * DEADLINE).unwrap();
    assert!(reset_seen.is_some(), "the upstream was never reset");
    assert!(wait_until(DEADLINE, || open_pairs(control) == 0));
}

#[test]
fn an_upstream_reset_after_its_half_close_resets_the_client() {
    let (go, reset_now) = mpsc::channel::<()>();
    let reset_now = std::sync::Mutex::new(reset_now);
    let upstream = tcp_upstream(move |_, mut stream| {
        stream.write_all(b"banner").unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        let _ = reset_now.lock().unwrap().recv_timeout(DEADLINE);
        reset(stream);
    });
    let relay = tcp_relay(upstream, &NO_IDLE);
    let control = relay.control.unwrap();
    let client = connect(relay.tcp());
    let drained = read_until_closed(&client, DEADLINE);
    assert_eq!(
        (text(&drained.bytes).as_str(), drained.end),
        ("banner", End::Eof)
    );
    go.send(()).unwrap();
    assert!(was_reset(&client), "the client was never reset");
    assert!(wait_until(DEADLINE, || open_pairs(control) == 0));
}

/// SPEC 8: a `hang` lasts "until the client or `--idle-timeout` ends it";
/// relayed, in either direction, as served.
#[test]
fn a_hang_ends_when_the_client_ends_it() {
    for dir in ["down", "up"] {
        let fault = format!("tcp:hang,dir={dir}");
        let mut args = vec!["--fault", fault.as_str()];
        args.extend(NO_IDLE);
        let relay = tcp_relay(echo_upstream(), &args);
        let control = relay.control.unwrap();
        // Clients that send, shut down writing and close at once.
        for _ in 0..5 {
            let mut client = connect(relay.tcp());
            client.write_all(b"anyone?").unwrap();
            client.shutdown(Shutdown::Write).unwrap();
        }
        // One that waits for the end: a FIN, with nothing before it.
        let mut client = connect(relay.tcp());
        client.write_all(b"anyone?").unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        let drained = read_until_closed(&client, DEADLINE);
        assert_eq!((drained.bytes.len(), drained.end), (0, End::Eof), "{dir}");
        assert!(
            wait_until(DEADLINE, || open_pairs(control) == 0),
            "{dir}: {} pairs still open",
            open_pairs(control)
        );
    }
}

/// SIGTERM while a pair holds bytes (a delay keeps them, either way):
/// they are delivered first, then the FIN, then the server exits.
#[test]
fn sigterm_delivers_what_a_pair_holds_then_closes_it() {
    for dir in ["down", "up"] {
        let (tell, told) = mpsc::channel();
        let upstream = tcp_upstream(move |_, mut stream| {
            if dir == "down" {
                stream.write_all(b"held reply").unwrap();
            }
            let mut got = Vec::new();
            let _ = stream.read_to_end(&mut got);
            tell.send(got).unwrap();
        });
        let fault = format!("tcp:delay=1500,dir={dir}");
        // A bound of its own: under the smallest settings (one byte) the
        // relay would hold one byte at a time, not the whole message.
        let mut args = vec!["--fault", fault.as_str(), "--max-owed", "65536"];
        args.extend(NO_IDLE);
        let mut relay = tcp_relay(upstream, &args);
        let control = relay.control.unwrap();
        let mut client = connect(relay.tcp());
        client.write_all(b"held request").unwrap();
        // The relay holds the bytes now: taken in, not passed on.
        let (taken, passed) = match dir {
            "down" => ("up_bytes_in=10", "bytes_out=0"),
            _ => ("bytes_in=12", "up_bytes_out=0"),
        };
        assert!(wait_until(DEADLINE, || {
            let stats = ask(control, "stats");
            stats.contains(&format!(" {taken} ")) && stats.contains(&format!(" {passed} "))
        }));
        relay.signal(crate::common::SIGTERM);
        let drained = read_until_closed(&client, DEADLINE);
        let got = told.recv_timeout(DEADLINE).unwrap();
        match dir {
            "down" => assert_eq!(text(&drained.bytes), "held reply"),
            _ => assert_eq!(text(&got), "held request"),
        }
        assert_eq!(drained.end, End::Eof, "{dir}");
        assert!(relay.wait().success(), "{dir}");
    }
}
