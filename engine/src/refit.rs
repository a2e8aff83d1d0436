//! A user's vector solved outright against fixed item vectors, as implicit's ALS
//! recalculates a user: `u = (VᵀV + λI + α Σᵢ vᵢvᵢᵀ)⁻¹ (1 + α) Σᵢ vᵢ` over the user's items
//! `i`, every other item a zero with weight 1 (the weighted square loss of Hu, Koren and
//! Volinsky 2008). A user with a handful of events gets the vector that best explains
//! them in the item space the model has learnt, instead of a random start moved by a
//! step or two of gradient; the online trainer refits the users of each batch this way.
//! [`Gram`] keeps `VᵀV` current as item rows change, so a refit costs O(dim²) per user,
//! not a pass over the catalog.

/// The Gram matrix `VᵀV` of item vectors, row by row in f64: the test oracle of
/// [`gram_of`].
#[cfg(test)]
fn gram<'a>(dim: usize, vectors: impl Iterator<Item = &'a [f32]>) -> Vec<f64> {
    let mut g = vec![0.0f64; dim * dim];
    for v in vectors {
        for a in 0..dim {
            let va = f64::from(v[a]);
            if va == 0.0 {
                continue;
            }
            let row = &mut g[a * dim..(a + 1) * dim];
            for (b, x) in row.iter_mut().enumerate() {
                *x += va * f64::from(v[b]);
            }
        }
    }
    g
}

/// The Gram matrix of `values` (`n × dim`, row-major, contiguous) by BLAS, a block of
/// rows at a time summed in f64: `dim × dim` row-major.
pub fn gram_of(dim: usize, values: &[f32]) -> Vec<f64> {
    const BLOCK: usize = 16_384;
    let mut g = vec![0.0f64; dim * dim];
    let mut part = vec![0.0f32; dim * dim];
    for rows in values.chunks(BLOCK * dim) {
        let k = rows.len() / dim;
        // rowsᵀ (dim × k) times rows (k × dim).
        crate::fused::matmul(dim, dim, k, &mut part, rows, (1, dim), rows, (dim, 1), 1.0);
        for (a, b) in g.iter_mut().zip(&part) {
            *a += f64::from(*b);
        }
    }
    g
}

/// `VᵀV` of a table kept up to date as rows change: each change adds the new rows' outer
/// products and takes the old ones' away (one matrix product for a step's rows), instead
/// of a pass over the table per refit. Recomputed from scratch now and then, so rounding
/// cannot pile up.
#[derive(Debug, Clone)]
pub struct Gram {
    dim: usize,
    g: Vec<f64>,
    changes: u64,
}

/// Row changes after which [`Gram`] is recomputed from the rows.
const REBUILD_AFTER: u64 = 1 << 20;

impl Gram {
    /// Of `values`, `n × dim` row-major.
    pub fn of(dim: usize, values: &[f32]) -> Self {
        Self {
            dim,
            g: gram_of(dim, values),
            changes: 0,
        }
    }

    pub fn matrix(&self) -> &[f64] {
        &self.g
    }

    /// `old` (if the row held one) replaced by `new` (if it holds one now).
    pub fn replace(&mut self, old: Option<&[f32]>, new: Option<&[f32]>) {
        let d = self.dim;
        for (v, sign) in [(old, -1.0f64), (new, 1.0)] {
            let Some(v) = v else { continue };
            for a in 0..d {
                let va = sign * f64::from(v[a]);
                if va == 0.0 {
                    continue;
                }
                for (x, vb) in self.g[a * d..(a + 1) * d].iter_mut().zip(v) {
                    *x += va * f64::from(*vb);
                }
            }
        }
        self.changes += 1;
    }

