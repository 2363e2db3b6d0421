//! Line framing over plain byte slices: no sockets here.
//!
//! TCP delivers a byte stream, not messages: one read may hold half a line,
//! or a hundred lines and the start of the next. [`LineFramer`] keeps the
//! little state that survives between reads (how long the open line is so
//! far, and whether it ended in `\r`) and cuts each new input into pieces.
//! The caller decides whether to keep the bytes of an open line: the fixed
//! reply never looks at them, so it keeps only a count; a custom
//! [`Responder`](crate::Responder) gets the whole line and so the caller
//! buffers it.
//!
//! Once mode needs no framer: the first non-empty read is the message.
//!
//! # Examples
//!
//! ```
//! use ackloop::framing::{LineFramer, Piece};
//!
//! let mut framer = LineFramer::new(64);
//! let mut input: &[u8] = b"one\r\ntw";
//! let mut lines = 0;
//! while !input.is_empty() {
//!     let (used, piece) = framer.next(input);
//!     input = &input[used..];
//!     match piece {
//!         Piece::Line(end) => { assert_eq!(end.tail, b"one"); lines += 1 }
//!         Piece::Partial(open) => assert_eq!(open, b"tw"),
//!         Piece::TooLong => unreachable!(),
//!     }
//! }
//! assert_eq!(lines, 1);
//! assert_eq!(framer.open_len(), 2);
//! ```

/// What [`LineFramer::next`] found at the front of its input.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    /// A line ended in this input.
    Line(LineEnd<'a>),
    /// The input ended inside a line; these bytes belong to the open line.
    Partial(&'a [u8]),
    /// The open line is longer than the limit. The stream is not framed
    /// any further: the connection is to be closed.
    TooLong,
}

/// A line that ended: its content is the bytes carried over from earlier
/// inputs followed by `tail`, terminator excluded.
#[derive(Debug, PartialEq, Eq)]
pub struct LineEnd<'a> {
    /// The part of the line in this input, without `\n` or `\r\n`.
    pub tail: &'a [u8],
    /// How many bytes of this line came in earlier inputs (as
    /// [`Piece::Partial`]).
    pub carried: usize,
    /// The last carried byte was a `\r` that turned out to be part of the
    /// terminator: drop it from the carried bytes.
    pub carried_cr: bool,
}

impl LineEnd<'_> {
    /// The content's length, terminator excluded.
    pub fn len(&self) -> usize {
        // Saturating: a `LineEnd` made by hand may claim a carried `\r`
        // with nothing carried.
        self.carried.saturating_sub(usize::from(self.carried_cr)) + self.tail.len()
    }

    /// Whether the line is empty (`\n` or `\r\n` alone).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Cuts a byte stream into `\n`-terminated lines, a `\r` before the `\n`
/// being part of the terminator.
///
/// The state is a few words (the limit, the open line's length and two
/// flags), whatever the input: a line is never copied here.
#[derive(Debug, Clone)]
pub struct LineFramer {
    /// Longest line content accepted, terminator excluded.
    max_line: usize,
    /// Bytes of the open (unterminated) line seen so far, a trailing `\r`
    /// included.
    open: usize,
    /// The last byte of the open line is `\r`.
    open_ends_cr: bool,
    /// A line was too long: nothing more is framed.
    failed: bool,
}

impl LineFramer {
    /// A framer for lines of at most `max_line` bytes, terminator excluded.
    pub fn new(max_line: usize) -> LineFramer {
        LineFramer {
            max_line,
            open: 0,
            open_ends_cr: false,
            failed: false,
        }
    }

    /// The longest line content this framer accepts.
    pub fn max_line(&self) -> usize {
        self.max_line
    }

    /// Bytes of the open line so far (a trailing `\r` included).
    pub fn open_len(&self) -> usize {
        self.open
    }

    /// Cuts the next piece off the front of a non-empty `input`.
    ///
    /// Returns how many bytes the piece used, terminator included, and the
    /// piece. Call again on the rest of the input until it is empty.
    pub fn next<'a>(&mut self, input: &'a [u8]) -> (usize, Piece<'a>) {
        if self.failed {
            return (input.len(), Piece::TooLong);
        }
        // `memchr` scans 16 or 32 bytes per instruction; a byte-by-byte
        // search was half of the server's own CPU time with pipelined lines.
        match memchr::memchr(b'\n', input) {
            Some(newline) => {
                let mut tail = &input[..newline];
                // "\r\n" split across two inputs: the carried '\r' ends it.
                let carried_cr = tail.is_empty() && self.open_ends_cr;
                if let [rest @ .., b'\r'] = tail {
                    tail = rest;
                }
                let end = LineEnd {
                    tail,
                    carried: self.open,
                    carried_cr,
                };
                if end.len() > self.max_line {
                    return self.fail(input.len());
                }
                self.open = 0;
                self.open_ends_cr = false;
                (newline + 1, Piece::Line(end))
            }
            None => {
                self.open += input.len();
                self.open_ends_cr = input.last() == Some(&b'\r');
                // A trailing '\r' may still turn out to be the terminator.
                let content = self.open - usize::from(self.open_ends_cr);
                if content > self.max_line {
                    return self.fail(input.len());
                }
                (input.len(), Piece::Partial(input))
            }
        }
    }

    /// The stream ended (the peer shut down writing). Returns the content
    /// length of a final unterminated line that is owed a reply, or `Err` if
    /// that line is too long; `Ok(None)` when no line was open.
    ///
    /// A final `\r` is content here: there is no `\n` to make it a
    /// terminator.
    pub fn finish(&mut self) -> Result<Option<usize>, TooLong> {
        let open = std::mem::take(&mut self.open);
        self.open_ends_cr = false;
        match open {
            0 => Ok(None),
            n if n > self.max_line || self.failed => Err(TooLong),
            n => Ok(Some(n)),
        }
    }

    fn fail(&mut self, used: usize) -> (usize, Piece<'static>) {
        self.failed = true;
        (used, Piece::TooLong)
    }
}

/// A line exceeded the framer's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLong;

#[cfg(test)]
mod tests {
    // Line-by-line behaviour is tested through the public API in
    // tests/framing_props.rs; here, what only the raw pieces show.
    use super::*;

    #[test]
    fn too_long_is_seen_before_the_newline_arrives() {
        let mut framer = LineFramer::new(4);
        assert!(matches!(framer.next(b"1234\r").1, Piece::Partial(_)));
        let mut framer = LineFramer::new(4);
        assert_eq!(framer.next(b"12345").1, Piece::TooLong);
        assert_eq!(framer.next(b"\n").1, Piece::TooLong, "stays failed");
    }

    #[test]
    fn a_crlf_split_between_inputs_drops_the_carried_cr() {
        let mut framer = LineFramer::new(8);
        assert_eq!(framer.next(b"ab\r").1, Piece::Partial(b"ab\r"));
        let end = LineEnd {
            tail: b"",
            carried: 3,
            carried_cr: true,
        };
        assert_eq!(framer.next(b"\n"), (1, Piece::Line(end)));
    }
}
