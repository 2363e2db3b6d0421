//! Scripted replies when the `scripts` feature is off: the names the
//! responder path uses (rules tried before the responder), for a [`Rule`]
//! no value can have, so no rule is ever tried.

/// A rule: none can exist.
#[derive(Debug, Clone)]
pub(crate) enum Rule {}

/// The rules in force: always none.
pub(crate) struct Rules;

impl Rules {
    pub fn new(_: &[Rule]) -> Rules {
        Rules
    }
    pub fn is_empty(&self) -> bool {
        true
    }
    pub fn answer(&mut self, _: &[u8]) -> Option<&[u8]> {
        None
    }
}
