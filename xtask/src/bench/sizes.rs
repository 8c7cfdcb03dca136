//! Binary sizes: the static dist binary against its budget (SPEC section 9),
//! and the dynamic release binary for information.

use std::fs;
use std::path::Path;

use super::{Holds, Row, ratio, verdict};
use crate::dist;

pub(super) fn measure(release: &Path, static_bin: Option<&Path>, rows: &mut Vec<Row>) {
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    let budget = dist::MAX_SIZE;
    match static_bin.and_then(|p| fs::metadata(p).ok()) {
        Some(meta) => rows.push(Row {
            bench: "static binary size (target/dist/resin-lock)".to_owned(),
            ours: format!("{:.2} MiB ({} B)", mib(meta.len()), meta.len()),
            peer: "—".to_owned(),
            ratio: format!("{:.2}x of budget", ratio(meta.len() as f64, budget as f64)),
            budget: format!("≤ {:.1} MiB", mib(budget)),
            holds: verdict(meta.len() <= budget),
        }),
        None => rows.push(Row {
            bench: "static binary size".to_owned(),
            ours: "not built".to_owned(),
            peer: "—".to_owned(),
            ratio: "—".to_owned(),
            budget: format!("≤ {:.1} MiB", mib(budget)),
            holds: Holds::Skipped,
        }),
    }
    if let Ok(meta) = fs::metadata(release) {
        rows.push(Row {
            bench: "release binary size (target/release/resin-lock, dynamic)".to_owned(),
            ours: format!("{:.2} MiB ({} B)", mib(meta.len()), meta.len()),
            peer: "—".to_owned(),
            ratio: "—".to_owned(),
            budget: "—".to_owned(),
            holds: Holds::Info,
        });
    }
}
