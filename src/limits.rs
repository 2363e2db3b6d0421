//! The loop's shared limits: how much work one source gets in one turn.
//! They sit below every handler (plain and relayed alike), so that no
//! handler imports another for them.

/// Datagrams read per turn before other sources get their turn: a flood
/// on UDP cannot starve TCP clients. Replies sent from the queue, and
/// delayed datagrams released, have a budget of the same size each turn;
/// so do the datagrams read from one relayed flow.
pub const DATAGRAMS_PER_TURN: usize = 256;
