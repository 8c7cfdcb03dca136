//! Samples and their summaries, shared by the benchmark families: the
//! interleaved schedule every comparison runs on (a shared, noisy machine
//! drifts; rotating the order spreads the drift over every case alike),
//! named series of wall times, and quantiles.

use std::time::Duration;

/// The wall times of one case, named.
pub(super) struct Series {
    pub(super) name: String,
    pub(super) walls: Vec<Duration>,
}

impl Series {
    pub(super) fn median(&self) -> Duration {
        quantile(&self.walls, 0.5)
    }
}

/// Name the samples of each case.
pub(super) fn named(names: &[String], samples: Vec<Vec<Duration>>) -> Vec<Series> {
    names
        .iter()
        .zip(samples)
        .map(|(name, walls)| Series {
            name: name.clone(),
            walls,
        })
        .collect()
}

/// Linear-interpolated quantile (0.5 is the median).
pub(super) fn quantile(values: &[Duration], q: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    let mut sorted = values.to_vec();
    sorted.sort();
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo].mul_f64(1.0 - (pos - lo as f64)) + sorted[hi].mul_f64(pos - lo as f64)
}

pub(super) fn median_u64(values: &[u64]) -> u64 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    sorted.get(sorted.len() / 2).copied().unwrap_or(0)
}

/// Run `rounds` rounds of `cases` cases, rotating the order each round (for
/// two: A B, B A, ...), after `warmup` untimed runs of each case. `run(i)`
/// runs case i once; the result has the samples of each case.
pub(super) fn interleave<T>(
    rounds: usize,
    cases: usize,
    warmup: usize,
    mut run: impl FnMut(usize) -> Result<T, String>,
) -> Result<Vec<Vec<T>>, String> {
    for i in 0..cases {
        for _ in 0..warmup {
            run(i)?;
        }
    }
    let mut samples: Vec<Vec<T>> = (0..cases).map(|_| Vec::with_capacity(rounds)).collect();
    for round in 0..rounds {
        for k in 0..cases {
            let i = (round + k) % cases;
            samples[i].push(run(i)?);
        }
    }
    Ok(samples)
}
