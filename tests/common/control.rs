//! Talking to a server's control port (SPEC: `--control`) in the black-box
//! tests: one command line out, one answer line back.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

use super::{Server, connect};

/// A control connection: one command line out, one answer line back.
pub struct Control {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Control {
    #[track_caller]
    pub fn open(server: &Server) -> Control {
        let stream = connect(server.control.expect("a `control ADDR` line"));
        let reader = BufReader::new(stream.try_clone().unwrap());
        Control { stream, reader }
    }

    #[track_caller]
    pub fn send(&mut self, command: &str) {
        self.stream
            .write_all(format!("{command}\n").as_bytes())
            .unwrap();
    }

    #[track_caller]
    pub fn answer(&mut self) -> String {
        let mut line = String::new();
        self.reader
            .read_line(&mut line)
            .expect("an answer within the deadline");
        assert!(line.ends_with('\n'), "answer {line:?} is not a whole line");
        line.trim_end().to_string()
    }

    #[track_caller]
    pub fn ask(&mut self, command: &str) -> String {
        self.send(command);
        self.answer()
    }

    /// A counter from `stats`.
    #[track_caller]
    pub fn stat(&mut self, name: &str) -> u64 {
        let answer = self.ask("stats");
        let value = answer
            .split(' ')
            .find_map(|field| field.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} in {answer:?}"));
        value.parse().unwrap()
    }
}
