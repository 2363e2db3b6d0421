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
    line: OpenLine,
    /// A line was too long: nothing more is framed.
    failed: bool,
}

impl LineFramer {
    /// A framer for lines of at most `max_line` bytes, terminator excluded
    /// (at most [`MAX_LINE_LIMIT`]: a larger limit is taken as that).
    pub fn new(max_line: usize) -> LineFramer {
        LineFramer {
            max_line: max_line.min(MAX_LINE_LIMIT),
            line: OpenLine::default(),
            failed: false,
        }
    }

    /// The longest line content this framer accepts.
    pub fn max_line(&self) -> usize {
        self.max_line
    }

    /// Bytes of the open line so far (a trailing `\r` included).
    pub fn open_len(&self) -> usize {
        self.line.len()
    }

    /// Cuts the next piece off the front of a non-empty `input`.
    ///
    /// Returns how many bytes the piece used, terminator included, and the
    /// piece. Call again on the rest of the input until it is empty.
    pub fn next<'a>(&mut self, input: &'a [u8]) -> (usize, Piece<'a>) {
        if self.failed {
            return (input.len(), Piece::TooLong);
        }
        let (used, piece) = self.line.next(input, self.max_line);
        self.failed = piece == Piece::TooLong;
        (used, piece)
    }

    /// The stream ended (the peer shut down writing). Returns the content
    /// length of a final unterminated line that is owed a reply, or `Err` if
    /// that line is too long; `Ok(None)` when no line was open.
    ///
    /// A final `\r` is content here: there is no `\n` to make it a
    /// terminator.
    pub fn finish(&mut self) -> Result<Option<usize>, TooLong> {
        match self.line.finish(self.max_line) {
            Ok(_) if self.failed => Err(TooLong),
            result => result,
        }
    }
}

/// The largest limit a [`LineFramer`] keeps: an open line's length is
/// kept in 31 bits (2 GiB, far above `--max-line`'s own limit).
pub const MAX_LINE_LIMIT: usize = (1 << 31) - 2;

/// What survives between reads of a line stream: the open line's length
/// and whether it ends in `\r`, in one 32-bit word so that a connection
/// holds it inline for 4 bytes; the limit is passed in, being the same
/// for every connection. Once a line is too long the caller stops framing
/// (a [`LineFramer`] remembers that; a connection closes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct OpenLine {
    /// Low 31 bits: bytes of the open line seen so far, a trailing `\r`
    /// included, at most `max_line + 1`. Top bit: [`OpenLine::ENDS_CR`].
    word: u32,
}

impl OpenLine {
    /// No line open.
    pub const EMPTY: OpenLine = OpenLine { word: 0 };
    /// The last byte of the open line is `\r`.
    const ENDS_CR: u32 = 1 << 31;

    /// Bytes of the open line so far, a trailing `\r` included.
    pub fn len(&self) -> usize {
        (self.word & !Self::ENDS_CR) as usize
    }

    fn ends_cr(&self) -> bool {
        self.word & Self::ENDS_CR != 0
    }

    /// The open line as its length (a trailing `\r` included) and whether
    /// it ends in `\r`: what a connection at rest keeps of it.
    pub fn parts(self) -> (usize, bool) {
        (self.len(), self.ends_cr())
    }

    /// The open line of [`parts`](OpenLine::parts) `len` (at most
    /// [`MAX_LINE_LIMIT`]` + 1`) and `ends_cr`.
    pub fn from_parts(len: usize, ends_cr: bool) -> OpenLine {
        let flag = if ends_cr { Self::ENDS_CR } else { 0 };
        OpenLine {
            word: (len as u32 & !Self::ENDS_CR) | flag,
        }
    }

