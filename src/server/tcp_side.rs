//! The main endpoint's TCP side as live control changes it: its listener
//! and its job, serving ([`Tcp`]) or relaying (then the commands that
//! speak to served clients refuse).

#[cfg(feature = "control")]
use crate::command::{Reply, Target};
use crate::listener::Listener;
use crate::tcp::Tcp;
#[cfg(feature = "control")]
use crate::turn::Turn;

#[cfg(feature = "control")]
/// Why `refuse` and `accept` fail without TCP: in words a control client
/// and a library user both understand (neither typed `--no-tcp`).
const NO_TCP: &str = "no TCP: this server serves UDP only";

/// The listener, the served connections, and whether the listener's job
/// is relaying instead.
pub(super) struct TcpSide<'a> {
    pub listener: &'a mut Listener,
    pub tcp: &'a mut Tcp,
    pub relayed: bool,
}

#[cfg(feature = "control")]
impl TcpSide<'_> {
    /// Whether TCP clients are served here (not off, not relayed), for the
    /// commands that speak to them.
    fn serves_tcp(&self) -> Result<(), String> {
        if !self.listener.is_bound() {
            return Err("tcp is off (--no-tcp)".into());
        }
        match self.relayed {
            true => Err("tcp is relayed (--upstream): its clients talk to the upstream".into()),
            false => Ok(()),
        }
    }
}

#[cfg(feature = "control")]
/// What live control changes on the TCP side (see [`command`](crate::command)).
impl Target for TcpSide<'_> {
    /// Closes the listener: new clients are refused; open connections go
    /// on.
    fn refuse(&mut self, t: &mut Turn<'_>) -> Reply {
        self.listener.is_bound().then_some(()).ok_or(NO_TCP)?;
        self.listener.refuse(t);
        Ok(String::new())
    }

    /// Listens again on the same address after `refuse`.
    fn listen_again(&mut self, t: &mut Turn<'_>) -> Reply {
        self.listener.is_bound().then_some(()).ok_or(NO_TCP)?;
        self.listener.listen_again(t)?;
        Ok(String::new())
    }

    fn set_reply(&mut self, text: Vec<u8>, t: &mut Turn<'_>) -> Reply {
        self.tcp.set_reply(text, t)
    }

    fn see_messages(&mut self, t: &mut Turn<'_>) {
        self.tcp.switch_to_responder(t.replies);
    }

    #[cfg(feature = "scripts")]
    fn set_greeting(&mut self, text: Option<Vec<u8>>) -> Reply {
        self.serves_tcp()?;
        self.tcp.greet_with(text);
        Ok(String::new())
    }

    #[cfg(feature = "scripts")]
    fn push(&mut self, text: Vec<u8>, t: &mut Turn<'_>) -> Reply {
        self.serves_tcp()?;
        self.tcp.push_to_all(text, t);
        Ok(String::new())
    }
}
