//! Fused kernels for the causal Q-Former: CUDA C compiled at run time by NVRTC (through
//! cudarc, loaded dynamically, so the build needs no toolkit), each with a plain-Rust CPU
//! reference of the same signature, plus device selection. (The Q-Former built on them is
//! `sensorium_models::qformer::KernelQFormer`; the benchmark's FAVOR-shaped layer lives in
//! `benches/qformer_kernels/`.)
//!
//! Layout conventions (all row-major, innermost dimension contiguous):
//! - attention tensors are addressed by [`Strides`]: element (b, h, row, d) of X sits at
//!   `b*sb + h*sh + row*sr + d`; `Strides::contiguous` is [batch, heads, seq, head_dim],
//!   `Strides::packed` is the projection output [batch, seq, heads*head_dim] (row stride may
//!   exceed heads*head_dim when Q, K and V share one fused buffer).
//! - LayerNorm / bias+GELU work on [rows, dim].
//! - linear weights are HF `[out, in]` (y = x W^T + b).

pub mod check;
pub mod cpu;
pub mod cuda;
pub mod device;
pub mod dtype;
pub mod error;

pub mod ops;
pub mod params;

pub use device::{Backend, DeviceSpec};
pub use dtype::{DType, Elem};
pub use error::{Error, Result};

pub use ops::Buf;
pub use params::{AttnBias, AttnParams, Causal, Strides};
