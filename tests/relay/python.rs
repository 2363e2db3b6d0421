//! A real client and server no one here wrote: Python's `http.server`
//! behind the relay.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::common::{DEADLINE, text, wait_until};
use crate::tcp_relay;

#[test]
fn python_http_server_through_the_relay() {
    let Some(mut http) = PythonHttp::start() else {
        panic!("python3 is needed (.ci/run installs it)");
    };
    // Delayed bytes count against the bound: under the smallest settings
    // (one byte) each byte would wait its own delay.
    let args = [
        "--fault",
        "tcp:delay=200",
        "--seed",
        "1",
        "--max-owed",
        "65536",
    ];
    let relay = tcp_relay(http.addr, &args);
    let url = format!("http://{}/", relay.tcp());
    let script = "import sys, urllib.request\n\
                  body = urllib.request.urlopen(sys.argv[1], timeout=10).read()\n\
                  print(len(body))";
    let started = Instant::now();
    let output = std::process::Command::new("python3")
        .args(["-c", script, &url])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let length: usize = text(&output.stdout).trim().parse().unwrap();
    assert!(length > 0);
    assert!(started.elapsed() >= Duration::from_millis(200));
    http.stop();
}

/// `python3 -m http.server` on a free port, serving an empty directory.
struct PythonHttp {
    child: std::process::Child,
    addr: SocketAddr,
}

impl PythonHttp {
    fn start() -> Option<PythonHttp> {
        let dir = std::env::temp_dir().join(format!("ackloop-relay-http-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("index.html"), "<p>hello through the relay</p>\n").unwrap();
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let child = std::process::Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .current_dir(&dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        assert!(
            wait_until(DEADLINE, || TcpStream::connect(addr).is_ok()),
            "python3 -m http.server did not listen on {addr}"
        );
        Some(PythonHttp { child, addr })
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PythonHttp {
    fn drop(&mut self) {
        self.stop();
    }
}
