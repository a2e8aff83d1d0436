//! Per-key rate limiting (token buckets) for `POST /v1/events`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// A token bucket per key: `rate` tokens a second, at most `burst` saved up.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(rate: f64, burst: f64) -> Self {
        Self {
            rate,
            burst,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes `n` tokens from `key`'s bucket. `Err(seconds)` says how long until they
    /// would be there.
    pub fn take(&self, key: &str, n: f64) -> Result<(), f64> {
        self.take_at(key, n, Instant::now())
    }

    fn take_at(&self, key: &str, n: f64, now: Instant) -> Result<(), f64> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        // Bound the map: forget buckets that have refilled completely.
        if buckets.len() > 100_000 {
            let full = self.burst / self.rate;
            buckets.retain(|_, (_, t)| now.duration_since(*t).as_secs_f64() < full);
        }
        let (tokens, last) = buckets.entry(key.to_owned()).or_insert((self.burst, now));
        let refilled =
            (*tokens + now.duration_since(*last).as_secs_f64() * self.rate).min(self.burst);
        *last = now;
        if refilled >= n {
            *tokens = refilled - n;
            Ok(())
        } else {
            *tokens = refilled;
            Err((n - refilled) / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bursts_then_refills_per_key() {
        let limiter = RateLimiter::new(10.0, 3.0);
        let t0 = Instant::now();
        for _ in 0..3 {
            limiter.take_at("a", 1.0, t0).unwrap();
        }
        let wait = limiter.take_at("a", 1.0, t0).unwrap_err();
        assert!((wait - 0.1).abs() < 1e-9, "{wait}");
        // Another key has its own bucket.
        limiter.take_at("b", 1.0, t0).unwrap();
        // 100 ms later one token is back, not more.
        let t1 = t0 + Duration::from_millis(100);
        limiter.take_at("a", 1.0, t1).unwrap();
        assert!(limiter.take_at("a", 1.0, t1).is_err());
        // A request larger than the burst can never pass.
        assert!(limiter.take_at("c", 5.0, t1).is_err());
    }
}
