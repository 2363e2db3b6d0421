//! Making the sockets: bind, register, report the real address. mio's own
//! `bind`, or socket2 when an option must be set before binding
//! (`SO_REUSEPORT`).

use std::io;
use std::net::SocketAddr;

use log::warn;
use mio::net::{TcpListener, UdpSocket};
use mio::{Interest, Registry, Token};

use crate::error::Error;
use crate::turn::UDP;

/// The listen backlog: std's and mio's value, so that `--reuse-port`
/// changes nothing but the option.
const BACKLOG: i32 = 128;

/// Binds a TCP listener (`protocol`: `tcp` or `control`) and registers it
/// with `token`.
pub(crate) fn bind_tcp(
    registry: &Registry,
    addr: SocketAddr,
    reuse_port: bool,
    token: Token,
    protocol: &'static str,
) -> Result<(TcpListener, SocketAddr), Error> {
    let bind_error = |source| Error::Bind {
        protocol,
        addr,
        source,
    };
    let mut listener = tcp_listener(addr, reuse_port).map_err(bind_error)?;
    let bound = listener.local_addr().map_err(bind_error)?;
    warn_if_exposed(protocol, bound);
    registry.register(&mut listener, token, Interest::READABLE)?;
    Ok((listener, bound))
}

/// Binds a TCP socket for `addr` without listening (`--script` with
/// `refuse`): the port is the server's, and a client that connects is
/// refused until [`listen`] opens it.
pub(crate) fn reserve_tcp(
    addr: SocketAddr,
    reuse_port: bool,
) -> Result<(socket2::Socket, SocketAddr), Error> {
    let bind_error = |source| Error::Bind {
        protocol: "tcp",
        addr,
        source,
    };
    let socket = match reuse_port {
        true => shared_socket(addr, socket2::Type::STREAM),
        false => bound_socket(addr),
    }
    .map_err(bind_error)?;
    let bound = (socket.local_addr())
        .and_then(|a| a.as_socket().ok_or(io::ErrorKind::InvalidInput.into()))
        .map_err(bind_error)?;
    warn_if_exposed("tcp", bound);
    Ok((socket, bound))
}

/// Listens on a socket [`reserve_tcp`] bound.
pub(crate) fn listen(socket: socket2::Socket) -> io::Result<TcpListener> {
    socket.listen(BACKLOG)?;
    Ok(TcpListener::from_std(socket.into()))
}

/// Binds the UDP socket and registers it.
pub(crate) fn bind_udp(
    registry: &Registry,
    addr: SocketAddr,
    reuse_port: bool,
) -> Result<(UdpSocket, SocketAddr), Error> {
    let bind_error = |source| Error::Bind {
        protocol: "udp",
        addr,
        source,
    };
    let mut socket = udp_socket(addr, reuse_port).map_err(bind_error)?;
    let bound = socket.local_addr().map_err(bind_error)?;
    warn_if_exposed("udp", bound);
    registry.register(&mut socket, UDP, Interest::READABLE)?;
    Ok((socket, bound))
}

/// The defaults bind loopback only; anything else is reachable from the
/// network, which deserves a word in the log.
fn warn_if_exposed(protocol: &str, addr: SocketAddr) {
    if !addr.ip().is_loopback() {
        warn!("{protocol} bound to {addr}, which is not loopback: reachable from the network");
    }
}

/// A non-blocking TCP listener on `addr`; with `reuse_port`, one that
/// other processes may bind too (`SO_REUSEPORT`, Unix only).
pub(crate) fn tcp_listener(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    if !reuse_port {
        return TcpListener::bind(addr);
    }
    let socket = shared_socket(addr, socket2::Type::STREAM)?;
    socket.listen(BACKLOG)?;
    Ok(TcpListener::from_std(socket.into()))
}

/// A non-blocking UDP socket on `addr`; with `reuse_port`, one that other
/// processes may bind too.
pub(crate) fn udp_socket(addr: SocketAddr, reuse_port: bool) -> io::Result<UdpSocket> {
    if !reuse_port {
        return UdpSocket::bind(addr);
    }
    let socket = shared_socket(addr, socket2::Type::DGRAM)?;
    Ok(UdpSocket::from_std(socket.into()))
}

/// A bound, non-blocking stream socket, set up as mio's `TcpListener::bind`
/// sets up a listener (`SO_REUSEADDR` on Unix).
fn bound_socket(addr: SocketAddr) -> io::Result<socket2::Socket> {
    let kind = socket2::Type::STREAM;
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), kind, None)?;
    socket.set_nonblocking(true)?;
    #[cfg(unix)]
    {
        socket.set_cloexec(true)?;
        socket.set_reuse_address(true)?;
    }
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// A bound, non-blocking socket with `SO_REUSEPORT` (and, as mio does for
/// listeners, `SO_REUSEADDR`) set before the bind.
#[cfg(all(unix, not(any(target_os = "solaris", target_os = "illumos"))))]
fn shared_socket(addr: SocketAddr, kind: socket2::Type) -> io::Result<socket2::Socket> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), kind, None)?;
    socket.set_nonblocking(true)?;
    socket.set_cloexec(true)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

#[cfg(not(all(unix, not(any(target_os = "solaris", target_os = "illumos")))))]
fn shared_socket(_: SocketAddr, _: socket2::Type) -> io::Result<socket2::Socket> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "SO_REUSEPORT is not available on this platform",
    ))
}
