//! The shipped text: the README is a five-minute read with install on its
//! first screen, every page of docs/ the README promises is there, every
//! link between them leads somewhere, nothing shipped (README, docs, man
//! page, `--help`) cites what a reader cannot open, one install prefix is
//! used throughout, and the performance page is the bench's own output,
//! judged by the bench's own budgets.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The budgets and the page generator, the same files `cargo xtask bench` runs.
#[allow(dead_code)]
#[path = "../xtask/src/bench/budgets.rs"]
mod budgets;
#[allow(dead_code)]
#[path = "../xtask/src/bench/page.rs"]
mod page;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The README and every page of docs/, as paths from the root.
fn pages() -> Vec<String> {
    let mut pages: Vec<String> = fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md"))
        .map(|n| format!("docs/{n}"))
        .collect();
    pages.sort();
    pages.insert(0, "README.md".to_owned());
    pages
}

// ---- The README ----

#[test]
fn readme_is_a_five_minute_read_in_a_device_users_order() {
    let readme = read("README.md");
    let lines: Vec<&str> = readme.lines().collect();
    assert!(
        lines.len() <= 300,
        "README.md has {} lines; at most 300",
        lines.len()
    );
    let at = |heading: &str| {
        lines
            .iter()
            .position(|l| l.starts_with(heading))
            .unwrap_or_else(|| panic!("README.md: no {heading:?} heading"))
    };
    let order = [
        "## Why not",
        "## Install",
        "## Use",
        "## Node and Python",
        "## More",
    ];
    let places: Vec<usize> = order.iter().map(|h| at(h)).collect();
    assert!(
        places.windows(2).all(|w| w[0] < w[1]),
        "README.md's sections are not in the order {order:?}: {places:?}"
    );
    // Install on the first screen, npm and pip first; troubleshooting one
    // click away.
    let first_screen = lines[..lines.len().min(60)].join("\n");
    let npm = first_screen.find("npm install resin-lock");
    let pip = first_screen.find("pip install resin-lock");
    assert!(
        npm.is_some() && pip.is_some(),
        "npm and pip install are not on the README's first screen"
    );
    let install = first_screen.find("## Install").unwrap();
    let install_section = &first_screen[install..];
    let first_command = install_section
        .lines()
        .find(|l| l.starts_with("    "))
        .unwrap_or("");
    assert!(
        first_command.contains("npm install resin-lock"),
        "the install section starts with {first_command:?}, not npm install"
    );
    assert!(
        first_screen.contains("](docs/troubleshooting.md)"),
        "no link to troubleshooting on the README's first screen"
    );
    for use_ in [
        "resin-lock run --",
        "resin-lock acquire",
        "resin-lock status",
    ] {
        assert!(readme.contains(use_), "README.md: no example of {use_:?}");
    }
    for api in ["withLock(", "resin_lock.lock("] {
        assert!(readme.contains(api), "README.md: no {api} example");
    }
}

#[test]
fn the_docs_pages_are_there() {
    for page in [
        "docs/README.md",
        "docs/recipes.md",
        "docs/locations.md",
        "docs/troubleshooting.md",
        "docs/platform.md",
        "docs/how-it-works.md",
        "docs/performance.md",
        "docs/development.md",
    ] {
        assert!(root().join(page).is_file(), "{page} is missing");
        assert!(
            read("README.md").contains(&format!("]({page})"))
                || read("docs/README.md").contains(&format!("]({})", &page["docs/".len()..])),
            "{page} is linked from neither README.md nor docs/README.md"
        );
    }
    let development = read("docs/development.md");
    for topic in [
        "cargo test",
        "RESIN_LOCK_TEST_BIN",
        "qemu-user",
        "cargo xtask bench",
    ] {
        assert!(
            development.contains(topic),
            "docs/development.md says nothing of {topic}"
        );
    }
}

// ---- Links ----

/// A heading's anchor as GitHub makes it.
fn slug(heading: &str) -> String {
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

/// The anchors of a Markdown page (outside code blocks).
fn anchors(text: &str) -> BTreeSet<String> {
    let mut in_code = false;
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            out.insert(slug(line.trim_start_matches('#')));
        }
    }
    out
}

/// The targets of the Markdown links of a page (outside code).
fn links(text: &str) -> Vec<String> {
    let mut in_code = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code || line.starts_with("    ") {
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find("](") {
            rest = &rest[i + 2..];
            if let Some(end) = rest.find(')') {
                out.push(rest[..end].to_owned());
                rest = &rest[end..];
            }
        }
    }
    out
}

