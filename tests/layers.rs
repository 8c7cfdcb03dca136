//! The source files depend on each other one way (issue 24, STYLE 12): no
//! file of `src/` imports another that, directly or through others, imports
//! it back. A reader goes down the files, never back up.
//!
//! "Imports" here is what a reader follows: a `crate::…`, `super::…` or
//! `self::…` path in the code (a `use` or inline), resolved to the file of
//! the longest module it names; and a parent's use of a child module it
//! declares (`mod child;` and then `child::…`, re-exports included). Unit
//! tests (`#[cfg(test)] mod tests` at the end of a file) are left out: they
//! may look anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

type Module = Vec<String>;

/// Every `.rs` file under `dir`, by the module path it defines.
fn modules(src: &Path) -> BTreeMap<Module, PathBuf> {
    let mut found = BTreeMap::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|ext| ext != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap().with_extension("");
            let mut module: Module = rel
                .iter()
                .map(|part| part.to_string_lossy().into_owned())
                .collect();
            if module.last().is_some_and(|last| last == "mod") {
                module.pop();
            }
            if module == ["lib"] || module == ["main"] {
                module.clear();
            }
            found.insert(module, path);
        }
    }
    found
}

/// The code of a file without its unit tests and comments.
fn code(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap();
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => &text[..],
    };
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every path in `code` that starts with `crate`, `super` or `self`, as its
/// segments, with `use` groups (`a::{b, c::d}`) expanded one level.
fn paths(code: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let bytes: Vec<char> = code.chars().collect();
    let mut at = 0;
    while at < bytes.len() {
        let starts_word = at == 0 || !is_ident(bytes[at - 1]);
        let rest: String = bytes[at..].iter().take(7).collect();
        if !(starts_word
            && (rest.starts_with("crate::")
                || rest.starts_with("super:")
                || rest.starts_with("self::")))
        {
            at += 1;
            continue;
        }
        // Read `seg::seg::…`, stopping at a group or anything else.
        let mut segments = Vec::new();
        let mut word = String::new();
        while at < bytes.len() {
            let c = bytes[at];
            if is_ident(c) {
                word.push(c);
                at += 1;
            } else if c == ':' && bytes.get(at + 1) == Some(&':') {
                segments.push(std::mem::take(&mut word));
                at += 2;
            } else {
                break;
            }
        }
        if !word.is_empty() {
            segments.push(word);
        }
        if bytes.get(at) == Some(&'{') {
            let end = bytes[at..].iter().position(|&c| c == '}').unwrap_or(0) + at;
            let group: String = bytes[at + 1..end].iter().collect();
            for item in group.split(',') {
                let item = item.split_whitespace().next().unwrap_or("");
                if item.is_empty() || item == "self" {
                    found.push(segments.clone());
                    continue;
                }
                let mut full = segments.clone();
                full.extend(item.split("::").map(str::to_owned));
                found.push(full);
            }
            at = end;
        } else {
            found.push(segments);
        }
    }
    found
}

/// The modules each module imports.
fn imports(files: &BTreeMap<Module, PathBuf>) -> BTreeMap<Module, BTreeSet<Module>> {
    let resolve = |segments: &[String]| -> Option<Module> {
        (1..=segments.len())
            .rev()
            .map(|n| segments[..n].to_vec())
            .find(|module| files.contains_key(module))
    };
    let mut graph = BTreeMap::new();
    for (module, path) in files {
        let code = code(path);
        let mut targets = BTreeSet::new();
        for segments in paths(&code) {
            let absolute: Vec<String> = match segments[0].as_str() {
                "crate" => segments[1..].to_vec(),
                "self" => module.iter().chain(&segments[1..]).cloned().collect(),
                _ => {
                    let ups = segments.iter().take_while(|s| *s == "super").count();
                    let base = &module[..module.len().saturating_sub(ups)];
                    base.iter().chain(&segments[ups..]).cloned().collect()
                }
            };
            if let Some(target) = resolve(&absolute).filter(|t| t != module) {
                targets.insert(target);
            }
        }
        // A child used by its bare name after `mod child;`.
        for line in code.lines() {
            let line = line.trim();
            let Some(decl) = line.strip_suffix(';') else {
                continue;
            };
            let Some(name) = decl.split_whitespace().last() else {
                continue;
            };
            if !decl.split_whitespace().any(|w| w == "mod") {
                continue;
            }
            let child: Module = module.iter().cloned().chain([name.to_owned()]).collect();
            let used = code
                .match_indices(&format!("{name}::"))
                .any(|(at, _)| at == 0 || !code[..at].ends_with(is_ident));
            if files.contains_key(&child) && used {
                targets.insert(child);
            }
        }
        graph.insert(module.clone(), targets);
    }
    graph
}

/// A circle through `start`, if there is one: the modules in order.
fn circle_through(
    graph: &BTreeMap<Module, BTreeSet<Module>>,
    start: &Module,
) -> Option<Vec<Module>> {
    let mut stack = vec![(start.clone(), vec![start.clone()])];
    let mut seen = BTreeSet::new();
    while let Some((module, trail)) = stack.pop() {
        for next in &graph[&module] {
            if next == start {
                return Some(trail);
            }
            if seen.insert(next.clone()) {
                let mut longer = trail.clone();
                longer.push(next.clone());
                stack.push((next.clone(), longer));
            }
        }
    }
    None
}

fn circles(src: &Path) -> Vec<String> {
    let graph = imports(&modules(src));
    let name = |module: &Module| match module.join("/") {
        top if top.is_empty() => "lib".to_owned(),
        path => path,
    };
    let mut found: Vec<String> = graph
        .keys()
        .filter_map(|module| circle_through(&graph, module))
        .map(|trail| {
            let mut names: Vec<String> = trail.iter().map(name).collect();
            names.push(names[0].clone());
            names.join(" -> ")
        })
        .collect();
    found.dedup();
    found
}

#[test]
fn no_source_file_imports_one_that_imports_it_back() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = circles(&src);
    assert!(
        found.is_empty(),
        "circles of imports in src/:\n{}",
        found.join("\n")
    );
}

/// The check itself finds a circle: a child that imports what its parent
/// defines, while the parent uses the child; and one through a sibling.
#[test]
fn the_circle_check_finds_circles() {
    let dir = tempfile::tempdir().unwrap();
    let write = |rel: &str, text: &str| {
        let path = dir.path().join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    };
    write("lib.rs", "pub mod a;\npub mod b;\n");
    write("a/mod.rs", "mod child;\npub use child::X;\npub struct Y;\n");
    write("a/child.rs", "use super::Y;\npub struct X;\n");
    write("b/mod.rs", "mod one;\nmod two;\n");
    write("b/one.rs", "use crate::b::two::{T, self};\npub struct O;\n");
    write("b/two.rs", "pub struct T(crate::b::one::O);\n");
    let found = circles(dir.path());
    assert!(found.iter().any(|c| c.contains("a/child")), "{found:?}");
    assert!(
        found
            .iter()
            .any(|c| c.contains("b/one") && c.contains("b/two")),
        "{found:?}"
    );
    // And no circle where the imports go one way.
    write("a/child.rs", "pub struct X;\n");
    write("b/two.rs", "pub struct T;\n");
    assert_eq!(circles(dir.path()), Vec::<String>::new());
}
