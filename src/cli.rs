//! The command line: arguments to a [`Config`], with one-line errors.

use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use ackloop::Config;
#[cfg(feature = "journal")]
use ackloop::JournalTarget;
#[cfg(all(feature = "scripts", feature = "control"))]
use ackloop::Script;
use log::LevelFilter;

pub const HELP: &str = "\
ackloop: a single-threaded TCP + UDP server that answers every client

Usage: ackloop [OPTIONS]

Options:
  --tcp ADDR               TCP listen address [default: 127.0.0.1:8000]; port 0 picks one
  --udp ADDR               UDP bind address [default: 127.0.0.1:8000]; port 0 picks one
  --no-tcp, --no-udp       serve one protocol only
  --mode once|line         TCP framing [default: once]
                             once: reply once to the first bytes, then close
                             line: reply to every line, connection stays open
  --reply TEXT             reply text, 1 to 1024 bytes [default: Received]; TEXT takes the
                             escapes \\n \\r \\t \\\\ \\xHH (a backslash is written \\\\)
  --rule 'MATCH => REPLY [|| REPLY ...]'
                           scripted reply, repeatable, first match wins; MATCH is exact:TEXT,
                             prefix:TEXT, contains:TEXT or *; replies in order, the last repeats
  --greeting TEXT          sent on every accepted TCP connection first (no \\n added)
  --script FILE            control commands run at start-up, one a line, # comments; checked
                             once every option is read; refuse: TCP refuses until accept
  --journal FILE|-         one JSON line per message and reply, appended to FILE or stdout
  --echo                   send every message back instead (RFC 862 echo)
  --max-connections N      live TCP connections at most [default: 1024]
  --idle-timeout SECS      close a TCP connection silent this long; 0 never [default: 60]
  --max-line BYTES         longest line in line mode, newline excluded [default: 65536]
  --fault SPEC             inject a fault, PROTO:KIND[=VALUE][,SELECTOR...]; repeatable
                             kinds: delay=MS|MIN-MAX, truncate=N, corrupt (tcp, udp);
                             duplicate, drop (udp); dribble=BYTES/MS, hang, close,
                             reset, slow-close=MS (tcp); on a TCP relay's stream only:
                             bandwidth=KB_PER_S, timeout=MS, reset-peer=MS,
                             slicer=AVG[/VARIATION[/DELAY_US]]
                             selectors: p=PROBABILITY, first=N, after=N, every=N, match=MATCH,
                             dir=down|up (relays only: upstream to client, or back)
  --seed N                 seed of the faults' random choices [default: random, logged]
  --control ADDR           live control socket, loopback only (commands: fault SPEC, clear,
                             reply TEXT, rule SPEC, rules clear, greeting TEXT, push TEXT,
                             refuse, accept, stats, received N SECS, endpoints, and
                             @NAME fault|clear|stats|refuse|accept for a named endpoint)
  --api ADDR               toxiproxy's HTTP API (2.x routes, JSON), e.g. 127.0.0.1:8474: any
                             toxiproxy client manages named proxies and their toxics
                             (udp:HOST:PORT as listen and upstream: a UDP proxy)
  --config FILE            toxiproxy's config file (a JSON array of proxies): named proxies
                             created at start-up; a bad file or entry exits 2
  --upstream PROTO:ADDR    relay that protocol to a real server, e.g. tcp:127.0.0.1:6379;
                             faults then act on the relayed traffic (one per protocol); on a
                             tcp stream delay=MIN-MAX draws each chunk's delay, in order
  --connect-timeout SECS   a TCP upstream not connected this long resets the client [default: 5]
  --flow-timeout SECS      close a UDP flow silent this long; 0 never [default: 30]
  --max-flows N            UDP client sources relayed at once [default: 1024]
  --max-delayed BYTES      what a relayed TCP direction holds while a delay holds its bytes
                             (it keeps reading: latency, not a bandwidth cap), per direction,
                             65536 to 268435456 [default: 4194304]
  --reuse-port             set SO_REUSEPORT: several processes share the tcp and udp addresses
  --read-buffer BYTES      the one read buffer, 512 to 1048576 [default: 65536]
  --max-owed BYTES         reply bytes owed before a connection is not read, 1 to 16777216 [default: 65536]
  --udp-queue-len N        UDP datagrams waiting (queued for the socket or held by a delay,
                             relayed ones included), 1 to 1048576 [default: 1024]
  --udp-queue-bytes BYTES  bytes of those datagrams, 1024 to 67108864 [default: 262144]
  --log-level LEVEL        off, error, warn, info, debug or trace [default: info; RUST_LOG also works]
  -h, --help               print this help
  -V, --version            print the version

