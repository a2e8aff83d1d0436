//! One training step of the two-tower model: the sparse id and category rows by row-wise
//! Adagrad, the MLPs by burn's Adam, the softmax by hand on the CPU.

use burn::optim::GradientsParams;
use burn::tensor::{Tensor, TensorData};

use super::model::TwoTowerModel;
use crate::loss::{self, LossKind, leaf_grad, step_candidates};
use crate::mf::{StepStats, add_l2};
use crate::{EngineError, Result, fused};

impl TwoTowerModel {
    /// One step on `(user row, item row, weight)` triples whose rows already exist.
    pub fn train_rows(
        &mut self,
        batch: &[(u32, u32, f32)],
    ) -> Result<(StepStats, Vec<u32>, Vec<u32>)> {
        if batch.is_empty() {
            return Ok((StepStats::default(), Vec::new(), Vec::new()));
        }
        let (cand_rows, targets) = step_candidates(
            batch,
            &mut self.freq,
            &mut self.steps,
            self.items.rows(),
            &self.cfg.sampling(),
        );
        let queries: Vec<(u32, u32)> = batch.iter().map(|b| (b.0, b.1)).collect();
        let (f, u_rows, all_items, cat_rows) = self.forward(&queries, &cand_rows, true);
        let (Some(user_out), Some(item_out)) = (f.user_out, f.item_out) else {
            return Err(EngineError::Tensor("a step without users or items".into()));
        };
        let (loss, loss_value) = if targets.kind == LossKind::Softmax && self.fused {
            // The softmax and its gradient by hand; burn backpropagates that gradient
            // through the towers via `Σ out ⊙ ∂L/∂out`, whose gradient it is.
            let d = self.cfg.dim;
            let u = Self::read(user_out.clone().detach())?;
            let it = Self::read(item_out.clone().detach())?;
            let b = u.len() / d;
            let per_event: Vec<i64> = (0..b as i64).collect();
            let s = fused::softmax_step(&u, &it, &per_event, d, &targets);
            if !s.loss.is_finite() {
                let stats = StepStats {
                    events: batch.len(),
                    loss: s.loss,
                    skipped: true,
                };
                return Ok((stats, Vec::new(), Vec::new()));
            }
            let n = it.len() / d;
            let du = Tensor::<2>::from_data(TensorData::new(s.user_grads, [b, d]), &self.device);
            let di = Tensor::<2>::from_data(TensorData::new(s.item_grads, [n, d]), &self.device);
            let surrogate = (user_out * du).sum() + (item_out * di).sum();
            (surrogate, s.loss)
        } else {
            let loss = loss::loss(&self.device, user_out, item_out, &targets);
            let value: f32 = loss.clone().into_scalar();
            (loss, value)
        };
        let stats = StepStats {
            events: batch.len(),
            loss: loss_value,
            skipped: !loss_value.is_finite(),
        };
        if stats.skipped {
            return Ok((stats, Vec::new(), Vec::new()));
        }
        let grads = loss.backward();
        let mut gu = leaf_grad(&f.users, &grads)?;
        let mut gi = leaf_grad(&f.items, &grads)?;
        let gc = match &f.categories {
            Some(c) => leaf_grad(c, &grads)?,
            None => Vec::new(),
        };
        let dense = GradientsParams::from_grads(grads, &self.towers);
        let (lr, l2) = (self.cfg.learning_rate, self.cfg.l2);
        add_l2(&mut gu, &self.users, &u_rows, l2);
        add_l2(&mut gi, &self.items, &all_items, l2);
        self.users.adagrad_update(&u_rows, &gu, lr);
        self.items.adagrad_update(&all_items, &gi, lr);
        if !cat_rows.is_empty() {
            self.categories.adagrad_update(&cat_rows, &gc, lr);
        }
        let towers = self.towers.clone();
        self.towers = self.optim.step(self.cfg.dense_learning_rate, towers, dense);
        for &(u, i, _) in batch {
            self.push_history(u, i);
        }
        Ok((stats, u_rows, all_items))
    }
}
