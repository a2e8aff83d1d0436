//! A lock-free latency histogram with fixed bucket bounds, rendered in Prometheus's text
//! exposition format: observing costs one clock conversion and two atomic adds. Serving's
//! request stages and the trainer's freshness lags both use it.

use std::fmt::Write;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of a histogram's buckets, seconds, ascending.
pub trait Bounds {
    const BOUNDS: &'static [f64];
}

/// 100 µs to 2.5 s: one stage of a request.
#[derive(Debug)]
pub enum RequestBounds {}

impl Bounds for RequestBounds {
    const BOUNDS: &'static [f64] = &[
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    ];
}

/// 1 ms to a day: how far behind an event is when it is applied, or published.
#[derive(Debug)]
pub enum LagBounds {}

impl Bounds for LagBounds {
    const BOUNDS: &'static [f64] = &[
        0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
        3600.0, 86400.0,
    ];
}

/// Bucket slots: every `Bounds` has fewer bounds than this.
const SLOTS: usize = 24;

pub struct Histogram<B: Bounds> {
    /// Per bucket of `B::BOUNDS`, then one past the last bound.
    counts: [AtomicU64; SLOTS],
    sum_ns: AtomicU64,
    bounds: PhantomData<B>,
}

impl<B: Bounds> Default for Histogram<B> {
    fn default() -> Self {
        const { assert!(B::BOUNDS.len() < SLOTS) };
        Self {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_ns: AtomicU64::new(0),
            bounds: PhantomData,
        }
    }
}

impl<B: Bounds> std::fmt::Debug for Histogram<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.count())
            .finish_non_exhaustive()
    }
}

impl<B: Bounds> Histogram<B> {
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket = B::BOUNDS.partition_point(|&b| b < seconds);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Appends the histogram as `name` (cumulative buckets, sum in seconds, count).
    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, b) in B::BOUNDS.iter().enumerate() {
            cumulative += self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        cumulative += self.counts[B::BOUNDS.len()].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"+Inf\"}} {cumulative}\n{name}_sum {}\n{name}_count {cumulative}",
            self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_the_last_is_everything() {
        let h = Histogram::<LagBounds>::default();
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(2));
        h.observe(Duration::from_secs(200_000));
        let mut out = String::new();
        h.render(&mut out, "x", "help");
        assert!(out.contains("x_bucket{le=\"0.005\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"2.5\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"86400\"} 2\n"), "{out}");
        assert!(
            out.contains("x_bucket{le=\"+Inf\"} 3\nx_sum 200002.003\nx_count 3\n"),
            "{out}"
        );
        assert_eq!(h.count(), 3);
    }
}
