//! Scripted replies (SPEC section 12): `--rule`, `--greeting`, escapes,
//! the `match=` fault selector, the control commands `rule`, `rules clear`,
//! `greeting`, `push`, and `--script`, black box over loopback with every
//! wait bounded by a deadline.
//!
//! Linux only, like the other black-box suites.
#![cfg(target_os = "linux")]

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use common::control::Control;
use common::{
    DEADLINE, End, Server, connect, read_exactly, read_until_closed, run, tcp_request, text,
    udp_request, wait_until,
};

/// One datagram out from a fresh socket; the reply, or `None` if none came
/// within `wait` (for replies that must not come, asserted after a later
/// datagram's reply shows the server has moved on).
fn udp_try(addr: SocketAddr, message: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(addr).unwrap();
    socket.set_read_timeout(Some(wait)).unwrap();
    socket.send(message).unwrap();
    let mut buf = [0; 2048];
    loop {
        match socket.recv(&mut buf) {
            Ok(n) => return Some(buf[..n].to_vec()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return None;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("recv: {e}"),
        }
    }
}

#[test]
fn a_rule_list_is_answered_in_order_across_reconnects_and_protocols() {
    let server = Server::start(&[
        "--rule",
        "exact:GET => 503 busy || 503 still busy || 200 ok",
        "--rule",
        "prefix:ping => one || two || three",
    ]);
    let tcp = server.tcp();
    // A client that reconnects to retry sees the next reply, the last repeating.
    for expected in ["503 busy", "503 still busy", "200 ok", "200 ok"] {
        assert_eq!(text(&tcp_request(tcp, b"GET")), expected);
    }
    // Not exactly GET: the reply text.
    assert_eq!(text(&tcp_request(tcp, b"GET /")), "Received");
    // One cursor per rule, TCP and UDP together.
    assert_eq!(text(&tcp_request(tcp, b"ping 1")), "one");
    assert_eq!(text(&udp_request(server.udp(), b"ping 2")), "two");
    assert_eq!(text(&tcp_request(tcp, b"ping 3")), "three");
    assert_eq!(text(&udp_request(server.udp(), b"Ping")), "Received");
}

#[test]
fn line_mode_matches_lines_without_their_terminator_and_replies_take_escapes() {
    let server = Server::start(&[
        "--mode",
        "line",
        "--rule",
        r"exact:ehlo client => 250-hello\r\n250 ok\r",
        "--rule",
        r"contains:\x00 => \xff\xfe",
        "--rule",
        r"exact:\x20spaced\x20 => \x20yes\x20",
        "--reply",
        r"back\\slash",
    ]);
    let stream = connect(server.tcp());
    (&stream)
        .write_all(b"ehlo client\r\nehlo client\n")
        .unwrap();
    let want = b"250-hello\r\n250 ok\r\n250-hello\r\n250 ok\r\n";
    assert_eq!(text(&read_exactly(&stream, want.len())), text(want));
    (&stream).write_all(b"a\x00b\n spaced \nother\n").unwrap();
    let want = b"\xff\xfe\n yes \nback\\slash\n";
    assert_eq!(read_exactly(&stream, want.len()), want);
}

#[test]
fn an_empty_reply_sends_nothing_in_any_mode() {
    let rule = ["--rule", "exact:quiet =>"];
    // Line mode: not even the newline; the next line's reply comes next.
    let server = Server::start(&[&["--mode", "line"][..], &rule].concat());
    let stream = connect(server.tcp());
    (&stream).write_all(b"quiet\nquiet\r\nloud\n").unwrap();
    assert_eq!(text(&read_exactly(&stream, 9)), "Received\n");
    drop(stream);

    // Once mode: no reply, and still the close.
    let server = Server::start(&rule);
    let stream = connect(server.tcp());
    (&stream).write_all(b"quiet").unwrap();
    let drained = read_until_closed(&stream, DEADLINE);
    assert_eq!((drained.bytes.len(), drained.end), (0, End::Eof));

    // UDP: no datagram back.
    let udp = server.udp();
    assert_eq!(udp_try(udp, b"quiet", Duration::from_millis(300)), None);
    assert_eq!(text(&udp_request(udp, b"loud")), "Received");
}

#[test]
fn the_greeting_comes_before_anything_else_in_both_modes() {
    let greeting = ["--greeting", r"220 ackloop ready\r\n"];
    let hello = b"220 ackloop ready\r\n";
    for mode in ["once", "line"] {
        let server = Server::start(&[&["--mode", mode][..], &greeting].concat());
        let stream = connect(server.tcp());
        // Before the client says anything.
        assert_eq!(read_exactly(&stream, hello.len()), hello, "{mode}");
        (&stream).write_all(b"hi\n").unwrap();
        let reply = if mode == "once" {
            "Received"
        } else {
            "Received\n"
        };
        assert_eq!(text(&read_exactly(&stream, reply.len())), reply, "{mode}");
        // A client that sends at once still gets the greeting first.
        let stream = connect(server.tcp());
        (&stream).write_all(b"hi\n").unwrap();
        let both = [&hello[..], reply.as_bytes()].concat();
        assert_eq!(
            text(&read_exactly(&stream, both.len())),
            text(&both),
            "{mode}"
        );
    }
}

#[test]
fn push_reaches_every_open_connection_and_not_a_closed_one() {
    let server = Server::start(&["--mode", "line", "--control", "127.0.0.1:0"]);
    let mut control = Control::open(&server);
    let open: Vec<TcpStream> = (0..3).map(|_| connect(server.tcp())).collect();
    let closed = connect(server.tcp());
    // Each connection is served once, so the server has them all.
    for stream in open.iter().chain([&closed]) {
        (&*stream).write_all(b"x\n").unwrap();
        assert_eq!(text(&read_exactly(stream, 9)), "Received\n");
    }
    drop(closed);
    assert!(
        wait_until(DEADLINE, || control.stat("open") == 3),
        "the server saw the close"
    );
    let before = control.stat("bytes_out");
    assert_eq!(control.ask(r"push news\tflash"), "ok");
    for stream in &open {
        assert_eq!(text(&read_exactly(stream, 11)), "news\tflash\n");
    }
    assert_eq!(control.stat("bytes_out") - before, 3 * 11, "three pushes");
    // The connections go on as before.
    (&open[0]).write_all(b"y\n").unwrap();
    assert_eq!(text(&read_exactly(&open[0], 9)), "Received\n");
    assert!(control.ask(r"push bad\q").starts_with("error: "));
}

#[test]
fn rules_and_the_greeting_change_at_run_time() {
    let server = Server::start(&["--control", "127.0.0.1:0"]);
    let mut control = Control::open(&server);
    let tcp = server.tcp();
    assert_eq!(control.ask("rule exact:a => first || second"), "ok");
    assert_eq!(text(&tcp_request(tcp, b"a")), "first");
    // A bad rule is an error and changes nothing.
    for bad in ["rule", "rule exact:a", "rule nope:a => b", r"rule * => \z"] {
        assert!(control.ask(bad).starts_with("error: "), "{bad}");
    }
    assert_eq!(text(&tcp_request(tcp, b"a")), "second");
    assert_eq!(text(&tcp_request(tcp, b"b")), "Received");
    assert_eq!(control.ask("rules clear"), "ok");
    assert_eq!(text(&tcp_request(tcp, b"a")), "Received");

    assert_eq!(control.ask(r"greeting hello\r\n"), "ok");
    assert_eq!(text(&tcp_request(tcp, b"a")), "hello\r\nReceived");
    assert_eq!(control.ask("greeting"), "ok", "no text: no greeting");
    assert_eq!(text(&tcp_request(tcp, b"a")), "Received");
    assert_eq!(control.ask(r"reply two\x20words"), "ok");
    assert_eq!(text(&tcp_request(tcp, b"a")), "two words");
}

#[test]
fn a_match_selector_faults_exactly_the_messages_it_fits() {
    let server = Server::start(&[
        "--mode",
        "line",
        "--fault",
        "tcp:reset,match=exact:quit",
        "--fault",
        "udp:drop,match=prefix:x,every=2",
    ]);
    let stream = connect(server.tcp());
    (&stream).write_all(b"quit now\nquit\nafter\n").unwrap();
    let drained = read_until_closed(&stream, DEADLINE);
    assert_eq!(text(&drained.bytes), "Received\n");
    assert_eq!(drained.end, End::Reset);

    // every=2 counts every datagram, matched or not: the 4th is dropped,
    // the 2nd is not (it does not fit).
    let udp = server.udp();
    let short = Duration::from_millis(300);
    assert_eq!(
        udp_try(udp, b"x1", DEADLINE).as_deref(),
        Some(&b"Received"[..])
    );
    assert_eq!(
        udp_try(udp, b"y2", DEADLINE).as_deref(),
        Some(&b"Received"[..])
    );
    assert_eq!(
        udp_try(udp, b"x3", DEADLINE).as_deref(),
        Some(&b"Received"[..])
    );
    assert_eq!(udp_try(udp, b"x4", short), None);
    assert_eq!(
        udp_try(udp, b"x5", DEADLINE).as_deref(),
        Some(&b"Received"[..])
    );

    let (status, _, stderr) = run(&["--fault", "tcp:close,match=nope"]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("match"), "{stderr}");
}

/// Sends `abc` on a line-mode connection the fixed reply serves, waits
/// until the server has read it, then asks `commands` on the control port
/// (the first makes replies need whole lines): the connection and the
/// control client, to go on with.
fn half_a_line_then(commands: &[&str]) -> (Server, TcpStream, Control) {
    let server = Server::start(&["--mode", "line", "--control", "127.0.0.1:0"]);
    let mut control = Control::open(&server);
    let stream = connect(server.tcp());
    (&stream).write_all(b"first\n").unwrap();
    assert_eq!(text(&read_exactly(&stream, 9)), "Received\n");
    let before = control.stat("bytes_in");
    (&stream).write_all(b"abc").unwrap();
    assert!(wait_until(DEADLINE, || control.stat("bytes_in") == before + 3));
    for command in commands {
        assert_eq!(control.ask(command), "ok", "{command}");
    }
    (server, stream, control)
}

#[test]
fn a_line_half_received_when_whole_lines_come_in_is_not_matched_by_its_rest() {
    // Rules: the cut line gets the reply text, as it would have before;
    // whole lines after it are matched.
    let (_server, stream, _control) =
        half_a_line_then(&["rule exact:def => PART", "rule exact:abcdef => WHOLE"]);
    (&stream).write_all(b"def\nabcdef\ndef\n").unwrap();
    let want = "Received\nWHOLE\nPART\n";
    assert_eq!(text(&read_exactly(&stream, want.len())), want);

    // A match= fault: no more picks the cut line by its rest.
    let (_server, stream, _control) = half_a_line_then(&["fault tcp:close,match=exact:def"]);
    (&stream).write_all(b"def\nabcdef\n").unwrap();
    let want = "Received\nReceived\n";
    assert_eq!(text(&read_exactly(&stream, want.len())), want);
    (&stream).write_all(b"def\n").unwrap();
    let drained = read_until_closed(&stream, DEADLINE);
    assert_eq!(
        (text(&drained.bytes), drained.end),
        (String::new(), End::Eof)
    );
}

/// A file in the system's temporary directory, removed when dropped.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(name: &str, contents: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!("ackloop-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn a_script_runs_control_commands_at_start_up() {
    let script = TempFile::new(
        "good.script",
        "# a small conversation\n\
         \n\
         greeting 220 hi\\r\\n\n\
         rule exact:helo => 250 ok\n\
         reply 500 what?\n\
         fault udp:drop,match=exact:secret\n\
         rule exact:bye => 221 bye\n\
         rules clear\n\
         rule exact:quit => 221 bye\n",
    );
    let server = Server::start(&["--mode", "line", "--script", script.path()]);
    let stream = connect(server.tcp());
    (&stream).write_all(b"helo\nbye\nquit\n").unwrap();
    let want = "220 hi\r\n500 what?\n500 what?\n221 bye\n";
    assert_eq!(text(&read_exactly(&stream, want.len())), want);
    let udp = server.udp();
    assert_eq!(udp_try(udp, b"secret", Duration::from_millis(300)), None);
    assert_eq!(text(&udp_request(udp, b"x")), "500 what?");
}

