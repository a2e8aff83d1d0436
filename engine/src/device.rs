//! Compute devices for training. The CPU path is burn's ndarray backend (deprecated in
//! burn 0.22 in favour of `flex`, but the one this project has measured); the `cuda`
//! feature adds burn-cuda.

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::{EngineError, Result};

/// Which backend trains the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    #[default]
    Cpu,
    Cuda,
}

/// The CPU device with autodiff.
#[allow(deprecated)] // burn 0.22 marks ndarray deprecated; see the module comment.
pub fn cpu_autodiff_device() -> Device {
    Device::ndarray().autodiff()
}

/// The autodiff device for `backend`; CUDA needs a build with the `cuda` feature.
pub fn autodiff_device(backend: Backend) -> Result<Device> {
    match backend {
        Backend::Cpu => Ok(cpu_autodiff_device()),
        #[cfg(feature = "cuda")]
        Backend::Cuda => Ok(Device::cuda(0).autodiff()),
        #[cfg(not(feature = "cuda"))]
        Backend::Cuda => Err(EngineError::Config(
            "model.backend: \"cuda\" needs a build with `--features cuda`".into(),
        )),
    }
}
