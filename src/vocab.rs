//! The vocabulary every layer speaks: the longest reply text and its one
//! length check. It sits below its users (configuration, commands, rules,
//! the handle) and imports none of them.

/// Longest reply text, in bytes: a `--reply`, a rule's reply, a greeting,
/// a push. A UDP reply must fit in one datagram, and a short fixed reply
/// keeps the owed-bytes bookkeeping cheap.
pub const MAX_REPLY_LEN: usize = 1024;

/// The one check of a reply text's length, wherever a text comes in (the
/// command line, a control line, a script, a rule, the handle): at most
/// [`MAX_REPLY_LEN`] bytes, and at least one unless `may_be_empty` (a
/// rule's reply or a push may send nothing; the reply text and a greeting
/// may not). `what` names the text in the message.
pub(crate) fn check_reply_len(what: &str, text: &[u8], may_be_empty: bool) -> Result<(), String> {
    let len = text.len();
    match (may_be_empty, len) {
        (_, len) if len > MAX_REPLY_LEN => Err(match may_be_empty {
            true => format!("{what}: at most {MAX_REPLY_LEN} bytes, got {len}"),
            false => format!("{what}: must be 1 to {MAX_REPLY_LEN} bytes, got {len}"),
        }),
        (false, 0) => Err(format!("{what}: must be 1 to {MAX_REPLY_LEN} bytes, got 0")),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reply_length_check_names_the_text_and_the_bounds() {
        let long = vec![b'x'; MAX_REPLY_LEN + 1];
        assert_eq!(check_reply_len("push", b"", true), Ok(()));
        assert_eq!(check_reply_len("push", &long[1..], true), Ok(()));
        assert_eq!(
            check_reply_len("push", &long, true),
            Err("push: at most 1024 bytes, got 1025".into())
        );
        assert_eq!(check_reply_len("reply", b"x", false), Ok(()));
        assert_eq!(
            check_reply_len("reply", b"", false),
            Err("reply: must be 1 to 1024 bytes, got 0".into())
        );
        assert_eq!(
            check_reply_len("--greeting", &long, false),
            Err("--greeting: must be 1 to 1024 bytes, got 1025".into())
        );
    }
}
