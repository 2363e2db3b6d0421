//! The journal (SPEC section 13), black box over loopback: its lines parse
//! as JSON (read back by Python's `json`, a parser no one here wrote), in
//! order, with `b64` for bytes that are not UTF-8; a journal that cannot
//! be written costs only the journal; one that cannot be opened is a
//! start-up error. And a real client no one here wrote: Python's
//! `smtplib` sends a mail through ackloop scripted as an SMTP server.
//!
//! Needs `python3` (`.ci/run` installs it); the tests fail, saying so,
//! without it. Linux only, like the other black-box suites.
#![cfg(target_os = "linux")]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};

use common::journal::{TempPath, python, read_journal};
use common::{
    DEADLINE, End, SIGTERM, Server, connect, read_exactly, read_until_closed, run, tcp_request,
    text, udp_request, wait_until,
};

#[test]
fn journal_lines_parse_as_json_in_order_with_b64_for_bytes_that_are_not_utf8() {
    let journal = TempPath::new("order.jsonl");
    let mut server = Server::start(&[
        "--mode",
        "line",
        "--journal",
        journal.path(),
        "--greeting",
        "hi\\n",
        "--rule",
        "exact:quiet =>",
        "--fault",
        "tcp:reset,match=exact:bye",
    ]);
    let stream = connect(server.tcp());
    assert_eq!(text(&read_exactly(&stream, 3)), "hi\n");
    for line in [&b"Hello, \"Server\"\r\n"[..], b"\xff\xfe\n"] {
        (&stream).write_all(line).unwrap();
        assert_eq!(text(&read_exactly(&stream, 9)), "Received\n");
    }
    (&stream).write_all(b"quiet\nbye\n").unwrap();
    let drained = read_until_closed(&stream, DEADLINE);
    assert_eq!((drained.bytes.len(), drained.end), (0, End::Reset));
    assert_eq!(text(&udp_request(server.udp(), b"dgram")), "Received");
    assert!(
        wait_until(DEADLINE, || journal.lines() >= 10),
        "lines written within a turn"
    );
    let (status, _) = server.terminate();
    assert!(status.success());
    let lines = read_journal(&std::fs::read_to_string(&journal.0).unwrap());
    assert_eq!(
        lines,
        [
            "tcp 1 0 out 3 b'hi\\n' peer",
            "tcp 1 1 in 17 b'Hello, \"Server\"\\r\\n'",
            "tcp 1 1 out 9 b'Received\\n'",
            "tcp 1 2 in 3 b'\\xff\\xfe\\n'",
            "tcp 1 2 out 9 b'Received\\n'",
            "tcp 1 3 in 6 b'quiet\\n'",
            "tcp 1 4 in 4 b'bye\\n'",
            "tcp 1 4 out 0 b'' reset",
            "udp - 1 in 5 b'dgram' peer",
            "udp - 1 out 8 b'Received' peer",
        ]
    );
}

#[test]
fn journal_to_stdout_follows_the_address_lines() {
    let server = Server::start(&["--journal", "-", "--no-udp"]);
    assert_eq!(text(&tcp_request(server.tcp(), b"ping")), "Received");
    let mut lines = Vec::new();
    assert!(
        wait_until(DEADLINE, || {
            lines.extend(server.extra_stdout());
            lines.len() >= 2
        }),
        "two journal lines on stdout: {lines:?}"
    );
    let parsed = read_journal(&(lines.join("\n") + "\n"));
    assert_eq!(
        parsed,
        ["tcp 1 1 in 4 b'ping' peer", "tcp 1 1 out 8 b'Received'"]
    );
}

#[test]
fn a_journal_that_cannot_be_written_costs_only_the_journal() {
    let mut server = Server::start(&["--mode", "line", "--journal", "/dev/full"]);
    for _ in 0..3 {
        let stream = connect(server.tcp());
        (&stream).write_all(b"one\ntwo\n").unwrap();
        assert_eq!(text(&read_exactly(&stream, 18)), "Received\nReceived\n");
        assert_eq!(text(&udp_request(server.udp(), b"x")), "Received");
    }
    let stderr = server.wait_for_stderr("the journal's warning", |s| s.contains("journal"));
    let (status, stderr_at_exit) = server.terminate();
    assert!(status.success(), "{stderr_at_exit}");
    let warnings = stderr_at_exit.matches("journal /dev/full").count();
    assert_eq!(warnings, 1, "logged once:\n{stderr}\n{stderr_at_exit}");
}

/// Starts the server on TCP only with its journal on stdout (`--journal
/// -`) and `args`: the child, its stdout after the first line, and the
/// TCP address that line names.
fn journaling_to_stdout(
    args: &[&str],
    stderr: Stdio,
) -> (Child, BufReader<ChildStdout>, SocketAddr) {
    let mut child = Command::new(common::bin())
        .args(["--tcp", "127.0.0.1:0", "--no-udp", "--journal", "-"])
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let addr = first
        .trim()
        .strip_prefix("tcp ")
        .expect("a tcp line")
        .parse()
        .unwrap();
    (child, stdout, addr)
}

