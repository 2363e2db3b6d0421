//! Fuzz the line framer: any bytes, cut at any points, with any limit,
//! must give the same lines as the whole stream at once, without panics,
//! and every piece must make progress within its input.
//!
//! Run from the repository root: `cargo fuzz run framer` (see README).

#![no_main]

use ackloop::framing::{LineFramer, Piece};
use libfuzzer_sys::fuzz_target;

/// Lines (contents) and whether the stream hit the limit.
fn frame(chunks: &[&[u8]], max_line: usize) -> (Vec<Vec<u8>>, bool) {
    let mut framer = LineFramer::new(max_line);
    let (mut open, mut lines) = (Vec::new(), Vec::new());
    for chunk in chunks {
        let mut input = *chunk;
        while !input.is_empty() {
            let (used, piece) = framer.next(input);
            assert!(used > 0 && used <= input.len());
            input = &input[used..];
            match piece {
                Piece::Line(end) => {
                    assert_eq!(end.carried, open.len());
                    if end.carried_cr {
                        assert_eq!(open.pop(), Some(b'\r'));
                    }
                    open.extend_from_slice(end.tail);
                    assert!(open.len() <= max_line);
                    lines.push(std::mem::take(&mut open));
                }
                Piece::Partial(bytes) => open.extend_from_slice(bytes),
                Piece::TooLong => return (lines, true),
            }
        }
    }
    match framer.finish() {
        Ok(Some(len)) => {
            assert_eq!(len, open.len());
            lines.push(open);
        }
        Ok(None) => assert!(open.is_empty()),
        Err(_) => return (lines, true),
    }
    (lines, false)
}

fuzz_target!(|data: &[u8]| {
    // First byte: the limit; second: the chunk size; the rest: the stream.
    let [limit, chunk, stream @ ..] = data else {
        return;
    };
    let max_line = usize::from(*limit);
    let chunks: Vec<&[u8]> = stream.chunks(usize::from(*chunk).max(1)).collect();
    assert_eq!(frame(&chunks, max_line), frame(&[stream], max_line));
});
