//! UDP proxies (SPEC 14's extension): `udp:HOST:PORT` in both `listen`
//! and `upstream` makes a UDP relay endpoint, its flows the relay's as
//! `--upstream udp:...` has them. ackloop's own: each test returns at
//! once against a real toxiproxy, which has no UDP.

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::control::Control;
use crate::common::journal::TempPath;
use crate::common::upstream::{UdpUpstream, echo_upstream};
use crate::common::{DEADLINE, Server, connected_udp as client, counter, retrying, wait_until};
use crate::{Target, assert_error, target, target_with, unique};

/// Sends `datagram` and waits for the next datagram back.
#[track_caller]
fn exchange(socket: &UdpSocket, datagram: &[u8]) -> Vec<u8> {
    socket.send(datagram).unwrap();
    receive(socket).unwrap_or_else(|e| panic!("no datagram back within {DEADLINE:?}: {e}"))
}

fn receive(socket: &UdpSocket) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0; 65_536];
    let n = retrying(|| socket.recv(&mut buf))?;
    buf.truncate(n);
    Ok(buf)
}

/// A UDP proxy to `upstream` on a free loopback port: its name and
/// address.
#[track_caller]
fn udp_proxy(t: &Target, upstream: SocketAddr) -> (String, SocketAddr) {
    let name = unique("udp");
    let body =
        format!(r#"{{"name":"{name}","listen":"udp:127.0.0.1:0","upstream":"udp:{upstream}"}}"#);
    let response = t.client().post("/proxies", &body);
    assert_eq!(response.status, 201, "{}", response.text());
    let proxy = response.json();
    assert_eq!(proxy["upstream"], format!("udp:{upstream}"), "as given");
    let listen = proxy["listen"].as_str().unwrap();
    let addr = listen.strip_prefix("udp:").expect("shown with udp:");
    (name, addr.parse().unwrap())
}

/// A UDP proxy to a fresh echo upstream and a client of it, on ackloop:
/// the target, the upstream, the proxy's name and address, the client.
type Setup = (Target, UdpUpstream, String, SocketAddr, UdpSocket);

/// A [`Setup`]; `None` against a real toxiproxy, which has no UDP.
fn setup() -> Option<Setup> {
    let t = target();
    if !t.is_ackloop() {
        return None;
    }
    let upstream = UdpUpstream::echo();
    let (name, addr) = udp_proxy(&t, upstream.addr);
    let socket = client(addr);
    Some((t, upstream, name, addr, socket))
}

/// The proxy's own counters (`GET /proxies/{name}`'s `stats`).
fn stats(t: &Target, name: &str) -> Value {
    t.client().get(&format!("/proxies/{name}")).json()["stats"].clone()
}

#[test]
fn a_udp_proxy_relays_datagrams_both_ways_through_a_flow_per_client() {
    let Some((t, upstream, name, addr, first)) = setup() else {
        return;
    };
    let second = client(addr);
    assert_eq!(exchange(&first, b"one"), b"one");
    assert_eq!(exchange(&second, b"two"), b"two");
    assert_eq!(exchange(&first, b"three"), b"three");
    let sources = upstream.sources.lock().unwrap().clone();
    assert_eq!(sources.len(), 3);
    assert_eq!(sources[0], sources[2], "one flow per client");
    assert_ne!(sources[0], sources[1]);
    assert_ne!(sources[0], addr, "a flow's own socket, not the public one");
    let mut seen = Value::Null;
    let settled = wait_until(DEADLINE, || {
        seen = stats(&t, &name);
        seen["bytes_out"] == 11
    });
    assert!(settled, "{seen}");
    for (counter, want) in [
        ("datagrams", 3),
        ("bytes_in", 11),
        ("up_bytes_out", 11),
        ("up_bytes_in", 11),
        ("accepted", 0),
    ] {
        assert_eq!(seen[counter], want, "{counter}: {seen}");
    }
}

#[test]
fn a_proxy_mixing_udp_and_tcp_is_refused_and_nothing_changes() {
    let t = target();
    if !t.is_ackloop() {
        return;
    }
    let name = unique("mixed");
    let mixed =
        format!(r#"{{"name":"{name}","listen":"udp:127.0.0.1:0","upstream":"127.0.0.1:9"}}"#);
    let refused = t.client().post("/proxies", &mixed);
    assert_error(
        &refused,
        400,
        "listen 'udp:127.0.0.1:0' is UDP but upstream '127.0.0.1:9' is TCP",
    );
    let other =
        format!(r#"{{"name":"{name}","listen":"127.0.0.1:0","upstream":"udp:127.0.0.1:9"}}"#);
    assert_error(
        &t.client().post("/proxies", &other),
        400,
        "listen '127.0.0.1:0' is TCP",
    );
    let populate = format!(
        r#"[{{"name":"{name}_ok","listen":"udp:127.0.0.1:0","upstream":"udp:127.0.0.1:9"}},{mixed}]"#
    );
    assert_error(
        &t.client().post("/populate", &populate),
        400,
        "listen 'udp:",
    );
    let listed = t.client().get("/proxies").json();
    assert!(listed.get(&name).is_none() && listed.get(format!("{name}_ok")).is_none());

    // Changing one side only of a proxy is refused too.
    let tcp = t.create(&name, &echo_upstream().to_string());
    let path = format!("/proxies/{name}");
    let patch = t.client().patch(&path, r#"{"listen":"udp:127.0.0.1:0"}"#);
    assert_error(&patch, 400, "listen 'udp:127.0.0.1:0' is UDP but upstream");
    assert_eq!(
        t.client().get(&path).json()["listen"],
        tcp["listen"],
        "unchanged"
    );
}

#[test]
fn udp_toxics_act_on_each_datagram_and_stream_toxics_are_refused() {
    let Some((t, upstream, name, _addr, socket)) = setup() else {
        return;
    };
    let toxics = format!("/proxies/{name}/toxics");
    for refused in [
        "bandwidth",
        "slow_close",
        "timeout",
        "reset_peer",
        "slicer",
        "limit_data",
    ] {
        let body = format!(r#"{{"type":"{refused}"}}"#);
        let answer = t.client().post(&toxics, &body);
        assert_error(
            &answer,
            400,
            &format!("toxic type {refused} acts on a stream"),
        );
    }
    let latency = r#"{"type":"latency","stream":"upstream","attributes":{"latency":300}}"#;
    assert_eq!(t.client().post(&toxics, latency).status, 200);
    let started = Instant::now();
    assert_eq!(exchange(&socket, b"late"), b"late");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    let removed = t.client().delete(&format!("{toxics}/latency_upstream"));
    assert_eq!(removed.status, 204);
    let started = Instant::now();
    assert_eq!(exchange(&socket, b"soon"), b"soon");
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    let seen = stats(&t, &name);
    assert_eq!(seen["faults"], 1, "{seen}");

    // UDP's own kinds are toxic types of a UDP proxy.
    let duplicate = r#"{"type":"duplicate","stream":"upstream"}"#;
    assert_eq!(t.client().post(&toxics, duplicate).status, 200);
    assert_eq!(exchange(&socket, b"twice"), b"twice");
    assert_eq!(receive(&socket).unwrap(), b"twice", "duplicated");
    let removed = t.client().delete(&format!("{toxics}/duplicate_upstream"));
    assert_eq!(removed.status, 204);
    let drop_first = r#"{"type":"drop","attributes":{"first":1}}"#;
    assert_eq!(t.client().post(&toxics, drop_first).status, 200);
    socket.send(b"gone").unwrap();
    // The first reply was dropped: the next one is the first to come.
    assert_eq!(exchange(&socket, b"kept"), b"kept");

    // A proxy created with a stream toxic is refused whole.
    let body = format!(
        r#"{{"name":"{name}_x","listen":"udp:127.0.0.1:0","upstream":"udp:{}",
            "toxics":[{{"type":"bandwidth","attributes":{{"rate":1}}}}]}}"#,
        upstream.addr
    );
    assert_error(
        &t.client().post("/proxies", &body),
        400,
        "toxic type bandwidth",
    );
}

#[test]
fn a_udp_proxys_toxicity_rolls_for_each_datagram_whatever_the_turns() {
    let Some((t, _upstream, name, _, socket)) = setup() else {
        return;
    };
    let toxics = format!("/proxies/{name}/toxics");
    let half = r#"{"type":"drop","stream":"upstream","toxicity":0.5}"#;
    assert_eq!(t.client().post(&toxics, half).status, 200);
    // One datagram a turn of the loop: each is taken before the next is
    // sent. The roll is a function of the seed and the datagram's
    // ordinal, which counts from the proxy's first.
    for sent in 1..=24 {
        socket.send(b"roll").unwrap();
        let taken = || stats(&t, &name)["datagrams"] == sent;
        assert!(wait_until(DEADLINE, taken), "datagram {sent} taken");
    }
    let dropped = stats(&t, &name)["faults"].as_u64().unwrap();
    assert!(0 < dropped && dropped < 24, "{dropped} of 24 dropped");
}

#[test]
fn disabling_a_udp_proxy_closes_its_socket_and_enabling_binds_it_again() {
    let Some((t, _upstream, name, addr, socket)) = setup() else {
        return;
    };
    assert_eq!(exchange(&socket, b"on"), b"on");
    let path = format!("/proxies/{name}");
    let off = t.client().patch(&path, r#"{"enabled":false}"#);
    assert_eq!(off.status, 200, "{}", off.text());
    assert_eq!(
        off.json()["listen"],
        format!("udp:{addr}"),
        "shown as it was"
    );
    // Closed: the kernel answers with port unreachable, which a connected
    // socket reads as a refusal.
    socket.send(b"off").unwrap();
    let closed = receive(&socket).expect_err("no relay while disabled");
    assert_eq!(closed.kind(), ErrorKind::ConnectionRefused, "{closed}");
    let on = t.client().patch(&path, r#"{"enabled":true}"#);
    assert_eq!(on.status, 200, "{}", on.text());
    assert_eq!(exchange(&socket, b"again"), b"again", "the same address");
}

#[test]
fn a_config_file_makes_udp_proxies_and_the_control_port_commands_them() {
    let upstream = UdpUpstream::echo();
    let text = format!(
        r#"[{{"name":"dns","listen":"udp:127.0.0.1:0","upstream":"udp:{}",
              "toxics":[{{"type":"latency","attributes":{{"latency":0}}}}]}}]"#,
        upstream.addr
    );
    let file = TempPath::new("udp-config.json");
    std::fs::write(&file.0, text).unwrap();
    let args = ["--config", file.path(), "--control", "127.0.0.1:0"];
    let t = target_with(&args);
    if t.server.is_none() {
        return; // A config file is ackloop's own.
    }
    let server: &Server = t.server.as_ref().unwrap();
    let mut control = Control::open(server);
    assert_eq!(control.ask("endpoints"), "ok 1");
    let line = control.answer();
    let fields: Vec<&str> = line.split(' ').collect();
    assert_eq!(fields[0], "dns");
    let addr: SocketAddr = fields[1].strip_prefix("udp:").unwrap().parse().unwrap();
    let socket = client(addr);
    assert_eq!(exchange(&socket, b"a"), b"a");

    assert_eq!(control.ask("@dns fault udp:duplicate"), "ok");
    assert_eq!(exchange(&socket, b"twice"), b"twice");
    assert_eq!(receive(&socket).unwrap(), b"twice", "duplicated");
    assert_eq!(control.ask("@dns clear"), "ok");
    let refused = control.ask("@dns fault tcp:delay=10");
    assert!(
        refused.starts_with("error: ") && refused.contains("relays UDP"),
        "{refused}"
    );

    // Its own counters, and the server's counting every endpoint.
    let own = control.ask("@dns stats");
    assert!(own.contains(" datagrams=2 "), "{own}");
    assert!(own.contains(" faults=1"), "{own}");
    assert_eq!(control.stat("datagrams"), 2);
    let mut server = t.server.unwrap();
    let (_, stderr) = server.terminate();
    let summary = crate::common::assert_summary(&stderr);
    assert_eq!(counter(&summary, "datagrams"), Some(2), "{summary}");
    assert_eq!(counter(&summary, "up bytes out"), Some(6), "{summary}");
}

#[test]
fn populate_keeps_an_unchanged_udp_proxy_and_a_new_address_moves_it() {
    let Some((t, upstream, name, addr, socket)) = setup() else {
        return;
    };
    let toxics = format!("/proxies/{name}/toxics");
    let latency = r#"{"type":"latency","attributes":{"latency":1}}"#;
    assert_eq!(t.client().post(&toxics, latency).status, 200);
    let same = format!(
        r#"[{{"name":"{name}","listen":"udp:{addr}","upstream":"udp:{}"}}]"#,
        upstream.addr
    );
    let populated = t.client().post("/populate", &same);
    assert_eq!(populated.status, 201, "{}", populated.text());
    let kept = t.client().get(&format!("/proxies/{name}")).json();
    assert_eq!(
        kept["toxics"].as_array().map(Vec::len),
        Some(1),
        "kept as it is: {kept}"
    );
    assert_eq!(exchange(&socket, b"kept"), b"kept");

    let moved = t.client().patch(
        &format!("/proxies/{name}"),
        r#"{"listen":"udp:127.0.0.1:0"}"#,
    );
    assert_eq!(moved.status, 200, "{}", moved.text());
    let listen = moved.json()["listen"].as_str().unwrap().to_string();
    let new: SocketAddr = listen.strip_prefix("udp:").unwrap().parse().unwrap();
    assert_ne!(new, addr, "restarted on a new port");
    assert_eq!(exchange(&client(new), b"moved"), b"moved");
}