#[test]
fn a_bad_script_line_exits_2_naming_its_number_before_binding() {
    for (contents, line) in [
        ("rule exact:a => b\n# fine\n\nrule broken\n", "line 4"),
        ("reply ok\nfrobnicate\n", "line 2"),
        ("fault tcp:drop\n", "line 1"),
        (r"greeting bad\q", "line 1"),
        ("stats\n", "line 1"),
        ("reply ok\n\npush hi\n", "line 3"),
    ] {
        let script = TempFile::new("bad.script", contents);
        let (status, stdout, stderr) = run(&["--script", script.path()]);
        assert_eq!(status.code(), Some(2), "{contents:?}: {stderr}");
        assert_eq!(stdout, "", "nothing bound or printed");
        assert!(stderr.contains(line), "{contents:?}: {stderr}");
        assert!(stderr.contains("--script"), "{contents:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
    let (status, _, stderr) = run(&["--script", "/nonexistent/ackloop.script"]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("/nonexistent/ackloop.script"), "{stderr}");
}

#[test]
fn a_script_is_checked_against_every_option_whatever_their_order() {
    let upstream = format!("tcp:{}", common::upstream::echo_upstream());
    let script = TempFile::new(
        "relay-up.script",
        "# reset every request on its way up
fault tcp:reset,dir=up
",
    );
    let path = script.path();
    for args in [
        ["--script", path, "--upstream", &upstream],
        ["--upstream", &upstream, "--script", path],
    ] {
        let server = Server::start(&args);
        let stream = connect(server.tcp());
        (&stream).write_all(b"hi").unwrap();
        let drained = read_until_closed(&stream, DEADLINE);
        assert_eq!(drained.end, End::Reset, "{args:?}: the script's fault acts");
    }
}

#[test]
fn a_script_line_the_finished_options_refuse_exits_2_naming_file_and_line() {
    let upstream = "tcp:127.0.0.1:9";
    for (contents, options, line) in [
        (
            "rule exact:a => b\n\n# up needs a relay\nfault tcp:reset,dir=up\n",
            &["--no-udp"][..],
            "line 4",
        ),
        (
            "reply ok\nfault tcp:close,match=exact:quit\n",
            &["--upstream", upstream],
            "line 2",
        ),
        ("greeting 220 hi\n", &["--no-tcp"], "line 1"),
        (
            "# relayed clients\ngreeting 220 hi\n",
            &["--upstream", upstream],
            "line 2",
        ),
        ("refuse\n", &["--no-tcp"], "line 1"),
    ] {
        let script = TempFile::new("late.script", contents);
        let path = script.path();
        let before = [&["--script", path][..], options].concat();
        let after = [options, &["--script", path][..]].concat();
        for args in [before, after] {
            let (status, stdout, stderr) = run(&args);
            assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
            assert_eq!(stdout, "", "nothing bound or printed");
            assert!(stderr.contains(path), "{args:?}: names the file: {stderr}");
            assert!(stderr.contains(line), "{args:?}: names {line}: {stderr}");
            assert_eq!(stderr.lines().count(), 1, "{stderr}");
        }
    }
}

#[test]
fn a_script_may_start_tcp_refusing_until_accept() {
    let script = TempFile::new("refuse.script", "# the client starts first\nrefuse\n");
    let server = Server::start(&[
        "--mode",
        "line",
        "--control",
        "127.0.0.1:0",
        "--script",
        script.path(),
    ]);
    let refused = TcpStream::connect(server.tcp()).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);
    let mut control = Control::open(&server);
    assert_eq!(control.ask("refuse"), "ok", "still refusing");
    let refused = TcpStream::connect(server.tcp()).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);
    // UDP is not refused.
    assert_eq!(text(&udp_request(server.udp(), b"x")), "Received");
    assert_eq!(control.ask("accept"), "ok");
    let stream = connect(server.tcp());
    (&stream).write_all(b"hi\n").unwrap();
    assert_eq!(text(&read_exactly(&stream, 9)), "Received\n");
    assert_eq!(control.ask("accept"), "ok", "may be repeated");
}

