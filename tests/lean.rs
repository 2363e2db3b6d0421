//! Lean connections: an idle TCP connection costs the server at most 32
//! bytes of resident memory at the default settings, measured from /proc
//! as `benches/memory.sh` measures it, with fewer connections.
//!
//! Linux only, like the other black-box suites.
#![cfg(target_os = "linux")]

mod common;

use std::io::Write;

use common::{Server, connect, raise_descriptor_limit, read_exactly};

/// Enough that a page more or less (4 KiB) moves the figure by a byte.
const CONNECTIONS: usize = 5_000;

/// What an idle connection may cost: its 32-byte slot, which holds its
/// place on the idle list (no timer entry of its own). mio keeps a
/// 16-byte selector id beside each socket in debug builds.
const BUDGET: i64 = 32 + if cfg!(debug_assertions) { 16 } else { 0 };

/// One test, the servers one after the other: the test process holds
/// every client's descriptor.
#[test]
fn an_idle_connection_costs_at_most_32_bytes_with_or_without_faults() {
    assert_idle_cost_within_budget(&[]);
    // A fault in force that selects none of the messages adds nothing:
    // each is judged clean and takes the fault-free path.
    assert_idle_cost_within_budget(&["--fault", "tcp:delay=1000,first=0"]);
}

#[track_caller]
fn assert_idle_cost_within_budget(extra: &[&str]) {
    raise_descriptor_limit(CONNECTIONS as u64 + 200);
    let max = (CONNECTIONS + 100).to_string();
    let mut args = vec![
        "--mode",
        "line",
        "--log-level",
        "off",
        "--max-connections",
        &max,
    ];
    args.extend_from_slice(extra);
    let server = Server::start(&args);
    // One long line first: the read buffer's pages are resident from now on.
    let warm = connect(server.tcp());
    (&warm).write_all(&[b'x'; 60_000]).unwrap();
    (&warm).write_all(b"\n").unwrap();
    assert_eq!(read_exactly(&warm, 9), b"Received\n");
    drop(warm);
    let before = server.rss_kib();
    let mut idle = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        // Each one confirmed by a round trip: accepted, served, idle.
        let client = connect(server.tcp());
        (&client).write_all(b"hi\n").unwrap();
        assert_eq!(read_exactly(&client, 9), b"Received\n");
        idle.push(client);
    }
    let grown = server.rss_kib() as i64 - before as i64;
    let per_connection = grown * 1024 / CONNECTIONS as i64;
    assert!(
        per_connection <= BUDGET,
        "{per_connection} bytes per idle connection ({grown} KiB for {CONNECTIONS}) {extra:?}"
    );
}
