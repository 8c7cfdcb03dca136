//! Binary sizes: the static dist binary against its budget, and the
//! dynamic release binary for information.

use std::fs;
use std::path::Path;

use super::budgets::SIZE_BYTES;
use super::{Row, Verdict, info, judged, ratio};
use crate::dist;

// `cargo xtask dist` checks the same budget as the page shows.
const _: () = assert!(dist::MAX_SIZE == SIZE_BYTES);

pub(super) fn measure(release: &Path, static_bin: Option<&Path>, rows: &mut Vec<Row>) {
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    let budget = SIZE_BYTES;
    match static_bin.and_then(|p| fs::metadata(p).ok()) {
        Some(meta) => rows.push(Row {
            bench: "static binary size (target/dist/resin-lock)".to_owned(),
            ours: format!("{:.2} MiB ({} B)", mib(meta.len()), meta.len()),
            peer: "—".to_owned(),
            ratio: format!("{:.2}x of budget", ratio(meta.len() as f64, budget as f64)),
            verdict: judged("size", meta.len() as f64),
        }),
        None => rows.push(Row {
            bench: "static binary size".to_owned(),
            ours: "not built".to_owned(),
            peer: "—".to_owned(),
            ratio: "—".to_owned(),
            verdict: Verdict::Skipped,
        }),
    }
    if let Ok(meta) = fs::metadata(release) {
        rows.push(Row {
            bench: "release binary size (target/release/resin-lock, dynamic)".to_owned(),
            ours: format!("{:.2} MiB ({} B)", mib(meta.len()), meta.len()),
            peer: "—".to_owned(),
            ratio: "—".to_owned(),
            verdict: info(),
        });
    }
}
