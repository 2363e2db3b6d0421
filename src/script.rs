//! Start-up scripts: control commands from a file, applied to a
//! [`Config`] before anything is bound (`--script FILE`).
//!
//! One command a line, as on the control socket; blank lines and lines
//! starting with `#` are skipped. The commands that configure (`fault`,
//! `clear`, `reply`, `rule`, `rules clear`, `greeting`, and `refuse` and
//! `accept`, which say whether TCP starts refusing) apply in order; those
//! that act on a running server's clients (`push`, `stats`, `received`)
//! have nothing to act on yet and are errors, so a script never silently
//! does less than it says.
//!
//! A script is checked twice, each time naming the line that fails: as it
//! is parsed and applied (syntax, lengths, the caps on faults and rules),
//! and then against the finished configuration (a fault's `dir=` needs an
//! upstream that a later option may name, a greeting needs TCP served
//! here, ...). The command line applies each `--script` where it stands
//! and checks it once every option is read, so the order of the options
//! changes what wins, never what is valid.

use std::str::FromStr;

use crate::command::{Command, Request, parse};
use crate::config::Config;
use crate::fault::{MAX_FAULTS, check_direction};
use crate::rules::MAX_RULES;

/// A start-up script, parsed: its commands with their line numbers.
///
/// # Examples
///
/// ```
/// use ackloop::{Config, Script};
///
/// let script: Script = "# a relay that drops a request\nfault tcp:close,dir=up,first=1\n".parse()?;
/// let mut config = Config::loopback();
/// config.apply_script(&script)?;
/// // `dir=` needs the relay, which a later option may still name.
/// assert!(config.check_script(&script).unwrap_err().starts_with("line 2: "));
/// config.add_upstream("tcp:127.0.0.1:6379".parse()?)?;
/// config.check_script(&script)?;
/// # Ok::<(), String>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct Script {
    /// Each command with its line number, counting from 1.
    lines: Vec<(usize, Command)>,
}

impl FromStr for Script {
    type Err = String;

    /// Parses one command a line.
    ///
    /// # Errors
    ///
    /// The first line that is no command, or one that acts on a running
    /// server's clients, as `line N: why`.
    fn from_str(text: &str) -> Result<Script, String> {
        let mut lines = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let number = index + 1;
            let command = start_up_command(line).map_err(|why| format!("line {number}: {why}"))?;
            lines.push((number, command));
        }
        Ok(Script { lines })
    }
}

/// The command `line` names, if a start-up script may run it.
fn start_up_command(line: &str) -> Result<Command, String> {
    let command = match parse(line.as_bytes())? {
        Request::Run(command) => command,
        Request::Received { .. } => return Err(not_at_start("received")),
    };
    match command {
        Command::SetReply(text) => {
            crate::vocab::check_reply_len("reply", &text, false)?;
            Ok(Command::SetReply(text))
        }
        Command::Push(_) => Err(not_at_start("push")),
        Command::Stats => Err(not_at_start("stats")),
        Command::Endpoints => Err(not_at_start("endpoints")),
        Command::At(..) => Err(not_at_start("@NAME")),
        command => Ok(command),
    }
}

fn not_at_start(word: &str) -> String {
    format!("{word} acts on a running server: not in a start-up script (use --control)")
}

impl Config {
    /// Applies `script`'s commands, in order, to this configuration.
    ///
    /// # Errors
    ///
    /// The first line that would put more than [`MAX_FAULTS`] faults or
    /// [`MAX_RULES`] rules in force, as `line N: why`; nothing changes.
    pub fn apply_script(&mut self, script: &Script) -> Result<(), String> {
        let mut next = self.clone();
        for (number, command) in &script.lines {
            next.apply_command(command.clone())
                .map_err(|why| format!("line {number}: {why}"))?;
        }
        *self = next;
        Ok(())
    }

    /// Checks `script`'s commands against this configuration as the
    /// server will run it: what a control line would be refused for on
    /// that server. Call it once the configuration is finished (the
    /// command line does so after its last option).
    ///
    /// # Errors
    ///
    /// The first line that fails, as `line N: why`.
    pub fn check_script(&self, script: &Script) -> Result<(), String> {
        for (number, command) in &script.lines {
            self.check_command(command)
                .map_err(|why| format!("line {number}: {why}"))?;
        }
        Ok(())
    }

