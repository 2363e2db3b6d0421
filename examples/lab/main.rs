//! The traps lab: every mistake of a first mio server, runnable, with its
//! symptom measured.
//!
//! ```sh
//! cargo run --release --example lab -- no-drain   # one trap
//! cargo run --release --example lab -- all        # the whole table
//! cargo run --release --example lab -- list       # the traps' names
//! cargo run --release --example lab -- accept-error
//! ```
//!
//! `server.rs` is a small correct server (TCP line mode and UDP on one
//! poll); each trap is that server with one change, marked `TRAP`. For a
//! trap, the lab runs its probe (`probes.rs`) against the broken variant,
//! the correct server and ackloop itself, and prints what it measured.
//! `stale-key` replays, for the lab's servers, a batch epoll cannot
//! produce for them (`stale_key.rs`), and measures ackloop's relay, whose
//! two sockets per pair can produce one (`stale_relay.rs`).
//! `accept-error` checks the correct server and ackloop against an accept
//! that fails again at once (not a trap of the list, the class of
//! `emfile-spin`).
//!
//! Linux only: the probes read `/proc`, lower `RLIMIT_NOFILE` and signal
//! a thread.

// Some probe helpers serve only the relay's probe (`stale_relay.rs`).
#![cfg_attr(not(feature = "relay"), allow(dead_code))]

#[cfg(target_os = "linux")]
mod ackloop_log;
#[cfg(target_os = "linux")]
mod client;
#[cfg(target_os = "linux")]
mod figures;
#[cfg(target_os = "linux")]
mod handles;
#[cfg(target_os = "linux")]
mod measure;
#[cfg(target_os = "linux")]
mod probes;
#[cfg(target_os = "linux")]
mod server;
mod stale_key;
#[cfg(target_os = "linux")]
#[cfg(feature = "relay")]
mod stale_relay;
#[cfg(target_os = "linux")]
mod target;
#[cfg(target_os = "linux")]
mod trap;
#[cfg(target_os = "linux")]
mod wakeups;

#[cfg(target_os = "linux")]
fn main() {
    lab::main();
}

#[cfg(not(target_os = "linux"))]
fn main() {
    let replay = |at_once| stale_key::describe(&stale_key::replay(at_once));
    println!("stale-key, keys freed at once:     {}", replay(true));
    println!("stale-key, keys freed after batch: {}", replay(false));
    eprintln!("the socket probes read /proc and signal threads: Linux only");
}

#[cfg(target_os = "linux")]
mod lab {
    use crate::figures::Finding;
    use crate::probes::{accept_error, probe};
    use crate::server::Trap;
    use crate::stale_key;
    use crate::target::Kind;

    /// What each trap teaches: why the symptom, the fix, and where
    /// ackloop applies it.
    struct Lesson {
        mistake: &'static str,
        why: &'static str,
        fix: &'static str,
        ackloop: &'static str,
    }

