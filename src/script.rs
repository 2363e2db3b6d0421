//! Start-up scripts: control commands from a file, applied to a
//! [`Config`] before anything is bound (`--script FILE`).
//!
//! One command a line, as on the control socket; blank lines and lines
//! starting with `#` are skipped. The commands that configure (`fault`,
//! `clear`, `reply`, `rule`, `rules clear`, `greeting`) apply in order;
//! those that act on a running server (`push`, `refuse`, `accept`,
//! `stats`, `received`) have nothing to act on yet and are errors, so a
//! script never silently does less than it says.

use crate::command::{Command, Request, parse};
use crate::config::Config;

impl Config {
    /// Runs the control commands in `script`, one a line, on this
    /// configuration.
    ///
    /// # Errors
    ///
    /// The first line that fails, as `line N: why` (lines count from 1);
    /// the configuration keeps the changes of the lines before it.
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
    /// # Ok::<(), String>(())
    /// ```
    pub fn run_script(&mut self, script: &str) -> Result<(), String> {
        for (index, line) in script.lines().enumerate() {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            self.run_line(line)
                .map_err(|why| format!("line {}: {why}", index + 1))?;
        }
        self.validate()
    }

    fn run_line(&mut self, line: &str) -> Result<(), String> {
        let command = match parse(line.as_bytes())? {
            Request::Run(command) => command,
            Request::Received { .. } => return Err(not_at_start("received")),
        };
        match command {
            Command::AddFault(fault) => self.faults.push(fault),
            Command::ClearFaults => self.faults.clear(),
            Command::SetReply(text) => {
                if text.is_empty() || text.len() > crate::MAX_REPLY_LEN {
                    return Err(format!(
                        "reply: must be 1 to {} bytes, got {}",
                        crate::MAX_REPLY_LEN,
                        text.len()
                    ));
                }
                self.reply = text;
            }
            Command::AddRule(rule) => {
                if self.rules.len() >= crate::MAX_RULES {
                    return Err(format!("at most {} rules", crate::MAX_RULES));
                }
                self.rules.push(rule);
            }
            Command::ClearRules => self.rules.clear(),
            Command::SetGreeting(text) => self.greeting = text,
            Command::Push(_) => return Err(not_at_start("push")),
            Command::Refuse => return Err(not_at_start("refuse")),
            Command::Accept => return Err(not_at_start("accept")),
            Command::Stats => return Err(not_at_start("stats")),
            Command::Endpoints => return Err(not_at_start("endpoints")),
            Command::At(..) => return Err(not_at_start("@NAME")),
        }
        Ok(())
    }
}

fn not_at_start(word: &str) -> String {
    format!("{word} acts on a running server: not in a start-up script (use --control)")
}
