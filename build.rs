//! Embeds the build time (`RESIN_LOCK_BUILD_TIME`, seconds after the epoch;
//! `SOURCE_DATE_EPOCH` when set, for reproducible builds): `window` counts
//! a clock far before it as not yet set (a board without a real-time clock
//! before NTP).

use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
        });
    println!("cargo:rustc-env=RESIN_LOCK_BUILD_TIME={secs}");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=Cargo.toml");
}