#[test]
fn bad_rules_greetings_and_escapes_are_bad_values() {
    for (args, option) in [
        (&["--rule", "nothing"][..], "--rule"),
        (&["--rule", "exact:x => \\"], "--rule"),
        (&["--greeting", ""], "--greeting"),
        (&["--greeting", r"\x1"], "--greeting"),
        (&["--reply", r"C:\dir"], "--reply"),
        (&["--fault", "tcp:reset,match=exact:a,b"], "--fault"),
    ] {
        let (status, stdout, stderr) = run(&[args, &["--no-udp"]].concat());
        assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stdout, "");
        assert!(stderr.contains(option), "{args:?}: {stderr}");
    }
}

#[test]
fn pushes_to_a_client_that_never_reads_are_bounded() {
    let server = Server::start(&[
        "--mode",
        "line",
        "--max-owed",
        "4096",
        "--control",
        "127.0.0.1:0",
    ]);
    let mut control = Control::open(&server);
    let sleeper = connect(server.tcp());
    (&sleeper).write_all(b"x\n").unwrap();
    assert_eq!(text(&read_exactly(&sleeper, 9)), "Received\n");
    // 16 MB of pushes, far more than the socket buffers hold, to a client
    // that reads none of them: 64 batches of 256 pushes of 1000 bytes.
    let batch = format!("push {}\n", "p".repeat(1000)).repeat(256);
    for _ in 0..64 {
        control.stream.write_all(batch.as_bytes()).unwrap();
        for _ in 0..256 {
            assert_eq!(control.answer(), "ok");
        }
    }
    // The server held at most its bound for the sleeper and serves others.
    let other = connect(server.tcp());
    (&other).write_all(b"y\n").unwrap();
    assert_eq!(text(&read_exactly(&other, 9)), "Received\n");
    let rss = server.rss_kib();
    assert!(rss < 32 * 1024, "RSS {rss} KiB after 16 MB of pushes");
    assert!(
        control.stat("dropped") > 0,
        "pushes over the bound are dropped"
    );
    // What the sleeper gets is whole pushes, then its next reply.
    (&sleeper).write_all(b"z\n").unwrap();
    let got = read_through(&sleeper, b"Received\n");
    let pushes = &got[..got.len() - 9];
    assert!(!pushes.is_empty());
    assert_eq!(pushes.len() % 1001, 0, "whole pushes only");
}

