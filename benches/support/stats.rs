//! What the benches compute from their samples, and how they read their knobs.
// Each bench uses part of this.
#![allow(dead_code)]

use std::time::Duration;

/// A knob from the environment; `default` when it is unset or does not parse.
pub fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `PLEXUS_BENCH_N`: the attachment counts to measure (`1,4,16`), each from 1 to 16.
pub fn counts() -> Vec<usize> {
    std::env::var("PLEXUS_BENCH_N")
        .unwrap_or_else(|_| "1,4,16".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .filter(|n| (1..=16).contains(n))
        .collect()
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The median in ms (the upper middle of an even count); NaN without samples, as for a
/// variant left out of the run.
pub fn median(v: &[Duration]) -> f64 {
    let mut v = v.to_vec();
    v.sort();
    v.get(v.len() / 2).map_or(f64::NAN, |d| ms(*d))
}

/// The `p` quantile in ms, by nearest rank; NaN without samples.
pub fn percentile(v: &[Duration], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut v = v.to_vec();
    v.sort();
    let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
    ms(v[i])
}
