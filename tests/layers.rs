//! The source keeps the shape `docs/DESIGN.md` describes: the modules'
//! imports form no cycle (each layer uses only the ones below it), and
//! every invariant number the code cites is defined there.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

mod checkout;
use checkout::repo;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The library's modules by path (`""` is the crate root, `"wasi::p1"`
/// a nested one) with their source, tests cut off. The CLI is a separate
/// crate on top and is left out.
fn modules() -> BTreeMap<String, String> {
    let src = repo().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut out = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(&src).unwrap().with_extension("");
        let mut parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if parts[0] == "cli" || parts == ["main"] {
            continue;
        }
        if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
            parts.pop();
        }
        let text = std::fs::read_to_string(&f).unwrap();
        let text = match text.find("#[cfg(test)]\nmod tests") {
            Some(i) => text[..i].to_string(),
            None => text,
        };
        out.insert(parts.join("::"), text);
    }
    out
}

/// The module a `a::b::c` path (relative to the crate root) lives in.
fn owner<'m>(mods: &'m BTreeMap<String, String>, path: &str) -> Option<&'m str> {
    let segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    (1..=segs.len())
        .rev()
        .map(|n| segs[..n].join("::"))
        .find_map(|m| mods.get_key_value(&m).map(|(k, _)| k.as_str()))
}

fn ident_path(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
        .collect()
}

/// Splits a `{...}` use group's top level at commas.
fn group_items(s: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                items.push(&s[start..i]);
                return items;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items
}

/// Every module path a source text names through `crate::` or `super::`.
fn referenced(module: &str, text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            for item in group_items(group) {
                out.push(ident_path(item.trim()));
            }
        } else {
            out.push(ident_path(rest));
        }
    }
    // `super::x` in module `a::b` (file `a/b.rs` or `a/b/mod.rs`) is `a::x`.
    let parent = module.rsplit_once("::").map_or("", |(p, _)| p);
    for (i, _) in text.match_indices("super::") {
        if text[..i].ends_with("::") || text[..i].ends_with(|c: char| c.is_alphanumeric()) {
            continue;
        }
        let rest = ident_path(&text[i + "super::".len()..]);
        out.push(if parent.is_empty() {
            rest
        } else {
            format!("{parent}::{rest}")
        });
    }
    out
}

fn related(a: &str, b: &str) -> bool {
    a.is_empty()
        || b.is_empty()
        || a == b
        || a.starts_with(&format!("{b}::"))
        || b.starts_with(&format!("{a}::"))
}

#[test]
fn module_imports_have_no_cycle() {
    let mods = modules();
    let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (m, text) in &mods {
        let set = edges.entry(m.as_str()).or_default();
        for r in referenced(m, text) {
            if let Some(t) = owner(&mods, &r)
                && !related(m, t)
            {
                set.insert(t);
            }
        }
    }
    // Depth-first search for a back edge; report the cycle it closes.
    fn visit<'a>(
        m: &'a str,
        edges: &BTreeMap<&'a str, BTreeSet<&'a str>>,
        state: &mut BTreeMap<&'a str, u8>,
        stack: &mut Vec<&'a str>,
    ) -> Option<Vec<&'a str>> {
        state.insert(m, 1);
        stack.push(m);
        for &t in &edges[m] {
            match state.get(t) {
                Some(1) => {
                    let at = stack.iter().position(|&s| s == t).unwrap();
                    let mut cycle = stack[at..].to_vec();
                    cycle.push(t);
                    return Some(cycle);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(t, edges, state, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        state.insert(m, 2);
        None
    }
    let mut state = BTreeMap::new();
    for &m in edges.keys() {
        if !state.contains_key(m) {
            let cycle = visit(m, &edges, &mut state, &mut Vec::new());
            assert!(
                cycle.is_none(),
                "import cycle: {}",
                cycle.unwrap().join(" -> ")
            );
        }
    }
    // The check sees real edges (a parser that finds none proves nothing).
    assert!(edges["vfs"].contains("tree"), "{edges:?}");
    assert!(edges["tree::inode"].contains("content"), "{edges:?}");
}

/// Numbers cited as "invariant 4" or "invariants 1, 2 and 5".
fn cited_numbers(text: &str) -> BTreeSet<u32> {
    let mut out = BTreeSet::new();
    let lower = text.to_lowercase();
    for (i, w) in lower.match_indices("invariant") {
        let rest = &lower[i + w.len()..];
        let rest = rest.strip_prefix('s').unwrap_or(rest);
        if !rest.starts_with(' ') {
            continue;
        }
        let mut tail = rest.trim_start();
        loop {
            let digits: String = tail.chars().take_while(char::is_ascii_digit).collect();
            if digits.is_empty() {
                break;
            }
            out.insert(digits.parse().unwrap());
            tail = &tail[digits.len()..];
            let t = tail.trim_start_matches([',', ' ']);
            tail = t
                .strip_prefix("and ")
                .or_else(|| t.strip_prefix("or "))
                .unwrap_or(t);
        }
    }
    out
}

#[test]
fn every_cited_invariant_is_in_the_design_document() {
    let root = repo();
    let design = std::fs::read_to_string(root.join("docs/DESIGN.md")).unwrap();
    let section = design
        .split("\n## Invariants")
        .nth(1)
        .expect("docs/DESIGN.md has an Invariants section");
    let section = section.split("\n## ").next().unwrap();
    let defined: BTreeSet<u32> = section
        .lines()
        .filter_map(|l| l.split_once(". ").and_then(|(n, _)| n.parse().ok()))
        .collect();
    assert!(defined.len() >= 6, "{defined:?}");
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    let mut cited = BTreeSet::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for n in cited_numbers(&text) {
            assert!(
                defined.contains(&n),
                "{} cites invariant {n}, which docs/DESIGN.md does not define",
                f.display()
            );
            cited.insert(n);
        }
    }
    assert!(!cited.is_empty(), "the code cites no invariant at all");
}

#[test]
fn citation_parser_reads_lists() {
    assert_eq!(
        cited_numbers("Checks invariants 1, 2, 4 and 6; see invariant 5."),
        BTreeSet::from([1, 2, 4, 5, 6])
    );
    assert!(cited_numbers("the invariants hold").is_empty());
}
