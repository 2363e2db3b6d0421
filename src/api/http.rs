//! HTTP/1.1 framing for the API: a request out of the bytes a connection
//! has read (parsed by `httparse`), and an answer's bytes. No sockets
//! here; [`conn`](super::conn) reads and writes.
//!
//! Bodies are framed by `Content-Length` only: every toxiproxy client
//! sends one. A request that asks for more than [`MAX_BODY`], a head over
//! [`MAX_HEAD`], a chunked body or a head that does not parse is answered
//! with an error and the connection then closes.

use std::fmt::Write as _;

/// Longest body taken, in bytes (SPEC 14: 1 MiB; more is 413).
pub(crate) const MAX_BODY: usize = 1 << 20;
/// Longest request head (request line and headers), in bytes.
pub(crate) const MAX_HEAD: usize = 16 * 1024;
/// Headers a request may carry, at most.
const MAX_HEADERS: usize = 32;

/// One request, whole.
#[derive(Debug)]
pub(crate) struct Request {
    pub method: String,
    /// The path, percent-decoded, without the query.
    pub path: String,
    /// The `User-Agent` header, if any.
    pub user_agent: Option<String>,
    pub body: Vec<u8>,
    /// The client asked to close after this answer (`Connection: close`,
    /// or HTTP/1.0 without keep-alive).
    pub close: bool,
}

/// What the bytes read so far hold.
#[derive(Debug)]
pub(crate) enum Parsed {
    /// Not a whole request yet. `continue_100`: its head is whole and asks
    /// for `100 Continue` before the client sends the body.
    Incomplete { continue_100: bool },
    /// A request, and how many bytes it took.
    Request(Request, usize),
    /// A request that cannot be served: answer this, then close.
    Refused(Answer),
}

/// Parses the request at the start of `input`.
pub(crate) fn parse(input: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let head_len = match request.parse(input) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if input.len() > MAX_HEAD => {
            return refused(431, "request head over 16 KiB");
        }
        Ok(httparse::Status::Partial) => {
            return Parsed::Incomplete {
                continue_100: false,
            };
        }
        Err(httparse::Error::TooManyHeaders) => {
            return refused(431, &format!("more than {MAX_HEADERS} headers"));
        }
        Err(e) => return refused(400, &format!("malformed request: {e}")),
    };
    if head_len > MAX_HEAD {
        return refused(431, "request head over 16 KiB");
    }
    let mut body_len = 0;
    let mut close = request.version == Some(0);
    let (mut user_agent, mut continue_100) = (None, false);
    for header in request.headers.iter() {
        let value = String::from_utf8_lossy(header.value).trim().to_string();
        let name = header.name;
        if name.eq_ignore_ascii_case("content-length") {
            match value.parse::<u64>() {
                Ok(n) if n > MAX_BODY as u64 => {
                    return refused(413, &format!("request body of {n} bytes, over 1 MiB"));
                }
                Ok(n) => body_len = n as usize,
                Err(_) => return refused(400, &format!("bad Content-Length '{value}'")),
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return refused(411, "a chunked body is not taken: send a Content-Length");
        } else if name.eq_ignore_ascii_case("connection") {
            let has = |word: &str| {
                value
                    .split(',')
                    .any(|v| v.trim().eq_ignore_ascii_case(word))
            };
            if has("close") {
                close = true;
            } else if has("keep-alive") {
                close = false;
            }
        } else if name.eq_ignore_ascii_case("user-agent") {
            user_agent = Some(value);
        } else if name.eq_ignore_ascii_case("expect") {
            continue_100 = value.eq_ignore_ascii_case("100-continue");
        }
    }
    let whole = head_len + body_len;
    if input.len() < whole {
        return Parsed::Incomplete { continue_100 };
    }
    let target = request.path.unwrap_or("/");
    let raw_path = target.split(['?', '#']).next().unwrap_or_default();
    let Some(path) = percent_decode(raw_path) else {
        return refused(400, &format!("bad percent-encoding in '{raw_path}'"));
    };
    let request = Request {
        method: request.method.unwrap_or_default().to_string(),
        path,
        user_agent,
        body: input[head_len..whole].to_vec(),
        close,
    };
    Parsed::Request(request, whole)
}

