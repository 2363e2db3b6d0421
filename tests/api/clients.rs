//! Real clients no one here wrote, installed from their registries by
//! `tests/api/clients/setup.sh`: toxiproxy-python (PyPI) and
//! toxiproxy-node-client (npm) drive every route and toxic type they
//! offer (`clients/drive.py`, `clients/drive.js`), then real traffic
//! through a proxy to an echo upstream, showing each toxic's effect. Without node, the
//! node test says so and passes; python3 is required (`.ci/run`
//! installs it).

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use crate::common::upstream::echo_upstream;
use crate::{target, unique};

/// Where setup.sh installs the clients: `ACKLOOP_API_CLIENTS`, or
/// `target/api-clients`; installed now (once per run) if missing.
fn clients() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(install).clone()
}

fn install() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::var_os("ACKLOOP_API_CLIENTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/api-clients"));
    let setup = root.join("tests/api/clients/setup.sh");
    let status = Command::new("sh").arg(setup).arg(&dir).status().unwrap();
    assert!(status.success(), "tests/api/clients/setup.sh failed");
    dir
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/api/clients")
        .join(name)
}

#[track_caller]
fn assert_ran(output: std::process::Output, what: &str) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{what} failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.lines().any(|l| l == "done"),
        "{what}:\n{stdout}\n{stderr}"
    );
}

#[test]
fn toxiproxy_python_drives_every_route_and_toxic_type() {
    let dir = clients();
    let t = target();
    let output = Command::new(dir.join("venv/bin/python"))
        .arg(script("drive.py"))
        .args([
            t.api.ip().to_string(),
            t.api.port().to_string(),
            unique("client"),
            echo_upstream().to_string(),
        ])
        .output()
        .unwrap();
    assert_ran(output, "drive.py (toxiproxy-python)");
}

#[test]
fn toxiproxy_node_client_drives_every_route_and_toxic_type() {
    if Command::new("node").arg("--version").output().is_err() {
        eprintln!("SKIPPED: node is not installed, so toxiproxy-node-client cannot run");
        return;
    }
    let dir = clients();
    let t = target();
    let output = Command::new("node")
        .arg(script("drive.js"))
        .args([format!("http://{}", t.api), unique("client")])
        .arg(echo_upstream().to_string())
        .env("NODE_PATH", dir.join("node/node_modules"))
        .output()
        .unwrap();
    assert_ran(output, "drive.js (toxiproxy-node-client)");
}
