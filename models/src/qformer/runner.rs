//! One Q-Former handle for `--device auto|cpu|cuda[:N]`: the candle backend on the CPU, the
//! fused kernels ([`KernelQFormer`]) on a CUDA device, chosen at run time from the same
//! binary. `auto` takes CUDA device 0 when a driver, NVRTC, cuBLAS and a device are there,
//! else says once why not ("no CUDA device: ...") and runs on the CPU.

use half::{bf16, f16};
use sensorium_kernels::{Backend, DeviceSpec};

use crate::error::Result;

use super::backend::QFormerBackend;
use super::fused::{KWindow, KernelQFormer};
use super::input::{FrameInput, QFormerOutput, StreamFrame};
use super::model::{QFormer, WindowKv};
use super::stream::QFormerStream;

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

/// The Q-Former on the device picked by a `--device` value: one backend of
/// [`QFormerBackend`], chosen at run time. Every method is the backend's, through
/// [`Variant`]; the window and stream logic is [`QFormerStream`]'s, the same for all.
pub enum QFormerRunner {
    /// candle (CPU tensors).
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
    Candle(QFormerStream<QFormer>),
    KernelsF32(QFormerStream<KernelQFormer<f32>>),
    KernelsBf16(QFormerStream<KernelQFormer<bf16>>),
    KernelsF16(QFormerStream<KernelQFormer<f16>>),
}

/// A window's slot side for the matching runner variant.
pub enum RunnerWindow {
    Candle(WindowKv),
    KernelsF32(KWindow<f32>),
    KernelsBf16(KWindow<bf16>),
    KernelsF16(KWindow<f16>),
}

/// A backend as one variant of the runner's three enums: how its streams and windows are
/// wrapped and unwrapped.
pub trait Variant: QFormerBackend + Sized {
    fn stream(st: &mut RunnerStream) -> Option<&mut QFormerStream<Self>>;
    fn wrap_stream(st: QFormerStream<Self>) -> RunnerStream;
    fn window(w: &RunnerWindow) -> Option<&Self::Window>;
    fn wrap_window(w: Self::Window) -> RunnerWindow;
}

macro_rules! variant {
    ($ty:ty, $name:ident) => {
        impl Variant for $ty {
            fn stream(st: &mut RunnerStream) -> Option<&mut QFormerStream<Self>> {
                match st {
                    RunnerStream::$name(s) => Some(s),
                    _ => None,
                }
            }
            fn wrap_stream(st: QFormerStream<Self>) -> RunnerStream {
                RunnerStream::$name(st)
            }
            fn window(w: &RunnerWindow) -> Option<&Self::Window> {
                match w {
                    RunnerWindow::$name(w) => Some(w),
                    _ => None,
                }
            }
            fn wrap_window(w: Self::Window) -> RunnerWindow {
                RunnerWindow::$name(w)
            }
        }
    };
}

variant!(QFormer, Candle);
variant!(KernelQFormer<f32>, KernelsF32);
variant!(KernelQFormer<bf16>, KernelsBf16);
variant!(KernelQFormer<f16>, KernelsF16);

/// Runs `$body` with `$q` bound to the runner's backend, whichever it is.
macro_rules! with_backend {
    ($runner:expr, $q:ident => $body:expr) => {
        match $runner {
            QFormerRunner::Candle($q) => $body,
            QFormerRunner::KernelsF32($q) => $body,
            QFormerRunner::KernelsBf16($q) => $body,
            QFormerRunner::KernelsF16($q) => $body,
        }
    };
}

fn mismatch() -> crate::error::ModelError {
    crate::error::ModelError::InvalidInput(
        "stream or window belongs to a Q-Former runner on another device".into(),
    )
}

fn window_on<B: Variant>(
    b: &B,
    st: &mut RunnerStream,
    frames: &[StreamFrame],
) -> Result<RunnerWindow> {
    let st = B::stream(st).ok_or_else(mismatch)?;
    Ok(B::wrap_window(st.window(b, frames)?))
}

fn query_on<B: Variant>(b: &B, windows: &[RunnerWindow]) -> Result<QFormerOutput> {
    let w = windows
        .iter()
        .map(|w| B::window(w).ok_or_else(mismatch))
        .collect::<Result<Vec<_>>>()?;
    b.query_batch(&w)
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
    /// references are for tests, see [`Self::kernels`]), CUDA means the kernels.
    pub fn on(qf: QFormer, be: Backend, precision: StoragePrecision) -> Result<Self> {
        match be {
            Backend::Cpu => Ok(Self::Candle(Box::new(qf))),
            Backend::Cuda(_) => Self::kernels(qf, be, precision),
        }
    }

    /// Runs `qf` on the fused kernels of `be`, whichever backend it is (on
    /// [`Backend::Cpu`], the kernels' plain-Rust references: slow, for tests).
    pub fn kernels(qf: QFormer, be: Backend, precision: StoragePrecision) -> Result<Self> {
        Ok(match precision {
            StoragePrecision::F32 => Self::KernelsF32(Box::new(KernelQFormer::new(qf, be)?)),
            StoragePrecision::Bf16 => Self::KernelsBf16(Box::new(KernelQFormer::new(qf, be)?)),
            StoragePrecision::F16 => Self::KernelsF16(Box::new(KernelQFormer::new(qf, be)?)),
        })
    }

    /// "cpu (candle)" or the kernels' device and storage type.
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
        fn fresh<B: Variant>(_: &B) -> RunnerStream {
            B::wrap_stream(QFormerStream::new())
        }
        with_backend!(self, q => fresh(&**q))
    }

    /// The slot side of one window of a stream (see [`QFormerStream::window`]).
    pub fn window(&self, st: &mut RunnerStream, frames: &[StreamFrame]) -> Result<RunnerWindow> {
        with_backend!(self, q => window_on(&**q, st, frames))
    }

    /// The queries over windows of equal length (see [`QFormerBackend::query_batch`]).
    pub fn query_batch(&self, windows: &[RunnerWindow]) -> Result<QFormerOutput> {
        with_backend!(self, q => query_on(&**q, windows))
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

    /// Non-incremental reference (see [`QFormerBackend::forward_sequence`]).
    pub fn forward_sequence(
        &self,
        frames: &[FrameInput],
        valid: &[bool],
        first_index: u64,
        k: usize,
    ) -> Result<QFormerOutput> {
        with_backend!(self, q => q.forward_sequence(frames, valid, first_index, k))
    }
}

impl RunnerStream {
    /// Frames this stream pushed through the slot layers.
    pub fn frames_computed(&self) -> u64 {
        match self {
            Self::Candle(s) => s.frames_computed,
            Self::KernelsF32(s) => s.frames_computed,
            Self::KernelsBf16(s) => s.frames_computed,
            Self::KernelsF16(s) => s.frames_computed,
        }
    }

    /// Frames this stream holds in its cache.
    pub fn cached(&self) -> usize {
        match self {
            Self::Candle(s) => s.cached(),
            Self::KernelsF32(s) => s.cached(),
            Self::KernelsBf16(s) => s.cached(),
            Self::KernelsF16(s) => s.cached(),
        }
    }
}
