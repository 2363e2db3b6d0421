//! Without `splice(2)` (not Linux), a direction always copies.

use std::io::Read;

use super::{Broken, HalfPipe, Pump, Pumped, Sink};

impl HalfPipe {
    /// Pumps this direction ([`HalfPipe::pump`]).
    pub fn relay<S: Read + Sink>(
        &mut self,
        source: &mut S,
        sink: Option<&mut S>,
        cx: &mut Pump<'_>,
    ) -> Result<Pumped, Broken> {
        self.pump(source, sink, cx)
    }

    /// Bytes held for the sink.
    pub fn owed(&self) -> usize {
        self.held()
    }
}
