//! One Q-Former handle for `--device auto|cpu|cuda[:N]`: the candle path on the CPU, the
//! fused kernels ([`KernelQFormer`]) on a CUDA device, chosen at run time from the same
//! binary. `auto` takes CUDA device 0 when a driver, NVRTC, cuBLAS and a device are there,
//! else says once why not ("no CUDA device: ...") and runs on the CPU.

use half::{bf16, f16};
use sensorium_kernels::{Backend, DeviceSpec};

use crate::error::Result;

use super::config::AudioSync;
use super::fused::{KStream, KWindow, KernelQFormer};
use super::model::{pool_window_audio, FrameInput, QFormer, QFormerOutput, WindowKv};
use super::stream::{QFormerStream, StreamFrame};

/// Storage type of the kernels path (arithmetic is f32 either way).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum StoragePrecision {
    /// f32 storage: equal to the candle path within float rounding (1e-4 relative).
    #[default]
    F32,
    /// bf16 weights and activations (tensor-core attention; ~1e-2 relative).
    Bf16,
    /// f16 weights and activations (tensor-core attention; 3 more mantissa bits than bf16,
    /// range to 65504).
    F16,
}

/// The Q-Former on the device picked by a `--device` value.
pub enum QFormerRunner {
    /// candle on the CPU.
    Candle(Box<QFormer>),
    /// Fused kernels, f32 storage.
    KernelsF32(Box<KernelQFormer<f32>>),
    /// Fused kernels, bf16 storage.
    KernelsBf16(Box<KernelQFormer<bf16>>),
    /// Fused kernels, f16 storage.
    KernelsF16(Box<KernelQFormer<f16>>),
}

/// A stream's cache for the matching runner variant.
pub enum RunnerStream {
    Candle(QFormerStream),
    KernelsF32(KStream<f32>),
    KernelsBf16(KStream<bf16>),
    KernelsF16(KStream<f16>),
}

/// A window's slot side for the matching runner variant.
pub enum RunnerWindow {
    Candle(WindowKv),
    KernelsF32(KWindow<f32>),
    KernelsBf16(KWindow<bf16>),
    KernelsF16(KWindow<f16>),
}

fn mismatch() -> crate::error::ModelError {
    crate::error::ModelError::InvalidInput(
        "stream or window belongs to a Q-Former runner on another device".into(),
    )
}

impl QFormerRunner {
    /// Picks the device for `device` (`auto`, `cpu`, `cuda`, `cuda:N`; `None` = auto). The
    /// second value is the fallback message when `auto` found no usable CUDA device (the
    /// caller prints it once).
    pub fn open(
        qf: QFormer,
        device: Option<&str>,
        precision: StoragePrecision,
    ) -> Result<(Self, Option<String>)> {
        let spec = DeviceSpec::parse(device.unwrap_or("auto"))?;
        let (be, note) = spec.open_noted()?;
        Ok((Self::on(qf, be, precision)?, note))
    }

    /// Runs `qf` on an opened backend: the CPU backend means candle (the kernels' CPU
    /// references are for tests), CUDA means the kernels.
    pub fn on(qf: QFormer, be: Backend, precision: StoragePrecision) -> Result<Self> {
        Ok(match (&be, precision) {
            (Backend::Cpu, _) => Self::Candle(Box::new(qf)),
            (Backend::Cuda(_), StoragePrecision::F32) => {
                Self::KernelsF32(Box::new(KernelQFormer::new(qf, be)?))
            }
            (Backend::Cuda(_), StoragePrecision::Bf16) => {
                Self::KernelsBf16(Box::new(KernelQFormer::new(qf, be)?))
            }
            (Backend::Cuda(_), StoragePrecision::F16) => {
                Self::KernelsF16(Box::new(KernelQFormer::new(qf, be)?))
            }
        })
    }

    /// "cpu (candle)" or the CUDA device's description.
    pub fn describe(&self) -> String {
        match self {
            Self::Candle(_) => "cpu (candle)".into(),
            Self::KernelsF32(k) => format!("{} f32", k.backend().describe()),
            Self::KernelsBf16(k) => format!("{} bf16", k.backend().describe()),
            Self::KernelsF16(k) => format!("{} f16", k.backend().describe()),
        }
    }

    /// The candle model (config, front end).
    pub fn model(&self) -> &QFormer {
        match self {
            Self::Candle(q) => q,
            Self::KernelsF32(k) => &k.qf,
            Self::KernelsBf16(k) => &k.qf,
            Self::KernelsF16(k) => &k.qf,
        }
    }

    /// A fresh per-stream cache for this runner.
    pub fn new_stream(&self) -> RunnerStream {
        match self {
            Self::Candle(_) => RunnerStream::Candle(QFormerStream::new()),
            Self::KernelsF32(_) => RunnerStream::KernelsF32(KStream::new()),
            Self::KernelsBf16(_) => RunnerStream::KernelsBf16(KStream::new()),
            Self::KernelsF16(_) => RunnerStream::KernelsF16(KStream::new()),
        }
    }