    fn lesson(trap: Trap) -> Lesson {
        let (mistake, why, fix, ackloop) = match trap {
            Trap::NoDrain => (
                "one read per readiness event",
                "the loop stopped reading before WouldBlock, and epoll reports only new arrivals",
                "read until WouldBlock",
                "src/tcp/conn.rs, Conn::read_until_blocked",
            ),
            Trap::NoStillReady => (
                "a per-turn read budget without a still-ready list",
                "a connection cut short by its budget is never reported again",
                "keep it on a still-ready list, serve it next turn (one budget a turn) \
                 and poll with a zero timeout meanwhile",
                "src/turn.rs (the still-ready list), src/server.rs, Server::poll_delay",
            ),
            Trap::WritableForLife => (
                "WRITABLE registered for good",
                "room freed in the send buffer makes the socket writable again: a wake-up \
                 for nothing (on Linux: UDP after every reply; TCP once its send buffer was \
                 found over two thirds full; level-triggered, a busy loop)",
                "register WRITABLE only while bytes are owed",
                "src/turn.rs, settle_writable",
            ),
            Trap::WriteAll => (
                "write_all on a non-blocking socket",
                "write_all fails with WouldBlock once the send buffer is full, and the error ends the connection",
                "a short write is progress: keep the rest for the next WRITABLE",
                "src/write.rs, write_until_blocked (used by Conn::write_owed)",
            ),
            Trap::OkZero => (
                "Ok(0) not taken as end of stream",
                "after the peer's FIN every read returns 0 at once, taken for \"nothing yet\"",
                "Ok(0) is EOF: answer what is owed, then close",
                "src/tcp/conn.rs, Conn::read_until_blocked and Conn::on_eof",
            ),
            Trap::NoDeadlineTimeout => (
                "the idle deadline not used as the poll timeout",
                "mio has no timers: nothing wakes the loop to notice the deadline",
                "poll with the nearest deadline as the timeout",
                "src/server.rs, Server::poll_delay; src/timer.rs",
            ),
            Trap::EmfileSpin => (
                "EMFILE taken for a client gone before its accept, no spare descriptor",
                "accept fails again at once, forever, while the client waits",
                "free a spare descriptor, accept and close the waiting client, take it back",
                "src/tcp/mod.rs, Tcp::shed_backlog and Tcp::pause_accepting",
            ),
            Trap::CloseWithoutLinger => (
                "close with unread input",
                "the kernel answers unread input with RST and drops the unsent replies",
                "shut down writing, read and discard until EOF or a timeout, then close",
                "src/tcp/conn.rs, Conn::advance (Closing to Lingering)",
            ),
            Trap::NoBackpressure => (
                "owed bytes unbounded",
                "the server reads all a client sends and buffers every reply",
                "stop reading while more than MAX_OWED is owed",
                "src/tcp/conn.rs, Conn::reads_wanted",
            ),
            Trap::Interrupted => (
                "EINTR treated as fatal",
                "a signal makes epoll_wait return Interrupted, and the server ends",
                "retry the poll on Interrupted",
                "src/server.rs, Server::turn; src/write.rs, nonblocking",
            ),
        };
        Lesson {
            mistake,
            why,
            fix,
            ackloop,
        }
    }

    pub fn main() {
        let arg = std::env::args().nth(1).unwrap_or_default();
        let ok = match arg.as_str() {
            "all" => table(),
            "list" => {
                Trap::ALL
                    .iter()
                    .for_each(|trap| println!("{}", trap.name()));
                println!("stale-key");
                true
            }
            "stale-key" => stale_key(),
            "accept-error" => accept_errors(),
            name => match Trap::from_name(name) {
                Some(trap) => one(trap),
                None => {
                    eprintln!("usage: lab TRAP|all|list|accept-error (`lab list` names the traps)");
                    std::process::exit(2);
                }
            },
        };
        std::process::exit(if ok { 0 } else { 1 });
    }

    /// Runs a probe; an error becomes a finding that counts as unexpected.
    fn run(trap: Trap, kind: Kind) -> (Finding, bool) {
        let expected = matches!(kind, Kind::Broken(_));
        match probe(trap, kind) {
            Ok(finding) => {
                let as_expected = finding.symptom == expected;
                (finding, as_expected)
            }
            Err(e) => {
                let figure = format!("the probe failed: {e}");
                let finding = Finding {
                    symptom: !expected,
                    figure,
                };
                (finding, false)
            }
        }
    }

