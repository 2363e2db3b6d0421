//! ackloop's log, read by the probes that need it and off for all others.
//!
//! The library keeps no count of readiness events, so the probes count its
//! `trace` lines (`event conn 3 readable`); the stale-key probe reads which
//! key each pair got. Formatting every line costs CPU, so the log is off
//! (`log`'s level `Off`: nothing is formatted) except while a [`Listening`]
//! guard lives, and no probe that measures CPU time holds one.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// ackloop's readiness events seen while listening.
static EVENTS: AtomicU64 = AtomicU64::new(0);
/// Whether lines are kept, and the lines kept.
static KEEP: AtomicBool = AtomicBool::new(false);
static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Reader;

impl log::Log for Reader {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.target().starts_with("ackloop")
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = record.args().to_string();
        // The loop logs each event it dispatches, wherever it dispatches.
        if record.target().starts_with("ackloop::server") && line.starts_with("event ") {
            EVENTS.fetch_add(1, Relaxed);
        }
        if KEEP.load(Relaxed) {
            LINES.lock().unwrap_or_else(|e| e.into_inner()).push(line);
        }
    }

    fn flush(&self) {}
}

/// While it lives, ackloop logs at `trace` level into the event count
/// (and the kept lines, if asked); dropped, the log is off again.
pub struct Listening;

impl Listening {
    /// Starts listening; `keep_lines` also keeps every line for
    /// [`take_lines`].
    pub fn start(keep_lines: bool) -> Listening {
        static READER: Reader = Reader;
        let _ = log::set_logger(&READER); // once per process; later calls fail
        KEEP.store(keep_lines, Relaxed);
        log::set_max_level(log::LevelFilter::Trace);
        Listening
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        log::set_max_level(log::LevelFilter::Off);
        KEEP.store(false, Relaxed);
    }
}

/// ackloop's readiness events counted so far (only while listening).
pub fn events() -> u64 {
    EVENTS.load(Relaxed)
}

/// The lines kept so far, oldest first; the store is emptied.
pub fn take_lines() -> Vec<String> {
    std::mem::take(&mut *LINES.lock().unwrap_or_else(|e| e.into_inner()))
}
