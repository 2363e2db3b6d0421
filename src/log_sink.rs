//! Log lines to stderr that a closed pipe cannot turn into a panic.
//!
//! Why this exists: `simple_logger` prints each line with `eprintln!`,
//! which panics when stderr can no longer be written (a closed pipe:
//! `EPIPE`), and the release profile aborts on panic, so one log line
//! after the log reader went away would end the server and cut off every
//! client. Such a line must be dropped, never the server.
//!
//! `SimpleLogger` still decides what is logged (`--log-level`, `RUST_LOG`,
//! module levels); [`StderrSink`] only writes the lines, in its format as
//! built here (features `stderr` only: no timestamps, colors or thread
//! names), one write per line, ignoring write errors.

use std::io::Write;

use log::{Log, Metadata, Record, SetLoggerError};
use simple_logger::SimpleLogger;

/// A `SimpleLogger` whose lines are written without panicking.
pub struct StderrSink(SimpleLogger);

impl StderrSink {
    /// Installs `logger`, wrapped, as the logger: what `SimpleLogger::init`
    /// does, with this `log()`.
    pub fn init(logger: SimpleLogger) -> Result<(), SetLoggerError> {
        log::set_max_level(logger.max_level());
        log::set_boxed_logger(Box::new(StderrSink(logger)))
    }
}

impl Log for StderrSink {
    fn enabled(&self, metadata: &Metadata) -> bool {
        self.0.enabled(metadata)
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let target = match record.target() {
            "" => record.module_path().unwrap_or_default(),
            target => target,
        };
        // `simple_logger` 5.2's line, e.g. `WARN  [ackloop::tcp] ...`,
        // formatted whole first so that it goes out in one write.
        let line = format!(
            "{:<5} [{}] {}\n",
            record.level().as_str(),
            target,
            record.args()
        );
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}
