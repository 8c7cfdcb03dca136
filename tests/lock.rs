//! The core protocol: acquire, release, status, waiting, stale takeover.

use crate::common::*;

#[test]
fn acquire_then_release_round_trip() {
    let s = Scratch::new();
    s.cmd(&["acquire"]).assert().success();
    let rec = record(&s.lock());
    assert_eq!(rec["tool"], "resin-lock");
    assert_eq!(rec["mode"], "acquire");
    s.cmd(&["status"]).assert().code(1).stdout(contains("held by resin-lock acquire"));
    s.cmd(&["release"]).assert().success();
    assert!(!s.lock().exists());
    s.cmd(&["status"]).assert().code(0).stdout(contains("free"));
}
