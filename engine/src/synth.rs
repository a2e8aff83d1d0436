//! Seeded synthetic interaction data with a planted structure.
//!
//! Items belong to latent clusters and have Zipf-distributed popularity; each user likes a
//! few clusters. A user's interactions are distinct items drawn mostly from the liked
//! clusters (popular ones more often), sometimes from the global popularity curve (noise).
//! The last `holdout` interactions of every user in time are held out as that user's
//! future, for evaluation. The same seed gives the same data.

use std::collections::HashSet;

use rand::{RngExt, SeedableRng, rngs::StdRng};
use recsys_schemas::Event;

/// Shape of a synthetic data set.
#[derive(Debug, Clone)]
pub struct SynthConfig {
    pub users: usize,
    pub items: usize,
    /// Training events in the stream (held-out events come on top).
    pub events: usize,
    pub clusters: usize,
    /// Clusters each user likes.
    pub clusters_per_user: usize,
    /// Zipf exponent of item popularity.
    pub zipf_exponent: f64,
    /// Probability that an interaction ignores the user's taste and follows popularity.
    pub noise: f64,
    /// Future interactions held out per user.
    pub holdout: usize,
    /// Timestamp of the first event, ms; events span `days` days after it.
    pub start_ts: i64,
    pub days: u32,
    pub seed: u64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            users: 5_000,
            items: 2_000,
            events: 300_000,
            clusters: 20,
            clusters_per_user: 2,
            zipf_exponent: 0.9,
            noise: 0.1,
            holdout: 5,
            start_ts: 1_767_225_600_000, // 2026-01-01T00:00:00Z
            days: 1,
            seed: 42,
        }
    }
}

/// A generated data set: the training stream in time order, each user's held-out future,
/// and the planted truth.
#[derive(Debug, Clone)]
pub struct SynthData {
    pub train: Vec<Event>,
    /// `(user_id, future item ids)` for every user, in user order.
    pub test: Vec<(String, Vec<String>)>,
    /// Latent cluster of each item, by item number.
    pub item_cluster: Vec<usize>,
    /// Liked clusters of each user with their weights, by user number.
    pub user_clusters: Vec<Vec<(usize, f64)>>,
    pub zipf_exponent: f64,
    pub noise: f64,
}

impl SynthData {
    /// The generator's true probability of each item (by item number) being user `u`'s
    /// next pick, before removing items already picked: the oracle's ranking.
    pub fn true_scores(&self, u: usize) -> Vec<f64> {
        let n = self.item_cluster.len();
        let zipf = |i: usize| 1.0 / ((i + 1) as f64).powf(self.zipf_exponent);
        let global: f64 = (0..n).map(zipf).sum();
        let mut cluster_mass = vec![0.0; self.item_cluster.iter().max().map_or(1, |m| m + 1)];
        for i in 0..n {
            if let Some(m) = cluster_mass.get_mut(self.item_cluster[i]) {
                *m += zipf(i);
            }
        }
        (0..n)
            .map(|i| {
                let liked: f64 = self.user_clusters[u]
                    .iter()
                    .filter(|(c, _)| *c == self.item_cluster[i])
                    .map(|(c, w)| w * zipf(i) / cluster_mass[*c])
                    .sum();
                self.noise * zipf(i) / global + (1.0 - self.noise) * liked
            })
            .collect()
    }
}

pub fn user_id(u: usize) -> String {
    format!("u{u}")
}

pub fn item_id(i: usize) -> String {
    format!("i{i}")
}

/// Cumulative-weight sampler over a fixed list.
#[derive(Debug, Clone)]
struct Cdf {
    values: Vec<usize>,
    cum: Vec<f64>,
}

impl Cdf {
    fn new(values: Vec<usize>, weight: impl Fn(usize) -> f64) -> Self {
        let mut total = 0.0;
        let cum = values
            .iter()
            .map(|&v| {
                total += weight(v);
                total
            })
            .collect();
        Self { values, cum }
    }

