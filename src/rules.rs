//! Scripted replies: rules that answer a message by what it says.
//!
//! A [`Rule`] is written `MATCH => REPLY [|| REPLY ...]`, the same on the
//! command line (`--rule`), on a control line (`rule SPEC`) and in Rust
//! (`"prefix:GET => 200".parse::<Rule>()`). The rules are tried in order
//! and the first whose [`Match`] fits the message answers it. A rule with
//! several replies gives them one per message it answers, in order across
//! every connection and datagram, the last one repeating: each rule keeps
//! one cursor, not one per connection, so a client that reconnects to
//! retry sees the next reply.
//!
//! # Examples
//!
//! ```
//! use ackloop::{Match, Rule};
//!
//! let rule: Rule = r"prefix:GET => 503 busy || 200 ok\r".parse()?;
//! assert_eq!(rule.pattern, Match::Prefix(b"GET".to_vec()));
//! assert_eq!(rule.replies, [&b"503 busy"[..], b"200 ok\r"]);
//! assert!(rule.pattern.matches(b"GET /index.html"));
//! assert_eq!(rule.to_string(), r"prefix:GET => 503 busy || 200 ok\r");
//! # Ok::<(), String>(())
//! ```

use std::fmt;
use std::str::FromStr;

use crate::escape::{escape_edges, unescape};
use crate::vocab::{Match, check_reply_len};

/// Rules at most, on the command line and added at run time together: a
/// control client cannot grow the list, nor the time each message spends
/// trying it, without bound.
pub const MAX_RULES: usize = 256;

/// A scripted answer: the messages it fits and the replies it gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The messages this rule answers.
    pub pattern: Match,
    /// The replies, one per message answered, the last repeating; each 0
    /// to [`MAX_REPLY_LEN`](crate::MAX_REPLY_LEN) bytes (empty: nothing is
    /// sent). At least one.
    pub replies: Vec<Vec<u8>>,
}

impl Rule {
    /// Checks what parsing checks, for a rule built by hand.
    ///
    /// # Errors
    ///
    /// A one-line message naming the rule (`rule 'SPEC': why`).
    pub fn validate(&self) -> Result<(), String> {
        if self.replies.is_empty() {
            return Err(format!("rule '{self}': needs at least one reply"));
        }
        let what = format!("rule '{}': reply", self.pattern);
        (self.replies.iter()).try_for_each(|reply| check_reply_len(&what, reply, true))
    }
}

impl FromStr for Rule {
    type Err = String;

    /// Parses `MATCH => REPLY [|| REPLY ...]`: split at the first `=>`,
    /// each part trimmed of spaces, then unescaped.
    fn from_str(spec: &str) -> Result<Rule, String> {
        let bad = |why: &str| format!("rule '{spec}': {why}");
        let (pattern, replies) = spec
            .split_once("=>")
            .ok_or_else(|| bad("expected MATCH => REPLY, like 'prefix:GET => 200 ok'"))?;
        let pattern = pattern
            .trim_matches(' ')
            .parse()
            .map_err(|why: String| bad(&why))?;
        let replies = replies
            .split("||")
            .map(|reply| unescape(reply.trim_matches(' ')))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|why| bad(&format!("reply: {why}")))?;
        let rule = Rule { pattern, replies };
        rule.validate()?;
        Ok(rule)
    }
}

/// Writes the rule back as a spec that parses to the same rule.
impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} =>", self.pattern)?;
        for (i, reply) in self.replies.iter().enumerate() {
            let separator = if i == 0 { "" } else { " ||" };
            write!(f, "{separator} {}", escape_edges(reply))?;
        }
        Ok(())
    }
}

/// The rules a server answers with, each with its cursor.
#[derive(Debug, Default)]
pub(crate) struct Rules {
    rules: Vec<Rule>,
    /// Per rule, the index of the reply it gives next; it stops at the last.
    cursors: Vec<usize>,
}