    /// Rows `old` (`k × dim`, row-major) replaced by `new` (the same shape, aligned):
    /// `G += newᵀ·new − oldᵀ·old`, two matrix products.
    pub fn replace_rows(&mut self, old: &[f32], new: &[f32]) {
        let d = self.dim;
        let k = new.len() / d.max(1);
        if k == 0 {
            return;
        }
        debug_assert_eq!(old.len(), new.len());
        let mut delta = vec![0.0f32; d * d];
        for (rows, sign) in [(new, 1.0f64), (old, -1.0)] {
            // rowsᵀ (d × k, row stride 1) times rows (k × d).
            crate::fused::matmul(d, d, k, &mut delta, rows, (1, d), rows, (d, 1), 1.0);
            for (g, x) in self.g.iter_mut().zip(&delta) {
                *g += sign * f64::from(*x);
            }
        }
        self.changes += k as u64;
    }

    /// Whether enough changes have piled up that it should be recomputed.
    pub fn stale(&self) -> bool {
        self.changes >= REBUILD_AFTER
    }
}

/// Conjugate-gradient steps of the online trainer's refits: warm-started from the current
/// vectors, the well-conditioned systems (a large `lambda`) are solved to within rounding
/// by 8 at d = 64 (16 steps scored the same in the streaming evaluation, 4 and 2 lower).
pub const CG_STEPS: usize = 8;

/// One user's part of a [`refit_users`] call: the current vector (the start), the
/// vectors of the user's items, each counted once, and the user's L2 penalty.
pub struct Refit<'a> {
    pub start: &'a [f32],
    pub items: Vec<&'a [f32]>,
    /// Each item's extra confidence as a multiple of `alpha`; empty: 1 for every item.
    pub scale: &'a [f32],
    pub lambda: f32,
}

impl Refit<'_> {
    fn alpha(&self, alpha: f32, k: usize) -> f32 {
        self.scale.get(k).map_or(alpha, |s| alpha * s)
    }
}