    /// Cuts the next piece off the front of a non-empty `input`, for lines
    /// of at most `max_line` (at most [`MAX_LINE_LIMIT`]) bytes.
    pub fn next<'a>(&mut self, input: &'a [u8], max_line: usize) -> (usize, Piece<'a>) {
        // `memchr` scans 16 or 32 bytes per instruction; a byte-by-byte
        // search was half of the server's own CPU time with pipelined lines.
        match memchr::memchr(b'\n', input) {
            Some(newline) => {
                let mut tail = &input[..newline];
                // "\r\n" split across two inputs: the carried '\r' ends it.
                let carried_cr = tail.is_empty() && self.ends_cr();
                if let [rest @ .., b'\r'] = tail {
                    tail = rest;
                }
                let end = LineEnd {
                    tail,
                    carried: self.len(),
                    carried_cr,
                };
                if end.len() > max_line {
                    return (input.len(), Piece::TooLong);
                }
                *self = OpenLine::default();
                (newline + 1, Piece::Line(end))
            }
            None => {
                let len = self.len() + input.len();
                let ends_cr = input.last() == Some(&b'\r');
                // A trailing '\r' may still turn out to be the terminator.
                if len - usize::from(ends_cr) > max_line {
                    return (input.len(), Piece::TooLong);
                }
                // At most `max_line + 1`, which fits: see MAX_LINE_LIMIT.
                let flag = if ends_cr { Self::ENDS_CR } else { 0 };
                self.word = len as u32 | flag;
                (input.len(), Piece::Partial(input))
            }
        }
    }

    /// The stream ended: the content length of a final unterminated line
    /// (a final `\r` is content), `Err` if it is over `max_line`.
    pub fn finish(&mut self, max_line: usize) -> Result<Option<usize>, TooLong> {
        let open = std::mem::take(self).len();
        match open {
            0 => Ok(None),
            n if n > max_line => Err(TooLong),
            n => Ok(Some(n)),
        }
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

    /// Feeds `inputs` one after the other, cutting each into pieces: what
    /// the framer returns, with the bytes each piece used.
    fn pieces<'a>(framer: &mut LineFramer, inputs: &[&'a [u8]]) -> Vec<(usize, Piece<'a>)> {
        let mut out = Vec::new();
        for input in inputs {
            let mut rest: &'a [u8] = input;
            while !rest.is_empty() {
                let (used, piece) = framer.next(rest);
                rest = &rest[used..];
                out.push((used, piece));
            }
        }
        out
    }

    fn line(tail: &[u8], carried: usize, carried_cr: bool) -> Piece<'_> {
        Piece::Line(LineEnd {
            tail,
            carried,
            carried_cr,
        })
    }

    #[test]
    fn a_line_of_exactly_max_line_is_accepted_and_one_more_byte_is_not() {
        for input in [&b"1234\n"[..], b"1234\r\n"] {
            let mut framer = LineFramer::new(4);
            assert_eq!(framer.max_line(), 4);
            assert_eq!(
                framer.next(input),
                (input.len(), line(b"1234", 0, false)),
                "{input:?}"
            );
        }
        for input in [&b"12345\n"[..], b"12345\r\n"] {
            let mut framer = LineFramer::new(4);
            assert_eq!(framer.next(input), (input.len(), Piece::TooLong));
        }
    }

    #[test]
    fn the_limit_counts_the_carried_bytes_too() {
        let mut framer = LineFramer::new(4);
        let got = pieces(&mut framer, &[b"12", b"34\n"]);
        assert_eq!(
            got,
            [(2, Piece::Partial(b"12")), (3, line(b"34", 2, false))]
        );
        let Piece::Line(end) = &got[1].1 else {
            unreachable!()
        };
        assert_eq!(end.len(), 4);

        let mut framer = LineFramer::new(4);
        let got = pieces(&mut framer, &[b"12", b"345\n"]);
        assert_eq!(got, [(2, Piece::Partial(b"12")), (4, Piece::TooLong)]);
        // A carried "\r\n" split: the '\r' is not content, so 4 fit.
        let mut framer = LineFramer::new(4);
        let got = pieces(&mut framer, &[b"1234\r", b"\n"]);
        assert_eq!(got[1], (1, line(b"", 5, true)));
    }

    #[test]
    fn several_lines_in_one_input_are_cut_one_by_one() {
        let mut framer = LineFramer::new(8);
        let got = pieces(&mut framer, &[b"a\n\r\nbc\r\nd"]);
        assert_eq!(
            got,
            [
                (2, line(b"a", 0, false)),
                (2, line(b"", 0, false)),
                (4, line(b"bc", 0, false)),
                (1, Piece::Partial(b"d")),
            ]
        );
        assert_eq!(framer.open_len(), 1);
    }

    #[test]
    fn the_open_length_grows_with_each_partial_and_resets_at_the_newline() {
        let mut framer = LineFramer::new(16);
        assert_eq!(framer.open_len(), 0);
        framer.next(b"ab");
        assert_eq!(framer.open_len(), 2);
        framer.next(b"cd\r");
        assert_eq!(framer.open_len(), 5, "a trailing '\r' counts");
        assert_eq!(framer.next(b"e\nf").1, line(b"e", 5, false));
        assert_eq!(framer.open_len(), 0);
    }

    #[test]
    fn a_cr_not_followed_by_the_newline_is_content() {
        // Inside one input.
        let mut framer = LineFramer::new(8);
        assert_eq!(framer.next(b"a\rb\n").1, line(b"a\rb", 0, false));
        // Split after the '\r': the carried '\r' stays content.
        let mut framer = LineFramer::new(8);
        let got = pieces(&mut framer, &[b"a\r", b"b\n"]);
        let Piece::Line(end) = &got[1].1 else {
            panic!("{got:?}")
        };
        assert_eq!(
            *end,
            LineEnd {
                tail: b"b",
                carried: 2,
                carried_cr: false
            }
        );
        assert_eq!(end.len(), 3);
        // A carried line without a '\r' keeps all its bytes.
        let mut framer = LineFramer::new(8);
        let got = pieces(&mut framer, &[b"ab", b"\n"]);
        assert_eq!(got[1], (1, line(b"", 2, false)));
    }

    #[test]
    fn a_partial_over_the_limit_fails_at_once_even_with_a_trailing_cr() {
        let mut framer = LineFramer::new(4);
        assert_eq!(framer.next(b"123"), (3, Piece::Partial(b"123")));
        assert_eq!(framer.next(b"45\r"), (3, Piece::TooLong));
        assert_eq!(framer.next(b"ok\n"), (3, Piece::TooLong), "stays failed");
    }

    #[test]
    fn line_end_length_and_emptiness() {
        let end = |tail, carried, carried_cr| LineEnd {
            tail,
            carried,
            carried_cr,
        };
        assert_eq!(end(b"ab", 3, true).len(), 4);
        assert_eq!(end(b"ab", 3, false).len(), 5);
        assert_eq!(end(b"ab", 0, true).len(), 2, "saturates");
        assert!(end(b"", 0, false).is_empty());
        assert!(end(b"", 1, true).is_empty(), "a carried \"\\r\" alone");
        assert!(!end(b"", 1, false).is_empty());
        assert!(!end(b"x", 0, false).is_empty());
    }

    #[test]
    fn finish_owes_a_reply_for_an_open_line_within_the_limit() {
        let mut framer = LineFramer::new(4);
        assert_eq!(framer.finish(), Ok(None), "nothing open");
        framer.next(b"12");
        framer.next(b"34");
        assert_eq!(framer.finish(), Ok(Some(4)));
        assert_eq!(framer.open_len(), 0);
        assert_eq!(framer.finish(), Ok(None), "finished once");
    }

    #[test]
    fn finish_counts_a_final_cr_as_content() {
        let mut framer = LineFramer::new(4);
        assert!(matches!(framer.next(b"1234\r").1, Piece::Partial(_)));
        assert_eq!(framer.finish(), Err(TooLong), "five bytes of content");
        // With room for it, the '\r' is part of the final line.
        let mut framer = LineFramer::new(8);
        framer.next(b"ab\r");
        assert_eq!(framer.finish(), Ok(Some(3)));
        // And finishing forgets it: a later "\n" is an empty line.
        assert_eq!(framer.next(b"\n").1, line(b"", 0, false));
    }

    #[test]
    fn finish_after_a_too_long_line_is_an_error_even_if_little_is_open() {
        let mut framer = LineFramer::new(4);
        assert_eq!(framer.next(b"12").1, Piece::Partial(b"12"));
        assert_eq!(framer.next(b"345\n").1, Piece::TooLong);
        assert_eq!(framer.finish(), Err(TooLong));
    }
}
