//! The walkthroughs of a Markdown page: its fenced blocks, the rule that
//! every shell block says whether it runs, and the matching of a run's
//! output against the lines the page promises.

use std::path::Path;

/// One shell walkthrough: a ```` ```sh walkthrough ```` block and the
/// ```` ```text output ```` block after it.
#[derive(Debug, Clone)]
pub struct Walkthrough {
    /// `docs/faults.md:42`: where the block starts, for messages.
    pub place: String,
    /// The block's lines, as a user would paste them.
    pub script: String,
    /// The output block's non-blank lines, in order.
    pub expected: Vec<String>,
}

/// A fenced block: its info string's words, its first line's number, its text.
struct Fence {
    words: Vec<String>,
    line: usize,
    text: String,
}

/// The languages taken for shell: each such block must be marked.
const SHELL: [&str; 4] = ["sh", "bash", "shell", "console"];

/// The walkthroughs of `text` (the page at `name`), or every mistake in
/// marking them: a shell block marked neither `walkthrough` nor
/// `reference`, or a walkthrough without an `output` block right after it.
pub fn walkthroughs(name: &Path, text: &str) -> Result<Vec<Walkthrough>, Vec<String>> {
    let fences = fences(text);
    let mut found = Vec::new();
    let mut mistakes = Vec::new();
    for (index, fence) in fences.iter().enumerate() {
        let place = format!("{}:{}", name.display(), fence.line);
        let is_shell = fence
            .words
            .first()
            .is_some_and(|lang| SHELL.contains(&lang.as_str()));
        let marked = |word: &str| fence.words.iter().any(|w| w == word);
        if !is_shell {
            continue;
        }
        if marked("reference") {
            continue;
        }
        if !marked("walkthrough") {
            mistakes.push(format!(
                "{place}: a shell block is marked `sh walkthrough` (run by tests/walkthroughs) \
                 or `sh reference` (commands for a clone, not run here)"
            ));
            continue;
        }
        match fences.get(index + 1) {
            Some(next) if next.words.iter().any(|w| w == "output") => found.push(Walkthrough {
                place,
                script: fence.text.clone(),
                expected: next
                    .text
                    .lines()
                    .map(|line| line.trim_end().to_string())
                    .filter(|line| !line.is_empty())
                    .collect(),
            }),
            _ => mistakes.push(format!(
                "{place}: a walkthrough is followed by a ```text output block: the lines it promises"
            )),
        }
    }
    if mistakes.is_empty() {
        Ok(found)
    } else {
        Err(mistakes)
    }
}

/// Every fenced block of `text` (backtick fences; a closing fence is a line
/// of backticks at least as long as the opening one, with nothing after).
fn fences(text: &str) -> Vec<Fence> {
    let mut fences = Vec::new();
    let mut open: Option<(usize, Fence)> = None;
    for (number, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let ticks = trimmed.chars().take_while(|&c| c == '`').count();
        match open.take() {
            None if ticks >= 3 => {
                let words = trimmed[ticks..]
                    .split_whitespace()
                    .map(str::to_string)
                    .collect();
                let fence = Fence {
                    words,
                    line: number + 1,
                    text: String::new(),
                };
                open = Some((ticks, fence));
            }
            None => {}
            Some((width, fence)) if ticks >= width && trimmed[ticks..].trim().is_empty() => {
                fences.push(fence);
            }
            Some((width, mut fence)) => {
                fence.text.push_str(line);
                fence.text.push('\n');
                open = Some((width, fence));
            }
        }
    }
    fences
}

/// Whether `line` fits `pattern`, where each `...` stands for any text
/// (none included) and the rest must match exactly.
pub fn fits(pattern: &str, line: &str) -> bool {
    let parts: Vec<&str> = pattern.split("...").collect();
    let (first, rest) = parts.split_first().expect("split gives one part at least");
    let Some(mut tail) = line.strip_prefix(first) else {
        return false;
    };
    let Some((last, middle)) = rest.split_last() else {
        return tail.is_empty();
    };
    for part in middle {
        match tail.find(part) {
            Some(at) => tail = &tail[at + part.len()..],
            None => return false,
        }
    }
    tail.len() >= last.len() && tail.ends_with(last)
}

/// The first expected line that does not appear in `output`, in order
/// (each matched against a later output line than the one before).
pub fn first_missing<'a>(expected: &'a [String], output: &str) -> Option<&'a str> {
    let mut lines = output.lines().map(str::trim_end);
    expected
        .iter()
        .find(|pattern| !lines.any(|line| fits(pattern, line)))
        .map(String::as_str)
}

#[test]
fn an_ellipsis_stands_for_any_text() {
    assert!(fits(
        "serving tcp 127.0.0.1:..., udp ...",
        "serving tcp 127.0.0.1:4000, udp x"
    ));
    assert!(fits("a...b...c", "abc"));
    assert!(fits("...", ""));
    assert!(!fits("a...b", "ab x"));
    assert!(!fits("ping 1", "ping 10"));
    assert!(fits("took ... s", "took 2.61 s"));
    assert!(!fits("x...x", "x"));
}

#[test]
fn expected_lines_appear_in_order() {
    let expected = vec!["one".to_string(), "two".to_string()];
    assert_eq!(first_missing(&expected, "zero\none\nlog\ntwo\n"), None);
    assert_eq!(first_missing(&expected, "two\none\n"), Some("two"));
}

#[test]
fn an_unmarked_shell_block_is_a_mistake() {
    let page = "```sh\nls\n```\n\n```sh walkthrough\nls\n```\n\n```sh walkthrough\necho hi\n```\n```text output\nhi\n```\n";
    let mistakes = walkthroughs(Path::new("p.md"), page).unwrap_err();
    assert_eq!(mistakes.len(), 2, "{mistakes:?}");
    assert!(mistakes[0].starts_with("p.md:1:"));
    assert!(mistakes[1].starts_with("p.md:5:"));
    let good = "```sh walkthrough\necho hi\n```\n\nprints\n\n```text output\nhi\n\n```\n";
    let found = walkthroughs(Path::new("p.md"), good).unwrap();
    assert_eq!(found[0].expected, vec!["hi"]);
    assert_eq!(found[0].script, "echo hi\n");
}
