//! The server's own time per request, read from its `/metrics` histograms at the two ends
//! of a run's window.

use super::runs::ServerMeans;

/// What the server's `/metrics` says so far of its own time: the request-latency
/// buckets, every route's and status's summed except `/metrics`'s own, and (sum of
/// seconds, count) of requests, user-store lookups and index searches.
pub(super) struct ServerTimes {
    pub(super) request_buckets: Vec<(f64, u64)>,
    request: (f64, u64),
    store_lookup: (f64, u64),
    search: (f64, u64),
}

impl ServerTimes {
    /// `None` if `/metrics` cannot be read.
    pub(super) fn read(server: std::net::SocketAddr) -> Option<Self> {
        let response = recsys_testkit::HttpClient::connect(server)
            .ok()?
            .get("/metrics")
            .ok()?;
        (response.status == 200).then(|| Self::parse(&String::from_utf8_lossy(&response.body)))
    }

    fn parse(text: &str) -> Self {
        Self {
            request_buckets: latency_buckets(text),
            request: sum_and_count(text, "recsys_http_request_duration_seconds"),
            store_lookup: sum_and_count(text, "recsys_store_lookup_duration_seconds"),
            search: sum_and_count(text, "recsys_search_duration_seconds"),
        }
    }

    /// Mean ms of each between `before` and `self`.
    pub(super) fn means_since(&self, before: &Self) -> ServerMeans {
        let mean = |(s1, n1): (f64, u64), (s0, n0): (f64, u64)| {
            (s1 - s0) * 1e3 / n1.saturating_sub(n0) as f64
        };
        ServerMeans {
            request: mean(self.request, before.request),
            store_lookup: mean(self.store_lookup, before.store_lookup),
            search: mean(self.search, before.search),
        }
    }
}

/// `(labels, value)` of each line `name{labels} value` or `name value` of an exposition
/// text, leaving out the series of `/metrics`'s own route.
fn series<'t>(text: &'t str, name: &str) -> impl Iterator<Item = (&'t str, &'t str)> {
    text.lines().filter_map(move |line| {
        let rest = line.strip_prefix(name)?;
        let (labels, value) = match rest.strip_prefix('{') {
            Some(labelled) => labelled.rsplit_once("} ")?,
            None => ("", rest.strip_prefix(' ')?),
        };
        (!labels.contains("route=\"/metrics\"")).then_some((labels, value.trim()))
    })
}

/// (Sum, count) of histogram `name` over its series (see [`series`]).
fn sum_and_count(text: &str, name: &str) -> (f64, u64) {
    let sum = series(text, &format!("{name}_sum"))
        .filter_map(|(_, v)| v.parse::<f64>().ok())
        .sum();
    let count = series(text, &format!("{name}_count"))
        .filter_map(|(_, v)| v.parse::<u64>().ok())
        .sum();
    (sum, count)
}

/// The request-latency buckets of an exposition text (see [`ServerTimes`]): per bound
/// (seconds; `+Inf` as infinity), the requests within it, ascending by bound.
fn latency_buckets(text: &str) -> Vec<(f64, u64)> {
    let mut by_bound: std::collections::BTreeMap<u64, u64> = Default::default();
    for (labels, count) in series(text, "recsys_http_request_duration_seconds_bucket") {
        let Some(le) = labels
            .split("le=\"")
            .nth(1)
            .and_then(|l| l.strip_suffix('"'))
        else {
            continue;
        };
        let bound = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap_or(f64::NAN)
        };
        if let (false, Ok(count)) = (bound.is_nan(), count.parse::<u64>()) {
            *by_bound.entry(bound.to_bits()).or_default() += count;
        }
    }
    // Positive floats order as their bits do.
    by_bound
        .into_iter()
        .map(|(bits, n)| (f64::from_bits(bits), n))
        .collect()
}

