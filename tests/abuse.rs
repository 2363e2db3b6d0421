//! Misbehaving clients: the server keeps serving the others, with memory
//! and CPU bounded by its configuration.

mod common;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use common::{DEADLINE, Process, connect, tcp_request};

#[test]
fn a_never_reading_pipeliner_costs_bounded_memory() {
    let server = Process::start(&["--mode", "line"]);
    let flooder = connect(server.tcp());
    flooder
        .set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut writer = flooder.try_clone().unwrap();
    // 64 MiB of lines, never reading a reply: the writes block once the
    // server stops reading (backpressure), and the write timeout ends it.
    let sender = std::thread::spawn(move || {
        let chunk = b"Hello, Server\n".repeat(4096);
        let mut sent = 0;
        while sent < 64 << 20 && writer.write_all(&chunk).is_ok() {
            sent += chunk.len();
        }
        sent
    });
    let mut peak = 0;
    while !sender.is_finished() {
        peak = peak.max(server.rss_kib());
        // Another client is served meanwhile.
        let mut other = connect(server.tcp());
        other.write_all(b"hi\n").unwrap();
        let mut reply = [0; 9];
        other.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"Received\n");
    }
    let sent = sender.join().unwrap();
    peak = peak.max(server.rss_kib());
    assert!(
        sent < 64 << 20,
        "backpressure stopped the flood ({sent} bytes sent)"
    );
    assert!(peak < 64 * 1024, "RSS peaked at {peak} KiB");
}

#[test]
fn slow_drip_clients_do_not_slow_a_normal_client() {
    let server = Process::start(&["--mode", "line"]);
    let mut drips: Vec<_> = (0..20).map(|_| connect(server.tcp())).collect();
    for _round in 0..10 {
        for drip in &mut drips {
            drip.write_all(b"x").unwrap(); // Never a newline.
        }
        let started = Instant::now();
        let mut normal = connect(server.tcp());
        normal.write_all(b"Hello, Server\n").unwrap();
        let mut reply = [0; 9];
        normal.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"Received\n");
        assert!(started.elapsed() < DEADLINE);
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn connect_then_reset_clients_leave_the_server_serving() {
    let server = Process::start(&[]);
    for _ in 0..500 {
        let stream = TcpStream::connect(server.tcp()).unwrap();
        // SO_LINGER 0: close sends a reset instead of a FIN.
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: setsockopt on a descriptor we own, with a valid pointer
        // to a correctly sized value.
        let rc = unsafe {
            use std::os::fd::AsRawFd;
            libc::setsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&raw const linger).cast(),
                size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0);
    }
    assert_eq!(tcp_request(server.tcp(), b"after"), b"Received");
}

#[test]
fn over_max_connections_a_client_is_closed_at_once() {
    let server = Process::start(&["--mode", "line", "--max-connections", "5"]);
    let mut five: Vec<_> = (0..5).map(|_| connect(server.tcp())).collect();
    let mut reply = [0; 9];
    for stream in &mut five {
        stream.write_all(b"hi\n").unwrap();
        stream.read_exact(&mut reply).unwrap();
    }
    let mut sixth = connect(server.tcp());
    let _ = sixth.write_all(b"hi\n");
    let mut got = Vec::new();
    let _ = sixth.read_to_end(&mut got); // EOF or reset, promptly.
    assert_eq!(got, b"", "the sixth is not served");
    for stream in &mut five {
        stream.write_all(b"again\n").unwrap();
        stream.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"Received\n");
    }
    assert!(
        server.stderr().contains("--max-connections"),
        "{}",
        server.stderr()
    );
}

#[test]
fn out_of_descriptors_clients_are_closed_without_spinning() {
    let server = Process::start_with_fd_limit(64, &["--mode", "line"]);
    let mut clients: Vec<_> = (0..200).map(|_| connect(server.tcp())).collect();
    for client in &mut clients {
        let _ = client.write_all(b"hi\n");
    }
    // Everyone gets an answer or is closed: nobody hangs in the backlog.
    let (mut served, mut shed) = (0, 0);
    for client in &mut clients {
        let mut reply = [0; 9];
        match client.read(&mut reply) {
            Ok(9) => served += 1,
            Ok(0) | Err(_) => shed += 1,
            Ok(_) => panic!("partial reply"),
        }
    }
    assert!(served > 0 && shed > 0, "served {served}, shed {shed}");
    // While the served ones sit open, the loop does not spin.
    let before = server.cpu_ticks();
    std::thread::sleep(Duration::from_secs(2));
    let used = server.cpu_ticks() - before;
    assert!(
        used < 50,
        "{used} ticks of CPU in 2 s while idle at the limit"
    );
    drop(clients);
    // Once they leave, new clients are served again.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let mut stream = connect(server.tcp());
        let mut reply = [0; 9];
        if stream.write_all(b"hi\n").is_ok() && stream.read_exact(&mut reply).is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "never served again");
    }
}

#[test]
fn a_udp_flood_does_not_starve_tcp() {
    let server = Process::start(&[]);
    let udp = server.udp();
    let flooders: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
                for _ in 0..50_000 {
                    let _ = socket.send_to(b"flood", udp);
                }
            })
        })
        .collect();
    for _ in 0..20 {
        assert_eq!(tcp_request(server.tcp(), b"Hello, Server"), b"Received");
    }
    for flooder in flooders {
        flooder.join().unwrap();
    }
    // UDP may drop a datagram that meets a full receive buffer: ask again
    // until the server, done with the flood, answers.
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + DEADLINE;
    let mut reply = [0; 64];
    loop {
        socket.send_to(b"after", udp).unwrap();
        if let Ok(n) = socket.recv(&mut reply) {
            assert_eq!(&reply[..n], b"Received");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "UDP never answered after the flood"
        );
    }
}
