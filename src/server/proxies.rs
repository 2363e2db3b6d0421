//! The server's named proxies (SPEC 14, feature `api`): the API's
//! listener, toxiproxy's config file, and the proxies it creates before
//! anything is served.

use std::net::SocketAddr;

use mio::Poll;

use super::tcp_side::TcpSide;
use super::{Lent, Server};
use crate::api::Registry;
use crate::bind::bind_tcp;
use crate::command::{Command, Reply, Target};
use crate::error::Error;
use crate::turn::Turn;

/// What live control and the handle act on: the main endpoint's TCP
/// side, and the named endpoints.
pub(super) struct Targets<'a> {
    pub side: TcpSide<'a>,
    pub proxies: &'a mut Registry,
}

impl Target for Targets<'_> {
    fn refuse(&mut self, t: &mut Turn<'_>) -> Reply {
        self.side.refuse(t)
    }

    fn listen_again(&mut self, t: &mut Turn<'_>) -> Reply {
        self.side.listen_again(t)
    }

    fn set_reply(&mut self, text: Vec<u8>, t: &mut Turn<'_>) -> Reply {
        self.side.set_reply(text, t)
    }

    fn see_messages(&mut self, t: &mut Turn<'_>) {
        self.side.see_messages(t)
    }

    #[cfg(feature = "scripts")]
    fn set_greeting(&mut self, text: Option<Vec<u8>>) -> Reply {
        self.side.set_greeting(text)
    }

    #[cfg(feature = "scripts")]
    fn push(&mut self, text: Vec<u8>, t: &mut Turn<'_>) -> Reply {
        self.side.push(text, t)
    }

    fn endpoints(&mut self) -> Reply {
        Ok(self.proxies.lines())
    }

    fn at(&mut self, name: &str, command: Command, t: &mut Turn<'_>) -> Reply {
        self.proxies.command(name, command, t)
    }
}

impl Server {
    /// Creates the named proxies of a config file's text, on this turn's
    /// context (nothing is served yet).
    pub(super) fn load_proxies(&mut self, text: &str) -> Result<(), String> {
        let Lent { mut t, sources, .. } = self.lend();
        sources.proxies.load(text, &mut t)
    }
}

/// The text of toxiproxy's config file (`--config`), if one is named.
pub(super) fn read_config_file(path: Option<&std::path::Path>) -> Result<Option<String>, Error> {
    let Some(path) = path else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("--config {}: {e}", path.display())))?;
    Ok(Some(text))
}

/// Binds the API listener (`--api`), if asked for.
pub(super) fn bind_api(
    poll: &Poll,
    addr: Option<SocketAddr>,
) -> Result<(Option<crate::api::Api>, Option<SocketAddr>), Error> {
    let Some(addr) = addr else {
        return Ok((None, None));
    };
    let token = crate::turn::API_LISTENER;
    let (listener, bound) = bind_tcp(poll.registry(), addr, false, token, "api")?;
    Ok((Some(crate::api::Api::new(listener)), Some(bound)))
}