/// Between two [`latency_buckets`] readings: per finite bound in ms, the share of the
/// requests answered in between that took at most that long (none if none were).
pub(super) fn shares_within(before: &[(f64, u64)], after: &[(f64, u64)]) -> Vec<(f64, f64)> {
    let count = |buckets: &[(f64, u64)], bound: f64| {
        buckets
            .iter()
            .find(|(b, _)| *b == bound)
            .map_or(0, |(_, n)| *n)
    };
    let total = count(after, f64::INFINITY).saturating_sub(count(before, f64::INFINITY));
    if total == 0 {
        return Vec::new();
    }
    after
        .iter()
        .filter(|(bound, _)| bound.is_finite())
        .map(|&(bound, n)| {
            let within = n.saturating_sub(count(before, bound));
            (bound * 1e3, within as f64 / total as f64)
        })
        .collect()
}

/// The printed part of [`ServeRun::server_within_ms`] (the bounds around the p50 and
/// the p99 target) and of [`ServeRun::server_mean_ms`].
pub(super) fn server_time_line(within: &[(f64, f64)], means: Option<&ServerMeans>) -> String {
    let shown: Vec<String> = within
        .iter()
        .filter(|(ms, _)| [0.5, 1.0, 2.5, 5.0].iter().any(|b| (b - ms).abs() < 1e-9))
        .map(|(ms, share)| format!("≤ {ms} ms {:.1}%", share * 100.0))
        .collect();
    let mut line = String::new();
    if !shown.is_empty() {
        line += &format!(
            "\n           server's own time (/metrics): {}",
            shown.join(", ")
        );
    }
    if let Some(m) = means.filter(|m| m.request.is_finite()) {
        line += &format!(
            "\n           server's mean per request: {:.3} ms",
            m.request
        );
        if m.store_lookup.is_finite() || m.search.is_finite() {
            line += &format!(
                ", of which user-store lookup {:.3} ms, index search {:.3} ms",
                m.store_lookup, m.search
            );
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn server_time_comes_from_the_metrics_histograms_between_two_readings() {
        use recsys_serving::metrics::Metrics;
        let m = Metrics::default();
        let route = "/v1/users/{user_id}/recommendations";
        m.observe(route, "GET", 200, 0.0003);
        m.store_lookup.observe(Duration::from_micros(900));
        let before = ServerTimes::parse(&m.render(&[]));
        // In the window: two fast, one at 3 ms, one 404 at 7 ms on another route, and a
        // slow scrape of /metrics, which does not count; three lookups, two searches.
        m.observe(route, "GET", 200, 0.0004);
        m.observe(route, "GET", 200, 0.0009);
        m.observe(route, "GET", 200, 0.003);
        m.observe("/v1/items/{item_id}/similar", "GET", 404, 0.007);
        m.observe("/metrics", "GET", 200, 0.2);
        for us in [100, 200, 300] {
            m.store_lookup.observe(Duration::from_micros(us));
        }
        for us in [50, 150] {
            m.search.observe(Duration::from_micros(us));
        }
        let after = ServerTimes::parse(&m.render(&[]));
        assert_eq!(after.request_buckets.last(), Some(&(f64::INFINITY, 5)));
        let shares = shares_within(&before.request_buckets, &after.request_buckets);
        let at = |ms: f64| {
            shares
                .iter()
                .find(|(b, _)| (b - ms).abs() < 1e-9)
                .map(|&(_, s)| s)
        };
        assert_eq!(at(0.5), Some(0.25));
        assert_eq!(at(1.0), Some(0.5));
        assert_eq!(at(5.0), Some(0.75));
        assert_eq!(at(10.0), Some(1.0));
        assert!(shares_within(&after.request_buckets, &after.request_buckets).is_empty());
        let means = after.means_since(&before);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-6;
        // (0.4 + 0.9 + 3 + 7) / 4 requests; (0.1 + 0.2 + 0.3) / 3; (0.05 + 0.15) / 2.
        assert!(close(means.request, 2.825), "{means:?}");
        assert!(close(means.store_lookup, 0.2), "{means:?}");
        assert!(close(means.search, 0.1), "{means:?}");
        assert!(
            after.means_since(&after).search.is_nan(),
            "no searches, no mean"
        );
        let line = server_time_line(&shares, Some(&means));
        assert!(
            line.contains("≤ 1 ms 50.0%") && line.contains("≤ 5 ms 75.0%"),
            "{line}"
        );
        assert!(
            line.contains("lookup 0.200 ms, index search 0.100 ms"),
            "{line}"
        );
    }
}
