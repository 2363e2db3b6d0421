//! Every shell walkthrough of README.md and docs/*.md, run as a new user
//! would paste it, twice in a row.
//!
//! A walkthrough is a ```` ```sh walkthrough ```` block; the
//! ```` ```text output ```` block after it holds the lines it promises,
//! `...` standing for text that varies (a port, a time). Each is run with
//! `bash` in a fresh temporary directory, with the binary under test on
//! `PATH` as `ackloop` (the one `cargo test` built), in a process group
//! of its own, within a time limit; then again in the same directory, as
//! a second paste would. A run fails when a promised line is missing (in
//! order, in stdout and stderr together, as a terminal shows them), when
//! it outlives the time limit, or when anything it started is still
//! running once it ends: a server it did not stop would make the next
//! paste fail ("Address already in use"), and a command sent before the
//! server was ready shows as a missing line. Every other shell block must
//! be marked ```` ```sh reference ```` (commands for a clone: builds,
//! benchmarks that take minutes), so none is left unchecked by mistake.
//!
//! Why not a crate: `trycmd` (and `snapbox` under it) runs each `$ ` line
//! as one program with no shell, so no pipes, no `&`, no variables: a
//! walkthrough that starts a server in the background, reads its address
//! lines and stops it cannot be written for it, and it has no notion of a
//! process left behind. `mdbook test` runs only Rust blocks, and `skeptic`
//! compiles Rust blocks too. What is needed here is small: find the
//! blocks, run bash in a process group, compare lines with `...`, and
//! look in `/proc` for the group's survivors.
//!
//! The walkthroughs run in parallel (each on ports the OS picks), so the
//! whole test takes about as long as the slowest one twice.
//!
//! Needs bash, `nc` (OpenBSD's), `curl` and `python3`, as the
//! walkthroughs do; `.ci/run` installs them.
//!
//! The same pages' links are checked here too ([`links`]): each relative
//! link names a file, each `#fragment` a heading.

#![cfg(target_os = "linux")]

mod blocks;
mod links;
mod run;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use blocks::{Walkthrough, first_missing, walkthroughs};

/// The pages: README.md and every Markdown file of docs/.
fn pages() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut pages = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .map(|entry| entry.expect("docs/ entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

/// Every walkthrough of every page; panics listing every marking mistake.
fn all_walkthroughs() -> Vec<Walkthrough> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut found = Vec::new();
    let mut mistakes = Vec::new();
    for page in pages() {
        let text = std::fs::read_to_string(&page).expect("read a page");
        let name = page.strip_prefix(root).unwrap_or(&page);
        match walkthroughs(name, &text) {
            Ok(mut some) => found.append(&mut some),
            Err(mut wrong) => mistakes.append(&mut wrong),
        }
    }
    assert!(mistakes.is_empty(), "{}", mistakes.join("\n"));
    found
}

/// Panics naming the programs the walkthroughs use that are not installed.
fn programs_installed() {
    let missing: Vec<&str> = ["bash", "nc", "curl", "python3"]
        .into_iter()
        .filter(|program| {
            Command::new("sh")
                .args(["-c", &format!("command -v {program}")])
                .stdout(Stdio::null())
                .status()
                .map_or(true, |status| !status.success())
        })
        .collect();
    assert!(
        missing.is_empty(),
        "the walkthroughs need {missing:?}: apt-get install netcat-openbsd curl python3 (.ci/run does)"
    );
}

#[test]
fn every_link_resolves() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut broken = Vec::new();
    for page in pages() {
        let text = std::fs::read_to_string(&page).expect("read a page");
        let name = page.strip_prefix(root).unwrap_or(&page);
        broken.extend(links::broken_links(root, name, &text));
    }
    assert!(
        broken.is_empty(),
        "links that lead nowhere:\n{}",
        broken.join("\n")
    );
}

#[test]
fn every_shell_block_is_marked() {
    let found = all_walkthroughs();
    assert!(found.len() >= 5, "only {} walkthroughs found", found.len());
}

/// Runs `walkthrough` twice in one fresh directory; the problems found.
fn paste_twice(walkthrough: &Walkthrough, index: usize, bin_dir: &Path) -> Vec<String> {
    let tmp = std::env::temp_dir().join(format!(
        "ackloop-walkthrough-{}-{index}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    let work = tmp.join("work");
    let mut problems = Vec::new();
    for paste in 1..=2 {
        let name = format!("paste{paste}");
        let outcome = run::run(&walkthrough.script, &work, &tmp, bin_dir, &name);
        let mut wrong = outcome.problems;
        if let Some(line) = first_missing(&walkthrough.expected, &outcome.output) {
            wrong.push(format!("did not print a line like {line:?}"));
        }
        eprintln!(
            "{} (paste {paste}): {:.1} s{}",
            walkthrough.place,
            outcome.took.as_secs_f64(),
            if wrong.is_empty() { "" } else { ", FAILED" }
        );
        if !wrong.is_empty() {
            problems.push(format!(
                "{} (paste {paste}): {}\n--- its output:\n{}---",
                walkthrough.place,
                wrong.join("; "),
                outcome.output
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
    problems
}

#[test]
fn every_walkthrough_runs_twice_and_stops_what_it_started() {
    programs_installed();
    let found = all_walkthroughs();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_ackloop"))
        .parent()
        .expect("the binary's directory")
        .to_path_buf();
    let started = Instant::now();
    let problems: Vec<String> = std::thread::scope(|scope| {
        let runs: Vec<_> = found
            .iter()
            .enumerate()
            .map(|(index, walkthrough)| {
                let bin_dir = &bin_dir;
                scope.spawn(move || paste_twice(walkthrough, index, bin_dir))
            })
            .collect();
        runs.into_iter()
            .flat_map(|run| run.join().expect("a walkthrough's thread"))
            .collect()
    });
    eprintln!(
        "{} walkthroughs, each pasted twice, in {:.1} s",
        found.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}
