//! Reading a journal back (SPEC 13) in the black-box tests: Python's
//! `json`, a parser no one here wrote, checks each line and prints it in
//! a form a test compares. Needs `python3` (`.ci/run` installs it); a
//! test fails, saying so, without it.

use std::io::Write;
use std::process::{Command, Stdio};

use super::{DEADLINE, wait_until};

/// A path in the temporary directory, removed when dropped.
pub struct TempPath(pub std::path::PathBuf);

impl TempPath {
    pub fn new(name: &str) -> TempPath {
        let path = std::env::temp_dir().join(format!("ackloop-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        TempPath(path)
    }

    pub fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }

    pub fn lines(&self) -> usize {
        std::fs::read_to_string(&self.0).map_or(0, |s| s.lines().count())
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs `python3 -c program args...` with `input` on stdin: its status,
/// stdout and stderr. Fails saying so when python3 is missing.
#[track_caller]
pub fn python(program: &str, args: &[&str], input: &str) -> (bool, String, String) {
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("these tests need python3 (.ci/run installs it): {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let mut status = None;
    wait_until(DEADLINE, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    if status.is_none() {
        let _ = child.kill();
    }
    let output = child.wait_with_output().unwrap();
    (
        status.is_some_and(|s| s.success()),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Parses journal lines with Python's `json` and checks what every line
/// must hold; prints each as `[@ENDPOINT] proto conn msg dir len BYTES
/// [peer] [faults]` (`@ENDPOINT` on a named endpoint's lines, `conn` `-`
/// on UDP, BYTES as Python's repr of the decoded bytes).
pub const READ_JOURNAL: &str = r#"
import base64, json, sys
last = 0
for line in sys.stdin:
    o = json.loads(line)
    assert o["t_ms"] >= last, ("t_ms went back", line)
    last = o["t_ms"]
    assert ("text" in o) != ("b64" in o), line
    data = o["text"].encode() if "text" in o else base64.b64decode(o["b64"], validate=True)
    if "b64" in o:
        try:
            data.decode()
            raise AssertionError(("b64 for UTF-8", line))
        except UnicodeDecodeError:
            pass
    assert o["len"] == len(data), line
    assert (o["proto"] == "udp") == ("conn" not in o), line
    if o["proto"] == "udp":
        assert "peer" in o, line
    words = [o["proto"], str(o.get("conn", "-")), str(o["msg"]), o["dir"], str(o["len"]), repr(data)]
    if "endpoint" in o:
        assert isinstance(o["endpoint"], str) and o["endpoint"], line
        words.insert(0, "@" + o["endpoint"])
    if "peer" in o:
        words.append("peer")
    if "fault" in o:
        words.append(",".join(o["fault"]))
    print(" ".join(words))
"#;

/// The journal's lines as `READ_JOURNAL` prints them.
#[track_caller]
pub fn read_journal(journal: &str) -> Vec<String> {
    let (ok, stdout, stderr) = python(READ_JOURNAL, &[], journal);
    assert!(
        ok,
        "the journal is not what section 13 says:\n{stderr}\n{journal}"
    );
    stdout.lines().map(String::from).collect()
}
