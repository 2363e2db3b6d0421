//! Arrows point down: no import circle among the crate's modules. Each
//! source file under `src/` is a module; a `crate::a::b::C` path in it
//! (a `use` line or inline, outside its `#[cfg(test)] mod tests`) is an
//! arrow to the deepest module file the path names (`src/a/b.rs`, else
//! `src/a.rs`). A module's arrows to its own parent or children do not
//! count: they are one room.
//!
//! No circle anywhere in the crate (issue 20 named three; they are
//! gone), and the relay is a peer of the handlers: neither `tcp` nor
//! `udp` points at any of the relay's rooms. Every circle found is
//! printed with its arrows, so a failure shows what ties it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every module file under `src/`, as `a/b` for `src/a/b.rs` or
/// `src/a/b/mod.rs`, with its text.
fn modules(dir: &Path, prefix: &str, found: &mut BTreeMap<String, String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            modules(&path, &format!("{prefix}{name}/"), found);
        } else if let Some(stem) = name.strip_suffix(".rs") {
            let module = match stem {
                "mod" => prefix.trim_end_matches('/').to_string(),
                _ => format!("{prefix}{stem}"),
            };
            found.insert(module, std::fs::read_to_string(&path).unwrap());
        }
    }
}

/// The module text's code: its unit tests and line comments cut.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    let lines = text.lines().map(|line| match line.find("//") {
        Some(at) => &line[..at],
        None => line,
    });
    lines.collect::<Vec<_>>().join("\n")
}

/// The paths `crate::...` in `code` names, each as its segments
/// (`crate::a::{b::C, d}` names `a::b::C` and `a::d`).
fn paths(code: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        let end = rest
            .find([';', ')', '=', '<', '>', '('])
            .unwrap_or(rest.len());
        let path = &rest[..end];
        let (head, group) = match path.find('{') {
            Some(brace) => (&path[..brace], Some(&path[brace + 1..])),
            None => (path, None),
        };
        let segments = |s: &str| -> Vec<String> {
            let words = s
                .split("::")
                .map(|w| w.trim().split(' ').next().unwrap_or(""));
            words
                .take_while(|w| !w.is_empty() && w.chars().all(|c| c.is_alphanumeric() || c == '_'))
                .map(String::from)
                .collect()
        };
        let head = segments(head);
        found.push(head.clone());
        for item in group.into_iter().flat_map(|g| g.split([',', '{', '}'])) {
            let mut path = head.clone();
            path.extend(segments(item));
            found.push(path);
        }
    }
    found
}

/// The arrows between modules.
fn arrows(modules: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let mut arrows = BTreeMap::new();
    for (module, text) in modules {
        let from = module.as_str();
        if from == "lib" || from == "main" || from.split('/').any(|part| part == "tests") {
            continue;
        }
        let targets: &mut BTreeSet<String> = arrows.entry(module.clone()).or_default();
        for path in paths(&code(text)) {
            let deepest = (1..=path.len()).rev().map(|n| path[..n].join("/"));
            let Some(to) = deepest.into_iter().find(|m| modules.contains_key(m)) else {
                continue;
            };
            let family = |a: &str, b: &str| a == b || a.starts_with(&format!("{b}/"));
            if !family(&to, from) && !family(from, &to) {
                targets.insert(to);
            }
        }
    }
    arrows
}

/// The strongly connected components of more than one module (Tarjan).
fn circles(arrows: &BTreeMap<String, BTreeSet<String>>) -> Vec<BTreeSet<String>> {
    struct Search<'a> {
        arrows: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        found: Vec<BTreeSet<String>>,
    }
    impl<'a> Search<'a> {
        fn visit(&mut self, v: &'a str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            for w in self.arrows.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.stack.contains(&w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut circle = BTreeSet::new();
                while let Some(w) = self.stack.pop() {
                    circle.insert(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if circle.len() > 1 {
                    self.found.push(circle);
                }
            }
        }
    }
    let mut search = Search {
        arrows,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for v in arrows.keys() {
        if !search.index.contains_key(v.as_str()) {
            search.visit(v);
        }
    }
    search.found
}

#[test]
fn no_import_circle_and_the_handlers_import_no_relay() {
    let mut found = BTreeMap::new();
    modules(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        "",
        &mut found,
    );
    let arrows = arrows(&found);
    let circles = circles(&arrows);
    for circle in &circles {
        println!("circle: {circle:?}");
        for module in circle {
            let inside: Vec<&String> = arrows[module]
                .iter()
                .filter(|m| circle.contains(*m))
                .collect();
            println!("    {module} -> {inside:?}");
        }
    }
    assert!(circles.is_empty(), "import circles: {circles:?}");
    // The handlers' own rooms point at none of the relay's.
    let handlers = (arrows.keys()).filter(|m| {
        let top = m.split('/').next().unwrap_or("");
        top == "tcp" || top == "udp"
    });
    for module in handlers {
        let up: Vec<_> = arrows[module]
            .iter()
            .filter(|m| m.starts_with("relay"))
            .collect();
        assert!(up.is_empty(), "{module} imports {up:?}");
    }
    assert!(
        arrows["relay/flows"].contains("udp"),
        "the relay's flows use udp"
    );
}