    fn sample(&self, rng: &mut StdRng) -> usize {
        let total = *self.cum.last().expect("non-empty sampler");
        let x = rng.random_range(0.0..total);
        let i = self.cum.partition_point(|&c| c <= x);
        self.values[i.min(self.values.len() - 1)]
    }
}

impl SynthConfig {
    fn check(&self) -> Result<(), String> {
        if self.users == 0 || self.items == 0 || self.clusters == 0 {
            return Err("users, items and clusters must be positive".into());
        }
        if self.clusters > self.items {
            return Err("there must be at least as many items as clusters".into());
        }
        if self.clusters_per_user == 0 || self.clusters_per_user > self.clusters {
            return Err("clusters_per_user must be in 1..=clusters".into());
        }
        if !(0.0..=1.0).contains(&self.noise) {
            return Err("noise must be in 0..=1".into());
        }
        Ok(())
    }

    /// Generates the data set. Errors name the offending setting.
    pub fn generate(&self) -> Result<SynthData, String> {
        self.check()?;
        let mut rng = StdRng::seed_from_u64(self.seed);
        let s = self.zipf_exponent;
        // Item i has global popularity rank i; clusters are assigned at random.
        let item_cluster: Vec<usize> = (0..self.items)
            .map(|i| {
                if i < self.clusters {
                    i // every cluster has at least one item
                } else {
                    rng.random_range(0..self.clusters)
                }
            })
            .collect();
        let zipf = |i: usize| 1.0 / ((i + 1) as f64).powf(s);
        let global = Cdf::new((0..self.items).collect(), zipf);
        let per_cluster: Vec<Cdf> = (0..self.clusters)
            .map(|c| {
                let members = (0..self.items).filter(|&i| item_cluster[i] == c).collect();
                Cdf::new(members, zipf)
            })
            .collect();

        let user_clusters: Vec<Vec<(usize, f64)>> = (0..self.users)
            .map(|_| {
                let mut chosen: Vec<usize> = Vec::new();
                while chosen.len() < self.clusters_per_user {
                    let c = rng.random_range(0..self.clusters);
                    if !chosen.contains(&c) {
                        chosen.push(c);
                    }
                }
                // Geometric weights: the first liked cluster dominates.
                let raw: Vec<f64> = (0..chosen.len()).map(|k| 0.5f64.powi(k as i32)).collect();
                let sum: f64 = raw.iter().sum();
                chosen
                    .into_iter()
                    .zip(raw.iter().map(|w| w / sum))
                    .collect()
            })
            .collect();

        // Events per user: every user gets a few, the rest by a skewed activity level.
        let min_train = 2usize;
        let cap = (self.items / 2).max(min_train + self.holdout);
        let mut train_counts = vec![min_train.min(cap - self.holdout); self.users];
        let assigned: usize = train_counts.iter().sum();
        let activity: Vec<f64> = (0..self.users)
            .map(|_| {
                // exp of a normal variate via Box-Muller: log-normal activity.
                let u1: f64 = rng.random_range(f64::EPSILON..1.0);
                let u2: f64 = rng.random_range(0.0..1.0);
                let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                (0.8 * z).exp()
            })
            .collect();
        let activity_cdf = Cdf::new((0..self.users).collect(), |u| activity[u]);
        let mut remaining = self.events.saturating_sub(assigned);
        let mut guard = 0usize;
        while remaining > 0 && guard < self.events * 4 + 16 {
            guard += 1;
            let u = activity_cdf.sample(&mut rng);
            if train_counts[u] + self.holdout < cap {
                train_counts[u] += 1;
                remaining -= 1;
            }
        }

        let span_ms = 86_400_000i64 * i64::from(self.days.max(1));
        let mut train: Vec<Event> = Vec::with_capacity(self.events);
        let mut test = Vec::with_capacity(self.users);
        for u in 0..self.users {
            let n = train_counts[u] + self.holdout;
            let clusters = Cdf::new((0..user_clusters[u].len()).collect(), |k| {
                user_clusters[u][k].1
            });
            let mut seen: HashSet<usize> = HashSet::with_capacity(n);
            let mut items = Vec::with_capacity(n);
            let mut tries = 0;
            while items.len() < n && tries < n * 50 {
                tries += 1;
                let item = if rng.random_bool(self.noise) {
                    global.sample(&mut rng)
                } else {
                    let c = user_clusters[u][clusters.sample(&mut rng)].0;
                    per_cluster[c].sample(&mut rng)
                };
                if seen.insert(item) {
                    items.push(item);
                }
            }
            let mut times: Vec<i64> = (0..items.len())
                .map(|_| rng.random_range(0..span_ms))
                .collect();
            times.sort_unstable();
            let split = items.len().saturating_sub(self.holdout);
            let uid = user_id(u);
            for (k, (&item, &t)) in items.iter().zip(&times).enumerate().take(split) {
                train.push(Event {
                    user_id: uid.clone(),
                    item_id: item_id(item),
                    kind: "click".into(),
                    weight: 1.0,
                    ts: self.start_ts + t,
                    event_id: Some(format!("{uid}-{k}")),
                });
            }
            test.push((uid, items[split..].iter().map(|&i| item_id(i)).collect()));
        }
        // Global time order; the sort is stable, so ties keep user order (deterministic).
        train.sort_by_key(|e| e.ts);
        Ok(SynthData {
            zipf_exponent: self.zipf_exponent,
            noise: self.noise,
            train,
            test,
            item_cluster,
            user_clusters,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> SynthConfig {
        SynthConfig {
            users: 200,
            items: 1_000,
            events: 6_000,
            clusters: 10,
            ..SynthConfig::default()
        }
    }

    #[test]
    fn deterministic_for_a_seed() {
        let a = small().generate().unwrap();
        let b = small().generate().unwrap();
        assert_eq!(a.train, b.train);
        assert_eq!(a.test, b.test);
        let c = SynthConfig { seed: 7, ..small() }.generate().unwrap();
        assert_ne!(a.train, c.train);
    }

    #[test]
    fn shape_and_holdout_are_the_future() {
        let cfg = small();
        let d = cfg.generate().unwrap();
        assert_eq!(d.train.len(), cfg.events);
        assert_eq!(d.test.len(), cfg.users);
        assert!(d.train.windows(2).all(|w| w[0].ts <= w[1].ts));
        for (u, future) in &d.test {
            assert_eq!(future.len(), cfg.holdout);
            let past: HashSet<&str> = d
                .train
                .iter()
                .filter(|e| &e.user_id == u)
                .map(|e| e.item_id.as_str())
                .collect();
            assert!(future.iter().all(|i| !past.contains(i.as_str())));
        }
    }

    #[test]
    fn popularity_is_skewed_and_taste_is_planted() {
        let d = small().generate().unwrap();
        let mut counts = vec![0usize; 1_000];
        let mut in_liked = 0usize;
        for e in &d.train {
            let i: usize = e.item_id[1..].parse().unwrap();
            let u: usize = e.user_id[1..].parse().unwrap();
            counts[i] += 1;
            if d.user_clusters[u]
                .iter()
                .any(|&(c, _)| c == d.item_cluster[i])
            {
                in_liked += 1;
            }
        }
        let head: usize = counts[..30].iter().sum();
        let tail: usize = counts[970..].iter().sum();
        assert!(head > 5 * tail, "head {head} tail {tail}");
        assert!(in_liked as f64 > 0.8 * d.train.len() as f64);
    }

    #[test]
    fn rejects_bad_settings() {
        let err = SynthConfig {
            clusters: 0,
            ..small()
        }
        .generate()
        .unwrap_err();
        assert!(err.contains("clusters"));
    }
}
