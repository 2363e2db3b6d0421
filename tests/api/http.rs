//! A small HTTP/1.1 client over std's `TcpStream`, enough to drive the
//! API black-box: one request at a time on a keep-alive connection, or
//! raw bytes for the tests that misbehave on purpose. Every read has a
//! deadline.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};

use serde_json::Value;

use crate::common::text;

/// One answer: status, headers (names lower-cased) and body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The header `name` (lower case), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        let found = self.headers.iter().find(|(n, _)| n == name);
        found.map(|(_, v)| v.as_str())
    }

    /// The body as JSON; panics, showing it, if it is not.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not JSON ({e}): {:?}",
                self.status,
                text(&self.body)
            )
        })
    }

    /// The body as text.
    pub fn text(&self) -> String {
        text(&self.body)
    }
}

/// A keep-alive connection to the API.
pub struct Client {
    stream: TcpStream,
    /// Bytes read past the last response.
    rest: Vec<u8>,
    /// The `User-Agent` sent; `None` sends none.
    pub user_agent: Option<String>,
}

impl Client {
    #[track_caller]
    pub fn connect(addr: SocketAddr) -> Client {
        Client::from_stream(crate::common::connect(addr))
    }

    /// A client on a connection already open.
    pub fn from_stream(stream: TcpStream) -> Client {
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            rest: Vec::new(),
            user_agent: Some("ackloop-api-test/1".into()),
        }
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// The bytes of a request with `body` (as JSON text), Content-Length set.
    pub fn request_bytes(&self, method: &str, path: &str, body: Option<&str>) -> Vec<u8> {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: api\r\n");
        if let Some(agent) = &self.user_agent {
            head.push_str(&format!("User-Agent: {agent}\r\n"));
        }
        if let Some(body) = body {
            head.push_str("Content-Type: application/json\r\n");
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body.unwrap_or_default().as_bytes());
        bytes
    }

    /// Sends one request and reads its answer.
    #[track_caller]
    pub fn send(&mut self, method: &str, path: &str, body: Option<&str>) -> Response {
        let bytes = self.request_bytes(method, path, body);
        self.stream
            .write_all(&bytes)
            .unwrap_or_else(|e| panic!("{method} {path}: write: {e}"));
        self.response()
            .unwrap_or_else(|e| panic!("{method} {path}: no answer: {e}"))
    }

    pub fn get(&mut self, path: &str) -> Response {
        self.send("GET", path, None)
    }

    pub fn post(&mut self, path: &str, body: &str) -> Response {
        self.send("POST", path, Some(body))
    }

    pub fn patch(&mut self, path: &str, body: &str) -> Response {
        self.send("PATCH", path, Some(body))
    }

    pub fn delete(&mut self, path: &str) -> Response {
        self.send("DELETE", path, None)
    }

    /// Reads one response: status line, headers, then a body framed by
    /// Content-Length or chunked encoding (none for 204 and 1xx).
    pub fn response(&mut self) -> io::Result<Response> {
        let head_end = self.fill_until(|buf| find(buf, b"\r\n\r\n").map(|i| i + 4))?;
        let head = text(&self.rest[..head_end]);
        self.rest.drain(..head_end);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(&format!("bad status line {status_line:?}")))?;
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let mut response = Response {
            status,
            headers,
            body: Vec::new(),
        };
        if status == 204 || status == 304 || status < 200 {
            return Ok(response);
        }
        if response.header("transfer-encoding") == Some("chunked") {
            response.body = self.chunked()?;
        } else if let Some(len) = response.header("content-length") {
            let len: usize = len.parse().map_err(|_| bad("bad Content-Length"))?;
            self.fill_until(|buf| (buf.len() >= len).then_some(len))?;
            response.body = self.rest.drain(..len).collect();
        } else {
            // Delimited by the close.
            let _ = self.stream.read_to_end(&mut self.rest);
            response.body = std::mem::take(&mut self.rest);
        }
        Ok(response)
    }

    fn chunked(&mut self) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line_end = self.fill_until(|buf| find(buf, b"\r\n").map(|i| i + 2))?;
            let size_text = text(&self.rest[..line_end - 2]);
            let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
                .map_err(|_| bad("bad chunk size"))?;
            self.rest.drain(..line_end);
            self.fill_until(|buf| (buf.len() >= size + 2).then_some(size + 2))?;
            body.extend(self.rest.drain(..size));
            self.rest.drain(..2);
            if size == 0 {
                return Ok(body);
            }
        }
    }

    /// Reads until `done` finds what it needs in the bytes so far.
    fn fill_until(&mut self, done: impl Fn(&[u8]) -> Option<usize>) -> io::Result<usize> {
        let mut buf = [0; 16 * 1024];
        loop {
            if let Some(n) = done(&self.rest) {
                return Ok(n);
            }
            match self.stream.read(&mut buf) {
                Ok(0) => return Err(io::Error::new(ErrorKind::UnexpectedEof, "closed")),
                Ok(n) => self.rest.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn bad(why: &str) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, why.to_string())
}