/// Each user's vector that minimises the weighted square loss against the items
/// (`(VᵀV + λI + α Σᵢ vᵢvᵢᵀ) u = (1 + α) Σᵢ vᵢ`), by conjugate gradient from the current
/// vector, all users at once so that the `VᵀV` products are one matrix product a step.
/// `gram` is `VᵀV` over every item (`dim × dim`), `alpha` the extra confidence of an
/// observed item, `cg_steps` how many steps at most. Returns the vectors,
/// `users.len() × dim`.
pub fn refit_users(
    gram: &[f64],
    users: &[Refit<'_>],
    dim: usize,
    alpha: f32,
    cg_steps: usize,
) -> Vec<f32> {
    let n = users.len();
    let d = dim;
    let g: Vec<f32> = gram.iter().map(|&x| x as f32).collect();
    // out = P·G + λP + α Σ v (v·p), per user (row).
    let apply = |p: &[f32], out: &mut [f32]| {
        crate::fused::matmul(n, d, d, out, p, (d, 1), &g, (d, 1), 1.0);
        for (k, user) in users.iter().enumerate() {
            let (pk, ok) = (&p[k * d..(k + 1) * d], &mut out[k * d..(k + 1) * d]);
            for (o, x) in ok.iter_mut().zip(pk) {
                *o += user.lambda * x;
            }
            for (j, v) in user.items.iter().enumerate() {
                let vp = user.alpha(alpha, j) * dot(v, pk);
                for (o, a) in ok.iter_mut().zip(*v) {
                    *o += vp * a;
                }
            }
        }
    };
    let mut x: Vec<f32> = users.iter().flat_map(|u| u.start.iter().copied()).collect();
    let mut r = vec![0.0f32; n * d];
    for (k, user) in users.iter().enumerate() {
        for (j, v) in user.items.iter().enumerate() {
            let c = 1.0 + user.alpha(alpha, j);
            for (b, a) in r[k * d..(k + 1) * d].iter_mut().zip(*v) {
                *b += c * a;
            }
        }
    }
    let mut ap = vec![0.0f32; n * d];
    apply(&x, &mut ap);
    for (r, a) in r.iter_mut().zip(&ap) {
        *r -= a;
    }
    let mut p = r.clone();
    let mut rr: Vec<f32> = r.chunks(d).map(|r| dot(r, r)).collect();
    let mut live: Vec<bool> = vec![true; n];
    for _ in 0..cg_steps {
        apply(&p, &mut ap);
        for k in 0..n {
            let s = k * d..(k + 1) * d;
            let pap = dot(&p[s.clone()], &ap[s.clone()]);
            if !live[k] || rr[k] < 1e-12 || !(pap > 0.0 && pap.is_finite()) {
                live[k] = false;
                continue;
            }
            let step = rr[k] / pap;
            for j in s.clone() {
                x[j] += step * p[j];
                r[j] -= step * ap[j];
            }
            let next = dot(&r[s.clone()], &r[s.clone()]);
            for j in s {
                p[j] = r[j] + next / rr[k] * p[j];
            }
            rr[k] = next;
        }
        if !live.iter().any(|&l| l) {
            break;
        }
    }
    x
}

use recsys_index::vector::dot;

/// The user vector that minimises the weighted square loss against the items: `gram`
/// is `VᵀV` over every item, `items` the vectors of the user's items (each counted
/// once), `alpha` the extra confidence of an observed item, `lambda` the L2 penalty.
/// `None` when the system is singular. (The test oracle of [`refit_users`].)
#[cfg(test)]
fn solve_user(
    gram: &[f64],
    items: &[&[f32]],
    dim: usize,
    alpha: f64,
    lambda: f64,
) -> Option<Vec<f32>> {
    let mut a = gram.to_vec();
    let mut b = vec![0.0f64; dim];
    for v in items {
        for i in 0..dim {
            let vi = f64::from(v[i]);
            b[i] += (1.0 + alpha) * vi;
            let row = &mut a[i * dim..(i + 1) * dim];
            for (j, x) in row.iter_mut().enumerate() {
                *x += alpha * vi * f64::from(v[j]);
            }
        }
    }
    for i in 0..dim {
        a[i * dim + i] += lambda;
    }
    cholesky_solve(&mut a, &mut b, dim)?;
    Some(b.into_iter().map(|x| x as f32).collect())
}

/// Solves `A x = b` in place for symmetric positive definite `A` (`n × n`, row-major):
/// `A` becomes its Cholesky factor, `b` the solution. `None` if `A` is not positive
/// definite.
#[cfg(test)]
fn cholesky_solve(a: &mut [f64], b: &mut [f64], n: usize) -> Option<()> {
    for j in 0..n {
        let mut d = a[j * n + j];
        for k in 0..j {
            d -= a[j * n + k] * a[j * n + k];
        }
        if d.is_nan() || d <= 0.0 {
            return None;
        }
        let d = d.sqrt();
        a[j * n + j] = d;
        for i in j + 1..n {
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= a[i * n + k] * a[j * n + k];
            }
            a[i * n + j] = s / d;
        }
    }
    // L y = b, then Lᵀ x = y.
    for i in 0..n {
        let mut s = b[i];
        for k in 0..i {
            s -= a[i * n + k] * b[k];
        }
        b[i] = s / a[i * n + i];
    }
    for i in (0..n).rev() {
        let mut s = b[i];
        for k in i + 1..n {
            s -= a[k * n + i] * b[k];
        }
        b[i] = s / a[i * n + i];
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_solution_satisfies_the_normal_equations() {
        let items: Vec<Vec<f32>> = (0..40)
            .map(|k| {
                (0..4)
                    .map(|j| ((k * 7 + j * 3) % 11) as f32 / 11.0 - 0.4)
                    .collect()
            })
            .collect();
        let g = gram(4, items.iter().map(Vec::as_slice));
        let mine: Vec<&[f32]> = [3, 9, 17].iter().map(|&k| items[k].as_slice()).collect();
        let (alpha, lambda) = (4.0, 0.1);
        let u = solve_user(&g, &mine, 4, alpha, lambda).unwrap();
        // (VᵀV + λI + α Σ vvᵀ) u = (1 + α) Σ v, checked in f64.
        for i in 0..4 {
            let mut lhs = lambda * f64::from(u[i]);
            for j in 0..4 {
                let mut a = g[i * 4 + j];
                for v in &mine {
                    a += alpha * f64::from(v[i]) * f64::from(v[j]);
                }
                lhs += a * f64::from(u[j]);
            }
            let rhs: f64 = mine.iter().map(|v| (1.0 + alpha) * f64::from(v[i])).sum();
            assert!((lhs - rhs).abs() < 1e-4, "row {i}: {lhs} vs {rhs}");
        }
        // The user's own items score above the average item.
        let score = |v: &[f32]| u.iter().zip(v).map(|(a, b)| a * b).sum::<f32>();
        let mean_all: f32 = items.iter().map(|v| score(v)).sum::<f32>() / 40.0;
        assert!(mine.iter().all(|v| score(v) > mean_all));
        assert!(
            solve_user(&[0.0; 16], &[], 4, 1.0, 0.0).is_none(),
            "singular"
        );
    }

    fn table(n: usize, d: usize) -> Vec<Vec<f32>> {
        (0..n)
            .map(|k| {
                (0..d)
                    .map(|j| ((k * 7 + j * 3 + k * j) % 13) as f32 / 13.0 - 0.45)
                    .collect()
            })
            .collect()
    }

    #[test]
    fn conjugate_gradient_reaches_the_direct_solution() {
        let d = 8;
        let items = table(60, d);
        let g = gram(d, items.iter().map(Vec::as_slice));
        let (alpha, lambda) = (3.0f32, 5.0f32);
        let mine: [&[usize]; 3] = [&[1, 4, 9], &[20], &[7, 8, 30, 31, 44]];
        let starts = table(3, d);
        let refits: Vec<Refit<'_>> = mine
            .iter()
            .zip(&starts)
            .map(|(m, s)| Refit {
                start: s,
                items: m.iter().map(|&k| items[k].as_slice()).collect(),
                scale: &[],
                lambda,
            })
            .collect();
        let got = refit_users(&g, &refits, d, alpha, CG_STEPS);
        for (k, r) in refits.iter().enumerate() {
            let want = solve_user(&g, &r.items, d, f64::from(alpha), f64::from(lambda)).unwrap();
            for (a, b) in got[k * d..(k + 1) * d].iter().zip(&want) {
                assert!((a - b).abs() < 1e-4, "user {k}: {a} vs {b}");
            }
        }
        // A user with no items is pulled to zero.
        let empty = [Refit {
            start: &starts[0],
            items: Vec::new(),
            scale: &[],
            lambda,
        }];
        assert!(
            refit_users(&g, &empty, d, alpha, CG_STEPS)
                .iter()
                .all(|x| x.abs() < 1e-5)
        );
    }

    #[test]
    fn the_kept_gram_follows_row_changes() {
        let d = 6;
        let mut rows = table(30, d);
        let mut kept = Gram::of(d, &rows.concat());
        let changed = [2usize, 5, 17];
        let old: Vec<f32> = changed.iter().flat_map(|&k| rows[k].clone()).collect();
        for &k in &changed {
            rows[k].iter_mut().for_each(|x| *x = -*x * 1.5 + 0.1);
        }
        let new: Vec<f32> = changed.iter().flat_map(|&k| rows[k].clone()).collect();
        kept.replace_rows(&old, &new);
        let freed = rows[9].clone();
        rows[9] = vec![0.25; d];
        kept.replace(Some(&freed), Some(&rows[9]));
        let fresh = gram(d, rows.iter().map(Vec::as_slice));
        for (a, b) in kept.matrix().iter().zip(&fresh) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }
}
