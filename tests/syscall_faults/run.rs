//! Running a case: its server under strace, clients driven through the
//! failure window, the checks after, and a failure's report.
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use crate::common::{
    DEADLINE, Server, connect, cpu_ticks_of, line_exchange, tcp_request, text, udp_request,
};
use crate::strace::{
    attempt, crash_line, injected_calls, injected_count, panic_message, require_strace,
    startup_calls, strace_wrapper, trace_path,
};
use crate::traced::{Traced, is_alive, signal, ticks_to_time};
use crate::{CLIENT_PATIENCE, Case, IDLE_SAMPLE, LINE_REPLY, MAX_LINE, Mode, REPLY, SPIN_CPU};

/// Runs every case side by side, each with its own traced server, and
/// fails listing every case that failed, with its evidence.
#[track_caller]
pub fn run_cases(cases: &[Case]) {
    require_strace();
    let startup = startup_calls();
    let running: Vec<_> = cases
        .iter()
        .map(|&case| {
            let startup = startup.get(case.syscall).copied().unwrap_or(0);
            let thread = std::thread::spawn(move || {
                let began = Instant::now();
                (run_case(&case, startup), began.elapsed())
            });
            (case, thread)
        })
        .collect();
    let mut failures = Vec::new();
    for (case, thread) in running {
        // Not `common::join`: a case is bounded by its own deadlines, and
        // a slow failing one (several of them) may take longer than one.
        let (outcome, took) = thread.join().unwrap_or_else(|panic| {
            let why = format!("the case itself panicked: {}", panic_message(&*panic));
            (Err(why), Duration::ZERO)
        });
        match outcome {
            Ok(()) => println!("ok   {} ({took:.1?})", case.name()),
            Err(why) => {
                println!("FAIL {} ({took:.1?})", case.name());
                failures.push(format!("{}: {why}", case.name()));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

/// Starts the server under strace, fails its calls, checks it.
fn run_case(case: &Case, startup: u32) -> Result<(), String> {
    let trace = trace_path(&case.file_name());
    let _ = fs::remove_file(&trace);
    let when = case.when(startup);
    let strace = strace_wrapper(case.syscall, case.errno, &when, case.stderr_only(), &trace);
    let mut traced = attempt("start under strace", || {
        let wrapper: Vec<&str> = strace.iter().map(String::as_str).collect();
        let args = case.mode.args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Traced::new(Server::start_wrapped(&wrapper, &args), trace.clone())
    })?;
    check(&mut traced, case).map_err(|failure| format!("{failure}\n{}", traced.evidence()))
}

/// The checks of one case, in order; the first that fails ends it.
fn check(traced: &mut Traced, case: &Case) -> Result<(), String> {
    drive_through_window(traced, case)?;
    if !is_alive(traced.pid) {
        return Err("(1) the server is gone after the failing calls".into());
    }
    let (tcp, udp) = (traced.server.tcp(), traced.server.udp());
    attempt("(2) a fresh TCP exchange", || match case.mode {
        Mode::Once => assert_eq!(text(&tcp_request(tcp, b"Hello, Server")), REPLY),
        Mode::Line => {
            let stream = connect(tcp);
            let reply = line_exchange(&stream, b"Hello, Server\n", LINE_REPLY.len());
            assert_eq!(text(&reply), LINE_REPLY);
        }
    })?;
    attempt("(2) a fresh UDP exchange", || {
        assert_eq!(text(&udp_request(udp, b"Hello, Server")), REPLY);
    })?;
    let used = attempt("(3) CPU time of the server", || {
        let before = cpu_ticks_of(traced.pid);
        std::thread::sleep(IDLE_SAMPLE);
        ticks_to_time(cpu_ticks_of(traced.pid) - before)
    })?;
    if used > SPIN_CPU {
        return Err(format!(
            "(3) spinning: {used:?} of CPU over an idle {IDLE_SAMPLE:?} (limit {SPIN_CPU:?})"
        ));
    }
    signal(traced.pid, libc::SIGTERM);
    match traced.server.wait_timeout(DEADLINE) {
        Some(status) if status.success() => {}
        Some(status) => return Err(format!("(5) after SIGTERM: exit status {status}")),
        None => return Err(format!("(5) still running {DEADLINE:?} after SIGTERM")),
    }
    if let Some(line) = crash_line(&traced.server.final_stderr()) {
        return Err(format!("(4) a crash on stderr: {line:?}"));
    }
    // When the log is what fails, a crash message fails to be written
    // too; strace still shows what was tried.
    if case.stderr_only() {
        if let Some(line) = crash_line(&injected_calls(&traced.trace).join("\n")) {
            return Err(format!("(4) a crash written to the failing stderr: {line}"));
        }
    }
    Ok(())
}

/// Drives rounds of clients until strace has failed the awaited number of
/// calls, or the server is gone (which the checks then report).
fn drive_through_window(traced: &Traced, case: &Case) -> Result<(), String> {
    let (tcp, udp) = (traced.server.tcp(), traced.server.udp());
    let awaited = case.awaited();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let injected = injected_count(&traced.trace);
        if injected >= awaited || !is_alive(traced.pid) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "only {injected} of {awaited} calls failed within {DEADLINE:?}: the \
                 clients never reached the window (a fault in this test)"
            ));
        }
        drive_round(tcp, udp, case.mode);
    }
}

/// One round of clients that make the server use every kind of call it
/// makes after start-up: TCP clients (accept, register, read, write, shut
/// down, close, log lines) and UDP datagrams one at a time (receive,
/// send). Every failure is tolerated: the server may be failing them.
fn drive_round(tcp: SocketAddr, udp: SocketAddr, mode: Mode) {
    let too_long = format!("Hello\n{}\n", "x".repeat(MAX_LINE * 2));
    // In line mode, half close their side after a line (the server closes
    // after them), half send a line over --max-line (it closes first).
    let requests: [(&[u8], bool); 4] = match mode {
        Mode::Once => [(b"Hello, Server", false); 4],
        Mode::Line => [
            (b"Hello\n", true),
            (too_long.as_bytes(), false),
            (b"Hello\n", true),
            (too_long.as_bytes(), false),
        ],
    };
    let clients: Vec<TcpStream> = requests
        .iter()
        .filter_map(|&(request, then_shut_down)| {
            let mut stream = TcpStream::connect_timeout(&tcp, CLIENT_PATIENCE).ok()?;
            let _ = stream.write_all(request);
            if then_shut_down {
                let _ = stream.shutdown(Shutdown::Write);
            }
            Some(stream)
        })
        .collect();
    let deadline = Instant::now() + CLIENT_PATIENCE;
    for stream in &clients {
        read_until_closed_or(stream, deadline);
    }
    drop(clients);
    let Ok(socket) = UdpSocket::bind("127.0.0.1:0") else {
        return;
    };
    if socket.connect(udp).is_err() || socket.set_read_timeout(Some(CLIENT_PATIENCE)).is_err() {
        return;
    }
    let mut reply = [0; 64];
    for _ in 0..3 {
        let _ = socket.send(b"Hello, Server");
        let _ = socket.recv(&mut reply);
    }
}

/// Reads until the server closes the stream, anything goes wrong, or
/// `deadline`: a tolerant client, unlike the helpers that assert.
fn read_until_closed_or(mut stream: &TcpStream, deadline: Instant) {
    let mut buf = [0; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}
