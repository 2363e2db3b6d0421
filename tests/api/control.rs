//! The control port names endpoints (SPEC 14): `endpoints` lists them,
//! `@NAME COMMAND` acts on one. ackloop's own.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::common::control::Control;
use crate::common::journal::TempPath;
use crate::common::upstream::echo_upstream;
use crate::common::{Server, connect, read_exactly};

fn round_trip(addr: SocketAddr) -> Duration {
    let mut stream = connect(addr);
    let started = Instant::now();
    stream.write_all(b"ping").unwrap();
    assert_eq!(read_exactly(&stream, 4), b"ping");
    started.elapsed()
}

#[test]
fn endpoints_are_listed_and_commanded_by_name() {
    let upstream = echo_upstream();
    let text = format!(
        r#"[{{"name":"db","listen":"127.0.0.1:0","upstream":"{upstream}"}},
            {{"name":"off","listen":"127.0.0.1:0","upstream":"127.0.0.1:1","enabled":false}}]"#
    );
    let file = TempPath::new("control-config.json");
    std::fs::write(&file.0, text).unwrap();
    let server = Server::start(&["--config", file.path(), "--control", "127.0.0.1:0"]);
    let mut control = Control::open(&server);
    assert_eq!(control.ask("endpoints"), "ok 2");
    let db = control.answer();
    let fields: Vec<&str> = db.split(' ').collect();
    assert_eq!(
        (fields[0], fields[2], fields[3]),
        ("db", upstream.to_string().as_str(), "enabled")
    );
    let listen: SocketAddr = fields[1].parse().unwrap();
    assert_eq!(control.answer(), "off 127.0.0.1:0 127.0.0.1:1 disabled");

    assert!(round_trip(listen) < Duration::from_millis(300));
    assert_eq!(control.ask("@db fault tcp:delay=300"), "ok");
    assert!(round_trip(listen) >= Duration::from_millis(300));
    let stats = control.ask("@db stats");
    assert!(stats.starts_with("ok accepted=2 "), "{stats}");
    // The delay applied to the new pair (and to one still open, if the
    // first had not closed yet: faults act on open pairs too).
    let faults: u64 = stats.rsplit("faults=").next().unwrap().parse().unwrap();
    assert!(faults >= 1, "{stats}");
    assert_eq!(control.ask("@db clear"), "ok");
    assert!(round_trip(listen) < Duration::from_millis(300));

    assert_eq!(control.ask("@db refuse"), "ok");
    assert!(TcpStream::connect(listen).is_err(), "refused");
    assert_eq!(control.ask("@db accept"), "ok");
    round_trip(listen);
    // The server's own stats count the endpoint too.
    assert_eq!(control.stat("accepted"), 4);

    for bad in [
        "@nope stats",
        "@db fault udp:drop",
        "@db fault tcp:reset,match=exact:x",
        "@db reply x",
    ] {
        let answer = control.ask(bad);
        assert!(answer.starts_with("error: "), "{bad}: {answer}");
    }
}

#[test]
fn a_server_without_endpoints_lists_none() {
    let server = Server::start(&["--control", "127.0.0.1:0"]);
    let mut control = Control::open(&server);
    assert_eq!(control.ask("endpoints"), "ok 0");
    assert!(
        control
            .ask("@db stats")
            .starts_with("error: no endpoint 'db'")
    );
}
