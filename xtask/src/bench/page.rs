//! The performance page: the results of one `cargo xtask bench` run as
//! data (`docs/performance.json`), and the tables of `docs/performance.md`
//! made from them. The page's generated part sits between two marker
//! lines; the text around it is written by hand and holds no numbers, so
//! every number on the page comes from the one run, and every budget and
//! verdict from `budgets.rs`.
//!
//! This file is also compiled into the integration tests (`tests/docs.rs`),
//! which check the committed page against the committed results: it uses
//! only std, serde_json and its sibling `budgets`.

use std::fmt::Write as _;

use super::budgets::{BUDGETS, budget};
use serde_json::{Value, json};

/// The page, from the repository root.
pub const PAGE: &str = "docs/performance.md";
/// The results of the run the page shows, from the repository root.
pub const RESULTS: &str = "docs/performance.json";
/// The line before the generated part.
pub const BEGIN: &str = "<!-- bench:begin: made by `cargo xtask bench` from docs/performance.json; do not edit until bench:end -->";
/// The line after it.
pub const END: &str = "<!-- bench:end -->";

/// How a row is judged.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Against a budget of `budgets.rs`: `value` is in its unit.
    Judged { budget: String, value: f64 },
    /// For information; `note` is what the budget column says.
    Info { note: String },
    /// Not measured: a peer is missing.
    Skipped,
}

/// One row of the table.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub bench: String,
    pub ours: String,
    pub peer: String,
    pub ratio: String,
    pub verdict: Verdict,
}

/// A table of details (every case's wall times, RSS samples).
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    pub title: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

/// One run of the bench.
#[derive(Clone, Debug, PartialEq)]
pub struct Results {
    /// `--quick`: fewer rounds.
    pub quick: bool,
    /// What was measured on what: (name, value), e.g. ("date", "...").
    pub about: Vec<(String, String)>,
    pub rows: Vec<Row>,
    pub details: Vec<Table>,
}

impl Results {
    pub fn to_json(&self) -> String {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                let verdict = match &r.verdict {
                    Verdict::Judged { budget, value } => json!({"budget": budget, "value": value}),
                    Verdict::Info { note } => json!({"info": note}),
                    Verdict::Skipped => json!("skipped"),
                };
                json!({"bench": r.bench, "ours": r.ours, "peer": r.peer, "ratio": r.ratio, "verdict": verdict})
            })
            .collect();
        let details: Vec<Value> = self
            .details
            .iter()
            .map(|t| json!({"title": t.title, "header": t.header, "rows": t.rows}))
            .collect();
        let about: Vec<Value> = self.about.iter().map(|(k, v)| json!([k, v])).collect();
        let value = json!({
            "quick": self.quick,
            "about": about,
            "rows": rows,
            "details": details,
        });
        let mut text = serde_json::to_string_pretty(&value).expect("JSON");
        text.push('\n');
        text
    }

    pub fn from_json(text: &str) -> Result<Results, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let s = |v: &Value, key: &str| -> Result<String, String> {
            v[key]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("{key}: not a string in {v}"))
        };
        let strings = |v: &Value| -> Result<Vec<String>, String> {
            v.as_array()
                .ok_or_else(|| format!("not a list: {v}"))?
                .iter()
                .map(|s| {
                    s.as_str()
                        .map(str::to_owned)
                        .ok_or(format!("not a string: {s}"))
                })
                .collect()
        };
        let list = |key: &str| -> Result<&Vec<Value>, String> {
            v[key]
                .as_array()
                .ok_or_else(|| format!("{key}: not a list"))
        };
        let about = list("about")?
            .iter()
            .map(|pair| {
                let pair = strings(pair)?;
                match <[String; 2]>::try_from(pair) {
                    Ok([k, v]) => Ok((k, v)),
                    Err(p) => Err(format!("about: not a pair: {p:?}")),
                }
            })
            .collect::<Result<_, String>>()?;
        let rows = list("rows")?
            .iter()
            .map(|r| {
                let verdict = &r["verdict"];
                let verdict = if verdict == "skipped" {
                    Verdict::Skipped
                } else if let Some(note) = verdict["info"].as_str() {
                    Verdict::Info {
                        note: note.to_owned(),
                    }
                } else {
                    Verdict::Judged {
                        budget: s(verdict, "budget")?,
                        value: verdict["value"]
                            .as_f64()
                            .ok_or_else(|| format!("no value in {verdict}"))?,
                    }
                };
                Ok(Row {
                    bench: s(r, "bench")?,
                    ours: s(r, "ours")?,
                    peer: s(r, "peer")?,
                    ratio: s(r, "ratio")?,
                    verdict,
                })
            })
            .collect::<Result<_, String>>()?;
        let details = list("details")?
            .iter()
            .map(|t| {
                Ok(Table {
                    title: s(t, "title")?,
                    header: strings(&t["header"])?,
                    rows: t["rows"]
                        .as_array()
                        .ok_or("rows: not a list")?
                        .iter()
                        .map(strings)
                        .collect::<Result<_, String>>()?,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Results {
            quick: v["quick"].as_bool().ok_or("quick: not a boolean")?,
            about,
            rows,
            details,
        })
    }

    /// Every row's budget is one of `budgets.rs`.
    pub fn check_budgets(&self) -> Result<(), String> {
        for row in &self.rows {
            if let Verdict::Judged { budget: id, .. } = &row.verdict
                && budget(id).is_none()
            {
                return Err(format!(
                    "{RESULTS}: row {:?} names the budget {id:?}, which is not in xtask/src/bench/budgets.rs",
                    row.bench
                ));
            }
        }
        Ok(())
    }
}

/// A row's budget column and verdict column.
pub fn judged(verdict: &Verdict) -> (String, String) {
    match verdict {
        Verdict::Judged { budget: id, value } => match budget(id) {
            Some(b) => (
                b.shown(),
                if b.holds(*value) { "yes" } else { "**no**" }.to_owned(),
            ),
            None => (format!("unknown budget {id:?}"), "?".to_owned()),
        },
        Verdict::Info { note } => (note.clone(), "(info)".to_owned()),
        Verdict::Skipped => ("—".to_owned(), "skipped".to_owned()),
    }
}

/// The main table, one line per row.
pub fn rows_table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| benchmark | resin-lock | peer | ratio | budget | holds? |\n|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let (budget, holds) = judged(&r.verdict);
        writeln!(
            out,
            "| {} | {} | {} | {} | {budget} | {holds} |",
            r.bench, r.ours, r.peer, r.ratio
        )
        .expect("write to a String");
    }
    out
}