impl Rules {
    pub fn new(rules: &[Rule]) -> Rules {
        Rules {
            rules: rules.to_vec(),
            cursors: vec![0; rules.len()],
        }
    }

    /// No rule: every message takes the server's usual path.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Appends a rule, with its own cursor at its first reply.
    ///
    /// # Errors
    ///
    /// The rule is invalid or [`MAX_RULES`] are already set; nothing
    /// changes.
    pub fn add(&mut self, rule: Rule) -> Result<(), String> {
        rule.validate()?;
        self.check_room()?;
        self.rules.push(rule);
        self.cursors.push(0);
        Ok(())
    }

    /// Whether one more rule may be added.
    ///
    /// # Errors
    ///
    /// [`MAX_RULES`] rules are set already.
    pub fn check_room(&self) -> Result<(), String> {
        match self.rules.len() >= MAX_RULES {
            true => Err(format!("{MAX_RULES} rules already; rules clear first")),
            false => Ok(()),
        }
    }

    pub fn clear(&mut self) {
        self.rules.clear();
        self.cursors.clear();
    }

    /// The reply of the first rule that fits `message`, moving that rule's
    /// cursor on; `None` when no rule fits.
    pub fn answer(&mut self, message: &[u8]) -> Option<&[u8]> {
        let index = self.rules.iter().position(|r| r.pattern.matches(message))?;
        let rule = &self.rules[index];
        let cursor = &mut self.cursors[index];
        let reply = &rule.replies[*cursor];
        if *cursor + 1 < rule.replies.len() {
            *cursor += 1;
        }
        Some(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::MAX_REPLY_LEN;

    fn rule(spec: &str) -> Rule {
        spec.parse().unwrap_or_else(|e| panic!("{spec}: {e}"))
    }

    #[test]
    fn good_specs_parse() {
        let r = rule("exact:ehlo localhost => 250 hi");
        assert_eq!(r.pattern, Match::Exact(b"ehlo localhost".to_vec()));
        assert_eq!(r.replies, [b"250 hi".to_vec()]);

        let r = rule(r"  prefix:GET   =>  one || two\r\n||three ");
        assert_eq!(r.pattern, Match::Prefix(b"GET".to_vec()));
        assert_eq!(r.replies, [&b"one"[..], b"two\r\n", b"three"]);

        let r = rule("* =>");
        assert_eq!((r.pattern, r.replies), (Match::Any, vec![Vec::new()]));

        let r = rule(r"contains:a=>b => x || ");
        assert_eq!(r.pattern, Match::Contains(b"a".to_vec()));
        assert_eq!(r.replies, [&b"b => x"[..], b""], "split at the first =>");

        let r = rule(r"exact:\x20 => \x20padded\x20");
        assert_eq!(r.pattern, Match::Exact(b" ".to_vec()));
        assert_eq!(r.replies, [b" padded ".to_vec()]);

        let r = rule(r"exact: => empty message");
        assert_eq!(r.pattern, Match::Exact(Vec::new()));

        let r = rule(r"prefix:\xff\x00 => \x01\x02");
        assert_eq!(r.pattern, Match::Prefix(vec![0xff, 0]));
        assert_eq!(r.replies, [vec![1, 2]]);
    }

    #[test]
    fn bad_specs_are_errors_naming_the_rule() {
        let long = format!("* => {}", "x".repeat(MAX_REPLY_LEN + 1));
        for spec in [
            "",
            "no arrow",
            "exact:x -> y",
            "=> reply",
            "regex:a.* => x",
            "EXACT:x => y",
            "exact => y",
            r"exact:\q => y",
            r"* => bad\",
            r"* => ok || bad\x4",
            "** => y",
            long.as_str(),
        ] {
            let why = spec
                .parse::<Rule>()
                .expect_err(&format!("{spec:?} accepted"));
            assert!(why.starts_with("rule '"), "{spec:?}: {why}");
            assert!(!why.contains('\n'), "{spec:?}: {why}");
        }
        let at_most = format!("* => {}", "x".repeat(MAX_REPLY_LEN));
        assert!(at_most.parse::<Rule>().is_ok());
    }

    #[test]
    fn matching_is_byte_for_byte_and_case_sensitive() {
        let exact = Match::Exact(b"quit".to_vec());
        assert!(exact.matches(b"quit"));
        assert!(!exact.matches(b"QUIT"));
        assert!(!exact.matches(b"quit "));
        assert!(!exact.matches(b"qui"));
        let prefix = Match::Prefix(b"mail from:".to_vec());
        assert!(prefix.matches(b"mail from:<a@b>"));
        assert!(prefix.matches(b"mail from:"));
        assert!(!prefix.matches(b"mail"));
        let contains = Match::Contains(b"\r\n.\r\n".to_vec());
        assert!(contains.matches(b"body\r\n.\r\n"));
        assert!(!contains.matches(b"body\n.\n"));
        assert!(Match::Contains(Vec::new()).matches(b""));
        assert!(Match::Any.matches(b""));
        assert!(Match::Exact(Vec::new()).matches(b""));
        assert!(!Match::Exact(Vec::new()).matches(b"x"));
    }

    #[test]
    fn display_parses_back_to_the_same_rule() {
        for spec in [
            "exact:quit => 221 bye",
            r"prefix:\x20x => \x20a\x20 || b\r\n || ",
            r"contains:a=\x3eb => c|\x7cd",
            r"* => \xff\\",
            "exact: => ",
            r"exact:\x20\x20 => \x20",
        ] {
            let first = rule(spec);
            let again = rule(&first.to_string());
            assert_eq!(first, again, "{spec} -> {first}");
        }
    }

    #[test]
    fn first_match_wins_and_each_rule_keeps_its_place() {
        let mut rules = Rules::new(&[
            rule("exact:retry => fail || fail again || ok"),
            rule("prefix:re => other"),
            rule("exact:quiet => "),
        ]);
        assert_eq!(rules.answer(b"retry"), Some(&b"fail"[..]));
        assert_eq!(rules.answer(b"reset"), Some(&b"other"[..]));
        assert_eq!(rules.answer(b"retry"), Some(&b"fail again"[..]));
        assert_eq!(rules.answer(b"nothing"), None);
        assert_eq!(rules.answer(b"retry"), Some(&b"ok"[..]));
        assert_eq!(rules.answer(b"retry"), Some(&b"ok"[..]), "the last repeats");
        assert_eq!(rules.answer(b"quiet"), Some(&b""[..]), "an empty reply");
        assert!(!rules.is_empty());
        rules.clear();
        assert!(rules.is_empty());
        assert_eq!(rules.answer(b"retry"), None);
    }

    #[test]
    fn added_rules_start_at_their_first_reply_and_are_bounded() {
        let mut rules = Rules::default();
        assert!(rules.is_empty());
        rules.add(rule("* => a || b")).unwrap();
        assert_eq!(rules.answer(b"x"), Some(&b"a"[..]));
        let bad = Rule {
            pattern: Match::Any,
            replies: Vec::new(),
        };
        assert!(rules.add(bad).is_err());
        for _ in 1..MAX_RULES {
            rules.add(rule("exact:never => x")).unwrap();
        }
        let over = rules.add(rule("* => y")).unwrap_err();
        assert!(over.contains("256 rules"), "{over}");
        assert_eq!(rules.answer(b"x"), Some(&b"b"[..]));
    }

    proptest::proptest! {
        #[test]
        fn any_rule_round_trips_through_its_text(
            kind in 0..4u8,
            text: Vec<u8>,
            replies in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..20), 1..4),
        ) {
            let pattern = match kind {
                0 => Match::Exact(text),
                1 => Match::Prefix(text),
                2 => Match::Contains(text),
                _ => Match::Any,
            };
            let rule = Rule { pattern, replies };
            proptest::prop_assert_eq!(rule.to_string().parse::<Rule>(), Ok(rule));
        }
    }
}
