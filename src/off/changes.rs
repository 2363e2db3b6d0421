//! The handle's changes when the `control` feature is off: the handle
//! can ask for shutdown and read the counters, nothing more, so nothing
//! waits for the loop.

use std::sync::Arc;

use super::Shared;

/// Changes asked for by other threads: none can be.
#[derive(Default)]
pub(crate) struct Changes;

impl Changes {
    /// Nothing waits to be answered.
    pub fn stop_taking(&self) {}
}

/// A turn needs no mark: no change can wait for it.
pub(crate) struct InTurn;

impl InTurn {
    pub fn enter(_: &Arc<Shared>) -> InTurn {
        InTurn
    }
}
