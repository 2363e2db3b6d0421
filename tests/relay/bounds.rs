//! The relay's memory bound (`--max-owed`, plus a line in line mode, per
//! direction) holds whatever the faults make it keep: bytes, and the
//! bookkeeping of when each held piece may go.

use std::io::Read;
use std::time::Duration;

use crate::common::upstream::tcp_upstream;
use crate::common::{self, connect};
use crate::tcp_relay;

/// Issue 20's recipe: short lines, every second one dribbled a byte a
/// second, so that no two neighbours go out together. Each held line is
/// a chunk of bookkeeping (48 bytes) for 2 bytes: counted by bytes
/// alone, 8 clients grew the relay by 25 MiB; counted whole, the bound
/// holds (measured: 1.5 MiB).
#[test]
fn held_lines_keep_their_bookkeeping_within_the_bound() {
    let upstream = tcp_upstream(|_, mut stream| {
        let mut buf = vec![0; 64 * 1024];
        while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
    });
    let args = [
        "--mode",
        "line",
        "--fault",
        "tcp:dribble=1/1000,every=2,dir=up",
        "--idle-timeout",
        "0",
        "--log-level",
        "off",
    ];
    let relay = tcp_relay(upstream, &args);
    let before = relay.rss_kib();
    let addr = relay.tcp();
    let clients: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                let client = connect(addr);
                // Blocked this long: the relay stopped reading it.
                let pushed_back = Duration::from_millis(500);
                client.set_write_timeout(Some(pushed_back)).unwrap();
                let lines = b"x\n".repeat(32 * 1024);
                let sent = common::write_until_blocked(&client, 64 << 20, &lines);
                (client, sent)
            })
        })
        .collect();
    let clients: Vec<_> = clients.into_iter().map(common::join).collect();
    for (_, sent) in &clients {
        assert!(*sent < 64 << 20, "{sent} bytes: never pushed back");
    }
    let grown = relay.rss_kib().saturating_sub(before);
    // 8 directions of 128 KiB, and as much again for the allocator and
    // the chunk queues' room: 2 MiB. Far below the 25 MiB of the defect.
    assert!(grown < 6 * 1024, "RSS grew {grown} KiB");
}
