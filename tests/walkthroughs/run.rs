//! Running one walkthrough as a user's paste would: `bash` in a directory
//! of its own, `ackloop` on `PATH`, in a process group of its own so that
//! whatever it starts can be found (and ended) afterwards.

use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A walkthrough run that ends later failed: they take seconds.
pub const TIME_LIMIT: Duration = Duration::from_secs(40);

/// How often the run is checked for its end.
const POLL_EVERY: Duration = Duration::from_millis(20);

/// One run's outcome: what it printed (stdout and stderr in one stream,
/// as a terminal shows them) and what went wrong with the run itself.
pub struct Run {
    pub output: String,
    pub took: Duration,
    pub problems: Vec<String>,
}

/// Runs `script` with bash in `work` (created if missing), with `bin_dir`
/// first on `PATH` and `TMPDIR` set to `tmp`, so `mktemp` stays inside
/// the test's own directory. `name` names the run's files in `tmp`.
pub fn run(script: &str, work: &Path, tmp: &Path, bin_dir: &Path, name: &str) -> Run {
    fs::create_dir_all(work).expect("walkthrough directory");
    let script_path = tmp.join(format!("{name}.sh"));
    let output_path = tmp.join(format!("{name}.out"));
    fs::write(&script_path, script).expect("write the script");
    let output = File::create(&output_path).expect("output file");
    let path = std::env::var_os("PATH").unwrap_or_default();
    let path = std::env::join_paths(
        std::iter::once(bin_dir.to_path_buf()).chain(std::env::split_paths(&path)),
    )
    .expect("PATH");
    let started = Instant::now();
    let mut child = Command::new("bash")
        .arg(&script_path)
        .current_dir(work)
        .env("PATH", path)
        .env("TMPDIR", tmp)
        .stdin(Stdio::null())
        .stdout(output.try_clone().expect("output file"))
        .stderr(output)
        .process_group(0)
        .spawn()
        .expect("bash runs");
    let group = child.id() as i32;
    let mut problems = Vec::new();
    loop {
        match child.try_wait().expect("wait for bash") {
            Some(_) => break,
            None if started.elapsed() > TIME_LIMIT => {
                problems.push(format!(
                    "did not finish within {} s (a wait without a deadline?)",
                    TIME_LIMIT.as_secs()
                ));
                kill_group(group);
                child.wait().expect("wait for bash");
                break;
            }
            None => std::thread::sleep(POLL_EVERY),
        }
    }
    let took = started.elapsed();
    let left = still_running(group);
    if !left.is_empty() {
        problems.push(format!(
            "left running when it ended (stop each server with kill and wait): {}",
            left.join("; ")
        ));
        kill_group(group);
    }
    let output = String::from_utf8_lossy(&fs::read(&output_path).unwrap_or_default()).into();
    Run {
        output,
        took,
        problems,
    }
}

/// The processes of process group `group` that have not exited, each as
/// `PID COMMAND LINE` (Linux: from `/proc`). Zombies have exited: only
/// their parent's reaping is left, and an orphan's parent may never reap.
pub fn still_running(group: i32) -> Vec<String> {
    let mut left = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return left;
    };
    for entry in entries.flatten() {
        let dir: PathBuf = entry.path();
        let Ok(stat) = fs::read_to_string(dir.join("stat")) else {
            continue;
        };
        // "PID (COMM) STATE PPID PGRP ...": COMM may hold spaces and parens.
        let Some((_, after)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = after.split_whitespace().collect();
        let (Some(state), Some(pgrp)) = (fields.first(), fields.get(2)) else {
            continue;
        };
        if pgrp.parse::<i32>() != Ok(group) || matches!(*state, "Z" | "X") {
            continue;
        }
        let cmdline = fs::read(dir.join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        left.push(format!(
            "{} {}",
            entry.file_name().to_string_lossy(),
            cmdline.trim()
        ));
    }
    left
}

/// SIGKILL to every process of the group: the test's own clean-up.
fn kill_group(group: i32) {
    // SAFETY: kill(2) with a negative pid signals that process group only;
    // `group` is the id of a group this test created for the run.
    unsafe {
        libc::kill(-group, libc::SIGKILL);
    }
}
