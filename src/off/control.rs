//! Live control when the `control` feature is off: the names the loop's
//! dispatch uses, for a [`Control`] no value can have. The loop's
//! `Option<Control>` is then always `None`, so its control branches stay
//! as they are and compile to nothing.

use std::net::SocketAddr;

use mio::Registry;

use crate::config::Config;
use crate::error::Error;
use crate::timer::{Entry, Millis};
use crate::turn::Turn;

/// No control socket (no `--control` without the feature).
pub(crate) fn from_config(
    _: &Registry,
    _: &Config,
) -> Result<(Option<Control>, Option<SocketAddr>), Error> {
    Ok((None, None))
}

/// No changes from other threads: the handle asks for none.
pub(crate) fn apply_changes<T>(_: &crate::handle::Changes, _: &mut T, _: &mut Turn<'_>) {}

/// The control socket: none can exist.
pub(crate) enum Control {}

impl Control {
    pub fn accept<T>(&mut self, _: &mut Turn<'_>, _: &mut T) {
        match *self {}
    }
    pub fn drive<T>(&mut self, _: usize, _: &mut Turn<'_>, _: &mut T) {
        match *self {}
    }
    pub fn check_waits<T>(&mut self, _: &mut Turn<'_>, _: &mut T) {
        match *self {}
    }
    pub fn on_accept_retry<T>(&mut self, _: Millis, _: &mut Turn<'_>, _: &mut T) {
        match *self {}
    }
    pub fn timers_current(&self) -> usize {
        match *self {}
    }
    pub fn is_current(&self, _: &Entry) -> bool {
        match *self {}
    }
    pub fn close_all(&mut self, _: &mut Turn<'_>) {
        match *self {}
    }
    pub fn end_turn(&mut self) {
        match *self {}
    }
}
