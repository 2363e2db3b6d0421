//! A journal that keeps its lines for a unit test to read back.

use std::sync::{Arc, Mutex};

use super::{Journal, JournalEvent};

/// A journal line as a test compares it: msg, dir, bytes, whether it
/// names the peer, the faults.
pub(crate) type Line = (u64, &'static str, Vec<u8>, bool, Vec<&'static str>);

/// The lines a [`recording`] journal has written so far.
pub(crate) type Lines = Arc<Mutex<Vec<Line>>>;

/// A journal whose lines go to the returned list; `check` sees each event
/// first (to assert what every line of the test shares).
pub(crate) fn recording(check: impl Fn(&JournalEvent<'_>) + Send + 'static) -> (Journal, Lines) {
    let lines = Lines::default();
    let sink = Arc::clone(&lines);
    let journal = Journal::to_callback(Box::new(move |e: &JournalEvent<'_>| {
        check(e);
        let faults = e.faults.names().collect();
        let line = (
            e.msg,
            e.dir.name(),
            e.bytes.to_vec(),
            e.peer.is_some(),
            faults,
        );
        sink.lock().unwrap().push(line);
    }));
    (journal, lines)
}
