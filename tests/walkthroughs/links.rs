//! The links of a Markdown page: every relative link must name a file of
//! the repository, and a `#fragment` on a page must name one of its
//! headings, as GitHub spells a heading's anchor. A map whose links lead
//! nowhere is worse than none.

use std::path::Path;

/// The targets of the page's inline links (`[text](target)`), outside
/// fenced blocks and code spans, each with its line number.
fn link_targets(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut fenced = false;
    for (number, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        // Code spans may hold `](`: drop them first.
        let prose: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        let mut rest = prose.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            found.push((number + 1, after[..end].trim().to_string()));
            rest = &after[end..];
        }
    }
    found
}

/// A heading's anchor as GitHub makes it: lower case, code marks and
/// punctuation other than `-` and `_` dropped, spaces made `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of the page's headings (outside fenced blocks).
fn anchors(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced && line.starts_with('#') {
            found.push(anchor(line.trim_start_matches('#')));
        }
    }
    found
}

/// Every link of `page` (at `name`, under `root`) that leads nowhere.
pub fn broken_links(root: &Path, name: &Path, text: &str) -> Vec<String> {
    let dir = root
        .join(name)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut broken = Vec::new();
    for (line, target) in link_targets(text) {
        if target.contains("://") || target.starts_with("mailto:") {
            continue; // The web: not this repository's to check offline.
        }
        let (file, fragment) = match target.split_once('#') {
            Some((file, fragment)) => (file, Some(fragment)),
            None => (target.as_str(), None),
        };
        let path = if file.is_empty() {
            root.join(name)
        } else {
            dir.join(file)
        };
        let place = format!("{}:{line}: ({target})", name.display());
        if !path.exists() {
            broken.push(format!("{place}: no such file"));
            continue;
        }
        if let Some(fragment) = fragment {
            let page = std::fs::read_to_string(&path).unwrap_or_default();
            if !anchors(&page).iter().any(|a| a == fragment) {
                broken.push(format!("{place}: no heading with that anchor"));
            }
        }
    }
    broken
}

#[test]
fn a_heading_s_anchor_is_github_s() {
    assert_eq!(anchor(" The journal"), "the-journal");
    assert_eq!(anchor(" Memory and size"), "memory-and-size");
    assert_eq!(anchor(" `ackloop.Peer`"), "acklooppeer");
    assert_eq!(
        anchor(" From Rust, and how it works"),
        "from-rust-and-how-it-works"
    );
}

#[test]
fn links_are_found_outside_code() {
    let page =
        "see [a](a.md) and `[b](b.md)`\n```text\n[c](c.md)\n```\n[d](d.md#x) [e](http://e)\n";
    let targets: Vec<String> = link_targets(page).into_iter().map(|(_, t)| t).collect();
    assert_eq!(targets, ["a.md", "d.md#x", "http://e"]);
}