On start it prints `tcp ADDR`, `udp ADDR`, `control ADDR` and `api ADDR` (the bound addresses)
on stdout.
SIGINT or SIGTERM: stop accepting, finish owed replies (5 s at most), exit 0.
Exit status: 0 after a signal, 1 when a socket or the journal cannot be opened, 2 for bad usage.";

/// What the command line asks for.
pub enum Command {
    /// Serve with this configuration, log level and, if true, echo replies.
    Serve(Box<Config>, Option<LevelFilter>, bool),
    Help,
    Version,
}

/// Parses the arguments (without the program name).
///
/// # Errors
///
/// A one-line message naming the option at fault.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, String> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_args(args);
    let mut config = Config::default();
    let mut log_level = None;
    let mut echo = false;
    // Applied where they stand, checked once every option is read.
    #[cfg(all(feature = "scripts", feature = "control"))]
    let mut scripts = Vec::new();
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        let name = match &arg {
            Long(name) => format!("--{name}"),
            Short(c) => format!("-{c}"),
            Value(v) => return Err(format!("unexpected argument '{}'", v.to_string_lossy())),
        };
        match arg {
            Long("tcp") => config.tcp = Some(address(&name, &mut parser)?),
            Long("udp") => config.udp = Some(address(&name, &mut parser)?),
            Long("no-tcp") => config.tcp = None,
            Long("no-udp") => config.udp = None,
            Long("mode") => {
                config.mode = text(&name, &mut parser)?
                    .parse()
                    .map_err(|e| format!("{name}: {e}"))?
            }
            Long("reply") => config.reply = escaped(&name, &mut parser)?,
            #[cfg(feature = "scripts")]
            Long("rule") => {
                let spec = text(&name, &mut parser)?;
                config
                    .rules
                    .push(spec.parse().map_err(|e| format!("--{e}"))?);
            }
            #[cfg(feature = "scripts")]
            Long("greeting") => config.greeting = Some(escaped(&name, &mut parser)?),
            #[cfg(feature = "journal")]
            Long("journal") => config.journal = Some(journal(&name, &mut parser)?),
            #[cfg(all(feature = "scripts", feature = "control"))]
            Long("script") => scripts.push(script(&name, &mut parser, &mut config)?),
            Long("max-connections") => config.max_connections = number(&name, &mut parser)?,
            Long("idle-timeout") => {
                let secs: u64 = number(&name, &mut parser)?;
                config.idle_timeout = (secs > 0).then(|| Duration::from_secs(secs));
            }
            Long("max-line") => config.max_line = number(&name, &mut parser)?,
            Long("fault") => {
                let spec = text(&name, &mut parser)?;
                config
                    .faults
                    .push(spec.parse().map_err(|e| format!("--{e}"))?);
            }
            Long("seed") => config.seed = Some(number(&name, &mut parser)?),
            #[cfg(feature = "control")]
            Long("control") => config.control = Some(address(&name, &mut parser)?),
            Long("api") => config.api = Some(address(&name, &mut parser)?),
            Long("config") => {
                let value = parser
                    .value()
                    .map_err(|_| format!("{name}: needs a file name"))?;
                config.config_file = Some(value.into());
            }
            #[cfg(feature = "relay")]
            Long("upstream") => config.add_upstream(text(&name, &mut parser)?.parse()?)?,
            #[cfg(feature = "relay")]
            Long("connect-timeout") => {
                config.connect_timeout = Duration::from_secs(number(&name, &mut parser)?)
            }
            #[cfg(feature = "relay")]
            Long("flow-timeout") => {
                let secs: u64 = number(&name, &mut parser)?;
                config.flow_timeout = (secs > 0).then(|| Duration::from_secs(secs));
            }
            #[cfg(feature = "relay")]
            Long("max-flows") => config.max_flows = number(&name, &mut parser)?,
            #[cfg(feature = "relay")]
            Long("max-delayed") => config.max_delayed = number(&name, &mut parser)?,
            Long("reuse-port") => config.reuse_port = true,
            Long("read-buffer") => config.read_buffer = number(&name, &mut parser)?,
            Long("max-owed") => config.max_owed = number(&name, &mut parser)?,
            Long("udp-queue-len") => config.udp_queue_len = number(&name, &mut parser)?,
            Long("udp-queue-bytes") => config.udp_queue_bytes = number(&name, &mut parser)?,
            Long("log-level") => log_level = Some(level(&name, &mut parser)?),
            Long("echo") => echo = true,
            Short('h') | Long("help") => return Ok(Command::Help),
            Short('V') | Long("version") => return Ok(Command::Version),
            Long(option) if left_out(option).is_some() => {
                let feature = left_out(option).unwrap_or_default();
                let noun = if feature.contains(' ') {
                    "features"
                } else {
                    "feature"
                };
                return Err(format!(
                    "{name} needs the {feature} {noun} (this ackloop was built without it)"
                ));
            }
            _ => return Err(format!("unknown option '{name}' (see --help)")),
        }
    }
    #[cfg(all(feature = "scripts", feature = "control"))]
    for (label, script) in &scripts {
        (config.check_script(script)).map_err(|why| format!("{label}: {why}"))?;
    }
    config.validate()?;
    Ok(Command::Serve(Box::new(config), log_level, echo))
}

