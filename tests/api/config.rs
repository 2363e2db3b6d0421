//! `--config FILE`: toxiproxy's config file creates named proxies before
//! the address lines; a bad file or entry exits 2 naming both. These run
//! against ackloop only (toxiproxy logs a bad file and goes on).

use serde_json::json;

use crate::common::journal::TempPath;
use crate::common::{Server, run};
use crate::http::Client;

fn config_file(name: &str, text: &str) -> TempPath {
    let file = TempPath::new(name);
    std::fs::write(&file.0, text).unwrap();
    file
}

#[test]
fn a_config_file_creates_its_proxies_before_the_address_lines() {
    let text = r#"[
        {"name": "db", "listen": "127.0.0.1:0", "upstream": "localhost:5432"},
        {"name": "cache", "listen": "127.0.0.1:0", "upstream": "127.0.0.1:6379", "enabled": false,
         "toxics": [{"type": "latency", "attributes": {"latency": 50}}]}
    ]"#;
    let file = config_file("config.json", text);
    let server = Server::start(&["--config", file.path(), "--api", "127.0.0.1:0"]);
    let mut client = Client::connect(server.api.unwrap());
    let proxies = client.get("/proxies").json();
    assert_eq!(proxies["db"]["upstream"], "localhost:5432");
    assert_eq!(proxies["db"]["enabled"], true);
    let listen: std::net::SocketAddr = proxies["db"]["listen"].as_str().unwrap().parse().unwrap();
    assert_ne!(listen.port(), 0);
    std::net::TcpStream::connect(listen).expect("listening before the address lines");
    assert_eq!(proxies["cache"]["enabled"], false);
    let toxics = &proxies["cache"]["toxics"];
    assert_eq!(toxics[0]["attributes"], json!({"latency": 50, "jitter": 0}));
}

#[test]
fn a_bad_config_file_exits_2_naming_the_file_and_the_entry() {
    let missing = TempPath::new("missing.json");
    let not_json = config_file("notjson.json", "[{");
    let no_upstream = config_file(
        "noup.json",
        r#"[{"name":"a","upstream":"127.0.0.1:1"},{"name":"b"}]"#,
    );
    let bad_toxic = config_file(
        "badtoxic.json",
        r#"[{"name":"t","upstream":"127.0.0.1:1","toxics":[{"type":"nope"}]}]"#,
    );
    for (file, entry) in [
        (&missing, ""),
        (&not_json, "not a JSON array"),
        (
            &no_upstream,
            "proxy 2 ('b'): missing required field: upstream",
        ),
        (&bad_toxic, "proxy 1 ('t'): invalid toxic type"),
    ] {
        let (status, stdout, stderr) = run(&["--config", file.path()]);
        assert_eq!(status.code(), Some(2), "{stderr}");
        assert!(stdout.is_empty(), "nothing bound or printed: {stdout}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(file.path()), "{stderr}");
        assert!(stderr.contains(entry), "{stderr}");
    }
}

#[test]
fn a_listen_address_in_use_in_the_config_exits_2() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let text = format!(r#"[{{"name":"busy","listen":"{addr}","upstream":"127.0.0.1:1"}}]"#);
    let file = config_file("busy.json", &text);
    let (status, _, stderr) = run(&["--config", file.path()]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("proxy 1 ('busy')") && stderr.contains(&addr.to_string()),
        "{stderr}"
    );
}
