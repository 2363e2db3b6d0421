//! The `ackloop` command: parse arguments, set up logging, bind, print the
//! bound addresses, watch signals, run. All the serving is the library's.
//!
//! Nothing here panics when stdout or stderr is a closed pipe (the
//! contract): a line that cannot be written is dropped, or, for stdout's
//! few lines, is a one-line error and exit status 1.

mod cli;
mod log_sink;

use std::io::Write;
use std::process::ExitCode;

use ackloop::{Echo, Error, Protocol, Server};
use cli::Command;
use log::LevelFilter;

fn main() -> ExitCode {
    let (config, level, echo) = match cli::parse(std::env::args_os().skip(1)) {
        Ok(Command::Serve(config, level, echo)) => (*config, level, echo),
        Ok(Command::Help) => return print_or_fail("the help", &help()),
        Ok(Command::Version) => {
            let version = concat!("ackloop ", env!("CARGO_PKG_VERSION"));
            return print_or_fail("the version", version);
        }
        Err(message) => return fail(2, &message),
    };
    init_logging(level);
    let mode = config.mode;
    let refusing = if config.refuse {
        ", refusing until accept"
    } else {
        ""
    };
    let upstreams = [Protocol::Tcp, Protocol::Udp].map(|p| (p.name(), config.upstream(p)));
    let bound = if echo {
        Server::with_responder(config, Echo)
    } else {
        Server::bind(config)
    };
    let mut server = match bound {
        Ok(server) => server,
        Err(Error::Config(message)) => return fail(2, &message),
        Err(e) => return fail(1, &e.to_string()),
    };
    #[cfg(unix)]
    if let Err(e) = server.watch_signals() {
        return fail(1, &format!("cannot watch signals: {e}"));
    }
    if let Err(e) = print_addresses(&server) {
        return fail(1, &format!("cannot write the addresses to stdout: {e}"));
    }
    // Logged once everything is set up: a start-up failure before this
    // point is the one line on stderr.
    let off = || "off".to_string();
    log::info!(
        "serving tcp {} ({mode} mode{refusing}), udp {}",
        server.tcp_addr().map_or_else(off, |a| a.to_string()),
        server.udp_addr().map_or_else(off, |a| a.to_string()),
    );
    for (protocol, upstream) in upstreams {
        if let Some(upstream) = upstream {
            log::info!("relaying {protocol} to {upstream} (--upstream)");
        }
    }
    match server.run() {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => fail(1, &format!("poll failed: {e}")),
    }
}

/// `--log-level` wins; without it `RUST_LOG`, then `info`. Logs go to
/// stderr: stdout carries only the address lines.
fn init_logging(level: Option<LevelFilter>) {
    let logger = simple_logger::SimpleLogger::new();
    let logger = match level {
        Some(level) => logger.with_level(level),
        None => logger.with_level(LevelFilter::Info).env(),
    };
    // Only fails if a logger is already set, which cannot happen here.
    let _ = log_sink::StderrSink::init(logger);
}

/// The help, and the parts this build left out (their options are
/// errors).
fn help() -> String {
    match cli::left_out_parts() {
        parts if parts.is_empty() => cli::HELP.to_string(),
        parts => format!(
            "{}\nBuilt without: {} (their options are errors).",
            cli::HELP,
            parts.join(", ")
        ),
    }
}

/// `text` and a newline on stdout; exit status 0, or 1 if stdout cannot
/// be written.
fn print_or_fail(what: &str, text: &str) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(1, &format!("cannot write {what} to stdout: {e}")),
    }
}

/// One line per socket, flushed before serving, so a parent process can
/// read the real ports (port 0 resolved).
fn print_addresses(server: &Server) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if let Some(addr) = server.tcp_addr() {
        writeln!(out, "tcp {addr}")?;
    }
    if let Some(addr) = server.udp_addr() {
        writeln!(out, "udp {addr}")?;
    }
    if let Some(addr) = server.control_addr() {
        writeln!(out, "control {addr}")?;
    }
    if let Some(addr) = server.api_addr() {
        writeln!(out, "api {addr}")?;
    }
    out.flush()
}

/// A one-line error on stderr (dropped if stderr cannot be written) and
/// the exit status `code`.
fn fail(code: u8, message: &str) -> ExitCode {
    let line = format!("ackloop: {message}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
    ExitCode::from(code)
}
