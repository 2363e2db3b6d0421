//! Property tests for the line framer: however a byte stream is split into
//! reads, it yields the same lines, for any `max_line`.

use ackloop::framing::{LineFramer, Piece};
use proptest::prelude::*;

/// What the framer made of a stream: the lines' contents, and whether it
/// stopped on a line over the limit.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    lines: Vec<Vec<u8>>,
    too_long: bool,
}

/// Frames `chunks` in order, keeping each line's bytes the way a caller
/// with a custom responder does, then finishes the stream.
fn frame(chunks: &[&[u8]], max_line: usize) -> Outcome {
    let mut framer = LineFramer::new(max_line);
    let mut open = Vec::new();
    let mut lines = Vec::new();
    for chunk in chunks {
        let mut input = *chunk;
        while !input.is_empty() {
            let (used, piece) = framer.next(input);
            assert!(used > 0 && used <= input.len(), "progress within the input");
            input = &input[used..];
            match piece {
                Piece::Line(end) => {
                    assert_eq!(end.carried, open.len(), "carried count matches");
                    if end.carried_cr {
                        assert_eq!(open.pop(), Some(b'\r'));
                    }
                    open.extend_from_slice(end.tail);
                    lines.push(std::mem::take(&mut open));
                }
                Piece::Partial(bytes) => open.extend_from_slice(bytes),
                Piece::TooLong => {
                    return Outcome {
                        lines,
                        too_long: true,
                    };
                }
            }
        }
    }
    match framer.finish() {
        Ok(Some(len)) => {
            assert_eq!(len, open.len());
            lines.push(open);
        }
        Ok(None) => assert!(open.is_empty()),
        Err(_) => {
            return Outcome {
                lines,
                too_long: true,
            };
        }
    }
    Outcome {
        lines,
        too_long: false,
    }
}

/// The specification, written the obvious way over the whole stream.
fn reference(stream: &[u8], max_line: usize) -> Outcome {
    let mut lines = Vec::new();
    let mut rest = stream;
    while let Some(newline) = rest.iter().position(|&b| b == b'\n') {
        let mut line = &rest[..newline];
        if let [content @ .., b'\r'] = line {
            line = content;
        }
        if line.len() > max_line {
            return Outcome {
                lines,
                too_long: true,
            };
        }
        lines.push(line.to_vec());
        rest = &rest[newline + 1..];
    }
    if rest.len() > max_line {
        return Outcome {
            lines,
            too_long: true,
        };
    }
    if !rest.is_empty() {
        lines.push(rest.to_vec());
    }
    Outcome {
        lines,
        too_long: false,
    }
}

/// Bytes rich in terminators, so that lines, `\r\n` pairs and splits
/// between `\r` and `\n` are common.
fn stream() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![3 => Just(b'\n'), 2 => Just(b'\r'), 5 => any::<u8>(), 5 => Just(b'a')],
        0..400,
    )
}

/// Cut points that split `len` bytes into consecutive chunks.
fn split(stream: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    points.push(0);
    points.push(stream.len());
    points.sort_unstable();
    points
        .windows(2)
        .map(|w| stream[w[0]..w[1]].to_vec())
        .collect()
}

fn lines(items: &[&[u8]]) -> Vec<Vec<u8>> {
    items.iter().map(|line| line.to_vec()).collect()
}

#[test]
fn lines_lose_their_terminators() {
    let outcome = frame(&[b"a\nbb\r\n\n\r\nc\rd\n"], 10);
    assert_eq!(outcome.lines, lines(&[b"a", b"bb", b"", b"", b"c\rd"]));
    assert!(!outcome.too_long);
}

#[test]
fn crlf_split_between_reads() {
    let outcome = frame(&[b"ab\r", b"\ncd\r", b"\r\n"], 10);
    assert_eq!(outcome.lines, lines(&[b"ab", b"cd\r"]));
}

#[test]
fn max_line_excludes_the_terminator() {
    assert_eq!(frame(&[b"1234\n"], 4).lines, lines(&[b"1234"]));
    assert_eq!(frame(&[b"1234\r\n"], 4).lines, lines(&[b"1234"]));
    let outcome = frame(&[b"ok\n12345\nlater\n"], 4);
    assert_eq!((outcome.lines, outcome.too_long), (lines(&[b"ok"]), true));
}

#[test]
fn a_final_unterminated_line_is_a_line() {
    assert_eq!(frame(&[b"a\nlast"], 8).lines, lines(&[b"a", b"last"]));
    assert_eq!(frame(&[b"a\nlast\r"], 8).lines, lines(&[b"a", b"last\r"]));
    assert!(frame(&[b"123456789"], 8).too_long);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_split_gives_the_lines_of_the_whole_stream(
        stream in stream(),
        cuts in prop::collection::vec(any::<usize>(), 0..40),
        max_line in 0usize..40,
    ) {
        let chunks = split(&stream, &cuts);
        let chunk_refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
        let whole = frame(&[&stream], max_line);
        prop_assert_eq!(&frame(&chunk_refs, max_line), &whole);
        prop_assert_eq!(&whole, &reference(&stream, max_line));
    }

    #[test]
    fn single_byte_reads_give_the_same_lines(stream in stream(), max_line in 0usize..40) {
        let chunks: Vec<&[u8]> = stream.chunks(1).collect();
        prop_assert_eq!(frame(&chunks, max_line), reference(&stream, max_line));
    }
}
