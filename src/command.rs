//! Commands: the changes a running server takes without a restart, and
//! the one place that carries them out.
//!
//! A command comes from a control line ([`parse`], used by
//! [`control`](crate::control)) or from a [`Handle`](crate::Handle); either
//! way the loop hands it to [`execute`] and sends back its [`Reply`]. This
//! module sits below every handler: it acts on the turn's own state
//! (faults, counters) and on the TCP side through [`Target`], and imports
//! none of them.
//!
//! A new command is a [`Command`] variant, its arm in [`execute`], its
//! word in [`parse`] and its text in `Display`.

use std::fmt;

use log::info;

use crate::escape::{escape, unescape};
use crate::fault::Fault;
#[cfg(feature = "scripts")]
use crate::rules::{Rule, Rules};
use crate::stats::Stats;
use crate::timer::Millis;
use crate::turn::Turn;
use crate::vocab::check_reply_len;

/// Longest wait a `received` may ask for, in seconds (a day).
pub(crate) const MAX_WAIT_SECS: u64 = 86_400;

/// The commands a control line may name, for error messages.
const COMMANDS: &str = "fault, clear, reply, rule, rules clear, greeting, push, refuse, accept, \
     stats, received, endpoints, @NAME COMMAND";

/// A change to the running server, from a control connection or a
/// [`Handle`](crate::Handle).
#[derive(Debug, Clone)]
pub(crate) enum Command {
    AddFault(Fault),
    ClearFaults,
    SetReply(Vec<u8>),
    #[cfg(feature = "scripts")]
    AddRule(Rule),
    #[cfg(feature = "scripts")]
    ClearRules,
    #[cfg(feature = "scripts")]
    /// The greeting for connections accepted from now on; `None`: none.
    SetGreeting(Option<Vec<u8>>),
    #[cfg(feature = "scripts")]
    /// Bytes for every open TCP data connection now (plus `\n` in line
    /// mode).
    Push(Vec<u8>),
    Refuse,
    Accept,
    Stats,
    /// Lists the named endpoints (SPEC 14).
    Endpoints,
    /// `@NAME COMMAND`: `fault`, `clear`, `stats`, `refuse` or `accept`
    /// for the named endpoint `NAME`.
    At(String, Box<Command>),
}

/// What a command answers: `Ok(text)` is answered `ok` (then the text,
/// if any), `Err(why)` is answered `error: why`.
pub(crate) type Reply = Result<String, String>;

