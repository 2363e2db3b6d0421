//! What live control commands do on the TCP side: refuse and listen
//! again, change the fixed reply, greet and push (see
//! [`command`](crate::command)).

use std::net::SocketAddr;

use mio::Interest;

use super::Tcp;
use crate::command::{Reply, Target};
use crate::config::Mode;
use crate::reply::{Pattern, Replies, Responder};
use crate::turn::{LISTENER, Ready, Turn};

/// Why `refuse` and `accept` fail without TCP: in words a control client
/// and a library user both understand (neither typed `--no-tcp`).
const NO_TCP: &str = "no TCP: this server serves UDP only";

impl Tcp {
    /// Starts refused (a script's `refuse`): `socket` is bound to `addr`
    /// and not listening, so clients are refused until `accept` listens
    /// on it.
    pub(crate) fn start_refused(&mut self, socket: socket2::Socket, addr: SocketAddr) {
        self.listen_addr = Some(addr);
        self.reserved = Some(socket);
    }
}

/// What live control changes on the TCP side (see [`command`](crate::command)).
impl Target for Tcp {
    /// Closes the listener: new clients are refused; open connections go
    /// on. (Refused since start-up, the port stays bound, not listening.)
    fn refuse(&mut self, t: &mut Turn<'_>) -> Reply {
        self.listen_addr.ok_or(NO_TCP)?;
        if let Some(mut listener) = self.listener.take() {
            let _ = t.registry.deregister(&mut listener);
        }
        Ok(String::new())
    }

    /// Listens again on the same address after [`refuse`](Tcp::refuse).
    fn listen_again(&mut self, t: &mut Turn<'_>) -> Reply {
        let addr = self.listen_addr.ok_or(NO_TCP)?;
        if self.stopping {
            return Err("shutting down".into());
        }
        if self.listener.is_none() {
            let listener = match self.reserved.take() {
                // Refused since start-up: the port is ours already.
                Some(socket) => crate::bind::listen(socket),
                None => crate::bind::tcp_listener(addr, self.reuse_port),
            };
            let mut listener = listener.map_err(|e| format!("cannot bind tcp {addr}: {e}"))?;
            t.registry
                .register(&mut listener, LISTENER, Interest::READABLE)
                .map_err(|e| format!("cannot register tcp {addr}: {e}"))?;
            self.listener = Some(listener);
            // Clients may be waiting already: no event would report them.
            t.ready.push(Ready::Listener);
        }
        Ok(String::new())
    }

    /// Makes `text` the fixed reply from now on. Replies already owed keep
    /// the old text: each connection turns what it owes into bytes first.
    fn set_reply(&mut self, text: Vec<u8>, t: &mut Turn<'_>) -> Reply {
        crate::vocab::check_reply_len("reply", &text, false)?;
        let old = match t.replies {
            Replies::Fixed(old) => old,
            // A responder's replies are bytes as soon as they are owed.
            Replies::Custom { responder, .. } => {
                return match responder.set_reply_text(&text) {
                    true => Ok(String::new()),
                    false => {
                        Err("replies come from a responder with no reply text to change".into())
                    }
                };
            }
        };
        for (_, slot) in self.conns.iter_mut() {
            slot.conn.keep_owed_bytes(old);
        }
        *t.replies = Replies::Fixed(Pattern::new(&text, self.mode == Mode::Line, self.max_owed));
        Ok(String::new())
    }

    fn see_messages(&mut self, t: &mut Turn<'_>) {
        self.switch_to_responder(t.replies);
    }

    fn set_greeting(&mut self, text: Option<Vec<u8>>) -> Reply {
        self.greet_with(text)
    }

    fn push(&mut self, text: Vec<u8>, t: &mut Turn<'_>) -> Reply {
        self.push_to_all(text, t)
    }
}
