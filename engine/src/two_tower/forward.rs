//! Both towers' forward pass over given users and items, their history and category
//! rows gathered into (optionally) autodiff leaves.

use std::collections::HashMap;

use burn::tensor::{Int, Tensor, TensorData};

use super::model::{MAX_CATEGORIES, NONE, TwoTowerModel};
use crate::loss::unique_rows;

/// Tensors of one forward pass over given users and items.
pub(super) struct Forward {
    pub(super) users: Tensor<2>,
    pub(super) items: Tensor<2>,
    pub(super) categories: Option<Tensor<2>>,
    /// `None` when there were no users (items) to compute.
    pub(super) user_out: Option<Tensor<2>>,
    pub(super) item_out: Option<Tensor<2>>,
}

impl TwoTowerModel {
    /// The forward pass of both towers. `queries` are `(user row, item to leave out of
    /// that user's history)` (`NONE` for none): one user-tower output per query, so a
    /// training event never sees its own item in its user's history. `item_rows` are the
    /// items to score; the users' history items are appended to the item leaf as needed.
    /// `require_grad` makes the gathered rows leaves of the autodiff graph.
    pub(super) fn forward(
        &self,
        queries: &[(u32, u32)],
        item_rows: &[u32],
        require_grad: bool,
    ) -> (Forward, Vec<u32>, Vec<u32>, Vec<u32>) {
        let d = self.cfg.dim;
        let n = self.cfg.history_len;
        let dev = &self.device;
        let leaf = |data: Vec<f32>, rows: usize| {
            let t = Tensor::<2>::from_data(TensorData::new(data, [rows, d]), dev);
            if require_grad { t.require_grad() } else { t }
        };
        let (user_rows, user_pos) = unique_rows(queries.iter().map(|q| q.0));
        // The item leaf holds the scored items first, then history items not among them.
        let mut all_items = item_rows.to_vec();
        let mut position: HashMap<u32, i64> = item_rows
            .iter()
            .enumerate()
            .map(|(k, &r)| (r, k as i64))
            .collect();
        let nq = queries.len();
        let mut hist_idx = vec![0i64; nq * n];
        let mut hist_w = vec![0f32; nq * n];
        for (k, &(u, leave_out)) in queries.iter().enumerate() {
            let h: Vec<u32> = self
                .user_history(u)
                .iter()
                .copied()
                .filter(|&i| i != NONE && i != leave_out)
                .collect();
            for (j, &item) in h.iter().enumerate() {
                let p = *position.entry(item).or_insert_with(|| {
                    all_items.push(item);
                    all_items.len() as i64 - 1
                });
                hist_idx[k * n + j] = p;
                hist_w[k * n + j] = 1.0 / h.len() as f32;
            }
        }
        // Categories of the scored items.
        let ni = item_rows.len();
        let mut cat_rows: Vec<u32> = Vec::new();
        let mut cat_pos: HashMap<u32, i64> = HashMap::new();
        let mut cat_idx = vec![0i64; ni * MAX_CATEGORIES];
        let mut cat_w = vec![0f32; ni * MAX_CATEGORIES];
        for (k, &i) in item_rows.iter().enumerate() {
            let cats = &self.item_categories
                [i as usize * MAX_CATEGORIES..(i as usize + 1) * MAX_CATEGORIES];
            let count = cats.iter().filter(|&&c| c != NONE).count();
            for (j, &c) in cats.iter().filter(|&&c| c != NONE).enumerate() {
                cat_idx[k * MAX_CATEGORIES + j] = *cat_pos.entry(c).or_insert_with(|| {
                    cat_rows.push(c);
                    cat_rows.len() as i64 - 1
                });
                cat_w[k * MAX_CATEGORIES + j] = 1.0 / count as f32;
            }
        }
        let nu = user_rows.len();
        let users = leaf(self.users.gather(&user_rows), nu);
        let items = if all_items.is_empty() {
            // Inference for users without history: a zero row to select from.
            Tensor::<2>::zeros([1, d], dev)
        } else {
            leaf(self.items.gather(&all_items), all_items.len())
        };
        let context = if n == 0 {
            Tensor::<2>::zeros([nq, d], dev)
        } else {
            let idx = Tensor::<1, Int>::from_data(TensorData::new(hist_idx, [nq * n]), dev);
            let w = Tensor::<3>::from_data(TensorData::new(hist_w, [nq, n, 1]), dev);
            (items.clone().select(0, idx).reshape([nq, n, d]) * w)
                .sum_dim(1)
                .reshape([nq, d])
        };
        let (categories, features) = if cat_rows.is_empty() {
            (None, Tensor::<2>::zeros([ni.max(1), d], dev))
        } else {
            let cats = leaf(self.categories.gather(&cat_rows), cat_rows.len());
            let idx =
                Tensor::<1, Int>::from_data(TensorData::new(cat_idx, [ni * MAX_CATEGORIES]), dev);
            let w = Tensor::<3>::from_data(TensorData::new(cat_w, [ni, MAX_CATEGORIES, 1]), dev);
            let f = (cats.clone().select(0, idx).reshape([ni, MAX_CATEGORIES, d]) * w)
                .sum_dim(1)
                .reshape([ni, d]);
            (Some(cats), f)
        };
        let user_out = (nq > 0).then(|| {
            let pos = Tensor::<1, Int>::from_data(TensorData::new(user_pos, [nq]), dev);
            self.towers.user(users.clone().select(0, pos), context)
        });
        let item_out = (ni > 0).then(|| {
            let scored = items.clone().slice([0..ni, 0..d]);
            self.towers.item(scored, features)
        });
        (
            Forward {
                users,
                items,
                categories,
                user_out,
                item_out,
            },
            user_rows,
            all_items,
            cat_rows,
        )
    }
}
