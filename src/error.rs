//! Why a server could not start.

use std::fmt;
use std::io;
use std::net::SocketAddr;

/// Why the server could not start.
#[derive(Debug)]
pub enum Error {
    /// A configuration value is out of range (message names the option).
    Config(String),
    /// A socket could not be bound.
    Bind {
        /// `"tcp"`, `"udp"` or `"control"` (the `--control` socket).
        protocol: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// What the operating system said.
        source: io::Error,
    },
    /// The journal could not be opened.
    Journal {
        /// The file named, or `-` for stdout.
        target: String,
        /// What the operating system said.
        source: io::Error,
    },
    /// Setting up the poll failed.
    Io(io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(message) => f.write_str(message),
            Error::Bind {
                protocol,
                addr,
                source,
            } => write!(f, "cannot bind {protocol} {addr}: {source}"),
            Error::Journal { target, source } => {
                write!(f, "cannot open the journal {target}: {source}")
            }
            Error::Io(e) => write!(f, "cannot set up the poll: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Config(_) => None,
            Error::Bind { source, .. } | Error::Journal { source, .. } => Some(source),
            Error::Io(e) => Some(e),
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::Io(e)
    }
}
