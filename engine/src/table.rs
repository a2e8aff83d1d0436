//! Sparse embedding tables: row-major `f32` storage kept outside the autodiff graph, with
//! row-wise Adagrad state (one accumulator per row, as in TorchRec's row-wise Adagrad).
//! A training step touches only the rows of the ids in its batch, so its cost is
//! O(batch · dim) whatever the size of the catalog.

use rand::{RngExt, SeedableRng, rngs::StdRng};

/// Rows × `dim` matrix that grows on demand, plus one Adagrad accumulator per row.
#[derive(Debug)]
pub struct EmbeddingTable {
    dim: usize,
    rows: usize,
    data: Vec<f32>,
    accum: Vec<f32>,
    init_scale: f32,
    seed: u64,
}

/// The raw state of a table, for checkpoints: everything needed to continue bit-exactly.
#[derive(Debug, Clone, PartialEq)]
pub struct TableParts {
    pub dim: usize,
    pub init_scale: f32,
    pub seed: u64,
    /// `rows × dim`, row-major.
    pub data: Vec<f32>,
    /// One Adagrad accumulator per row.
    pub accum: Vec<f32>,
}

impl EmbeddingTable {
    /// An empty table whose new rows are drawn uniformly from ±`init_scale`.
    pub fn new(dim: usize, init_scale: f32, seed: u64) -> Self {
        assert!(dim > 0, "embedding dimension must be positive");
        Self {
            dim,
            rows: 0,
            data: Vec::new(),
            accum: Vec::new(),
            init_scale,
            seed,
        }
    }

    /// The table's state, copied.
    pub fn to_parts(&self) -> TableParts {
        TableParts {
            dim: self.dim,
            init_scale: self.init_scale,
            seed: self.seed,
            data: self.data.clone(),
            accum: self.accum.clone(),
        }
    }

