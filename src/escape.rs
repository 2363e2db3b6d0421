//! Escapes in reply texts: `\n`, `\r`, `\t`, `\\` and `\xHH`, so that CRLF
//! and binary protocols can be scripted from a command line or a control
//! line, both of which carry one line of UTF-8 text.
//!
//! [`unescape`] is strict: any other backslash sequence, a lone `\` at the
//! end, or `\x` without two hex digits is an error, so a typo never turns
//! silently into different bytes on the wire. [`escape`] is its inverse,
//! for logs and for writing a rule back as text.

use std::fmt::Write;

/// The bytes `text` stands for, its escapes replaced.
///
/// # Errors
///
/// A one-line message naming the bad sequence and its byte offset.
///
/// # Examples
///
/// ```
/// assert_eq!(ackloop::unescape(r"220 ready\r\n")?, b"220 ready\r\n");
/// assert_eq!(ackloop::unescape(r"a\\b\x00")?, b"a\\b\0");
/// assert!(ackloop::unescape(r"C:\temp").is_ok(), "\\t is a tab");
/// assert!(ackloop::unescape(r"C:\dir").is_err(), "\\d is no escape");
/// # Ok::<(), String>(())
/// ```
pub fn unescape(text: &str) -> Result<Vec<u8>, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if byte != b'\\' {
            out.push(byte);
            i += 1;
            continue;
        }
        let (value, used) = escaped(&bytes[i + 1..]).map_err(|why| {
            format!(r"{why} at byte {i} (escapes: \n \r \t \\ \xHH; write \\ for a backslash)")
        })?;
        out.push(value);
        i += 1 + used;
    }
    Ok(out)
}

/// The byte an escape stands for, given what follows its backslash, and
/// how many of those bytes it used.
fn escaped(after: &[u8]) -> Result<(u8, usize), String> {
    match after {
        [b'n', ..] => Ok((b'\n', 1)),
        [b'r', ..] => Ok((b'\r', 1)),
        [b't', ..] => Ok((b'\t', 1)),
        [b'\\', ..] => Ok((b'\\', 1)),
        [b'x', high, low, ..] => match (hex(*high), hex(*low)) {
            (Some(high), Some(low)) => Ok((high << 4 | low, 3)),
            _ => Err(r"\x needs two hex digits".into()),
        },
        [b'x', ..] => Err(r"\x needs two hex digits".into()),
        [] => Err(r"a lone \ ends the text".into()),
        [_, ..] => {
            // Name the whole character, not half of a UTF-8 sequence.
            let next = String::from_utf8_lossy(&after[..after.len().min(4)]);
            let c = next.chars().next().unwrap_or('?');
            Err(format!(r"unknown escape \{c}"))
        }
    }
}

fn hex(digit: u8) -> Option<u8> {
    (digit as char).to_digit(16).map(|d| d as u8)
}

/// `bytes` written as text that [`unescape`] turns back into them:
/// printable text stays as it is, a backslash doubles, `\n`, `\r`, `\t`
/// are written so, and other control bytes and bytes that are not UTF-8
/// become `\xHH`.
///
/// # Examples
///
/// ```
/// let bytes = b"250 ok\r\n\xff\\";
/// let text = ackloop::escape(bytes);
/// assert_eq!(text, r"250 ok\r\n\xff\\");
/// assert_eq!(ackloop::unescape(&text)?, bytes);
/// # Ok::<(), String>(())
/// ```
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\n' => out.push_str(r"\n"),
                '\r' => out.push_str(r"\r"),
                '\t' => out.push_str(r"\t"),
                '\\' => out.push_str(r"\\"),
                c if c.is_control() && c.is_ascii() => {
                    let _ = write!(out, r"\x{:02x}", c as u8);
                }
                c => out.push(c),
            }
        }
        for byte in chunk.invalid() {
            let _ = write!(out, r"\x{byte:02x}");
        }
    }
    out
}

/// [`escape`], with a leading or trailing space written `\x20` and the
/// separators `=>` and `||` broken up, so that parsing (which trims and
/// splits) gives the same bytes back.
pub(crate) fn escape_edges(bytes: &[u8]) -> String {
    let text = escape(bytes)
        .replace("=>", r"=\x3e")
        .replace("||", r"|\x7c");
    let inner = text.trim_matches(' ');
    let leading = text.len() - text.trim_start_matches(' ').len();
    let trailing = if inner.is_empty() {
        0
    } else {
        text.len() - text.trim_end_matches(' ').len()
    };
    let spaces = |n: usize| r"\x20".repeat(n);
    format!("{}{inner}{}", spaces(leading), spaces(trailing))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_escape_gives_its_byte() {
        for (text, bytes) in [
            ("", &b""[..]),
            ("plain", b"plain"),
            (r"\n", b"\n"),
            (r"\r\n", b"\r\n"),
            (r"a\tb", b"a\tb"),
            (r"\\", b"\\"),
            (r"\\n", b"\\n"),
            (r"\x00\x7f\xFF\xaB", b"\x00\x7f\xff\xab"),
            (r"\x41BC", b"ABC"),
            ("é\\n", "é\n".as_bytes()),
        ] {
            assert_eq!(unescape(text).as_deref(), Ok(bytes), "{text:?}");
        }
    }

    #[test]
    fn bad_escapes_are_errors_naming_the_place() {
        for (text, place) in [
            (r"\", "byte 0"),
            (r"ab\", "byte 2"),
            (r"\q", "byte 0"),
            (r"C:\dir", "byte 2"),
            (r"\x", "byte 0"),
            (r"\x4", "byte 0"),
            (r"\xg0", "byte 0"),
            (r"\x0g", "byte 0"),
            (r"ok\é", "byte 2"),
            (r"\ ", "byte 0"),
        ] {
            let why = unescape(text).expect_err(text);
            assert!(why.contains(place), "{text:?}: {why}");
            assert!(!why.contains('\n'), "{text:?}: {why}");
        }
        assert!(unescape(r"ok\é").unwrap_err().contains(r"\é"));
    }

    #[test]
    fn escape_round_trips_any_bytes() {
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(unescape(&escape(&all)), Ok(all));
        assert_eq!(escape("héllo wörld".as_bytes()), "héllo wörld");
        assert_eq!(escape(b"\x1b[0m\x7f"), r"\x1b[0m\x7f");
    }

    proptest::proptest! {
        #[test]
        fn escape_then_unescape_is_identity(bytes: Vec<u8>) {
            proptest::prop_assert_eq!(unescape(&escape(&bytes)), Ok(bytes));
        }

        #[test]
        fn unescape_never_panics(text: String) {
            let _ = unescape(&text);
        }
    }
}