    /// Parses, applies and checks a script on a finished configuration,
    /// then [validates](Config::validate) it.
    ///
    /// # Errors
    ///
    /// The first line that fails, as `line N: why` (lines count from 1),
    /// or what [`validate`](Config::validate) finds; a script that fails
    /// to parse or apply changes nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut config = ackloop::Config::loopback();
    /// config.run_script("# SMTP\ngreeting 220 ready\\r\\n\nrule exact:quit => 221 bye\\r\n")?;
    /// assert_eq!(config.greeting.as_deref(), Some(&b"220 ready\r\n"[..]));
    /// assert_eq!(config.rules.len(), 1);
    /// let bad = config.run_script("reply ok\nrule nonsense\n").unwrap_err();
    /// assert!(bad.starts_with("line 2: "), "{bad}");
    /// assert_eq!(config.reply, b"Received", "nothing changed");
    /// # Ok::<(), String>(())
    /// ```
    pub fn run_script(&mut self, script: &str) -> Result<(), String> {
        let script: Script = script.parse()?;
        self.apply_script(&script)?;
        self.check_script(&script)?;
        self.validate()
    }

    fn apply_command(&mut self, command: Command) -> Result<(), String> {
        match command {
            Command::AddFault(fault) => {
                if self.faults.len() >= MAX_FAULTS {
                    return Err(format!("fault '{fault}': at most {MAX_FAULTS} faults"));
                }
                self.faults.push(fault);
            }
            Command::ClearFaults => self.faults.clear(),
            Command::SetReply(text) => self.reply = text,
            Command::AddRule(rule) => {
                if self.rules.len() >= MAX_RULES {
                    return Err(format!("at most {MAX_RULES} rules"));
                }
                self.rules.push(rule);
            }
            Command::ClearRules => self.rules.clear(),
            Command::SetGreeting(text) => self.greeting = text,
            Command::Refuse => self.refuse = true,
            Command::Accept => self.refuse = false,
            Command::Push(_) | Command::Stats | Command::Endpoints | Command::At(..) => {
                unreachable!("refused by start_up_command")
            }
        }
        Ok(())
    }

    /// What a control line carrying `command` would be refused for on the
    /// server this configuration makes.
    fn check_command(&self, command: &Command) -> Result<(), String> {
        match command {
            Command::AddFault(fault) => check_direction(fault, |p| self.relaying(p)),
            Command::SetGreeting(_) => self.check_tcp_served("greeting"),
            Command::Refuse | Command::Accept => match self.tcp {
                Some(_) => Ok(()),
                None => Err(format!("{command}: TCP is off (--no-tcp)")),
            },
            _ => Ok(()),
        }
    }

    /// TCP clients are served here: TCP is on and not relayed.
    fn check_tcp_served(&self, word: &str) -> Result<(), String> {
        if self.tcp.is_none() {
            return Err(format!("{word}: TCP is off (--no-tcp)"));
        }
        match self.upstream(crate::vocab::Protocol::Tcp) {
            Some(upstream) => Err(format!(
                "{word}: TCP is relayed to {upstream} (--upstream), which talks to its clients"
            )),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(text: &str) -> Script {
        text.parse().unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    #[test]
    fn refuse_and_accept_say_how_tcp_starts() {
        let mut config = Config::loopback();
        config.apply_script(&script("refuse\n")).unwrap();
        assert!(config.refuse);
        config.apply_script(&script("refuse\naccept\n")).unwrap();
        assert!(!config.refuse, "the last one wins");
        config.tcp = None;
        let refused = config.check_script(&script("# no tcp\nrefuse\n"));
        assert!(refused.unwrap_err().starts_with("line 2: refuse"));
    }

    #[test]
    fn a_script_over_a_cap_changes_nothing_and_names_its_line() {
        let mut config = Config::loopback();
        let faults = "fault udp:delay=1\n".repeat(MAX_FAULTS + 1);
        let why = config.apply_script(&script(&faults)).unwrap_err();
        assert!(
            why.starts_with(&format!("line {}: ", MAX_FAULTS + 1)),
            "{why}"
        );
        assert!(config.faults.is_empty(), "nothing applied");
        let rules = "rule * => x\n".repeat(MAX_RULES + 1);
        let why = config.apply_script(&script(&rules)).unwrap_err();
        assert!(
            why.starts_with(&format!("line {}: ", MAX_RULES + 1)),
            "{why}"
        );
        assert!(config.rules.is_empty());
    }

    #[test]
    fn commands_for_running_clients_are_refused_at_parse() {
        for (text, line) in [("push x", 1), ("\nstats", 2), ("# wait\n\nreceived 1 1", 3)] {
            let why = text.parse::<Script>().unwrap_err();
            assert!(why.starts_with(&format!("line {line}: ")), "{why}");
        }
        assert!("reply \n".parse::<Script>().is_err(), "an empty reply");
    }
}
