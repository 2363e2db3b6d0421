//! The traps lab keeps every trap honest: each probe must find its
//! symptom on the broken variant, and must not find it on the correct
//! server or on ackloop (`examples/lab/`, issues 17 and 20). These are the
//! verdicts of the table `lab all` prints, cell by cell.
//!
//! The probes are the example's own code, included by path. They run one
//! at a time: they read a server thread's CPU time, one of them lowers the
//! process's descriptor limit, another signals a thread.
#![cfg(target_os = "linux")]

// Shared with `examples/lab`, which uses all of it; each test uses a part.
#[allow(dead_code)]
#[path = "../examples/lab/ackloop_log.rs"]
mod ackloop_log;
#[allow(dead_code)]
#[path = "../examples/lab/client.rs"]
mod client;
#[allow(dead_code)]
#[path = "../examples/lab/figures.rs"]
mod figures;
#[path = "../examples/lab/handles.rs"]
mod handles;
#[allow(dead_code)]
#[path = "../examples/lab/measure.rs"]
mod measure;
#[allow(dead_code)]
#[path = "../examples/lab/probes.rs"]
mod probes;
#[allow(dead_code)]
#[path = "../examples/lab/server.rs"]
mod server;
#[allow(dead_code)]
#[path = "../examples/lab/stale_key.rs"]
mod stale_key;
#[cfg(feature = "relay")]
#[path = "../examples/lab/stale_relay.rs"]
mod stale_relay;
#[allow(dead_code)]
#[path = "../examples/lab/target.rs"]
mod target;
#[path = "../examples/lab/trap.rs"]
mod trap;
#[allow(dead_code)]
#[path = "../examples/lab/wakeups.rs"]
mod wakeups;

use std::sync::{Mutex, MutexGuard};

use server::Trap;
use target::Kind;

/// One probe at a time.
fn alone() -> MutexGuard<'static, ()> {
    static LAB: Mutex<()> = Mutex::new(());
    LAB.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The broken variant shows the symptom; the correct server and ackloop
/// do not.
#[track_caller]
fn trap_shows_only_when_broken(trap: Trap) {
    let _alone = alone();
    for kind in [Kind::Broken(trap), Kind::Correct, Kind::Ackloop] {
        let finding = probes::probe(trap, kind)
            .unwrap_or_else(|e| panic!("{}: probe against {kind:?} failed: {e}", trap.name()));
        let expected = matches!(kind, Kind::Broken(_));
        assert_eq!(
            finding.symptom,
            expected,
            "{} against {kind:?}: {}",
            trap.name(),
            finding.figure
        );
    }
}

#[test]
fn no_drain() {
    trap_shows_only_when_broken(Trap::NoDrain);
}

/// Its probe also fails the correct server if it serves a connection
/// cut by its budget twice in one turn.
#[test]
fn no_still_ready() {
    trap_shows_only_when_broken(Trap::NoStillReady);
}

/// Shown on TCP and on UDP alike by the broken variant (GUIDE trap 3 is
/// about TCP), on neither by the correct server and ackloop.
#[test]
fn writable_for_life() {
    let _alone = alone();
    for kind in [
        Kind::Broken(Trap::WritableForLife),
        Kind::Correct,
        Kind::Ackloop,
    ] {
        let target = target::Target::start(kind).expect("server starts");
        let (tcp, udp) = wakeups::writable_for_life_parts(&target)
            .unwrap_or_else(|e| panic!("probe against {kind:?} failed: {e}"));
        let expected = matches!(kind, Kind::Broken(_));
        assert_eq!(tcp.symptom, expected, "TCP, {kind:?}: {}", tcp.figure);
        assert_eq!(udp.symptom, expected, "UDP, {kind:?}: {}", udp.figure);
    }
}

#[test]
fn write_all() {
    trap_shows_only_when_broken(Trap::WriteAll);
}

#[test]
fn ok_zero() {
    trap_shows_only_when_broken(Trap::OkZero);
}

#[test]
fn no_deadline_timeout() {
    trap_shows_only_when_broken(Trap::NoDeadlineTimeout);
}

#[test]
fn emfile_spin() {
    trap_shows_only_when_broken(Trap::EmfileSpin);
}

#[test]
fn close_without_linger() {
    trap_shows_only_when_broken(Trap::CloseWithoutLinger);
}

#[test]
fn no_backpressure() {
    trap_shows_only_when_broken(Trap::NoBackpressure);
}

#[test]
fn interrupted() {
    trap_shows_only_when_broken(Trap::Interrupted);
}

/// Every trap has a test above, a name the example accepts, and exactly
/// one `TRAP` comment in the server marking its change.
#[test]
fn every_trap_is_named_tested_and_marked() {
    assert_eq!(Trap::ALL.len(), 10);
    let server = include_str!("../examples/lab/server.rs");
    for trap in Trap::ALL {
        assert_eq!(Trap::from_name(trap.name()), Some(trap));
        let marker = format!("// TRAP {}:", trap.name());
        assert_eq!(server.matches(&marker).count(), 1, "{marker}");
        assert!(
            trap.change().is_some_and(|(_, text)| text.len() > 20),
            "{marker}"
        );
    }
}

/// The stale-key trap, scripted: freeing a key mid-batch lets the old
/// connection's second event close the new client; freeing it when the
/// batch ends does not.
#[test]
fn stale_key_replay() {
    let at_once = stale_key::replay(true);
    assert_eq!(at_once.closed, ["A", "B"], "{at_once:?}");
    assert!(at_once.open.is_empty(), "{at_once:?}");
    let deferred = stale_key::replay(false);
    assert_eq!(deferred.closed, ["A"], "{deferred:?}");
    assert_eq!(deferred.open, [(1, "B")], "{deferred:?}");
}

/// The same class as `emfile-spin`, for any error that recurs at once:
/// the correct server and ackloop pause accepting, neither spins, and both
/// still answer UDP.
#[test]
fn a_recurring_accept_error_does_not_spin() {
    let _alone = alone();
    for kind in [Kind::Correct, Kind::Ackloop] {
        let finding = probes::accept_error(kind)
            .unwrap_or_else(|e| panic!("probe against {kind:?} failed: {e}"));
        assert!(!finding.symptom, "{kind:?}: {}", finding.figure);
    }
}

/// The stale-key cell of ackloop, measured: its relay gets a batch in
/// which an event of a pair closed earlier in the batch follows a new
/// client's accept, and the stale event finds the key still held.
#[test]
#[cfg(feature = "relay")]
fn stale_key_measured_on_ackloops_relay() {
    let _alone = alone();
    let finding = stale_relay::probe().unwrap_or_else(|e| panic!("probe failed: {e}"));
    assert!(!finding.symptom, "{}", finding.figure);
}
