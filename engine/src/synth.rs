//! Seeded synthetic interaction data with a planted structure.
//!
//! Items belong to latent clusters and have Zipf-distributed popularity; each user likes a
//! few clusters. A user's interactions are distinct items drawn mostly from the liked
//! clusters (popular ones more often), sometimes from the global popularity curve (noise).
//! The last `holdout` interactions of every user in time are held out as that user's
//! future, for evaluation. The same seed gives the same data.
//!
//! Optionally the world moves: with `drift`, each user's liked clusters are drawn again
//! at a day boundary with that probability; with `new_items`, that share of the items
//! launches during the span instead of before it (no one picks an item before its
//! launch). A model frozen at some point then decays on what comes after it.

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
    /// Probability that a user's liked clusters are drawn again at each day boundary.
    pub drift: f64,
    /// Share of the items that launch during the span (at a uniform time) rather than
    /// before it.
    pub new_items: f64,
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
            drift: 0.0,
            new_items: 0.0,
            seed: 42,
        }
    }
}

/// Liked clusters with their weights.
pub type Tastes = Vec<(usize, f64)>;

/// A generated data set: the training stream in time order, each user's held-out future,
/// and the planted truth.
#[derive(Debug, Clone)]
pub struct SynthData {
    pub train: Vec<Event>,
    /// `(user_id, future item ids)` for every user, in user order.
    pub test: Vec<(String, Vec<String>)>,
    /// Latent cluster of each item, by item number.
    pub item_cluster: Vec<usize>,
    /// Liked clusters of each user with their weights at the start, by user number.
    pub user_clusters: Vec<Vec<(usize, f64)>>,
    /// Each user's tastes over time: `(from ts, liked clusters)`, oldest first; one entry
    /// without `drift`.
    pub user_tastes: Vec<Vec<(i64, Tastes)>>,
    /// When each item launched (ms); `start_ts` for the items there from the start.
    pub launch_ts: Vec<i64>,
    /// The held-out events themselves (the `test` items with their times), time order.
    pub held_out: Vec<Event>,
    pub zipf_exponent: f64,
    pub noise: f64,
}

impl SynthData {
    /// The generator's true probability of each item (by item number) being user `u`'s
    /// next pick, before removing items already picked: the oracle's ranking, with the
    /// user's first tastes and every item launched.
    pub fn true_scores(&self, u: usize) -> Vec<f64> {
        self.scores_for(&self.user_clusters[u], i64::MAX)
    }

    /// [`SynthData::true_scores`] at time `ts`: the tastes the user has then, over the
    /// items launched by then.
    pub fn true_scores_at(&self, u: usize, ts: i64) -> Vec<f64> {
        let tastes = &self.user_tastes[u];
        let at = tastes.partition_point(|(from, _)| *from <= ts).max(1) - 1;
        self.scores_for(&tastes[at].1, ts)
    }

    /// Every event of the log, training and held out, in time order.
    pub fn all_events(&self) -> Vec<Event> {
        let mut all: Vec<Event> = self.train.iter().chain(&self.held_out).cloned().collect();
        all.sort_by(|a, b| a.ts.cmp(&b.ts).then_with(|| a.user_id.cmp(&b.user_id)));
        all
    }

