//! Every route of toxiproxy 2.x: what it answers, in what shape, and its
//! errors.

use serde_json::{Value, json};

use crate::common::upstream::refusing_addr;
use crate::{assert_error, target, unique};

#[test]
fn version_names_the_server() {
    let t = target();
    let response = t.client().get("/version");
    assert_eq!(response.status, 200);
    let version = response.json()["version"].as_str().unwrap().to_string();
    assert!(!version.is_empty());
    if t.is_ackloop() {
        assert_eq!(version, env!("CARGO_PKG_VERSION"));
    }
}

#[test]
fn a_proxy_is_created_shown_changed_and_deleted() {
    let t = target();
    let name = unique("life");
    let upstream = refusing_addr().to_string();
    let created = t.create(&name, &upstream);
    assert_eq!(created["name"], name.as_str());
    assert_eq!(created["upstream"], upstream.as_str());
    assert_eq!(created["enabled"], true);
    assert_eq!(created["toxics"], json!([]));
    let listen: std::net::SocketAddr = created["listen"].as_str().unwrap().parse().unwrap();
    assert_ne!(listen.port(), 0, "port 0 is resolved: {created}");
    std::net::TcpStream::connect(listen).expect("the proxy listens");

    let mut client = t.client();
    let all = client.get("/proxies");
    assert_eq!(all.status, 200);
    assert_eq!(all.json()[&name]["listen"], created["listen"]);
    let one = client.get(&format!("/proxies/{name}"));
    assert_eq!(one.status, 200);
    let shown = one.json();
    for field in ["name", "listen", "upstream", "enabled", "toxics"] {
        assert_eq!(shown[field], created[field], "{field}");
    }

    let path = format!("/proxies/{name}");
    let disabled = client.patch(&path, r#"{"enabled":false}"#);
    assert_eq!(disabled.status, 200, "{}", disabled.text());
    assert_eq!(disabled.json()["enabled"], false);
    assert!(
        std::net::TcpStream::connect(listen).is_err(),
        "a disabled proxy refuses connections"
    );
    // POST updates too (deprecated in toxiproxy); `name` is ignored.
    let enabled = client.post(&path, r#"{"enabled":true,"name":"other"}"#);
    assert_eq!(enabled.status, 200, "{}", enabled.text());
    assert_eq!(enabled.json()["enabled"], true);
    assert_eq!(enabled.json()["name"], name.as_str());
    assert_eq!(
        enabled.json()["listen"],
        created["listen"],
        "the same address again"
    );
    std::net::TcpStream::connect(listen).expect("enabled again");

    let deleted = client.delete(&path);
    assert_eq!(deleted.status, 204);
    assert!(deleted.body.is_empty());
    assert_error(&client.get(&path), 404, "proxy not found");
    assert_error(&client.delete(&path), 404, "proxy not found");
    assert_error(&client.patch(&path, "{}"), 404, "proxy not found");
    assert!(
        std::net::TcpStream::connect(listen).is_err(),
        "deleted: closed"
    );
}

#[test]
fn a_proxy_created_disabled_does_not_listen() {
    let t = target();
    let name = unique("off");
    let body = format!(
        r#"{{"name":"{name}","listen":"127.0.0.1:0","upstream":"127.0.0.1:9","enabled":false}}"#
    );
    let response = t.client().post("/proxies", &body);
    assert_eq!(response.status, 201, "{}", response.text());
    let proxy = response.json();
    assert_eq!(proxy["enabled"], false);
    assert_eq!(proxy["listen"], "127.0.0.1:0", "shown as given");
}

#[test]
fn creating_a_proxy_checks_its_body() {
    let t = target();
    let mut client = t.client();
    let name = unique("bad");
    let cases = [
        (
            r#"{"upstream":"127.0.0.1:9"}"#,
            400,
            "missing required field: name",
        ),
        (r#"{"name":"x"}"#, 400, "missing required field: upstream"),
        (
            r#"{"name":"","upstream":"127.0.0.1:9"}"#,
            400,
            "missing required field: name",
        ),
        ("{bad", 400, "bad request body"),
        ("", 400, "bad request body"),
        ("[]", 400, "bad request body"),
        (
            r#"{"name":5,"upstream":"127.0.0.1:9"}"#,
            400,
            "bad request body",
        ),
        (
            r#"{"name":"n","upstream":"127.0.0.1:9","enabled":"yes"}"#,
            400,
            "bad request body",
        ),
    ];
    for (body, status, prefix) in cases {
        let body = body.replace("\"x\"", &format!("\"{name}\""));
        assert_error(&client.post("/proxies", &body), status, prefix);
    }
    assert_error(
        &client.get(&format!("/proxies/{name}")),
        404,
        "proxy not found",
    );
}

#[test]
fn a_name_or_an_address_taken_is_a_conflict() {
    let t = target();
    let name = unique("dup");
    let first = t.create(&name, "127.0.0.1:9");
    let mut client = t.client();
    let again = format!(r#"{{"name":"{name}","listen":"127.0.0.1:0","upstream":"127.0.0.1:9"}}"#);
    assert_error(
        &client.post("/proxies", &again),
        409,
        "proxy already exists",
    );
    // The listen address of another proxy: 409 naming it (toxiproxy: 500).
    let listen = first["listen"].as_str().unwrap();
    let other = unique("dup");
    let body = format!(r#"{{"name":"{other}","listen":"{listen}","upstream":"127.0.0.1:9"}}"#);
    let response = client.post("/proxies", &body);
    assert_error(&response, t.pick(409, 500), "");
    let message = response.json()["error"].as_str().unwrap().to_string();
    assert!(message.contains(listen), "{message}");
    assert!(message.contains("in use"), "{message}");
    let path = format!("/proxies/{other}");
    assert_error(&client.get(&path), 404, "proxy not found");
}

/// Every toxic type of SPEC 14's table, and its attributes with their
/// defaults.
pub const TOXIC_DEFAULTS: [(&str, &str); 7] = [
    ("latency", r#"{"latency":0,"jitter":0}"#),
    ("bandwidth", r#"{"rate":0}"#),
    ("slow_close", r#"{"delay":0}"#),
    ("timeout", r#"{"timeout":0}"#),
    ("reset_peer", r#"{"timeout":0}"#),
    (
        "slicer",
        r#"{"average_size":0,"size_variation":0,"delay":0}"#,
    ),
    ("limit_data", r#"{"bytes":0}"#),
];

#[test]
fn every_toxic_type_shows_its_attributes_with_defaults() {
    let t = target();
    let name = unique("types");
    t.create(&name, "127.0.0.1:9");
    let mut client = t.client();
    let path = format!("/proxies/{name}/toxics");
    let mut expected = Vec::new();
    for (kind, defaults) in TOXIC_DEFAULTS {
        let response = client.post(&path, &format!(r#"{{"type":"{kind}"}}"#));
        assert_eq!(response.status, 200, "{kind}: {}", response.text());
        let toxic = response.json();
        let defaults: Value = serde_json::from_str(defaults).unwrap();
        let want = json!({
            "name": format!("{kind}_downstream"),
            "type": kind,
            "stream": "downstream",
            "toxicity": 1,
            "attributes": defaults,
        });
        assert_eq!(toxic, want, "{kind}");
        expected.push(want);
    }
    let listed = client.get(&path);
    assert_eq!(listed.status, 200);
    assert_eq!(listed.json(), Value::Array(expected.clone()));
    let proxy = client.get(&format!("/proxies/{name}")).json();
    assert_eq!(proxy["toxics"], Value::Array(expected));
}

#[test]
fn a_toxic_is_added_shown_changed_and_removed() {
    let t = target();
    let name = unique("toxic");
    t.create(&name, "127.0.0.1:9");
    let mut client = t.client();
    let toxics = format!("/proxies/{name}/toxics");
    let body = r#"{"type":"latency","attributes":{"latency":100,"bogus":1}}"#;
    let added = client.post(&toxics, body);
    assert_eq!(added.status, 200, "{}", added.text());
    let toxic = added.json();
    assert_eq!(toxic["name"], "latency_downstream");
    assert_eq!(toxic["attributes"], json!({"latency": 100, "jitter": 0}));
    assert_error(&client.post(&toxics, body), 409, "toxic already exists");

    // The stream in any case; the default name keeps it as given.
    let up = client.post(
        &toxics,
        r#"{"type":"timeout","stream":"UpStream","toxicity":0.25}"#,
    );
    assert_eq!(up.status, 200, "{}", up.text());
    assert_eq!(up.json()["name"], "timeout_UpStream");
    assert_eq!(up.json()["stream"], "UpStream");
    assert_eq!(up.json()["toxicity"], 0.25);

    let one = format!("{toxics}/latency_downstream");
    assert_eq!(client.get(&one).json(), toxic);
    // Update: attributes merge, toxicity replaced, type and stream ignored.
    let body =
        r#"{"attributes":{"jitter":5},"toxicity":0.5,"type":"bandwidth","stream":"upstream"}"#;
    let changed = client.patch(&one, body);
    assert_eq!(changed.status, 200, "{}", changed.text());
    let want = json!({
        "name": "latency_downstream", "type": "latency", "stream": "downstream",
        "toxicity": 0.5, "attributes": {"latency": 100, "jitter": 5},
    });
    assert_eq!(changed.json(), want);
    let posted = client.post(&one, r#"{"attributes":{"latency":7}}"#);
    assert_eq!(posted.status, 200, "{}", posted.text());
    assert_eq!(posted.json()["attributes"]["latency"], 7);

    assert_eq!(client.delete(&one).status, 204);
    assert_error(&client.get(&one), 404, "toxic not found");
    assert_error(&client.delete(&one), 404, "toxic not found");
    assert_error(&client.patch(&one, "{}"), 404, "toxic not found");
    let left = client.get(&toxics).json();
    assert_eq!(left.as_array().unwrap().len(), 1, "{left}");
}

#[test]
fn adding_a_toxic_checks_its_body() {
    let t = target();
    let name = unique("badtoxic");
    t.create(&name, "127.0.0.1:9");
    let mut client = t.client();
    let toxics = format!("/proxies/{name}/toxics");
    for (body, prefix) in [
        (r#"{"type":"bogus"}"#, "invalid toxic type"),
        (r#"{}"#, "invalid toxic type"),
        (
            r#"{"type":"latency","stream":"sideways"}"#,
            "stream was invalid",
        ),
        (
            r#"{"type":"latency","attributes":{"latency":"slow"}}"#,
            "bad request body",
        ),
        (
            r#"{"type":"latency","attributes":{"latency":1.5}}"#,
            "bad request body",
        ),
        (
            r#"{"type":"latency","toxicity":"high"}"#,
            "bad request body",
        ),
        (r#"{"type":"latency","name":7}"#, "bad request body"),
        ("{bad", "bad request body"),
    ] {
        assert_error(&client.post(&toxics, body), 400, prefix);
    }
    // Range checks are ackloop's own: toxiproxy takes these.
    for body in [
        r#"{"type":"latency","name":"neg","attributes":{"latency":-5}}"#,
        r#"{"type":"latency","name":"much","toxicity":7}"#,
    ] {
        let response = client.post(&toxics, body);
        assert_eq!(
            response.status,
            t.pick(400, 200),
            "{body}: {}",
            response.text()
        );
    }
    let missing = format!("/proxies/{}/toxics", unique("nobody"));
    assert_error(
        &client.post(&missing, r#"{"type":"latency"}"#),
        404,
        "proxy not found",
    );
    assert_error(&client.get(&missing), 404, "proxy not found");
}

#[test]
fn populate_creates_keeps_and_replaces() {
    let t = target();
    let (kept, replaced, added) = (unique("kept"), unique("repl"), unique("added"));
    let kept_proxy = t.create(&kept, "127.0.0.1:9");
    let replaced_proxy = t.create(&replaced, "127.0.0.1:9");
    let mut client = t.client();
    for name in [&kept, &replaced] {
        let path = format!("/proxies/{name}/toxics");
        assert_eq!(client.post(&path, r#"{"type":"latency"}"#).status, 200);
    }
    let kept_listen = kept_proxy["listen"].as_str().unwrap();
    let replaced_listen = replaced_proxy["listen"].as_str().unwrap();
    let body = format!(
        r#"[{{"name":"{kept}","listen":"{kept_listen}","upstream":"127.0.0.1:9"}},
            {{"name":"{replaced}","listen":"{replaced_listen}","upstream":"127.0.0.1:10"}},
            {{"name":"{added}","listen":"127.0.0.1:0","upstream":"127.0.0.1:11","enabled":false}}]"#
    );
    let response = client.post("/populate", &body);
    assert_eq!(response.status, 201, "{}", response.text());
    let proxies = response.json()["proxies"].as_array().unwrap().clone();
    let names: Vec<&str> = proxies
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, [kept.as_str(), replaced.as_str(), added.as_str()]);
    assert_eq!(
        proxies[0]["toxics"].as_array().unwrap().len(),
        1,
        "kept as it was"
    );
    assert_eq!(proxies[1]["toxics"], json!([]), "replaced: toxics dropped");
    assert_eq!(proxies[1]["upstream"], "127.0.0.1:10");
    assert_eq!(proxies[2]["enabled"], false);

    // One bad entry: 400, and nothing changes.
    let never = unique("never");
    let body =
        format!(r#"[{{"name":"{never}","upstream":"127.0.0.1:9"}},{{"name":"","upstream":"x"}}]"#);
    assert_error(
        &client.post("/populate", &body),
        400,
        "missing required field: name at proxy 2",
    );
    assert_error(
        &client.get(&format!("/proxies/{never}")),
        404,
        "proxy not found",
    );
    assert_error(
        &client.post("/populate", r#"{"name":"x"}"#),
        400,
        "bad request body",
    );
    let listed = client.get("/proxies").json();
    assert!(
        listed.get(&kept).is_some() && listed.get(&added).is_some(),
        "{listed}"
    );
}

#[test]
fn reset_enables_every_proxy_and_removes_every_toxic() {
    let t = target();
    let name = unique("reset");
    let created = t.create(&name, "127.0.0.1:9");
    let mut client = t.client();
    let path = format!("/proxies/{name}");
    let toxic = client.post(&format!("{path}/toxics"), r#"{"type":"slicer"}"#);
    assert_eq!(toxic.status, 200);
    assert_eq!(client.patch(&path, r#"{"enabled":false}"#).status, 200);
    let reset = client.post("/reset", "");
    assert_eq!(reset.status, 204, "{}", reset.text());
    let proxy = client.get(&path).json();
    assert_eq!(proxy["enabled"], true);
    assert_eq!(proxy["toxics"], json!([]));
    let listen: std::net::SocketAddr = created["listen"].as_str().unwrap().parse().unwrap();
    std::net::TcpStream::connect(listen).expect("listening again");
}

#[test]
fn unknown_routes_and_methods() {
    let t = target();
    let mut client = t.client();
    let unknown = client.get("/nowhere");
    assert_eq!(unknown.status, 404);
    let wrong = client.send("PUT", "/proxies", Some("{}"));
    assert_eq!(wrong.status, 405);
    let wrong = client.send("DELETE", "/version", None);
    assert_eq!(wrong.status, 405);
    if t.is_ackloop() {
        // toxiproxy answers these in plain text or with no body.
        assert_error(&unknown, 404, "");
        assert_error(&wrong, 405, "");
    }
}
