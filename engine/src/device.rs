//! Compute devices for training. Two CPU backends: burn's pure-Rust `flex` backend, the
//! default (`cpu`), and burn's older ndarray backend (`ndarray`, deprecated in burn 0.22).
//! Chosen by measuring our own training step (`recsys bench train --backend`, d = 64,
//! batch 1,024, 2 cores, burn autodiff path): flex 46.6k events/s, ndarray 24.3k. On
//! flex, MF's softmax step (and the two-tower loss) use the hand-written step of
//! [`crate::fused`] unless `fused_cpu_step` is off. The `cuda` feature adds burn-cuda.

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::Result;

/// Which backend trains the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// burn-flex, burn 0.22's pure-Rust CPU backend: the faster one here.
    #[default]
    Cpu,
    /// burn-ndarray.
    Ndarray,
    Cuda,
}

/// The default CPU device (flex) with autodiff.
pub fn cpu_autodiff_device() -> Device {
    Device::flex().autodiff()
}

/// burn-ndarray with autodiff, kept for comparison.
#[allow(deprecated)] // burn 0.22 marks ndarray deprecated; see the module comment.
pub fn ndarray_autodiff_device() -> Device {
    Device::ndarray().autodiff()
}

/// The autodiff device for `backend`; CUDA needs a build with the `cuda` feature.
pub fn autodiff_device(backend: Backend) -> Result<Device> {
    match backend {
        Backend::Cpu => Ok(cpu_autodiff_device()),
        Backend::Ndarray => Ok(ndarray_autodiff_device()),
        #[cfg(feature = "cuda")]
        Backend::Cuda => Ok(Device::cuda(0).autodiff()),
        #[cfg(not(feature = "cuda"))]
        Backend::Cuda => Err(crate::EngineError::Config(
            "model.backend: \"cuda\" needs a build with `--features cuda`".into(),
        )),
    }
}