fn refused(status: u16, why: &str) -> Parsed {
    Parsed::Refused(Answer::error(status, why))
}

/// `%XX` sequences decoded; `None` if one is malformed or the result is
/// not UTF-8.
fn percent_decode(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// An answer: a status and a JSON body (empty for 204).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Answer {
    /// `status` with `body`, already JSON text.
    pub fn json(status: u16, body: Vec<u8>) -> Answer {
        Answer { status, body }
    }

    /// 204, no body.
    pub fn no_content() -> Answer {
        Answer {
            status: 204,
            body: Vec::new(),
        }
    }

    /// toxiproxy's error body: `{"error": MESSAGE, "status": CODE}`.
    pub fn error(status: u16, message: &str) -> Answer {
        let body = serde_json::json!({ "error": message, "status": status });
        Answer {
            status,
            body: body.to_string().into_bytes(),
        }
    }

    /// Appends the answer's bytes to `out`; `close` adds `Connection: close`.
    pub fn write_to(&self, out: &mut Vec<u8>, close: bool) {
        let mut head = String::with_capacity(128);
        let _ = write!(head, "HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        if self.status != 204 {
            head.push_str("Content-Type: application/json\r\n");
            let _ = write!(head, "Content-Length: {}\r\n", self.body.len());
        }
        if close {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        out.extend_from_slice(head.as_bytes());
        if self.status != 204 {
            out.extend_from_slice(&self.body);
        }
    }
}

/// The interim answer a client that sent `Expect: 100-continue` waits for.
pub(crate) const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(text: &str) -> (Request, usize) {
        match parse(text.as_bytes()) {
            Parsed::Request(request, used) => (request, used),
            other => panic!("{text:?}: {other:?}"),
        }
    }

    fn refusal(text: &[u8]) -> u16 {
        match parse(text) {
            Parsed::Refused(answer) => answer.status,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_request_with_a_body_parses_whole() {
        let text =
            "POST /proxies/a%20b?x=1 HTTP/1.1\r\nContent-Length: 2\r\nUser-Agent: t/1\r\n\r\n{}GET";
        let (request, used) = request(text);
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/proxies/a b");
        assert_eq!(request.body, b"{}");
        assert_eq!(request.user_agent.as_deref(), Some("t/1"));
        assert!(!request.close);
        assert_eq!(used, text.len() - 3, "the next request is left");
    }

    #[test]
    fn every_prefix_of_a_request_is_incomplete() {
        let text = b"POST /p HTTP/1.1\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\nabc";
        for end in 0..text.len() {
            assert!(
                matches!(parse(&text[..end]), Parsed::Incomplete { .. }),
                "{end}"
            );
        }
        let head = text.len() - 3;
        let asks = matches!(
            parse(&text[..head]),
            Parsed::Incomplete { continue_100: true }
        );
        assert!(asks);
    }

    #[test]
    fn closing_follows_the_version_and_the_header() {
        assert!(request("GET / HTTP/1.0\r\n\r\n").0.close);
        assert!(
            !request("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                .0
                .close
        );
        assert!(
            request("GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
                .0
                .close
        );
    }

    #[test]
    fn bad_requests_are_refused() {
        assert_eq!(
            refusal(b"POST / HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n"),
            413
        );
        assert_eq!(
            refusal(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n"),
            400
        );
        let chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(refusal(chunked), 411);
        assert_eq!(refusal(b"\x01\x02 / HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(refusal(b"GET /%zz HTTP/1.1\r\n\r\n"), 400);
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(refusal(long.as_bytes()), 431);
    }

    #[test]
    fn answers_carry_their_length() {
        let mut out = Vec::new();
        Answer::error(404, "proxy not found").write_to(&mut out, false);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"), "{text}");
        assert!(text.ends_with(r#"{"error":"proxy not found","status":404}"#));
        let mut out = Vec::new();
        Answer::no_content().write_to(&mut out, true);
        assert_eq!(out, b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
    }
}