    /// A table from saved state; fails when the parts do not fit together.
    pub fn from_parts(p: TableParts) -> Result<Self, String> {
        if p.dim == 0
            || !p.data.len().is_multiple_of(p.dim)
            || p.data.len() / p.dim != p.accum.len()
        {
            return Err(format!(
                "table of dimension {} with {} values and {} accumulators",
                p.dim,
                p.data.len(),
                p.accum.len()
            ));
        }
        Ok(Self {
            dim: p.dim,
            rows: p.accum.len(),
            data: p.data,
            accum: p.accum,
            init_scale: p.init_scale,
            seed: p.seed,
        })
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Makes sure rows `0..n` exist. Storage grows by amortised doubling (`Vec`), so a
    /// stream of new ids costs O(1) per id on average. A new row's initial values depend
    /// only on the seed and the row number, so a table restored from a checkpoint grows
    /// exactly as the original would have.
    pub fn ensure_rows(&mut self, n: usize) {
        if n <= self.rows {
            return;
        }
        self.data.resize(n * self.dim, 0.0);
        self.accum.resize(n, 0.0);
        let old = self.rows;
        self.rows = n;
        for r in old..n {
            self.reset_row(r as u32);
        }
    }

    /// Gives row `r` its initial values again and forgets its Adagrad state (its id
    /// expired; the row will be reused).
    pub fn reset_row(&mut self, r: u32) {
        let r = r as usize;
        if r >= self.rows {
            return;
        }
        let mut rng =
            StdRng::seed_from_u64(self.seed ^ (r as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        for w in &mut self.data[r * self.dim..(r + 1) * self.dim] {
            let x: f32 = rng.random_range(-1.0..1.0);
            *w = x * self.init_scale;
        }
        self.accum[r] = 0.0;
    }

    /// Overwrites row `r`'s values (its Adagrad state stays).
    pub fn set_row(&mut self, r: u32, values: &[f32]) {
        let start = r as usize * self.dim;
        self.data[start..start + self.dim].copy_from_slice(values);
    }

    /// Every row's values, `rows × dim`, row-major.
    pub fn values(&self) -> &[f32] {
        &self.data[..self.rows * self.dim]
    }

    pub fn row(&self, r: u32) -> &[f32] {
        let start = r as usize * self.dim;
        &self.data[start..start + self.dim]
    }

    /// Copies the given rows, in order, into one `rows.len() × dim` buffer.
    pub fn gather(&self, rows: &[u32]) -> Vec<f32> {
        let mut out = Vec::with_capacity(rows.len() * self.dim);
        for &r in rows {
            out.extend_from_slice(self.row(r));
        }
        out
    }

    /// Row-wise Adagrad: for each row, `G += mean(g²)`, `w -= lr · g / (√G + ε)`.
    /// `grads` is `rows.len() × dim`, aligned with `rows`; rows must be unique. Returns
    /// the rows whose values changed: a row whose gradient is not finite is left
    /// untouched, and so is every row when `lr` is 0 (only the accumulators move).
    pub fn adagrad_update(&mut self, rows: &[u32], grads: &[f32], lr: f32) -> Vec<u32> {
        const EPS: f32 = 1e-8;
        debug_assert_eq!(grads.len(), rows.len() * self.dim);
        let mut changed = Vec::with_capacity(rows.len());
        for (i, &r) in rows.iter().enumerate() {
            let g = &grads[i * self.dim..(i + 1) * self.dim];
            let sq = g.iter().map(|x| x * x).sum::<f32>() / self.dim as f32;
            if !sq.is_finite() {
                continue;
            }
            let acc = &mut self.accum[r as usize];
            *acc += sq;
            let step = lr / (acc.sqrt() + EPS);
            let start = r as usize * self.dim;
            let mut moved = false;
            for (w, gi) in self.data[start..start + self.dim].iter_mut().zip(g) {
                let before = *w;
                *w -= step * gi;
                moved |= *w != before;
            }
            if moved {
                changed.push(r);
            }
        }
        changed
    }

    /// Raises row `r`'s Adagrad accumulator to at least `value`: its later steps are
    /// those of a row that has already learnt that much.
    pub fn settle_row(&mut self, r: u32, value: f32) {
        if let Some(a) = self.accum.get_mut(r as usize) {
            *a = a.max(value);
        }
    }

    /// Bytes held by values and optimizer state.
    pub fn memory_bytes(&self) -> usize {
        (self.data.capacity() + self.accum.capacity()) * std::mem::size_of::<f32>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_keeps_old_rows_and_is_seeded() {
        let mut t = EmbeddingTable::new(4, 0.1, 7);
        t.ensure_rows(2);
        let r1 = t.row(1).to_vec();
        t.ensure_rows(100);
        assert_eq!(t.rows(), 100);
        assert_eq!(t.row(1), r1.as_slice());
        assert!(t.row(99).iter().all(|x| x.abs() <= 0.1));
        let mut u = EmbeddingTable::new(4, 0.1, 7);
        u.ensure_rows(2);
        assert_eq!(u.row(1), r1.as_slice());
    }

    #[test]
    fn adagrad_touches_only_given_rows_and_descends() {
        let mut t = EmbeddingTable::new(2, 0.1, 1);
        t.ensure_rows(3);
        let before = t.gather(&[0, 1, 2]);
        assert_eq!(t.adagrad_update(&[1], &[1.0, -1.0], 0.5), vec![1]);
        assert_eq!(t.row(0), &before[0..2]);
        assert_eq!(t.row(2), &before[4..6]);
        // First step of Adagrad moves by lr · sign(g) when all |g| are equal.
        assert!((t.row(1)[0] - (before[2] - 0.5)).abs() < 1e-5);
        assert!((t.row(1)[1] - (before[3] + 0.5)).abs() < 1e-5);
    }

    #[test]
    fn non_finite_gradient_leaves_row_finite() {
        let mut t = EmbeddingTable::new(2, 0.1, 1);
        t.ensure_rows(1);
        let before = t.row(0).to_vec();
        assert!(t.adagrad_update(&[0], &[f32::NAN, 1.0], 0.5).is_empty());
        assert_eq!(t.row(0), before.as_slice());
        // A learning rate of 0 changes no row.
        assert!(t.adagrad_update(&[0], &[1.0, 1.0], 0.0).is_empty());
        assert_eq!(t.row(0), before.as_slice());
    }
}
