//! The traps' names, shared by the server, the probes and the tests.

/// The ten traps, in GUIDE.md's order of appearance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trap {
    NoDrain,
    NoStillReady,
    WritableForLife,
    WriteAll,
    OkZero,
    NoDeadlineTimeout,
    EmfileSpin,
    CloseWithoutLinger,
    NoBackpressure,
    Interrupted,
}

impl Trap {
    pub const ALL: [Trap; 10] = [
        Trap::NoDrain,
        Trap::NoStillReady,
        Trap::WritableForLife,
        Trap::WriteAll,
        Trap::OkZero,
        Trap::NoDeadlineTimeout,
        Trap::EmfileSpin,
        Trap::CloseWithoutLinger,
        Trap::NoBackpressure,
        Trap::Interrupted,
    ];

    /// The name on the command line: `no-drain`, ...
    pub fn name(self) -> &'static str {
        match self {
            Trap::NoDrain => "no-drain",
            Trap::NoStillReady => "no-still-ready",
            Trap::WritableForLife => "writable-for-life",
            Trap::WriteAll => "write-all",
            Trap::OkZero => "ok-zero",
            Trap::NoDeadlineTimeout => "no-deadline-timeout",
            Trap::EmfileSpin => "emfile-spin",
            Trap::CloseWithoutLinger => "close-without-linger",
            Trap::NoBackpressure => "no-backpressure",
            Trap::Interrupted => "interrupted",
        }
    }

    pub fn from_name(name: &str) -> Option<Trap> {
        Trap::ALL.into_iter().find(|trap| trap.name() == name)
    }

    /// Where the server changes for this trap: the line number of its
    /// `TRAP` comment in `server.rs`, and the comment's text.
    pub fn change(self) -> Option<(usize, String)> {
        const SERVER: &str = include_str!("server.rs");
        let marker = format!("// TRAP {}:", self.name());
        let lines: Vec<&str> = SERVER.lines().collect();
        let start = lines.iter().position(|line| line.contains(&marker))?;
        let comment: Vec<&str> = lines[start..]
            .iter()
            .map(|line| line.trim())
            .take_while(|line| line.starts_with("//"))
            .map(|line| line.trim_start_matches("//").trim())
            .collect();
        Some((start + 1, comment.join(" ")))
    }
}
