//! The toxiproxy HTTP API (SPEC 14), black-box: routes, JSON shapes,
//! status codes, error bodies and bad input, over real sockets.
//!
//! The same tests run against either server:
//! - by default each test starts the `ackloop` binary with
//!   `--api 127.0.0.1:0` and reads its `api ADDR` line;
//! - with `ACKLOOP_API_ADDR=127.0.0.1:8474` they drive a server already
//!   running there, the real toxiproxy unless `ACKLOOP_API_FLAVOR=ackloop`
//!   (`tests/api/against_toxiproxy.sh` builds and starts one, then runs
//!   this suite against it with one test thread, since `/reset` is global).
//!
//! Where SPEC 14 says ackloop differs from toxiproxy on purpose, a test
//! asserts each server's own answer ([`Target::pick`]); everywhere else
//! both must answer the same. `config` and `control` are ackloop's own.

#[path = "../common/mod.rs"]
mod common;
mod http;

mod bounds;
mod clients;
mod config;
mod control;
mod endpoints;
#[cfg(feature = "journal")]
mod journal;
mod routes;
mod toxics;
mod traffic;
mod udp;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::Server;
use http::Client;
use serde_json::Value;

/// Which server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Ackloop,
    Toxiproxy,
}

/// The server under test.
pub struct Target {
    pub api: SocketAddr,
    pub flavor: Flavor,
    /// The ackloop process this test started, if it started one.
    pub server: Option<Server>,
}

/// Starts (or finds, from the environment) the server under test.
#[track_caller]
pub fn target() -> Target {
    target_with(&[])
}

/// Like [`target`], with more options for an ackloop the test starts.
#[track_caller]
pub fn target_with(args: &[&str]) -> Target {
    if let Ok(addr) = std::env::var("ACKLOOP_API_ADDR") {
        let addr = addr.trim_start_matches("http://").trim_end_matches('/');
        let api = addr
            .parse()
            .unwrap_or_else(|e| panic!("ACKLOOP_API_ADDR={addr}: {e}"));
        let flavor = match std::env::var("ACKLOOP_API_FLAVOR").as_deref() {
            Ok("ackloop") => Flavor::Ackloop,
            _ => Flavor::Toxiproxy,
        };
        return Target {
            api,
            flavor,
            server: None,
        };
    }
    let mut all = vec!["--api", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let server = Server::start(&all);
    Target {
        api: server.api.expect("an `api ADDR` line"),
        flavor: Flavor::Ackloop,
        server: Some(server),
    }
}

impl Target {
    pub fn client(&self) -> Client {
        Client::connect(self.api)
    }

    pub fn is_ackloop(&self) -> bool {
        self.flavor == Flavor::Ackloop
    }

    /// Where SPEC 14 differs on purpose: ackloop's answer, or toxiproxy's.
    pub fn pick<T>(&self, ackloop: T, toxiproxy: T) -> T {
        match self.flavor {
            Flavor::Ackloop => ackloop,
            Flavor::Toxiproxy => toxiproxy,
        }
    }

    /// Creates a proxy `name` to `upstream` on a free loopback port;
    /// returns its JSON.
    #[track_caller]
    pub fn create(&self, name: &str, upstream: &str) -> Value {
        let body = format!(r#"{{"name":"{name}","listen":"127.0.0.1:0","upstream":"{upstream}"}}"#);
        let response = self.client().post("/proxies", &body);
        assert_eq!(response.status, 201, "{}", response.text());
        response.json()
    }
}

/// A proxy name no other test (or earlier run, on a shared server) uses.
pub fn unique(what: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{what}_{}_{n}", std::process::id())
}

/// Asserts a JSON error answer: the status, `{"error": ..., "status":
/// ...}` with that status, and a message starting with `prefix`.
#[track_caller]
pub fn assert_error(response: &http::Response, status: u16, prefix: &str) {
    assert_eq!(response.status, status, "{}", response.text());
    let body = response.json();
    assert_eq!(body["status"], status, "{body}");
    let message = body["error"].as_str().unwrap_or_else(|| panic!("{body}"));
    assert!(
        message.starts_with(prefix),
        "expected an error starting {prefix:?}, got {message:?}"
    );
}