/// The cargo feature an option belongs to, when this build left that
/// part out (`--upstream` without `relay`, ...); `None` for the options
/// this build has, and for unknown ones.
fn left_out(option: &str) -> Option<&'static str> {
    let (feature, built) = match option {
        "upstream" | "connect-timeout" | "flow-timeout" | "max-flows" | "max-delayed" => {
            ("relay", cfg!(feature = "relay"))
        }
        "rule" | "greeting" => ("scripts", cfg!(feature = "scripts")),
        "script" => (
            "scripts and control",
            cfg!(all(feature = "scripts", feature = "control")),
        ),
        "journal" => ("journal", cfg!(feature = "journal")),
        "control" => ("control", cfg!(feature = "control")),
        _ => return None,
    };
    (!built).then_some(feature)
}

/// The parts (cargo features) this build left out, for `--help`.
pub fn left_out_parts() -> Vec<&'static str> {
    let parts = [
        ("relay", cfg!(feature = "relay")),
        ("scripts", cfg!(feature = "scripts")),
        ("journal", cfg!(feature = "journal")),
        ("control", cfg!(feature = "control")),
        ("api", cfg!(feature = "api")),
    ];
    (parts.into_iter())
        .filter(|(_, built)| !built)
        .map(|(part, _)| part)
        .collect()
}

/// The option's value with its escapes (`\\n`, `\\xHH`, ...) replaced.
fn escaped(name: &str, parser: &mut lexopt::Parser) -> Result<Vec<u8>, String> {
    ackloop::unescape(&text(name, parser)?).map_err(|why| format!("{name}: {why}"))
}

#[cfg(all(feature = "scripts", feature = "control"))]
/// Applies the control commands of the file the option names to
/// `config`; returns the script, to be checked against the finished
/// configuration, with the label its errors carry (`--script FILE`).
fn script(
    name: &str,
    parser: &mut lexopt::Parser,
    config: &mut Config,
) -> Result<(String, Script), String> {
    let value = parser
        .value()
        .map_err(|_| format!("{name}: needs a file name"))?;
    let label = format!("{name} {}", value.to_string_lossy());
    let text = std::fs::read_to_string(&value).map_err(|e| format!("{label}: {e}"))?;
    let script: Script = text.parse().map_err(|why| format!("{label}: {why}"))?;
    (config.apply_script(&script)).map_err(|why| format!("{label}: {why}"))?;
    Ok((label, script))
}

#[cfg(feature = "journal")]
/// `-` for stdout, else a file name.
fn journal(name: &str, parser: &mut lexopt::Parser) -> Result<JournalTarget, String> {
    let value = parser
        .value()
        .map_err(|_| format!("{name}: needs a value"))?;
    match value.to_str() {
        Some("-") => Ok(JournalTarget::Stdout),
        Some("") => Err(format!("{name}: needs a file name, or - for stdout")),
        _ => Ok(JournalTarget::File(value.into())),
    }
}

/// The option's value as UTF-8 text.
fn text(name: &str, parser: &mut lexopt::Parser) -> Result<String, String> {
    let value = parser
        .value()
        .map_err(|_| format!("{name}: needs a value"))?;
    value
        .into_string()
        .map_err(|v| format!("{name}: '{}' is not UTF-8 text", v.to_string_lossy()))
}

fn number<N: std::str::FromStr>(name: &str, parser: &mut lexopt::Parser) -> Result<N, String> {
    let value = text(name, parser)?;
    value
        .parse()
        .map_err(|_| format!("{name}: '{value}' is not a non-negative whole number"))
}

/// `IP:PORT`, with `localhost` accepted for 127.0.0.1 as in the article.
fn address(name: &str, parser: &mut lexopt::Parser) -> Result<SocketAddr, String> {
    let value = text(name, parser)?;
    if let Ok(addr) = value.parse() {
        return Ok(addr);
    }
    match value.rsplit_once(':') {
        Some(("localhost", port)) => match port.parse() {
            Ok(port) => Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)),
            Err(_) => Err(format!("{name}: '{value}' has no valid port")),
        },
        _ => Err(format!(
            "{name}: '{value}' is not an address like 127.0.0.1:8000"
        )),
    }
}

