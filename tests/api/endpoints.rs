//! Endpoints among themselves (SPEC 14): each counts its own traffic and
//! the server counts every endpoint's together; `--max-connections`
//! counts pairs across endpoints, a batch accepted at once included; a
//! shutdown finishes what every endpoint holds. ackloop's own.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::common::control::Control;
use crate::common::upstream::{UdpUpstream, echo_upstream};
use crate::common::{
    DEADLINE, End, SIGTERM, connect, connected_udp, read_exactly, read_until_closed, retrying,
    wait_until,
};
use crate::{target_with, unique};

/// Stops and resumes the server process: what arrives meanwhile waits in
/// the kernel, for one turn to find it all at once.
const SIGSTOP: i32 = 19;
const SIGCONT: i32 = 18;

/// A counter of a control `stats` answer (`ok name=N ...`).
#[track_caller]
fn field(answer: &str, name: &str) -> u64 {
    let value = answer
        .split(' ')
        .find_map(|field| field.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} in {answer:?}"));
    value.parse().unwrap()
}

#[test]
fn each_endpoint_counts_its_own_and_the_server_counts_them_all() {
    let t = target_with(&["--control", "127.0.0.1:0"]);
    let Some(server) = &t.server else {
        return; // The control port and `stats` are ackloop's own.
    };
    let (tcp_name, udp_name) = (unique("own_tcp"), unique("own_udp"));
    let tcp = t.create(&tcp_name, &echo_upstream().to_string());
    let tcp: SocketAddr = tcp["listen"].as_str().unwrap().parse().unwrap();
    let upstream = UdpUpstream::echo();
    let body = format!(
        r#"{{"name":"{udp_name}","listen":"udp:127.0.0.1:0","upstream":"udp:{}"}}"#,
        upstream.addr
    );
    let udp = t.client().post("/proxies", &body).json();
    let udp: SocketAddr = udp["listen"].as_str().unwrap()[4..].parse().unwrap();

    for _ in 0..2 {
        let stream = connect(tcp);
        (&stream).write_all(b"abc").unwrap();
        assert_eq!(read_exactly(&stream, 3), b"abc");
    }
    let socket = connected_udp(udp);
    let mut buf = [0; 64];
    for datagram in [&b"1234"[..], b"56789"] {
        socket.send(datagram).unwrap();
        let n = retrying(|| socket.recv(&mut buf)).unwrap();
        assert_eq!(&buf[..n], datagram);
    }
    // The main sockets' own traffic: one datagram answered.
    let main = connected_udp(server.udp());
    main.send(b"main").unwrap();
    assert_eq!(retrying(|| main.recv(&mut buf)).unwrap(), b"Received".len());

    let mut control = Control::open(server);
    let mut own_tcp = String::new();
    let settled = wait_until(DEADLINE, || {
        own_tcp = control.ask(&format!("@{tcp_name} stats"));
        field(&own_tcp, "open") == 0
    });
    assert!(settled, "{own_tcp}");
    assert_eq!(field(&own_tcp, "accepted"), 2, "{own_tcp}");
    assert_eq!(field(&own_tcp, "bytes_in"), 6, "{own_tcp}");
    assert_eq!(field(&own_tcp, "datagrams"), 0, "{own_tcp}");
    let own_udp = control.ask(&format!("@{udp_name} stats"));
    assert_eq!(field(&own_udp, "accepted"), 0, "{own_udp}");
    assert_eq!(field(&own_udp, "datagrams"), 2, "{own_udp}");
    assert_eq!(field(&own_udp, "bytes_in"), 9, "{own_udp}");
    let shown = t.client().get(&format!("/proxies/{udp_name}")).json()["stats"].clone();
    assert_eq!(
        (shown["datagrams"].as_u64(), shown["bytes_in"].as_u64()),
        (Some(2), Some(9))
    );

    let all = control.ask("stats");
    assert_eq!(field(&all, "accepted"), 2, "{all}");
    assert_eq!(
        field(&all, "datagrams"),
        3,
        "the endpoint's and the main socket's: {all}"
    );
    assert_eq!(field(&all, "bytes_in"), 6 + 9 + 4, "{all}");
    assert_eq!(field(&all, "up_bytes_out"), 6 + 9, "{all}");
}

#[test]
fn max_connections_counts_a_batch_accepted_at_once() {
    let t = target_with(&["--max-connections", "2"]);
    let Some(server) = &t.server else {
        return; // ackloop's own limit.
    };
    let proxy = t.create(&unique("batch"), &echo_upstream().to_string());
    let listen: SocketAddr = proxy["listen"].as_str().unwrap().parse().unwrap();
    // Four clients complete their handshakes in the kernel's backlog
    // while the server is stopped; it then accepts them in one turn.
    server.signal(SIGSTOP);
    let clients: Vec<TcpStream> = (0..4).map(|_| connect(listen)).collect();
    server.signal(SIGCONT);
    let mut relayed = 0;
    for mut client in clients {
        let _ = client.write_all(b"x");
        let end = read_until_closed(&client, Duration::from_millis(500));
        match (end.bytes.as_slice(), end.end) {
            (b"x", End::TimedOut) => relayed += 1,
            (b"", End::Eof | End::Reset) => {}
            other => panic!("neither relayed nor refused: {other:?}"),
        }
    }
    assert_eq!(
        relayed, 2,
        "--max-connections 2 holds within one accept batch"
    );
}

#[test]
fn sigterm_lets_a_udp_endpoint_send_what_a_delay_holds() {
    let t = target_with(&[]);
    let Some(server) = &t.server else {
        return; // ackloop's own shutdown.
    };
    let name = unique("held");
    let upstream = UdpUpstream::echo();
    let body = format!(
        r#"{{"name":"{name}","listen":"udp:127.0.0.1:0","upstream":"udp:{}",
            "toxics":[{{"type":"latency","attributes":{{"latency":400}}}}]}}"#,
        upstream.addr
    );
    let proxy = t.client().post("/proxies", &body).json();
    let addr: SocketAddr = proxy["listen"].as_str().unwrap()[4..].parse().unwrap();
    let socket = connected_udp(addr);
    let sent = Instant::now();
    socket.send(b"held").unwrap();
    // Held once the upstream's answer is in: the delay is downstream.
    assert!(wait_until(DEADLINE, || upstream
        .received
        .load(std::sync::atomic::Ordering::SeqCst)
        == 1));
    let path = format!("/proxies/{name}");
    assert!(wait_until(
        DEADLINE,
        || t.client().get(&path).json()["stats"]["up_bytes_in"] == 4
    ));
    server.signal(SIGTERM);
    let mut buf = [0; 16];
    let n = retrying(|| socket.recv(&mut buf)).expect("the held datagram, sent before the exit");
    assert_eq!(&buf[..n], b"held");
    assert!(sent.elapsed() >= Duration::from_millis(400));
    let mut server = t.server.unwrap();
    assert!(server.wait().success());
}
