//! The two MLPs of the towers, residual on the id embedding and normalised.

use burn::module::{Module, Param, ParamId};
use burn::nn::Linear;
use burn::tensor::{Device, Tensor, TensorData, activation::relu};
use rand::{RngExt, SeedableRng, rngs::StdRng};

use super::config::TwoTowerConfig;

/// The two MLPs. Parameter ids are fixed (1..=8), so optimizer state saved with them
/// finds its parameters again after a restore.
#[derive(Module, Debug)]
pub struct Towers {
    pub(super) user_hidden: Linear,
    pub(super) user_out: Linear,
    pub(super) item_hidden: Linear,
    pub(super) item_out: Linear,
}

fn dense(
    d_in: usize,
    d_out: usize,
    id: u64,
    zero: bool,
    rng: &mut StdRng,
    device: &Device,
) -> Linear {
    // Kaiming-uniform bound for ReLU layers, as burn's default initializer.
    let bound = (1.0 / d_in as f32).sqrt();
    let mut draw = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| {
                if zero {
                    0.0
                } else {
                    rng.random_range(-bound..bound)
                }
            })
            .collect()
    };
    let w = Tensor::<2>::from_data(TensorData::new(draw(d_in * d_out), [d_in, d_out]), device);
    let b = Tensor::<1>::from_data(TensorData::new(vec![0.0f32; d_out], [d_out]), device);
    Linear {
        weight: Param::initialized(ParamId::from(id), w.require_grad()),
        bias: Some(Param::initialized(ParamId::from(id + 1), b.require_grad())),
    }
}

impl Towers {
    pub(super) fn new(cfg: &TwoTowerConfig, device: &Device) -> Self {
        let mut rng = StdRng::seed_from_u64(cfg.seed.wrapping_add(3));
        let (d, h) = (cfg.dim, cfg.hidden);
        Self {
            user_hidden: dense(2 * d, h, 1, false, &mut rng, device),
            user_out: dense(h, d, 3, true, &mut rng, device),
            item_hidden: dense(2 * d, h, 5, false, &mut rng, device),
            item_out: dense(h, d, 7, true, &mut rng, device),
        }
    }

    pub(super) fn user(&self, id_emb: Tensor<2>, context: Tensor<2>) -> Tensor<2> {
        let x = Tensor::cat(vec![id_emb.clone(), context], 1);
        normalize(id_emb + self.user_out.forward(relu(self.user_hidden.forward(x))))
    }

    pub(super) fn item(&self, id_emb: Tensor<2>, features: Tensor<2>) -> Tensor<2> {
        let x = Tensor::cat(vec![id_emb.clone(), features], 1);
        normalize(id_emb + self.item_out.forward(relu(self.item_hidden.forward(x))))
    }
}

fn normalize(x: Tensor<2>) -> Tensor<2> {
    let norm = x.clone().powi_scalar(2).sum_dim(1).add_scalar(1e-12).sqrt();
    x / norm
}
