//! The performance budgets, written once. The bench judges its rows against
//! them, and the performance page shows them from here, so the page's
//! budgets are always the ones its verdicts were judged by. (The contract
//! gives them in its section 9; the page cites none of that.)
//!
//! This file is also compiled into the integration tests (`tests/docs.rs`),
//! which check docs/performance.md against it: std only.

/// What a budget's numbers are.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Unit {
    /// A ratio of resin-lock's number to a peer's.
    Ratio,
    /// Milliseconds.
    Millis,
    /// Bytes.
    Bytes,
    /// KiB.
    KiB,
}

/// Which side of the limit holds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Bound {
    AtMost,
    AtLeast,
}

/// One budget: a named limit on one measured number.
#[derive(Debug)]
pub struct Budget {
    /// How rows and results name it.
    pub id: &'static str,
    /// What is measured, for the page's summary.
    pub what: &'static str,
    pub bound: Bound,
    pub limit: f64,
    pub unit: Unit,
}

/// The static binary's size budget in bytes (`cargo xtask dist` checks
/// the same number).
pub const SIZE_BYTES: u64 = 2 * 1024 * 1024;

/// Every budget, in the order the page lists them.
pub const BUDGETS: &[Budget] = &[
    Budget {
        id: "run-true",
        what: "`run -- true` against `flock F true`, in a shell loop",
        bound: Bound::AtMost,
        limit: 1.0,
        unit: Unit::Ratio,
    },
    Budget {
        id: "acquire-release",
        what: "`acquire` + `release` against `lockfile -r0 F` + `rm -f F`, in a shell loop",
        bound: Bound::AtMost,
        limit: 1.2,
        unit: Unit::Ratio,
    },
    Budget {
        id: "handoff",
        what: "handoff: a waiter takes a freed lock (median)",
        bound: Bound::AtMost,
        limit: 5.0,
        unit: Unit::Millis,
    },
    Budget {
        id: "contention",
        what: "4 contending `run` loops: throughput against flock(1)'s",
        bound: Bound::AtLeast,
        limit: 0.5,
        unit: Unit::Ratio,
    },
    Budget {
        id: "size",
        what: "static binary size (stripped)",
        bound: Bound::AtMost,
        limit: SIZE_BYTES as f64,
        unit: Unit::Bytes,
    },
    Budget {
        id: "peak-rss",
        what: "peak RSS of `run -- true` against flock(1)'s",
        bound: Bound::AtMost,
        limit: 1.0,
        unit: Unit::Ratio,
    },
    Budget {
        id: "idle-rss",
        what: "idle RSS of a `run` or a keeper",
        bound: Bound::AtMost,
        limit: 2048.0,
        unit: Unit::KiB,
    },
    Budget {
        id: "update-now",
        what: "release to the supervisor's update call, `--update-now` (median)",
        bound: Bound::AtMost,
        limit: 2000.0,
        unit: Unit::Millis,
    },
];

/// The budget named `id`.
pub fn budget(id: &str) -> Option<&'static Budget> {
    BUDGETS.iter().find(|b| b.id == id)
}

impl Budget {
    /// Whether `value` (in the budget's unit) is within it.
    pub fn holds(&self, value: f64) -> bool {
        match self.bound {
            Bound::AtMost => value <= self.limit,
            Bound::AtLeast => value >= self.limit,
        }
    }

    /// The budget as the page shows it: `≤ 1.2x`, `≤ 5 ms`, `≤ 2.0 MiB`.
    pub fn shown(&self) -> String {
        let op = match self.bound {
            Bound::AtMost => "≤",
            Bound::AtLeast => "≥",
        };
        let limit = match self.unit {
            Unit::Ratio => format!("{:.1}x", self.limit),
            Unit::Millis if self.limit >= 1000.0 => format!("{} s", self.limit / 1000.0),
            Unit::Millis => format!("{} ms", self.limit),
            Unit::Bytes => format!("{:.1} MiB", self.limit / (1024.0 * 1024.0)),
            Unit::KiB => format!("{:.1} MiB", self.limit / 1024.0),
        };
        format!("{op} {limit}")
    }

    /// A measured value in the budget's unit, as the page shows it.
    pub fn value_shown(&self, value: f64) -> String {
        match self.unit {
            Unit::Ratio => format!("{value:.2}x"),
            Unit::Millis if value >= 100.0 => format!("{value:.1} ms"),
            Unit::Millis => format!("{value:.3} ms"),
            Unit::Bytes => format!("{:.2} MiB", value / (1024.0 * 1024.0)),
            Unit::KiB => format!("{value:.0} KiB"),
        }
    }

    /// The worst of several values: the one furthest toward failing.
    pub fn worst(&self, values: impl IntoIterator<Item = f64>) -> Option<f64> {
        let fold = |a: f64, b: f64| match self.bound {
            Bound::AtMost => a.max(b),
            Bound::AtLeast => a.min(b),
        };
        values.into_iter().reduce(fold)
    }
}
