//! The handle's changes at run time (the `control` feature): a command
//! another thread asks for waits in [`Changes`] until the loop, woken,
//! carries it out and answers.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use super::{Handle, Shared};
use crate::command::{Command, Reply};
use crate::fault::Fault;
#[cfg(feature = "scripts")]
use crate::rules::Rule;
#[cfg(feature = "scripts")]
use crate::vocab::check_reply_len;

/// Changes asked for by other threads, and whether the loop still takes
/// them.
#[derive(Default)]
pub(crate) struct Changes {
    /// Waiting for the loop, in order.
    list: Mutex<Vec<Change>>,
    /// The loop has stopped (or its server is gone): no change will be
    /// taken. Set with `list` locked, so none is left waiting.
    stopped: AtomicBool,
}

impl Changes {
    /// The loop will take no more changes: answers those waiting, and
    /// every later one at once, with an error.
    pub fn stop_taking(&self) {
        let mut changes = self.list.lock().unwrap_or_else(|p| p.into_inner());
        self.stopped.store(true, Ordering::SeqCst);
        for (_, reply_to) in changes.drain(..) {
            let _ = reply_to.send(Err(STOPPED.into()));
        }
    }

    /// The changes waiting, for the loop to carry out.
    pub fn take(&self) -> Vec<Change> {
        std::mem::take(&mut *self.list.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Why a change to a stopped server fails.
const STOPPED: &str = "the server has stopped";

thread_local! {
    /// The server whose turn this thread is running (its [`Shared`]'s
    /// address), or 0. A change asked of it from here (a responder using
    /// the handle, say) would wait for the loop, which waits for it.
    static TURNING: Cell<usize> = const { Cell::new(0) };
}

/// Marks the current thread as running a turn of the server `shared`
/// belongs to, until dropped.
pub(crate) struct InTurn {
    before: usize,
}

impl InTurn {
    pub fn enter(shared: &Arc<Shared>) -> InTurn {
        let before = TURNING.replace(Arc::as_ptr(shared) as usize);
        InTurn { before }
    }
}

impl Drop for InTurn {
    fn drop(&mut self) {
        TURNING.set(self.before);
    }
}

/// A command another thread asks the loop to carry out, and where the
/// loop sends its reply.
pub(crate) type Change = (Command, mpsc::Sender<Reply>);

/// How long a [`Handle`] waits for the loop to carry out a change.
pub const CHANGE_TIMEOUT: Duration = Duration::from_secs(10);

impl Handle {
    /// Adds a fault, as `--fault` does at start. Returns once the loop
    /// has taken it: messages that arrive afterwards are judged by it, and
    /// its `first`/`after`/`every` count from then.
    ///
    /// Like every change through a handle, it waits for the loop: call it
    /// from another thread than the one running the loop (from the loop's
    /// own thread, a responder say, it fails at once).
    ///
    /// # Errors
    ///
    /// A fault that fails [`Fault::validate`] (its fields are public, so
    /// it may be one no spec could write), [`MAX_FAULTS`] in force
    /// already, or the loop did not take the change within
    /// [`CHANGE_TIMEOUT`] (it is stopped, or blocked). Nothing changes.
    ///
    /// [`MAX_FAULTS`]: crate::MAX_FAULTS
    ///
    /// # Examples
    ///
    /// ```
    /// use ackloop::testing::TestServer;
    /// let server = TestServer::start()?;
    /// let client = std::net::UdpSocket::bind("127.0.0.1:0")?;
    /// client.connect(server.udp_addr())?;
    /// server.handle().add_fault("udp:drop,first=1".parse()?)?;
    /// client.send(b"dropped")?;
    /// client.send(b"answered")?;
    /// let mut reply = [0; 16];
    /// let n = client.recv(&mut reply)?;
    /// assert_eq!(&reply[..n], b"Received");
    /// assert_eq!(server.stats().faults.drop, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn add_fault(&self, fault: Fault) -> Result<(), String> {
        // Checked here too, so a bad fault costs the loop no wake-up; the
        // loop checks again (and counts against the cap) as it adds it.
        fault.validate()?;
        self.run(Command::AddFault(fault)).map(drop)
    }

    /// Removes every fault, from now on.
    ///
    /// # Errors
    ///
    /// As [`add_fault`](Handle::add_fault).
    pub fn clear_faults(&self) -> Result<(), String> {
        self.run(Command::ClearFaults).map(drop)
    }

    /// Makes `text` the reply from now on (1 to 1024 bytes). Replies
    /// already owed are not rewritten.
    ///
    /// # Errors
    ///
    /// A bad length, a server whose replies come from a responder, or as
    /// [`add_fault`](Handle::add_fault).
    pub fn set_reply(&self, text: impl Into<Vec<u8>>) -> Result<(), String> {
        self.run(Command::SetReply(text.into())).map(drop)
    }

    #[cfg(feature = "scripts")]
    /// Appends a rule (as `--rule` and the control line `rule SPEC` do):
    /// from now on it answers the messages it fits, unless an earlier rule
    /// fits them first.
    ///
    /// # Errors
    ///
    /// An invalid rule (no reply, a reply over 1024 bytes) or
    /// [`MAX_RULES`](crate::MAX_RULES) rules already: nothing changes.
    /// Or as [`add_fault`](Handle::add_fault).
    ///
    /// # Examples
    ///
    /// ```
    /// use ackloop::testing::TestServer;
    /// let server = TestServer::start()?;
    /// server.handle().add_rule("exact:ping => pong".parse()?)?;
    /// let client = std::net::UdpSocket::bind("127.0.0.1:0")?;
    /// client.send_to(b"ping", server.udp_addr())?;
    /// let mut reply = [0; 16];
    /// let n = client.recv(&mut reply)?;
    /// assert_eq!(&reply[..n], b"pong");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn add_rule(&self, rule: Rule) -> Result<(), String> {
        rule.validate()?;
        self.run(Command::AddRule(rule)).map(drop)
    }

    #[cfg(feature = "scripts")]
    /// Removes every rule.
    ///
    /// # Errors
    ///
    /// As [`add_fault`](Handle::add_fault).
    pub fn clear_rules(&self) -> Result<(), String> {
        self.run(Command::ClearRules).map(drop)
    }

    #[cfg(feature = "scripts")]
    /// The greeting for TCP connections accepted from now on (1 to 1024
    /// bytes, sent as given), or `None` for none.
    ///
    /// # Errors
    ///
    /// A greeting of 0 or over 1024 bytes, a server without TCP, or as
    /// [`add_fault`](Handle::add_fault).
    pub fn set_greeting(&self, greeting: Option<Vec<u8>>) -> Result<(), String> {
        if let Some(text) = &greeting {
            check_reply_len("greeting", text, false)?;
        }
        self.run(Command::SetGreeting(greeting)).map(drop)
    }

    #[cfg(feature = "scripts")]
    /// Sends `text` (plus `\n` in line mode) to every open TCP data
    /// connection now, behind what each is owed. A connection already
    /// closing is skipped; one owing `max_owed` bytes does not get it
    /// (counted in `replies_dropped`).
    ///
    /// # Errors
    ///
    /// A text over 1024 bytes, a server without TCP, or as
    /// [`add_fault`](Handle::add_fault).
    pub fn push(&self, text: impl Into<Vec<u8>>) -> Result<(), String> {
        let text = text.into();
        check_reply_len("push", &text, true)?;
        self.run(Command::Push(text)).map(drop)
    }

    /// Closes the TCP listener: new clients are refused ("connection
    /// refused"); open connections go on.
    ///
    /// # Errors
    ///
    /// A server without TCP, or as [`add_fault`](Handle::add_fault).
    pub fn refuse(&self) -> Result<(), String> {
        self.run(Command::Refuse).map(drop)
    }

    /// Listens again on the same address after [`refuse`](Handle::refuse),
    /// or for the first time on a server started refusing
    /// ([`Config::refuse`](crate::Config::refuse), a script's `refuse`).
    ///
    /// # Errors
    ///
    /// The address cannot be bound again, a server without TCP, or as
    /// [`add_fault`](Handle::add_fault).
    pub fn accept(&self) -> Result<(), String> {
        self.run(Command::Accept).map(drop)
    }

    /// The named endpoints (SPEC 14), one line each as the control
    /// port's `endpoints` gives them: `NAME LISTEN UPSTREAM
    /// enabled|disabled`.
    ///
    /// # Errors
    ///
    /// As [`add_fault`](Handle::add_fault).
    pub fn endpoints(&self) -> Result<Vec<String>, String> {
        let text = self.run(Command::Endpoints)?;
        Ok(text.lines().skip(1).map(String::from).collect())
    }

    /// Carries out one control line on the running server, as the control
    /// port would (`fault SPEC`, `stats`, `@NAME fault SPEC`, `@NAME
    /// stats`, `endpoints`, ...; not `received`, which waits): its answer
    /// without the `ok`.
    ///
    /// # Errors
    ///
    /// The line's `error: ...` text, or as [`add_fault`](Handle::add_fault).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "api")] {
    /// let config_file = std::env::temp_dir().join("ackloop-handle-doc.json");
    /// std::fs::write(&config_file, r#"[{"name": "db", "upstream": "127.0.0.1:9"}]"#)?;
    /// let config = ackloop::Config {
    ///     config_file: Some(config_file),
    ///     ..ackloop::Config::loopback()
    /// };
    /// let mut server = ackloop::Server::bind(config)?;
    /// let handle = server.handle();
    /// std::thread::spawn(move || server.run());
    /// assert_eq!(handle.command("@db fault tcp:delay=100")?, "");
    /// assert!(handle.command("@db stats")?.starts_with("accepted=0 "));
    /// assert!(handle.endpoints()?[0].starts_with("db 127.0.0.1:"));
    /// handle.shutdown();
    /// # }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn command(&self, line: &str) -> Result<String, String> {
        match crate::command::parse(line.as_bytes())? {
            crate::command::Request::Run(command) => self.run(command),
            crate::command::Request::Received { .. } => {
                Err("received waits on the control port: use stats in a loop".into())
            }
        }
    }

    /// Sends `command` to the loop and waits for its reply.
    fn run(&self, command: Command) -> Reply {
        if TURNING.get() == Arc::as_ptr(&self.shared) as usize {
            return Err(
                "called from the loop's own thread, which would wait for itself: \
                        call it from another thread"
                    .into(),
            );
        }
        let (reply_to, reply) = mpsc::channel();
        let changes = &self.shared.changes;
        let mut list = changes.list.lock().unwrap_or_else(|p| p.into_inner());
        if changes.stopped.load(Ordering::SeqCst) {
            return Err(STOPPED.into()); // Nobody would take it.
        }
        list.push((command, reply_to));
        drop(list);
        self.shared
            .waker
            .wake()
            .map_err(|e| format!("cannot wake the loop: {e}"))?;
        reply
            .recv_timeout(CHANGE_TIMEOUT)
            .map_err(|_| format!("the loop did not take the change within {CHANGE_TIMEOUT:?}"))?
    }
}