#[test]
fn a_journal_on_a_closed_stdout_pipe_costs_only_the_journal() {
    let (mut child, stdout, addr) = journaling_to_stdout(&[], Stdio::piped());
    drop(stdout); // The reader goes away: journal writes fail from now on.
    let stderr = Arc::new(Mutex::new(String::new()));
    let pipe = child.stderr.take().unwrap();
    let copy = Arc::clone(&stderr);
    let log = std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            copy.lock().unwrap().push_str(&(line + "\n"));
        }
    });
    // Clients until the failure is logged: a child that another test is
    // spawning right now holds a copy of the read end until it execs, and
    // writes succeed until then. Every client is answered meanwhile.
    let logged = || stderr.lock().unwrap().contains("journal -");
    let deadline = std::time::Instant::now() + DEADLINE;
    for served in 1.. {
        assert_eq!(text(&tcp_request(addr, b"ping")), "Received");
        if served >= 5 && logged() {
            break;
        }
        let now = std::time::Instant::now();
        assert!(
            now < deadline,
            "no journal failure logged within {DEADLINE:?}"
        );
    }
    let killed = Command::new("kill")
        .args([format!("-{SIGTERM}"), child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut status = None;
    wait_until(DEADLINE, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    let Some(status) = status else {
        let _ = child.kill();
        panic!("still running after SIGTERM");
    };
    common::join(log);
    let stderr = stderr.lock().unwrap();
    assert!(status.success(), "{stderr}");
    assert_eq!(
        stderr.matches("journal -").count(),
        1,
        "logged once: {stderr}"
    );
}

#[test]
fn a_journal_that_cannot_be_opened_is_a_start_up_error() {
    let (status, stdout, stderr) = run(&["--journal", "/nonexistent/dir/journal.jsonl"]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(stdout, "", "nothing bound");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("/nonexistent/dir/journal.jsonl"),
        "{stderr}"
    );
}

/// ackloop as an SMTP server: a banner, then one rule per command
/// `smtplib` sends (in lower case, but `QUIT` when a `with` block ends:
/// matching is case sensitive); the lines of the message itself get no
/// reply (`* =>`, last).
const SMTP: [&str; 16] = [
    "--mode",
    "line",
    "--greeting",
    r"220 ackloop ESMTP\r\n",
    "--rule",
    r"prefix:ehlo => 250 ackloop\r",
    "--rule",
    r"prefix:mail FROM: => 250 sender ok\r",
    "--rule",
    r"prefix:rcpt TO: => 250 recipient ok\r",
    "--rule",
    r"exact:data => 354 end with .\r",
    "--rule",
    r"exact:. => 250 queued\r || 250 queued again\r",
    "--rule",
    r"exact:QUIT => 221 bye\r",
];

/// Sends one mail with `smtplib`; prints `sent` or the exception's name.
const SEND_MAIL: &str = r#"
import smtplib, sys
try:
    with smtplib.SMTP("127.0.0.1", int(sys.argv[1]), local_hostname="client.example", timeout=10) as s:
        refused = s.sendmail("alice@example.com", ["bob@example.com"],
                             "Subject: hi\r\n\r\nHello from smtplib\r\n.leading dot\r\n")
        print("sent", refused)
except Exception as e:
    print("raised", type(e).__name__, e)
"#;

#[test]
fn smtplib_sends_a_mail_through_a_scripted_smtp_server_and_the_journal_shows_it() {
    let journal = TempPath::new("smtp.jsonl");
    let args = [
        &SMTP[..],
        &["--rule", "* =>", "--journal", journal.path(), "--no-udp"],
    ]
    .concat();
    let mut server = Server::start(&args);
    let port = server.tcp().port().to_string();
    let (ok, stdout, stderr) = python(SEND_MAIL, &[&port], "");
    assert!(ok, "{stderr}");
    assert_eq!(stdout.trim(), "sent {}", "{stderr}");
    wait_until(DEADLINE, || journal.lines() >= 17); // Compared below.
    let (status, _) = server.terminate();
    assert!(status.success());
    let lines = read_journal(&std::fs::read_to_string(&journal.0).unwrap());
    let conversation: Vec<&str> = lines.iter().map(|l| l.as_str()).collect();
    assert_eq!(
        conversation,
        [
            "tcp 1 0 out 19 b'220 ackloop ESMTP\\r\\n' peer",
            "tcp 1 1 in 21 b'ehlo client.example\\r\\n'",
            "tcp 1 1 out 13 b'250 ackloop\\r\\n'",
            "tcp 1 2 in 31 b'mail FROM:<alice@example.com>\\r\\n'",
            "tcp 1 2 out 15 b'250 sender ok\\r\\n'",
            "tcp 1 3 in 27 b'rcpt TO:<bob@example.com>\\r\\n'",
            "tcp 1 3 out 18 b'250 recipient ok\\r\\n'",
            "tcp 1 4 in 6 b'data\\r\\n'",
            "tcp 1 4 out 16 b'354 end with .\\r\\n'",
            "tcp 1 5 in 13 b'Subject: hi\\r\\n'",
            "tcp 1 6 in 2 b'\\r\\n'",
            "tcp 1 7 in 20 b'Hello from smtplib\\r\\n'",
            "tcp 1 8 in 15 b'..leading dot\\r\\n'",
            "tcp 1 9 in 3 b'.\\r\\n'",
            "tcp 1 9 out 12 b'250 queued\\r\\n'",
            "tcp 1 10 in 6 b'QUIT\\r\\n'",
            "tcp 1 10 out 9 b'221 bye\\r\\n'",
        ]
    );
}

#[test]
fn smtplib_raises_when_the_server_resets_on_data() {
    let args = [
        &SMTP[..],
        &[
            "--rule",
            "* =>",
            "--fault",
            "tcp:reset,match=exact:data",
            "--no-udp",
        ],
    ]
    .concat();
    let server = Server::start(&args);
    let port = server.tcp().port().to_string();
    let (ok, stdout, stderr) = python(SEND_MAIL, &[&port], "");
    assert!(ok, "{stderr}");
    assert!(
        stdout.starts_with("raised SMTPServerDisconnected")
            || stdout.starts_with("raised ConnectionResetError"),
        "smtplib saw the reset: {stdout}"
    );
    // The server goes on: the next client gets its banner.
    let stream = connect(server.tcp());
    assert_eq!(text(&read_exactly(&stream, 19)), "220 ackloop ESMTP\r\n");
}

#[test]
fn a_journal_reader_that_stops_reading_never_stalls_the_loop() {
    // The address line is read, then never stdout again: the pipe (64 KiB)
    // fills with journal lines.
    let (mut child, stdout, addr) = journaling_to_stdout(&["--mode", "line"], Stdio::null());
    let stream = connect(addr);
    let line = format!("{}\n", "x".repeat(1000));
    // 4 MiB of journal: far past the pipe and the journal's 1 MiB buffer.
    for _ in 0..2000 {
        (&stream).write_all(line.as_bytes()).unwrap();
        assert_eq!(text(&read_exactly(&stream, 9)), "Received\n");
    }
    let _ = child.kill();
    let _ = child.wait();
    drop(stdout);
}

#[test]
fn udp_replies_are_journaled_when_they_leave_with_their_faults() {
    let journal = TempPath::new("udp.jsonl");
    let mut server = Server::start(&[
        "--no-tcp",
        "--journal",
        journal.path(),
        "--fault",
        "udp:delay=200,match=exact:slow",
        "--fault",
        "udp:drop,match=exact:lost",
    ]);
    let udp = server.udp();
    let slow = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    slow.connect(udp).unwrap();
    slow.set_read_timeout(Some(DEADLINE)).unwrap();
    slow.send(b"slow").unwrap();
    let sent = std::time::Instant::now();
    assert_eq!(text(&udp_request(udp, b"quick")), "Received");
    let lost = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    lost.send_to(b"lost", udp).unwrap();
    let mut buf = [0; 16];
    let n = loop {
        match slow.recv(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            received => break received.unwrap(),
        }
    };
    assert_eq!(&buf[..n], b"Received");
    assert!(sent.elapsed() >= std::time::Duration::from_millis(200));
    assert!(
        wait_until(DEADLINE, || journal.lines() >= 6),
        "lines written"
    );
    let (status, _) = server.terminate();
    assert!(status.success());
    let lines = read_journal(&std::fs::read_to_string(&journal.0).unwrap());
    let at = |line: &str| {
        lines
            .iter()
            .position(|l| l == line)
            .unwrap_or_else(|| panic!("no {line:?} in {lines:#?}"))
    };
    // Each reply's line comes when it leaves: after its message, and the
    // delayed one after the delay (so after the quick exchange's lines).
    let slow_in = at("udp - 1 in 4 b'slow' peer");
    let slow_out = at("udp - 1 out 8 b'Received' peer delay");
    let quick_out = at("udp - 2 out 8 b'Received' peer");
    assert!(slow_in < quick_out && quick_out < slow_out, "{lines:#?}");
    assert!(at("udp - 3 in 4 b'lost' peer") < at("udp - 3 out 0 b'' peer drop"));
    assert_eq!(lines.len(), 6, "{lines:#?}");
}