fn level(name: &str, parser: &mut lexopt::Parser) -> Result<LevelFilter, String> {
    let value = text(name, parser)?;
    match value.as_str() {
        "off" | "error" | "warn" | "info" | "debug" | "trace" => {
            Ok(value.parse().expect("known level"))
        }
        _ => Err(format!(
            "{name}: unknown level '{value}' (off, error, warn, info, debug, trace)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_args(args: &[&str]) -> Result<Command, String> {
        parse(args.iter().map(OsString::from))
    }

    #[test]
    fn defaults_serve_both_protocols_on_port_8000() {
        let Ok(Command::Serve(config, level, echo)) = parse_args(&[]) else {
            panic!("no config")
        };
        assert_eq!(config.tcp, Some("127.0.0.1:8000".parse().unwrap()));
        assert_eq!(config.udp, config.tcp);
        assert_eq!(level, None);
        assert!(!echo);
    }

    #[test]
    fn bad_values_name_their_option() {
        for (args, option) in [
            (&["--mode", "bogus"][..], "--mode"),
            (&["--reply", ""], "--reply"),
            (&["--max-connections", "-1"], "--max-connections"),
            (&["--idle-timeout", "x"], "--idle-timeout"),
            (&["--tcp", "nowhere"], "--tcp"),
            (&["--log-level", "loud"], "--log-level"),
            (&["--no-tcp", "--no-udp"], "--no-tcp"),
            (&["--max-line", "0"], "--max-line"),
            (&["--frobnicate"], "--frobnicate"),
            (&["--tcp"], "--tcp"),
            (&["--fault", "tcp:drop"], "tcp:drop"),
            (&["--fault", "udp:delay=9-1"], "udp:delay=9-1"),
            (&["--fault"], "--fault"),
            (&["--seed", "-3"], "--seed"),
            (&["--control", "10.1.2.3:0"], "--control"),
            (&["--read-buffer", "511"], "--read-buffer"),
            (&["--max-owed", "0"], "--max-owed"),
            (&["--udp-queue-len", "0"], "--udp-queue-len"),
            (&["--udp-queue-bytes", "1023"], "--udp-queue-bytes"),
            (&["--reply", r"a\q"], "--reply"),
            (&["--reply", "a\\"], "--reply"),
            (&["--rule", "no arrow"], "--rule"),
            (&["--rule", r"exact:x => \x4"], "--rule"),
            (&["--greeting", ""], "--greeting"),
            (&["--greeting", r"\z"], "--greeting"),
            (&["--greeting", "hi", "--no-tcp"], "--greeting"),
            (&["--journal", ""], "--journal"),
            (&["--journal"], "--journal"),
            (&["--script", "/nonexistent/ackloop.script"], "--script"),
            (&["--fault", "tcp:reset,match=regex:x"], "match"),
            (
                &[
                    "--upstream",
                    "tcp:127.0.0.1:1",
                    "--fault",
                    "tcp:reset,match=exact:x",
                ],
                "match=",
            ),
            (
                &["--upstream", "tcp:127.0.0.1:1", "--greeting", "hi"],
                "--greeting",
            ),
            (&["--upstream", "tcp:127.0.0.1:0"], "--upstream"),
            (&["--upstream", "tcp:nowhere:1"], "--upstream"),
            (&["--upstream", "icmp:127.0.0.1:1"], "--upstream"),
            (&["--upstream"], "--upstream"),
            (
                &[
                    "--upstream",
                    "tcp:127.0.0.1:1",
                    "--upstream",
                    "tcp:127.0.0.1:2",
                ],
                "--upstream",
            ),
            (&["--no-udp", "--upstream", "udp:127.0.0.1:1"], "--upstream"),
            (&["--fault", "tcp:delay=5,dir=up"], "dir="),
            (
                &[
                    "--upstream",
                    "udp:127.0.0.1:1",
                    "--fault",
                    "tcp:hang,dir=down",
                ],
                "dir=",
            ),
            (
                &[
                    "--upstream",
                    "tcp:127.0.0.1:1",
                    "--fault",
                    "tcp:hang,dir=left",
                ],
                "dir",
            ),
            (&["--connect-timeout", "0"], "--connect-timeout"),
            (&["--flow-timeout", "x"], "--flow-timeout"),
            (&["--max-flows", "0"], "--max-flows"),
            (&["--max-delayed", "65535"], "--max-delayed"),
            (&["--max-delayed", "268435457"], "--max-delayed"),
            (&["--max-delayed", "-1"], "--max-delayed"),
        ] {
            // A part this build left out fails on its option instead
            // (`left_out_options_name_their_feature`).
            if args
                .iter()
                .any(|arg| left_out(arg.trim_start_matches("--")).is_some())
            {
                continue;
            }
            let message = parse_args(args)
                .err()
                .unwrap_or_else(|| panic!("{args:?} accepted"));
            assert!(message.contains(option), "{args:?}: {message}");
            assert!(!message.contains('\n'), "{args:?}: {message}");
        }
    }

    #[test]
    #[cfg(all(feature = "scripts", feature = "journal"))]
    fn scripted_options_fill_the_config() {
        let Ok(Command::Serve(config, _, _)) = parse_args(&[
            "--reply",
            r"a\\b\r",
            "--rule",
            "exact:a => b",
            "--rule",
            "* =>",
            "--greeting",
            r"220\x20hi\r\n",
            "--journal",
            "-",
        ]) else {
            panic!("rejected")
        };
        assert_eq!(config.reply, b"a\\b\r");
        assert_eq!(config.rules.len(), 2);
        assert_eq!(config.greeting.as_deref(), Some(&b"220 hi\r\n"[..]));
        assert_eq!(config.journal, Some(JournalTarget::Stdout));
    }

    #[test]
    fn localhost_and_zero_timeout() {
        let Ok(Command::Serve(config, _, _)) = parse_args(&[
            "--tcp",
            "localhost:0",
            "--idle-timeout",
            "0",
            "--mode",
            "line",
        ]) else {
            panic!("rejected")
        };
        assert_eq!(config.tcp, Some("127.0.0.1:0".parse().unwrap()));
        assert_eq!(config.idle_timeout, None);
        assert_eq!(config.mode, ackloop::Mode::Line);
    }

    #[test]
    fn left_out_options_name_their_feature() {
        for (option, value, feature) in [
            ("--upstream", "tcp:127.0.0.1:1", "relay"),
            ("--connect-timeout", "1", "relay"),
            ("--flow-timeout", "1", "relay"),
            ("--max-flows", "1", "relay"),
            ("--max-delayed", "65536", "relay"),
            ("--rule", "* => x", "scripts"),
            ("--greeting", "hi", "scripts"),
            ("--script", "/nonexistent", "scripts"),
            ("--journal", "-", "journal"),
            ("--control", "127.0.0.1:0", "control"),
        ] {
            let parsed = parse_args(&[option, value]);
            if left_out(option.trim_start_matches("--")).is_none() {
                assert!(
                    !matches!(&parsed, Err(e) if e.contains("feature")),
                    "{option}"
                );
                continue;
            }
            let message = parsed.err().unwrap_or_else(|| panic!("{option} accepted"));
            assert!(message.starts_with(option), "{message}");
            assert!(message.contains(feature), "{message}");
            assert!(!message.contains('\n'), "{message}");
        }
    }

    #[test]
    #[cfg(feature = "relay")]
    fn relay_options() {
        let Ok(Command::Serve(config, _, _)) = parse_args(&[
            "--upstream",
            "tcp:127.0.0.1:6379",
            "--upstream",
            "udp:localhost:53",
            "--fault",
            "tcp:delay=10,dir=up",
            "--connect-timeout",
            "2",
            "--flow-timeout",
            "0",
            "--max-flows",
            "7",
            "--max-delayed",
            "65536",
        ]) else {
            panic!("rejected")
        };
        assert_eq!(config.upstream_tcp, Some("127.0.0.1:6379".parse().unwrap()));
        assert_eq!(config.upstream_udp, Some("127.0.0.1:53".parse().unwrap()));
        assert_eq!(config.faults[0].select.dir, Some(ackloop::Direction::Up));
        assert_eq!(config.connect_timeout, Duration::from_secs(2));
        assert_eq!(config.flow_timeout, None);
        assert_eq!(config.max_flows, 7);
        assert_eq!(config.max_delayed, 65536);
        let Ok(Command::Serve(defaults, _, _)) = parse_args(&[]) else {
            panic!("rejected")
        };
        assert_eq!(defaults.upstream_tcp, None);
        assert_eq!(defaults.connect_timeout, Duration::from_secs(5));
        assert_eq!(defaults.flow_timeout, Some(Duration::from_secs(30)));
        assert_eq!(defaults.max_flows, 1024);
        assert_eq!(defaults.max_delayed, 4 << 20);
    }
}