/// Reads until the bytes read end with `end`, within the deadline.
#[track_caller]
fn read_through(mut stream: &TcpStream, end: &[u8]) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = vec![0; 64 * 1024];
    let deadline = std::time::Instant::now() + DEADLINE;
    while !got.ends_with(end) {
        assert!(
            std::time::Instant::now() < deadline,
            "no {end:?} within the deadline"
        );
        match stream.read(&mut buf) {
            Ok(0) => panic!("EOF before {end:?}"),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("read: {e}"),
        }
    }
    got
}

#[test]
fn the_handle_and_the_builder_script_a_library_server() {
    use ackloop::testing::TestServer;
    use ackloop::{Match, Mode, Rule};

    let journal = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let lines = std::sync::Arc::clone(&journal);
    let server = TestServer::builder()
        .mode(Mode::Line)
        .rule("exact:ping => pong || pong again".parse().unwrap())
        .on_journal(move |event| {
            let line = (event.conn, event.msg, event.dir.name(), text(event.bytes));
            lines.lock().unwrap().push(line);
        })
        .start()
        .unwrap();
    let handle = server.handle();
    let first = connect(server.tcp_addr());
    (&first).write_all(b"ping\nping\nother\n").unwrap();
    let want = "pong\npong again\nReceived\n";
    assert_eq!(text(&read_exactly(&first, want.len())), want);
    assert_eq!(
        server.received().len(),
        3,
        "messages a rule answered are recorded"
    );

    handle
        .add_rule("prefix:get => 200".parse().unwrap())
        .unwrap();
    let no_reply = Rule {
        pattern: Match::Any,
        replies: Vec::new(),
    };
    assert!(
        handle.add_rule(no_reply).is_err(),
        "checked as the control line is"
    );
    assert!(handle.set_greeting(Some(Vec::new())).is_err());
    assert!(handle.push(vec![b'x'; 1025]).is_err());
    handle.set_greeting(Some(b"hello\r\n".to_vec())).unwrap();
    let second = connect(server.tcp_addr());
    assert_eq!(text(&read_exactly(&second, 7)), "hello\r\n");
    (&second).write_all(b"get /\n").unwrap();
    assert_eq!(text(&read_exactly(&second, 4)), "200\n");

    handle.push("news").unwrap();
    for stream in [&first, &second] {
        assert_eq!(text(&read_exactly(stream, 5)), "news\n");
    }
    handle.clear_rules().unwrap();
    (&first).write_all(b"ping\n").unwrap();
    assert_eq!(text(&read_exactly(&first, 9)), "Received\n");

    // The callback saw the same conversation, as the journal writes it.
    let journal = journal.lock().unwrap();
    let has = |line: (Option<u64>, u64, &str, &str)| {
        let line = (line.0, line.1, line.2, line.3.to_string());
        assert!(journal.contains(&line), "no {line:?} in {journal:#?}");
    };
    has((Some(1), 1, "in", "ping\n"));
    has((Some(1), 1, "out", "pong\n"));
    has((Some(1), 2, "out", "pong again\n"));
    has((Some(2), 0, "out", "hello\r\n"));
    has((Some(2), 0, "out", "news\n"));
    has((Some(1), 0, "out", "news\n"));
}