/// The summary: one line per budget, with the worst value of the rows
/// judged by it.
pub fn budgets_table(rows: &[Row]) -> (String, Vec<&'static str>) {
    let mut out = String::from("| budget | limit | measured | holds? |\n|---|---|---|---|\n");
    let mut missed = Vec::new();
    for b in BUDGETS {
        let values = rows.iter().filter_map(|r| match &r.verdict {
            Verdict::Judged { budget, value } if budget == b.id => Some(*value),
            _ => None,
        });
        let (measured, holds) = match b.worst(values) {
            Some(v) if b.holds(v) => (b.value_shown(v), "yes"),
            Some(v) => {
                missed.push(b.what);
                (b.value_shown(v), "**no**")
            }
            None => ("not measured in this run".to_owned(), "skipped"),
        };
        writeln!(out, "| {} | {} | {measured} | {holds} |", b.what, b.shown())
            .expect("write to a String");
    }
    (out, missed)
}

/// The generated part of the page, markers included.
pub fn render(results: &Results) -> String {
    let mut out = String::new();
    out.push_str(BEGIN);
    out.push_str("\n\n## The run\n\n");
    if results.quick {
        out.push_str(
            "**A `--quick` run** (fewer rounds): its numbers move more than a full run's.\n\n",
        );
    }
    for (name, value) in &results.about {
        writeln!(out, "- {name}: {value}").expect("write to a String");
    }
    let (summary, missed) = budgets_table(&results.rows);
    out.push_str("\n## The budgets\n\n");
    if missed.is_empty() {
        out.push_str("Every budget measured in this run holds.\n");
    } else {
        writeln!(
            out,
            "Missed in this run: {}. The rest hold.",
            missed.join("; ")
        )
        .expect("write to a String");
    }
    out.push('\n');
    out.push_str(&summary);
    out.push_str("\n## Every row\n\n");
    out.push_str(&rows_table(&results.rows));
    for t in &results.details {
        write!(out, "\n## {}\n\n| {} |\n|", t.title, t.header.join(" | ")).expect("write");
        out.push_str(&"---|".repeat(t.header.len()));
        out.push('\n');
        for row in &t.rows {
            writeln!(out, "| {} |", row.join(" | ")).expect("write to a String");
        }
    }
    out.push('\n');
    out.push_str(END);
    out
}

/// The page with its generated part replaced by `generated`.
pub fn fill(page: &str, generated: &str) -> Result<String, String> {
    let begin = page
        .find(BEGIN)
        .ok_or_else(|| format!("{PAGE}: no line {BEGIN}"))?;
    let end = page[begin..]
        .find(END)
        .map(|i| begin + i + END.len())
        .ok_or_else(|| format!("{PAGE}: no line {END} after the begin marker"))?;
    Ok(format!("{}{generated}{}", &page[..begin], &page[end..]))
}

/// Whether `page` is what the generator makes of `results`: Ok, or what
/// differs.
pub fn check(page: &str, results: &Results) -> Result<(), String> {
    results.check_budgets()?;
    let expected = fill(page, &render(results))?;
    if expected == page {
        return Ok(());
    }
    let first = expected
        .lines()
        .zip(page.lines())
        .position(|(a, b)| a != b)
        .unwrap_or_else(|| expected.lines().count().min(page.lines().count()));
    Err(format!(
        "{PAGE} is not the page of {RESULTS} and xtask/src/bench/budgets.rs (first difference at line {}: \
         expected {:?}); run `cargo xtask bench --page` (or a new `cargo xtask bench`)",
        first + 1,
        expected.lines().nth(first).unwrap_or("(end of page)")
    ))
}