    /// The slot side of one window of a stream (see [`QFormerStream::window`]).
    pub fn window(&self, st: &mut RunnerStream, frames: &[StreamFrame]) -> Result<RunnerWindow> {
        let pooled;
        let frames = if self.model().cfg.audio_sync == AudioSync::Window {
            let inputs: Vec<FrameInput> = frames.iter().map(|f| f.input.clone()).collect();
            let valid: Vec<bool> = frames.iter().map(|f| f.valid).collect();
            let audio = pool_window_audio(&inputs, &valid, frames.len())?;
            pooled = frames
                .iter()
                .zip(audio)
                .map(|(f, input)| StreamFrame {
                    index: f.index,
                    valid: f.valid,
                    input,
                })
                .collect::<Vec<_>>();
            &pooled[..]
        } else {
            frames
        };
        Ok(match (self, st) {
            (Self::Candle(q), RunnerStream::Candle(s)) => {
                RunnerWindow::Candle(s.window(q, frames)?)
            }
            (Self::KernelsF32(k), RunnerStream::KernelsF32(s)) => {
                RunnerWindow::KernelsF32(k.window(s, frames)?)
            }
            (Self::KernelsBf16(k), RunnerStream::KernelsBf16(s)) => {
                RunnerWindow::KernelsBf16(k.window(s, frames)?)
            }
            (Self::KernelsF16(k), RunnerStream::KernelsF16(s)) => {
                RunnerWindow::KernelsF16(k.window(s, frames)?)
            }
            _ => return Err(mismatch()),
        })
    }

    /// The queries over windows of equal length (see [`QFormer::query_batch`]).
    pub fn query_batch(&self, windows: &[RunnerWindow]) -> Result<QFormerOutput> {
        match self {
            Self::Candle(q) => {
                let w = windows
                    .iter()
                    .map(|w| match w {
                        RunnerWindow::Candle(w) => Ok(w.clone()),
                        _ => Err(mismatch()),
                    })
                    .collect::<Result<Vec<_>>>()?;
                q.query_batch(&w)
            }
            Self::KernelsF32(k) => {
                let w = windows
                    .iter()
                    .map(|w| match w {
                        RunnerWindow::KernelsF32(w) => Ok(w),
                        _ => Err(mismatch()),
                    })
                    .collect::<Result<Vec<_>>>()?;
                k.query_batch(&w)
            }
            Self::KernelsBf16(k) => {
                let w = windows
                    .iter()
                    .map(|w| match w {
                        RunnerWindow::KernelsBf16(w) => Ok(w),
                        _ => Err(mismatch()),
                    })
                    .collect::<Result<Vec<_>>>()?;
                k.query_batch(&w)
            }
            Self::KernelsF16(k) => {
                let w = windows
                    .iter()
                    .map(|w| match w {
                        RunnerWindow::KernelsF16(w) => Ok(w),
                        _ => Err(mismatch()),
                    })
                    .collect::<Result<Vec<_>>>()?;
                k.query_batch(&w)
            }
        }
    }

    /// Runs one window of `frames` silent, black frames and its queries through the model
    /// once, so that one-time costs paid lazily on first use (GPU kernel modules, GEMM
    /// handles and workspaces, allocator pools) are paid here, before the first live window,
    /// instead of by it.
    pub fn warm_up(&self, frames: usize) -> Result<()> {
        let q = self.model();
        let (cfg, dev) = (&q.cfg, q.device());
        let zeros = |width: usize| {
            candle_core::Tensor::zeros((cfg.slots_per_frame, width), candle_core::DType::F32, dev)
        };
        let input = FrameInput {
            audio: Some(zeros(cfg.audio_width)?),
            visual: Some(zeros(cfg.visual_width)?),
        };
        let frames: Vec<StreamFrame> = (0..frames.max(1) as u64)
            .map(|index| StreamFrame {
                index,
                valid: true,
                input: input.clone(),
            })
            .collect();
        let mut st = self.new_stream();
        let w = self.window(&mut st, &frames)?;
        self.query_batch(&[w])?;
        Ok(())
    }

    /// Non-incremental reference (see [`QFormer::forward_sequence`]).
    pub fn forward_sequence(
        &self,
        frames: &[FrameInput],
        valid: &[bool],
        first_index: u64,
        k: usize,
    ) -> Result<QFormerOutput> {
        match self {
            Self::Candle(q) => q.forward_sequence(frames, valid, first_index, k),
            Self::KernelsF32(q) => q.forward_sequence(frames, valid, first_index, k),
            Self::KernelsBf16(q) => q.forward_sequence(frames, valid, first_index, k),
            Self::KernelsF16(q) => q.forward_sequence(frames, valid, first_index, k),
        }
    }
}
