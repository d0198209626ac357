//! What every bench reads from its environment and how it prints a latency
//! histogram (microseconds in, milliseconds out).

use hdrhistogram::Histogram;

/// `name` from the environment as a number, or `default`.
pub fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One line: count, p50, p90, p99 and max of `h`.
#[allow(dead_code)] // not every bench prints a histogram
pub fn report(name: &str, h: &Histogram<u64>) {
    println!(
        "{name:<26} n={:<6} p50={:>7.2} ms  p90={:>7.2} ms  p99={:>7.2} ms  max={:>7.2} ms",
        h.len(),
        h.value_at_quantile(0.50) as f64 / 1000.0,
        h.value_at_quantile(0.90) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1000.0,
    );
}