#[test]
fn every_link_between_the_pages_leads_somewhere() {
    let mut broken = Vec::new();
    for page in pages() {
        let text = read(&page);
        let dir = Path::new(&page).parent().unwrap().to_owned();
        for link in links(&text) {
            if link.starts_with("http://") || link.starts_with("https://") {
                continue; // checked by the shipped-text test
            }
            let (file, anchor) = match link.split_once('#') {
                Some((f, a)) => (f.to_owned(), Some(a.to_owned())),
                None => (link.clone(), None),
            };
            let target: PathBuf = if file.is_empty() {
                PathBuf::from(&page)
            } else {
                normalize(&dir.join(&file))
            };
            let rel = target.to_string_lossy().into_owned();
            let full = root().join(&target);
            if !full.exists() {
                broken.push(format!("{page}: {link}: no {rel}"));
                continue;
            }
            if let Some(anchor) = anchor {
                let target_text = fs::read_to_string(&full).unwrap_or_default();
                if !anchors(&target_text).contains(&anchor) {
                    broken.push(format!("{page}: {link}: no heading #{anchor} in {rel}"));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// `a/../b` as `b`, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

// ---- What ships cites nothing a reader cannot open ----

/// The shipped text: the README, docs/, the man page, and `--help` of the
/// binary and of each of its commands.
fn shipped() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = pages()
        .into_iter()
        .filter(|p| p.ends_with(".md"))
        .map(|p| {
            let text = read(&p);
            (p, text)
        })
        .collect();
    out.push(("man/resin-lock.1".to_owned(), read("man/resin-lock.1")));
    let help = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_resin-lock"))
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let top = help(&["--help"]);
    let commands: Vec<String> = top
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .filter(|c| c != "help")
        .collect();
    assert!(commands.len() >= 5, "no commands found in --help: {top}");
    out.push(("resin-lock --help".to_owned(), top));
    for command in commands {
        let text = help(&[&command, "--help"]);
        out.push((format!("resin-lock {command} --help"), text));
    }
    out
}

/// URLs the project owns, or that are no URL on the internet.
const OWN_URLS: &[&str] = &[
    "https://github.com/resin-lock/resin-lock",
    "http://127.0.0.1",
    "http://localhost",
];

/// What in `text` a reader cannot follow: our contract's sections, our
/// issue numbers, URLs of others. An issue of an upstream project (named
/// just before it: `balena-supervisor issue 2541`, `balena-os/balena-engine#65`)
/// is fine.
fn uncitable(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let lower = text.to_lowercase();
    for word in [
        "spec ",
        "spec.md",
        "the contract",
        "section 9",
        "section 4",
        "section 8",
    ] {
        if let Some(i) = lower.find(word) {
            found.push(context(text, i));
        }
    }
    for (i, _) in lower.match_indices("issue") {
        let after = lower[i..]
            .trim_start_matches("issues")
            .trim_start_matches("issue");
        let after = after.trim_start_matches([' ', '#']);
        if !after.starts_with(|c: char| c.is_ascii_digit()) {
            continue;
        }
        let before = &lower[i.saturating_sub(24)..i];
        if !(before.contains("supervisor") || before.contains("balena") || before.contains('/')) {
            found.push(context(text, i));
        }
    }
    for scheme in ["http://", "https://"] {
        for (i, _) in text.match_indices(scheme) {
            if !OWN_URLS.iter().any(|own| text[i..].starts_with(own)) {
                found.push(context(text, i));
            }
        }
    }
    found
}

fn context(text: &str, i: usize) -> String {
    let start = text[..i].char_indices().rev().nth(30).map_or(0, |(j, _)| j);
    let end = text[i..]
        .char_indices()
        .nth(50)
        .map_or(text.len(), |(j, _)| i + j);
    text[start..end].replace('\n', " ")
}

#[test]
fn shipped_text_cites_no_contract_section_no_issue_of_ours_and_no_url_of_others() {
    let mut found = Vec::new();
    for (what, text) in shipped() {
        for hit in uncitable(&text) {
            found.push(format!("{what}: …{hit}…"));
        }
    }
    assert!(
        found.is_empty(),
        "cites what a reader cannot open:\n{}",
        found.join("\n")
    );
}

/// The check above would see what it is for.
#[test]
fn the_citation_check_finds_what_it_looks_for() {
    for bad in [
        "the budgets (section 9 of the project's contract)",
        "see SPEC 4e",
        "after issue 24 landed",
        "curl -sSf https://sh.rustup.rs | sh",
    ] {
        assert!(!uncitable(bad).is_empty(), "{bad:?} passed");
    }
    for good in [
        "(balena-supervisor issue 2541)",
        "(balena-os/balena-engine#65)",
        "git clone https://github.com/resin-lock/resin-lock",
        "`http://127.0.0.1:48484`",
        "the issue is the lock",
    ] {
        assert!(
            uncitable(good).is_empty(),
            "{good:?} failed: {:?}",
            uncitable(good)
        );
    }
}

#[test]
fn one_install_prefix_throughout() {
    let mut found = Vec::new();
    for page in pages() {
        for (n, line) in read(&page).lines().enumerate() {
            let installs = line.contains("install -D") || line.contains("COPY --from=");
            if installs && !line.contains("/usr/local/") {
                found.push(format!("{page}:{}: {line}", n + 1));
            }
            // resin-lock's own files under /usr/share (its man page, its
            // completions); the system's zoneinfo is not ours.
            let ours_in_share = [
                "/usr/share/man",
                "/usr/share/bash-completion",
                "/usr/share/zsh",
                "/usr/share/fish",
            ]
            .iter()
            .any(|dir| line.contains(dir));
            if ours_in_share || line.contains("/usr/bin/resin-lock") {
                found.push(format!("{page}:{}: {line}", n + 1));
            }
        }
    }
    assert!(
        found.is_empty(),
        "an install outside /usr/local:\n{}",
        found.join("\n")
    );
}

// ---- The performance page ----

fn results() -> page::Results {
    page::Results::from_json(&read(page::RESULTS))
        .unwrap_or_else(|e| panic!("{}: {e}", page::RESULTS))
}

/// The page's tables are what the generator makes of the committed results
/// with the bench's budgets: a changed budget, a hand-edited number or a
/// verdict that disagrees with its budget shows here.
#[test]
fn the_performance_page_is_the_bench_runs_output() {
    let text = read(page::PAGE);
    if let Err(e) = page::check(&text, &results()) {
        panic!("{e}");
    }
}

/// The budgets table shows every budget of `budgets.rs` with its limit,
/// and a verdict that follows from the run's values.
#[test]
fn the_performance_pages_budgets_are_the_benchs() {
    let text = read(page::PAGE);
    let results = results();
    let table: Vec<Vec<String>> = text
        .lines()
        .skip_while(|l| !l.starts_with("| budget | limit | measured | holds? |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            l.trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().to_owned())
                .collect()
        })
        .collect();
    assert_eq!(
        table.len(),
        budgets::BUDGETS.len(),
        "{}: the budgets table has {} rows, budgets.rs {}",
        page::PAGE,
        table.len(),
        budgets::BUDGETS.len()
    );
    for (row, budget) in table.iter().zip(budgets::BUDGETS) {
        assert_eq!(row[0], budget.what, "{}: {row:?}", page::PAGE);
        assert_eq!(row[1], budget.shown(), "{}: {row:?}", page::PAGE);
        let values = results.rows.iter().filter_map(|r| match &r.verdict {
            page::Verdict::Judged { budget: id, value } if id == budget.id => Some(*value),
            _ => None,
        });
        let expected = match budget.worst(values) {
            Some(v) if budget.holds(v) => "yes",
            Some(_) => "**no**",
            None => "skipped",
        };
        assert_eq!(row[3], expected, "{}: {row:?}", page::PAGE);
    }
}

/// The hand-written text around the tables holds no measured number, so
/// it cannot contradict them.
#[test]
fn the_performance_pages_own_text_has_no_numbers_of_its_own() {
    let text = read(page::PAGE);
    let begin = text.find(page::BEGIN).expect("begin marker");
    let end = text.find(page::END).expect("end marker");
    let prose = format!("{}{}", &text[..begin], &text[end..]);
    let words: Vec<&str> = prose.split_whitespace().collect();
    let mut found = Vec::new();
    for (i, w) in words.iter().enumerate() {
        let number = |s: &str| {
            let s = s.trim_start_matches(['(', '~']);
            !s.is_empty() && s.chars().all(|c| c.is_ascii_digit() || c == '.')
        };
        let unit = words
            .get(i + 1)
            .map(|u| u.trim_end_matches([',', '.', ')', ';']));
        let measured_unit = matches!(unit, Some("ms" | "MiB" | "KiB" | "B" | "%"));
        let ratio = w.trim_end_matches([',', '.', ')', ';']).strip_suffix('x');
        if (number(w) && measured_unit) || ratio.is_some_and(|r| number(r) && r.contains('.')) {
            found.push(format!("{w} {}", unit.unwrap_or("")));
        }
    }
    assert!(
        found.is_empty(),
        "{}: numbers outside the generated tables: {found:?}",
        page::PAGE
    );
}

/// The page check fails when the page and the results part: a value moved
/// past its budget, or a budget changed.
#[test]
fn the_performance_page_check_sees_a_verdict_that_no_longer_follows() {
    let text = read(page::PAGE);
    let mut results = results();
    let judged = results.rows.iter_mut().find_map(|r| match &mut r.verdict {
        page::Verdict::Judged { budget, value } => Some((budget.clone(), value)),
        _ => None,
    });
    let Some((id, value)) = judged else {
        panic!("{}: no judged row", page::RESULTS);
    };
    let b = budgets::budget(&id).unwrap();
    *value = match b.bound {
        budgets::Bound::AtMost => b.limit * 2.0 + 1.0,
        budgets::Bound::AtLeast => b.limit / 2.0,
    };
    assert!(
        page::check(&text, &results).is_err(),
        "a value past its budget went unseen"
    );
    let mut results = self::results();
    if let Some(row) = results.rows.first_mut() {
        row.verdict = page::Verdict::Judged {
            budget: "no-such-budget".to_owned(),
            value: 0.0,
        };
    }
    assert!(
        page::check(&text, &results).is_err(),
        "an unknown budget went unseen"
    );
}