    fn scores_for(&self, liked_clusters: &[(usize, f64)], ts: i64) -> Vec<f64> {
        let n = self.item_cluster.len();
        let launched = |i: usize| self.launch_ts.get(i).is_none_or(|&t| t <= ts);
        let zipf = |i: usize| {
            if launched(i) {
                1.0 / ((i + 1) as f64).powf(self.zipf_exponent)
            } else {
                0.0
            }
        };
        let global: f64 = (0..n).map(zipf).sum();
        let mut cluster_mass = vec![0.0; self.item_cluster.iter().max().map_or(1, |m| m + 1)];
        for i in 0..n {
            if let Some(m) = cluster_mass.get_mut(self.item_cluster[i]) {
                *m += zipf(i);
            }
        }
        (0..n)
            .map(|i| {
                let liked: f64 = liked_clusters
                    .iter()
                    .filter(|(c, _)| *c == self.item_cluster[i])
                    .map(|(c, w)| w * zipf(i) / cluster_mass[*c].max(f64::MIN_POSITIVE))
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
        if !(0.0..=1.0).contains(&self.drift) {
            return Err("drift must be in 0..=1".into());
        }
        if !(0.0..1.0).contains(&self.new_items) {
            return Err("new_items must be in 0..1".into());
        }
        Ok(())
    }

    /// Liked clusters with geometric weights (the first dominates).
    fn draw_tastes(&self, rng: &mut StdRng) -> Vec<(usize, f64)> {
        let mut chosen: Vec<usize> = Vec::new();
        while chosen.len() < self.clusters_per_user {
            let c = rng.random_range(0..self.clusters);
            if !chosen.contains(&c) {
                chosen.push(c);
            }
        }
        let raw: Vec<f64> = (0..chosen.len()).map(|k| 0.5f64.powi(k as i32)).collect();
        let sum: f64 = raw.iter().sum();
        chosen
            .into_iter()
            .zip(raw.iter().map(|w| w / sum))
            .collect()
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
            .map(|_| self.draw_tastes(&mut rng))
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

        let day_ms = 86_400_000i64;
        let span_ms = day_ms * i64::from(self.days.max(1));
        let moving = self.drift > 0.0 || self.new_items > 0.0;
        // Launch times: the first `1 - new_items` of a random order are there from the
        // start, the rest launch at uniform times.
        let launch_ts: Vec<i64> = if self.new_items > 0.0 {
            (0..self.items)
                .map(|_| {
                    if rng.random_bool(self.new_items) {
                        self.start_ts + rng.random_range(0..span_ms)
                    } else {
                        self.start_ts
                    }
                })
                .collect()
        } else {
            vec![self.start_ts; self.items]
        };
        let mut user_tastes = Vec::with_capacity(self.users);
        let mut train: Vec<Event> = Vec::with_capacity(self.events);
        let mut held_out: Vec<Event> = Vec::with_capacity(self.users * self.holdout);
        let mut test = Vec::with_capacity(self.users);
        for u in 0..self.users {
            let n = train_counts[u] + self.holdout;
            let mut tastes = vec![(self.start_ts, user_clusters[u].clone())];
            let mut seen: HashSet<usize> = HashSet::with_capacity(n);
            let mut items = Vec::with_capacity(n);
            let times: Vec<i64> = if moving {
                // Tastes per day, then times, then each event's item under the tastes and
                // launches of its moment.
                for day in 1..self.days.max(1) {
                    if rng.random_bool(self.drift) {
                        let from = self.start_ts + i64::from(day) * day_ms;
                        tastes.push((from, self.draw_tastes(&mut rng)));
                    }
                }
                let mut times: Vec<i64> = (0..n).map(|_| rng.random_range(0..span_ms)).collect();
                times.sort_unstable();
                let mut kept = Vec::with_capacity(n);
                for &t in &times {
                    let at = self.start_ts + t;
                    let liked = &tastes[tastes.partition_point(|(from, _)| *from <= at) - 1].1;
                    let clusters = Cdf::new((0..liked.len()).collect(), |k| liked[k].1);
                    for _ in 0..50 {
                        let item = if rng.random_bool(self.noise) {
                            global.sample(&mut rng)
                        } else {
                            per_cluster[liked[clusters.sample(&mut rng)].0].sample(&mut rng)
                        };
                        if launch_ts[item] <= at && seen.insert(item) {
                            items.push(item);
                            kept.push(t);
                            break;
                        }
                    }
                }
                kept
            } else {
                let clusters = Cdf::new((0..user_clusters[u].len()).collect(), |k| {
                    user_clusters[u][k].1
                });
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
                times
            };
            let split = items.len().saturating_sub(self.holdout);
            let uid = user_id(u);
            for (k, (&item, &t)) in items.iter().zip(&times).enumerate() {
                let e = Event {
                    user_id: uid.clone(),
                    item_id: item_id(item),
                    kind: "click".into(),
                    weight: 1.0,
                    ts: self.start_ts + t,
                    event_id: Some(format!("{uid}-{k}")),
                };
                if k < split {
                    train.push(e);
                } else {
                    held_out.push(e);
                }
            }
            test.push((uid, items[split..].iter().map(|&i| item_id(i)).collect()));
            user_tastes.push(tastes);
        }
        // Global time order; the sort is stable, so ties keep user order (deterministic).
        train.sort_by_key(|e| e.ts);
        held_out.sort_by_key(|e| e.ts);
        Ok(SynthData {
            zipf_exponent: self.zipf_exponent,
            noise: self.noise,
            train,
            test,
            item_cluster,
            user_clusters,
            user_tastes,
            launch_ts,
            held_out,
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

    #[test]
    fn the_log_spreads_over_every_day() {
        let d = SynthConfig {
            users: 300,
            items: 400,
            events: 20_000,
            days: 7,
            ..small()
        }
        .generate()
        .unwrap();
        let all = d.all_events();
        assert_eq!(all.len(), d.train.len() + d.held_out.len());
        let per_day: Vec<usize> = (0..7)
            .map(|day| {
                let from = SynthConfig::default().start_ts + day * 86_400_000;
                all.iter()
                    .filter(|e| (from..from + 86_400_000).contains(&e.ts))
                    .count()
            })
            .collect();
        let (lo, hi) = (per_day.iter().min().unwrap(), per_day.iter().max().unwrap());
        assert!(*lo as f64 > 0.7 * *hi as f64, "events per day {per_day:?}");
    }

    #[test]
    fn drifting_tastes_and_new_items_move_the_truth() {
        let cfg = SynthConfig {
            users: 200,
            items: 500,
            events: 10_000,
            days: 10,
            drift: 0.3,
            new_items: 0.3,
            ..small()
        };
        let d = cfg.generate().unwrap();
        let wanted = cfg.events + cfg.users * cfg.holdout;
        let got = d.train.len() + d.held_out.len();
        assert!(
            got <= wanted && got as f64 > 0.95 * wanted as f64,
            "{got} of {wanted}"
        );
        // No event picks an item before its launch, and some items do launch late.
        for e in d.all_events() {
            let i: usize = e.item_id[1..].parse().unwrap();
            assert!(
                d.launch_ts[i] <= e.ts,
                "{e:?} before launch {}",
                d.launch_ts[i]
            );
        }
        let late = d.launch_ts.iter().filter(|&&t| t > cfg.start_ts).count();
        assert!(late > 100 && late < 200, "{late} late items");
        // Tastes change for most users over 10 days, and the oracle follows them.
        let moved = d.user_tastes.iter().filter(|t| t.len() > 1).count();
        assert!(moved > 150, "{moved} users changed tastes");
        let u = (0..200).find(|&u| d.user_tastes[u].len() > 1).unwrap();
        let late_ts = cfg.start_ts + 10 * 86_400_000 - 1;
        assert_ne!(
            d.true_scores_at(u, cfg.start_ts),
            d.true_scores_at(u, late_ts)
        );
        // Items not yet launched have no probability.
        let unlaunched = (0..500).find(|&i| d.launch_ts[i] > cfg.start_ts).unwrap();
        assert_eq!(d.true_scores_at(u, cfg.start_ts)[unlaunched], 0.0);
    }
}