    fn verdict(finding: &Finding) -> &'static str {
        if finding.symptom {
            "symptom"
        } else {
            "symptom gone"
        }
    }

    fn one(trap: Trap) -> bool {
        let lesson = lesson(trap);
        println!("{}: {}", trap.name(), lesson.mistake);
        let (broken, ok_broken) = run(trap, Kind::Broken(trap));
        println!("  broken:  {} ({})", broken.figure, verdict(&broken));
        println!("           {}", lesson.why);
        if let Some((line, comment)) = trap.change() {
            println!("  change:  examples/lab/server.rs:{line}: {comment}");
        }
        println!("  fix:     {}", lesson.fix);
        let (correct, ok_correct) = run(trap, Kind::Correct);
        println!("  correct: {} ({})", correct.figure, verdict(&correct));
        let (ackloop, ok_ackloop) = run(trap, Kind::Ackloop);
        println!("  ackloop: {} ({})", ackloop.figure, verdict(&ackloop));
        println!("           {}", lesson.ackloop);
        ok_broken && ok_correct && ok_ackloop
    }

    fn table() -> bool {
        println!("| trap | the broken variant | the fix | the correct server | ackloop |");
        println!("|---|---|---|---|---|");
        let mut all_ok = true;
        for trap in Trap::ALL {
            let lesson = lesson(trap);
            let mut cells = Vec::new();
            for kind in [Kind::Broken(trap), Kind::Correct, Kind::Ackloop] {
                let (finding, ok) = run(trap, kind);
                all_ok &= ok;
                let why = if finding.symptom {
                    format!(": {}", lesson.why)
                } else {
                    String::new()
                };
                let flag = if ok { "" } else { " **unexpected**" };
                cells.push(format!("{}{why}{flag}", finding.figure));
            }
            println!(
                "| `{}` | {} | {} | {} | {} |",
                trap.name(),
                cells[0],
                lesson.fix,
                cells[1],
                cells[2]
            );
        }
        all_ok &= stale_key_row();
        println!();
        all_ok & accept_errors()
    }

    /// The `stale-key` row: a scripted replay for the lab's servers, a
    /// measurement for ackloop.
    fn stale_key_row() -> bool {
        let at_once = stale_key::replay(true);
        let deferred = stale_key::replay(false);
        let (ackloop, ok) = stale_relay_cell();
        let flag = |ok: bool| if ok { "" } else { " **unexpected**" };
        let (ok_at_once, ok_deferred) = (
            at_once.closed.contains(&"B"),
            !deferred.closed.contains(&"B"),
        );
        println!(
            "| `stale-key` (the lab's servers: a kqueue batch, replayed through a slab; \
             ackloop: measured, on its relay) | \
             keys freed at once: {}{} | free keys when the batch ends | {}{} | {ackloop}{} |",
            stale_key::describe(&at_once),
            flag(ok_at_once),
            stale_key::describe(&deferred),
            flag(ok_deferred),
            flag(ok),
        );
        ok_at_once && ok_deferred && ok
    }

    /// ackloop's `stale-key` cell: measured on its relay, which this
    /// build left out.
    #[cfg(not(feature = "relay"))]
    fn stale_relay_cell() -> (String, bool) {
        ("not measured: built without the relay feature".into(), true)
    }

    /// ackloop's `stale-key` cell, and whether it is as expected.
    #[cfg(feature = "relay")]
    fn stale_relay_cell() -> (String, bool) {
        match crate::stale_relay::probe() {
            Ok(finding) => (finding.figure, !finding.symptom),
            Err(e) => (format!("the probe failed: {e}"), false),
        }
    }

    /// An accept that fails again at once, against the correct server and
    /// ackloop (there is no broken variant: it is not a trap of the list).
    fn accept_errors() -> bool {
        println!("| check | the correct server | ackloop |");
        println!("|---|---|---|");
        let mut cells = Vec::new();
        let mut all_ok = true;
        for kind in [Kind::Correct, Kind::Ackloop] {
            let (figure, ok) = match accept_error(kind) {
                Ok(finding) => (finding.figure, !finding.symptom),
                Err(e) => (format!("the probe failed: {e}"), false),
            };
            all_ok &= ok;
            cells.push(format!(
                "{figure}{}",
                if ok { "" } else { " **unexpected**" }
            ));
        }
        println!(
            "| an accept error that recurs at once (EINVAL: the listener shut down under \
             the server; ENOBUFS, ENOMEM, EPERM alike): pause accepting, retry later | {} | {} |",
            cells[0], cells[1]
        );
        all_ok
    }

    fn stale_key() -> bool {
        println!(
            "stale-key: a slab key freed in the middle of a batch (the lab's servers: a \
             kqueue batch, replayed)"
        );
        println!("  batch: conn 0 read-closed, listener readable (client B), conn 0 write-closed");
        let at_once = stale_key::replay(true);
        let deferred = stale_key::replay(false);
        println!(
            "  keys freed at once:         {}",
            stale_key::describe(&at_once)
        );
        println!(
            "  keys freed after the batch: {}",
            stale_key::describe(&deferred)
        );
        let (ackloop, ok) = stale_relay_cell();
        println!("  ackloop: {ackloop}");
        println!("           (its relay: two sockets per pair, so epoll can make the batch)");
        println!("           src/table.rs, Table::end_turn");
        at_once.closed.contains(&"B") && !deferred.closed.contains(&"B") && ok
    }
}