/// What commands change beyond the turn's own state: the TCP listener and
/// the reply its connections owe. The main endpoint's TCP side (its
/// listener and its job) implements it.
pub(crate) trait Target {
    /// Closes the listener: new clients are refused.
    fn refuse(&mut self, t: &mut Turn<'_>) -> Reply;
    /// Listens again on the same address.
    fn listen_again(&mut self, t: &mut Turn<'_>) -> Reply;
    /// Makes `text` the reply from now on.
    fn set_reply(&mut self, text: Vec<u8>, t: &mut Turn<'_>) -> Reply;
    /// Makes every message reach the responder whole, as rules and
    /// `match=` faults need: the fixed reply becomes a responder.
    fn see_messages(&mut self, t: &mut Turn<'_>);
    #[cfg(feature = "scripts")]
    /// Sends the greeting to connections accepted from now on.
    fn set_greeting(&mut self, text: Option<Vec<u8>>) -> Reply;
    #[cfg(feature = "scripts")]
    /// Sends `text` to every open data connection now.
    fn push(&mut self, text: Vec<u8>, t: &mut Turn<'_>) -> Reply;
    /// `ok N`, then one line per named endpoint: `NAME LISTEN UPSTREAM
    /// enabled|disabled`.
    fn endpoints(&mut self) -> Reply {
        Err(NO_ENDPOINTS.into())
    }
    /// Carries out `command` (`fault`, `clear`, `stats`, `refuse`,
    /// `accept`) on the named endpoint `name`.
    fn at(&mut self, name: &str, command: Command, t: &mut Turn<'_>) -> Reply {
        let _ = (command, t);
        Err(format!("no endpoint '{name}' ({NO_ENDPOINTS})"))
    }
}

/// Why a server without named endpoints refuses their commands.
pub(crate) const NO_ENDPOINTS: &str = "no named endpoints: --config or the API makes them";

/// Carries out `command`, from a control connection or a [`Handle`](crate::Handle).
/// A command that fails changes nothing (SPEC 9): every check comes
/// before the first change, the switch to whole messages included.
pub(crate) fn execute(command: Command, target: &mut impl Target, t: &mut Turn<'_>) -> Reply {
    info!("control: {command}");
    match command {
        Command::AddFault(fault) => {
            t.faults.check(&fault)?;
            if fault.select.matches.is_some() {
                target.see_messages(t);
            }
            // The seed, for a replay of what it decides from now on.
            if fault.is_random() {
                info!(
                    "control: fault {fault} decides from seed {}",
                    t.faults.seed()
                );
            }
            t.faults.add(fault)?;
        }
        Command::ClearFaults => t.faults.clear(),
        Command::SetReply(text) => return target.set_reply(text, t),
        #[cfg(feature = "scripts")]
        Command::AddRule(rule) => {
            rule.validate()?;
            // Fixed replies have no rules yet, so room for one.
            t.replies
                .rules()
                .map_or(Ok(()), |rules| rules.check_room())?;
            target.see_messages(t);
            let rules = t.replies.rules().ok_or("replies are fixed")?;
            rules.add(rule)?;
        }
        #[cfg(feature = "scripts")]
        Command::ClearRules => t.replies.rules().into_iter().for_each(Rules::clear),
        #[cfg(feature = "scripts")]
        Command::SetGreeting(text) => return target.set_greeting(text),
        #[cfg(feature = "scripts")]
        Command::Push(text) => return target.push(text, t),
        Command::Refuse => return target.refuse(t),
        Command::Accept => return target.listen_again(t),
        Command::Stats => return Ok(stats_line(&t.counters.snapshot())),
        Command::Endpoints => return target.endpoints(),
        Command::At(name, command) => return target.at(&name, *command, t),
    }
    Ok(String::new())
}

/// As a control line says it, for the log (Display rather than Debug: a
/// probability's Debug would link float printing into the binary).
impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::AddFault(fault) => write!(f, "fault {fault}"),
            Command::ClearFaults => f.write_str("clear"),
            Command::SetReply(text) => write!(f, "reply {}", escape(text)),
            #[cfg(feature = "scripts")]
            Command::AddRule(rule) => write!(f, "rule {rule}"),
            #[cfg(feature = "scripts")]
            Command::ClearRules => f.write_str("rules clear"),
            #[cfg(feature = "scripts")]
            Command::SetGreeting(None) => f.write_str("greeting"),
            #[cfg(feature = "scripts")]
            Command::SetGreeting(Some(text)) => write!(f, "greeting {}", escape(text)),
            #[cfg(feature = "scripts")]
            Command::Push(text) => write!(f, "push {}", escape(text)),
            Command::Refuse => f.write_str("refuse"),
            Command::Accept => f.write_str("accept"),
            Command::Stats => f.write_str("stats"),
            Command::Endpoints => f.write_str("endpoints"),
            Command::At(name, command) => write!(f, "@{name} {command}"),
        }
    }
}

/// What a control line asks for.
#[derive(Debug)]
pub(crate) enum Request {
    /// A command the loop carries out.
    Run(Command),
    /// Wait until `count` messages in all have arrived, for `secs` (as
    /// sent), which is `ms` milliseconds. Only a control connection can
    /// wait, so this is not a [`Command`].
    Received {
        count: u64,
        secs: String,
        ms: Millis,
    },
}

/// Parses one command line (without its `\n`).
pub(crate) fn parse(line: &[u8]) -> Result<Request, String> {
    let line = std::str::from_utf8(line).map_err(|_| "a command is UTF-8 text".to_string())?;
    let (word, rest) = match line.split_once(' ') {
        Some((word, rest)) => (word, Some(rest)),
        None => (line, None),
    };
    let no_argument = |command: Command| match rest {
        None => Ok(Request::Run(command)),
        Some(_) => Err(format!("{word} takes no argument")),
    };
    match word {
        "" => Err(format!("empty command ({COMMANDS})")),
        "fault" => {
            let spec = rest.ok_or("fault needs a spec, like fault udp:drop,p=0.5")?;
            Ok(Request::Run(Command::AddFault(spec.parse()?)))
        }
        "reply" => Ok(Request::Run(Command::SetReply(text(word, rest)?))),
        #[cfg(feature = "scripts")]
        "rule" => {
            let spec = rest.ok_or("rule needs a spec, like rule exact:quit => 221 bye")?;
            Ok(Request::Run(Command::AddRule(spec.parse()?)))
        }
        #[cfg(feature = "scripts")]
        "rules" => match rest {
            Some("clear") => Ok(Request::Run(Command::ClearRules)),
            _ => Err("rules takes one word: rules clear".into()),
        },
        #[cfg(feature = "scripts")]
        "greeting" => {
            let greeting = Some(text(word, rest)?).filter(|text| !text.is_empty());
            Ok(Request::Run(Command::SetGreeting(greeting)))
        }
        #[cfg(feature = "scripts")]
        "push" => Ok(Request::Run(Command::Push(text(word, rest)?))),
        #[cfg(not(feature = "scripts"))]
        "rule" | "rules" | "greeting" | "push" => Err(format!(
            "{word} needs the scripts feature (this ackloop was built without it)"
        )),
        "clear" => no_argument(Command::ClearFaults),
        "refuse" => no_argument(Command::Refuse),
        "accept" => no_argument(Command::Accept),
        "stats" => no_argument(Command::Stats),
        "endpoints" => no_argument(Command::Endpoints),
        "received" => parse_received(rest),
        _ if word.starts_with('@') => parse_at(&word[1..], rest),
        _ => Err(format!("unknown command '{word}' ({COMMANDS})")),
    }
}

/// `@NAME COMMAND`: a command for one named endpoint.
fn parse_at(name: &str, rest: Option<&str>) -> Result<Request, String> {
    let usage = "@NAME takes fault SPEC, clear, stats, refuse or accept, like @db stats";
    if name.is_empty() {
        return Err(usage.into());
    }
    let command = match parse(rest.unwrap_or_default().as_bytes())? {
        Request::Run(
            command @ (Command::AddFault(_)
            | Command::ClearFaults
            | Command::Stats
            | Command::Refuse
            | Command::Accept),
        ) => command,
        _ => return Err(usage.into()),
    };
    Ok(Request::Run(Command::At(
        name.to_string(),
        Box::new(command),
    )))
}

/// A command's TEXT: everything after the first space, escapes replaced;
/// at most [`MAX_REPLY_LEN`](crate::MAX_REPLY_LEN) bytes.
fn text(word: &str, rest: Option<&str>) -> Result<Vec<u8>, String> {
    let text = unescape(rest.unwrap_or_default()).map_err(|why| format!("{word}: {why}"))?;
    check_reply_len(word, &text, true)?;
    Ok(text)
}

/// `received N SECS`: the count and the longest wait.
fn parse_received(rest: Option<&str>) -> Result<Request, String> {
    let usage = "received needs N SECS, like received 10 2.5";
    let (count, secs) = rest.and_then(|r| r.split_once(' ')).ok_or(usage)?;
    let count = count.parse().map_err(|_| usage.to_string())?;
    let ms = crate::fault::decimal(secs, 3).ok_or(usage)?;
    if ms > MAX_WAIT_SECS * 1000 {
        return Err(format!("received: SECS must be 0 to {MAX_WAIT_SECS}"));
    }
    let secs = secs.to_string();
    Ok(Request::Received { count, secs, ms })
}

/// The one line that answers a command: `ok`, `ok TEXT` or `error: WHY`,
/// with its `\n`.
pub(crate) fn answer_line(reply: &Reply) -> String {
    match reply {
        Ok(text) if text.is_empty() => "ok\n".to_string(),
        Ok(text) => format!("ok {text}\n"),
        Err(why) => format!("error: {why}\n"),
    }
}

/// The `stats` answer: `accepted=N rejected=N ...`.
pub(crate) fn stats_line(s: &Stats) -> String {
    format!(
        "accepted={} rejected={} open={} messages={} datagrams={} bytes_in={} bytes_out={} \
         dropped={} upstream_failed={} up_bytes_in={} up_bytes_out={} faults={}",
        s.accepted,
        s.rejected,
        s.open,
        s.messages,
        s.datagrams,
        s.bytes_in,
        s.bytes_out,
        s.replies_dropped,
        s.upstream_failed,
        s.up_bytes_in,
        s.up_bytes_out,
        s.faults.total()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(line: &str) -> Result<Request, String> {
        parse(line.as_bytes())
    }

    #[test]
    fn commands_parse() {
        assert!(matches!(
            command("fault udp:drop"),
            Ok(Request::Run(Command::AddFault(_)))
        ));
        assert!(matches!(
            command("clear"),
            Ok(Request::Run(Command::ClearFaults))
        ));
        assert!(matches!(
            command("refuse"),
            Ok(Request::Run(Command::Refuse))
        ));
        assert!(matches!(
            command("accept"),
            Ok(Request::Run(Command::Accept))
        ));
        assert!(matches!(command("stats"), Ok(Request::Run(Command::Stats))));
        assert!(matches!(
            command("endpoints"),
            Ok(Request::Run(Command::Endpoints))
        ));
        match command("@db fault tcp:delay=5,dir=up") {
            Ok(Request::Run(command @ Command::At(..))) => {
                assert_eq!(command.to_string(), "@db fault tcp:delay=5,dir=up");
            }
            other => panic!("{other:?}"),
        }
        match command("reply  two words ") {
            Ok(Request::Run(Command::SetReply(text))) => assert_eq!(text, b" two words "),
            other => panic!("{other:?}"),
        }
        match command("received 10 0.25") {
            Ok(Request::Received { count, secs, ms }) => {
                assert_eq!((count, secs.as_str(), ms), (10, "0.25", 250));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_commands_are_errors() {
        for line in [
            "",
            "frobnicate",
            "fault",
            "fault tcp:drop",
            "clear now",
            "stats please",
            "received",
            "received 10",
            "received x 1",
            "received 1 -1",
            "received 1 nan",
            "received 1 1e9",
            "@",
            "@db",
            "@db reply x",
            "@db received 1 1",
            "@db @db stats",
            "endpoints all",
        ] {
            let err = command(line)
                .err()
                .unwrap_or_else(|| panic!("{line:?} accepted"));
            assert!(!err.contains('\n'), "{line:?}: {err}");
        }
        assert!(parse(b"\xff").is_err(), "not UTF-8");
    }

    /// A target that switches to whole messages as `Tcp` does, and does
    /// nothing else.
    struct Switching;

    impl Target for Switching {
        fn refuse(&mut self, _: &mut Turn<'_>) -> Reply {
            Ok(String::new())
        }
        fn listen_again(&mut self, _: &mut Turn<'_>) -> Reply {
            Ok(String::new())
        }
        fn set_reply(&mut self, _: Vec<u8>, _: &mut Turn<'_>) -> Reply {
            Ok(String::new())
        }
        fn see_messages(&mut self, t: &mut Turn<'_>) {
            t.replies.make_responder();
        }
        #[cfg(feature = "scripts")]
        fn set_greeting(&mut self, _: Option<Vec<u8>>) -> Reply {
            Ok(String::new())
        }
        #[cfg(feature = "scripts")]
        fn push(&mut self, _: Vec<u8>, _: &mut Turn<'_>) -> Reply {
            Ok(String::new())
        }
    }

    #[test]
    fn a_failing_command_leaves_the_fixed_reply_fast_path() {
        use crate::reply::{Pattern, Replies};
        let poll = mio::Poll::new().unwrap();
        let counters = crate::stats::Counters::default();
        let (mut buf, mut ready) = (vec![0; 64], vec![]);
        let mut timers = crate::timer::Timers::with_capacity(0);
        let mut faults = crate::fault::Faults::new(0, &[]);
        let mut replies = Replies::Fixed(Pattern::new(b"Received", true, 64));
        let mut t = Turn {
            registry: poll.registry(),
            now: 0,
            buf: &mut buf,
            batch: &mut None,
            replies: &mut replies,
            counters: &counters,
            timers: &mut timers,
            ready: &mut ready,
            faults: &mut faults,
            journal: None,
        };
        let run = |line: &str, t: &mut Turn<'_>| match parse(line.as_bytes()) {
            Ok(Request::Run(command)) => execute(command, &mut Switching, t),
            other => panic!("{line}: {other:?}"),
        };
        let fixed = |t: &Turn<'_>| matches!(t.replies, Replies::Fixed(_));
        // dir= on a server that relays nothing.
        assert!(run("fault tcp:reset,match=exact:x,dir=up", &mut t).is_err());
        assert!(fixed(&t), "a refused fault switched the replies");
        // Past the cap on faults.
        for _ in 0..crate::fault::MAX_FAULTS {
            assert_eq!(run("fault udp:delay=0", &mut t), Ok(String::new()));
        }
        assert!(run("fault tcp:reset,match=exact:x", &mut t).is_err());
        assert!(fixed(&t), "a fault past the cap switched the replies");
        assert_eq!(run("clear", &mut t), Ok(String::new()));
        // A command that succeeds switches.
        assert_eq!(
            run("fault tcp:reset,match=exact:x", &mut t),
            Ok(String::new())
        );
        assert!(!fixed(&t));
        // Past the cap on rules, nothing changes either.
        #[cfg(feature = "scripts")]
        {
            for _ in 0..crate::MAX_RULES {
                assert_eq!(run("rule exact:a => b", &mut t), Ok(String::new()));
            }
            assert!(run("rule exact:a => c", &mut t).is_err());
            assert_eq!(t.replies.rules().unwrap().answer(b"a"), Some(&b"b"[..]));
        }
    }

    #[test]
    fn every_answer_is_one_line() {
        assert_eq!(answer_line(&Ok(String::new())), "ok\n");
        assert_eq!(answer_line(&Ok("7".into())), "ok 7\n");
        assert_eq!(answer_line(&Err("no".into())), "error: no\n");
    }
}
