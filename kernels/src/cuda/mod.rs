//! CUDA backend: NVRTC compilation of `kernels.cu` (once per device and storage type), the
//! kernel launches with their host-side bounds validation, and cuBLAS GEMMs.
//! The only `unsafe` blocks are FFI: kernel launches, cuBLAS calls and library probes.

pub mod nvrtc;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cudarc::cublas::{sys::cublasOperation_t, CudaBlas, Gemm, GemmConfig};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, CudaView, CudaViewMut, LaunchConfig,
    PushKernelArg,
};

use crate::cpu::{check_bias_act, check_linear, check_ln};
use crate::dtype::{DType, Elem};
use crate::error::{drv, Error, Result};
use crate::params::{AttnBias, AttnParams};

/// The kernels of one storage type, loaded into one context.
struct Funcs {
    attention: CudaFunction,
    layernorm: CudaFunction,
    bias_act: CudaFunction,
    fill_nan: CudaFunction,
    broadcast: CudaFunction,
    layernorm_warp: CudaFunction,
    layernorm_vec_block: CudaFunction,
    bias_act_vec: CudaFunction,
    /// Tensor-core attention for head_dim 64 and 128 (16-bit storage only).
    attention_mma: Option<[CudaFunction; 2]>,
}

/// Which attention kernel to launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttnKernel {
    /// Tensor cores when the storage type, head_dim, strides and device allow, else CUDA cores.
    Auto,
    /// The CUDA-core kernel (any storage type, head_dim <= 128).
    Scalar,
    /// The tensor-core kernel; an error when not applicable.
    TensorCore,
}

/// One CUDA device: context, stream, cuBLAS handle and the compiled-module cache.
pub struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    arch: &'static str,
    cc_major: i32,
    name: String,
    modules: Mutex<HashMap<DType, Arc<Funcs>>>,
    /// A one-element f32 buffer passed where an optional pointer is absent.
    dummy_f32: CudaSlice<f32>,
    dummy_u8: CudaSlice<u8>,
    /// LayerNorm launch shape for vectorisable rows (see [`LnVariant`]).
    ln_variant: std::sync::atomic::AtomicU8,
}

/// How the vectorised LayerNorm is launched (both are checked; the benchmark times both).
/// BlockPerRow is the default: 1.4% faster per layer at batch 256 on an H100 (BENCHMARKS.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LnVariant {
    /// One warp per row, the row in registers (dim <= 64 per lane).
    WarpPerRow = 0,
    /// One block per row, one 16-byte vector per thread (dim <= 1024 vectors).
    BlockPerRow = 1,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Gpu({} {}, {})",
            self.ctx.ordinal(),
            self.name,
            self.arch
        )
    }
}

/// True when the CUDA driver library (libcuda.so.1) can be loaded.
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen the driver library; no CUDA call is made.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

impl Gpu {
    /// Opens device `ordinal`; fails (never panics) when the driver or device is missing.
    pub fn new(ordinal: usize) -> Result<Arc<Gpu>> {
        let unavailable = |reason: String| Error::CudaUnavailable { ordinal, reason };
        if !driver_present() {
            return Err(unavailable(
                "the CUDA driver library (libcuda.so.1) was not found".into(),
            ));
        }
        if !nvrtc::nvrtc_present() {
            return Err(unavailable(
                "the NVRTC library (libnvrtc.so.13) was not found; install the CUDA 13 toolkit or pip package nvidia-cuda-nvrtc".into(),
            ));
        }
        // SAFETY: only tries to dlopen libcublas.
        if !unsafe { cudarc::cublas::sys::is_culib_present() } {
            return Err(unavailable(
                "the cuBLAS library (libcublas.so.13) was not found".into(),
            ));
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| unavailable(format!("{e:?}")))?;
        let (maj, min) = ctx
            .compute_capability()
            .map_err(drv("compute_capability"))?;
        let arch = nvrtc::arch_for(maj, min);
        let name = ctx.name().map_err(drv("device name"))?;
        let stream = ctx.default_stream();
        let blas = CudaBlas::new(stream.clone()).map_err(|e| Error::Blas {
            op: "create handle",
            msg: format!("{e:?}"),
        })?;
        let dummy_f32 = stream.alloc_zeros::<f32>(1).map_err(drv("alloc"))?;
        let dummy_u8 = stream.alloc_zeros::<u8>(1).map_err(drv("alloc"))?;
        Ok(Arc::new(Gpu {
            ctx,
            stream,
            blas,
            arch,
            cc_major: maj,
            name,
            modules: Mutex::new(HashMap::new()),
            dummy_f32,
            dummy_u8,
            ln_variant: std::sync::atomic::AtomicU8::new(LnVariant::BlockPerRow as u8),
        }))
    }

    /// Device name and target architecture, for reports.
    pub fn describe(&self) -> String {
        format!("cuda:{} {} ({})", self.ctx.ordinal(), self.name, self.arch)
    }

    /// The stream every op of this device is queued on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The context.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    fn funcs(&self, dt: DType) -> Result<Arc<Funcs>> {
        let mut cache = self.modules.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = cache.get(&dt) {
            return Ok(f.clone());
        }
        let ptx = nvrtc::compile(dt, self.arch)?;
        let module = self.ctx.load_module(ptx).map_err(drv("load module"))?;
        let load = |n: &str| module.load_function(n).map_err(drv("load function"));
        let f = Arc::new(Funcs {
            attention: load("attention_fwd")?,
            layernorm: load("bias_residual_layernorm")?,
            bias_act: load("bias_act")?,
            fill_nan: load("fill_nan")?,
            broadcast: load("broadcast_rows")?,
            layernorm_warp: load("layernorm_warp")?,
            layernorm_vec_block: load("layernorm_vec_block")?,
            bias_act_vec: load("bias_act_vec")?,
            attention_mma: if dt == DType::F32 {
                None
            } else {
                Some([load("attention_mma_hd64")?, load("attention_mma_hd128")?])
            },
        });
        cache.insert(dt, f.clone());
        Ok(f)
    }

    /// Chooses the LayerNorm launch shape for vectorisable rows.
    pub fn set_ln_variant(&self, v: LnVariant) {
        self.ln_variant
            .store(v as u8, std::sync::atomic::Ordering::Relaxed);
    }

    /// Compiles and loads the module of `dt` now (keeps compile time out of timings).
    pub fn warm(&self, dt: DType) -> Result<()> {
        self.funcs(dt).map(|_| ())
    }

    /// Copies host data to a new device buffer.
    pub fn upload<T: crate::dtype::Plain>(&self, x: &[T]) -> Result<CudaSlice<T>> {
        self.stream.clone_htod(x).map_err(drv("upload"))
    }

    /// Copies a device buffer back.
    pub fn download<T: crate::dtype::Plain>(&self, x: &CudaSlice<T>) -> Result<Vec<T>> {
        self.stream.clone_dtoh(x).map_err(drv("download"))
    }

    /// A zeroed device buffer.
    pub fn zeros<T: crate::dtype::Plain>(&self, n: usize) -> Result<CudaSlice<T>> {
        self.stream.alloc_zeros(n).map_err(drv("alloc"))
    }

    /// Waits for all queued work.
    pub fn sync(&self) -> Result<()> {
        self.stream.synchronize().map_err(drv("synchronize"))
    }

    /// Overwrites a buffer with NaN (poisoning outputs before a check).
    pub fn fill_nan<T: Elem>(&self, x: &mut CudaSlice<T>) -> Result<()> {
        let f = self.funcs(T::DTYPE)?;
        let len = x.len();
        let n = len as i64;
        let mut b = self.stream.launch_builder(&f.fill_nan);
        b.arg(x).arg(&n);
        // SAFETY: fill_nan writes indices < n = x.len() only.
        unsafe { b.launch(grid_1d(len)) }.map_err(drv("fill_nan"))?;
        Ok(())
    }

    /// Repeats `src` ([per_window] elements) into every window of `out`.
    pub fn broadcast<T: Elem>(&self, src: &CudaSlice<T>, out: &mut CudaSlice<T>) -> Result<()> {
        if src.is_empty() || out.len() % src.len() != 0 {
            return Err(crate::error::shape(
                "out",
                "broadcast output is not a multiple of the source",
            ));
        }
        let f = self.funcs(T::DTYPE)?;
        let (per, n) = (src.len() as i64, out.len() as i64);
        let mut b = self.stream.launch_builder(&f.broadcast);
        b.arg(src).arg(out).arg(&per).arg(&n);
        // SAFETY: reads src[i % per] (< src.len()), writes out[i] for i < n = out.len().
        unsafe { b.launch(grid_1d(n as usize)) }.map_err(drv("broadcast"))?;
        Ok(())
    }

    /// Fused attention; see [`crate::cpu::attention`] for the reference semantics.
    #[allow(clippy::too_many_arguments)]
    pub fn attention<T: Elem>(
        &self,
        p: &AttnParams,
        q: &CudaSlice<T>,
        k: &CudaSlice<T>,
        v: &CudaSlice<T>,
        bias: Option<AttnBias<'_, CudaSlice<f32>>>,
        key_mask: Option<&CudaSlice<u8>>,
        out: &mut CudaSlice<T>,
    ) -> Result<()> {
        self.attention_with(AttnKernel::Auto, p, q, k, v, bias, key_mask, out)
    }

    /// Whether the tensor-core kernel can run these parameters for storage type `dt`.
    pub fn tensor_core_ok(&self, dt: DType, p: &AttnParams) -> bool {
        let aligned = [p.q, p.k, p.v, p.o]
            .iter()
            .all(|s| s.batch % 8 == 0 && s.head % 8 == 0 && s.row % 8 == 0)
            && p.offsets.iter().all(|o| o % 8 == 0);
        dt != DType::F32 && self.cc_major >= 8 && (p.head_dim == 64 || p.head_dim == 128) && aligned
    }

    /// Fused attention with an explicit kernel choice (checks exercise both kernels).
    #[allow(clippy::too_many_arguments)]
    pub fn attention_with<T: Elem>(
        &self,
        which: AttnKernel,
        p: &AttnParams,
        q: &CudaSlice<T>,
        k: &CudaSlice<T>,
        v: &CudaSlice<T>,
        bias: Option<AttnBias<'_, CudaSlice<f32>>>,
        key_mask: Option<&CudaSlice<u8>>,
        out: &mut CudaSlice<T>,
    ) -> Result<()> {
        let bias_len = bias.map(|b| b.q.len().min(b.k.len()).min(b.v.len()));
        p.validate(
            q.len(),
            k.len(),
            v.len(),
            out.len(),
            bias_len,
            key_mask.map(|m| m.len()),
        )?;
        if p.head_dim > 128 || p.head_dim % 4 != 0 {
            return Err(crate::error::shape(
                "head_dim",
                format!(
                    "{} unsupported by the CUDA kernel (needs <= 128, multiple of 4)",
                    p.head_dim
                ),
            ));
        }
        if p.batch == 0 || p.heads == 0 || p.q_len == 0 {
            return Ok(());
        }
        let f = self.funcs(T::DTYPE)?;
        let qv = q.slice(p.offsets[0]..);
        let kv = k.slice(p.offsets[1]..);
        let vv = v.slice(p.offsets[2]..);
        let o_total = out.len();
        let mut ov: CudaViewMut<'_, T> = out.slice_mut(p.offsets[3]..);
        let o_len = (o_total - p.offsets[3]) as i64;
        let st = |s: &crate::params::Strides| [s.batch as i64, s.head as i64, s.row as i64];
        let (qs, ks, vs, os) = (st(&p.q), st(&p.k), st(&p.v), st(&p.o));
        let ints = [
            p.batch as i32,
            p.heads as i32,
            p.q_len as i32,
            p.kv_len as i32,
            p.head_dim as i32,
            p.causal.code(),
            p.slots_per_frame as i32,
            p.q_offset as i32,
        ];
        let (bq, bk, bvv, has_bias): (&CudaSlice<f32>, &CudaSlice<f32>, &CudaSlice<f32>, i32) =
            match bias {
                Some(b) => (b.q, b.k, b.v, 1),
                None => (&self.dummy_f32, &self.dummy_f32, &self.dummy_f32, 0),
            };
        let (mask, has_mask) = match key_mask {
            Some(m) => (m, 1i32),
            None => (&self.dummy_u8, 0),
        };
        let n_kf = p.key_frames as i32;
        let tc_ok = self.tensor_core_ok(T::DTYPE, p);
        let use_tc = match which {
            AttnKernel::Auto => tc_ok,
            AttnKernel::Scalar => false,
            AttnKernel::TensorCore if tc_ok => true,
            AttnKernel::TensorCore => {
                return Err(crate::error::shape(
                    "head_dim",
                    "tensor-core attention needs f16/bf16, sm_80+, head_dim 64 or 128 and strides/offsets multiple of 8",
                ))
            }
        };
        let (func, rows_per_block) = match (&f.attention_mma, use_tc) {
            (Some(m), true) => (if p.head_dim == 64 { &m[0] } else { &m[1] }, 64),
            _ => (&f.attention, 16),
        };
        let mut b = self.stream.launch_builder(func);
        b.arg(&qv).arg(&kv).arg(&vv).arg(&mut ov);
        for s in [&qs, &ks, &vs, &os] {
            b.arg(&s[0]).arg(&s[1]).arg(&s[2]);
        }
        for i in &ints {
            b.arg(i);
        }
        b.arg(&p.scale)
            .arg(bq)
            .arg(bk)
            .arg(bvv)
            .arg(&has_bias)
            .arg(mask)
            .arg(&has_mask)
            .arg(&n_kf)
            .arg(&o_len);
        let cfg = LaunchConfig {
            grid_dim: (
                p.q_len.div_ceil(rows_per_block) as u32,
                p.heads as u32,
                p.batch as u32,
            ),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        if p.batch > 65535 || p.heads > 65535 {
            return Err(crate::error::shape(
                "batch",
                "batch and heads must each be <= 65535",
            ));
        }
        // SAFETY: validate() proved every Q/K/V/O index the kernel forms (offset + strides over
        // batch, heads, rows < q_len/kv_len, d < head_dim) is inside its buffer; biases have
        // heads*head_dim entries and the mask batch*key_frames; stores are also checked against
        // o_len in the kernel. The tensor-core kernel's 16-byte loads are aligned because
        // tensor_core_ok() required every stride and offset to be a multiple of 8 elements.
        unsafe { b.launch(cfg) }.map_err(drv("attention launch"))?;
        Ok(())
    }

    /// out = LayerNorm(x + bias + residual) * gamma + beta.
    #[allow(clippy::too_many_arguments)]
    pub fn bias_residual_layernorm<T: Elem>(
        &self,
        x: &CudaSlice<T>,
        bias: Option<&CudaSlice<f32>>,
        residual: Option<&CudaSlice<T>>,
        gamma: &CudaSlice<f32>,
        beta: &CudaSlice<f32>,
        out: &mut CudaSlice<T>,
        rows: usize,
        dim: usize,
        eps: f32,
    ) -> Result<()> {
        check_ln(
            x.len(),
            bias.map(|b| b.len()),
            residual.map(|r| r.len()),
            gamma.len(),
            beta.len(),
            out.len(),
            rows,
            dim,
        )?;
        if rows == 0 {
            return Ok(());
        }
        let f = self.funcs(T::DTYPE)?;
        let (bias, hb) = match bias {
            Some(b) => (b, 1i32),
            None => (&self.dummy_f32, 0),
        };
        let (res, hr) = match residual {
            Some(r) => (r, 1i32),
            None => (x, 0),
        };
        let (r32, d32) = (rows as i32, dim as i32);
        // One warp per row with 16-byte accesses when the row fits the registers (64 per lane).
        let per_vec = 16 / std::mem::size_of::<T>();
        let warp_ok = dim % per_vec == 0 && dim <= 64 * 32;
        let block_ok = dim % per_vec == 0 && dim <= 1024 * per_vec;
        let variant = self.ln_variant.load(std::sync::atomic::Ordering::Relaxed);
        let (func, cfg) = if block_ok && variant == LnVariant::BlockPerRow as u8 {
            let threads = (dim / per_vec).div_ceil(32) * 32;
            (
                &f.layernorm_vec_block,
                LaunchConfig {
                    grid_dim: (rows as u32, 1, 1),
                    block_dim: (threads as u32, 1, 1),
                    shared_mem_bytes: 0,
                },
            )
        } else if warp_ok {
            (
                &f.layernorm_warp,
                LaunchConfig {
                    grid_dim: (rows.div_ceil(8) as u32, 1, 1),
                    block_dim: (256, 1, 1),
                    shared_mem_bytes: 0,
                },
            )
        } else {
            (
                &f.layernorm,
                LaunchConfig {
                    grid_dim: (rows as u32, 1, 1),
                    block_dim: (256, 1, 1),
                    shared_mem_bytes: 0,
                },
            )
        };
        let mut b = self.stream.launch_builder(func);
        b.arg(x)
            .arg(bias)
            .arg(&hb)
            .arg(res)
            .arg(&hr)
            .arg(gamma)
            .arg(beta)
            .arg(out)
            .arg(&r32)
            .arg(&d32)
            .arg(&eps);
        // SAFETY: check_ln proved x/out/residual hold rows*dim, gamma/beta/bias dim elements,
        // dim <= 8192 (the block kernel's shared row; the vectorised kernels only run when dim
        // is a multiple of the 16-byte vector, so vectors stay inside each row, with enough
        // lanes/threads to cover dim); all touch row r < rows, column < dim only. Buffers from cudarc are 256-byte aligned.
        unsafe { b.launch(cfg) }.map_err(drv("layernorm launch"))?;
        Ok(())
    }

    /// out = act(x + bias) over rows of `dim` (act: GELU erf when `gelu`).
    pub fn bias_act<T: Elem>(
        &self,
        x: &CudaSlice<T>,
        bias: &CudaSlice<f32>,
        out: &mut CudaSlice<T>,
        dim: usize,
        gelu: bool,
    ) -> Result<()> {
        check_bias_act(x.len(), bias.len(), out.len(), dim)?;
        if x.is_empty() {
            return Ok(());
        }
        let f = self.funcs(T::DTYPE)?;
        let (n, d, act) = (x.len() as i64, dim as i32, gelu as i32);
        let vec_ok = dim % (16 / std::mem::size_of::<T>()) == 0;
        let mut b = self
            .stream
            .launch_builder(if vec_ok { &f.bias_act_vec } else { &f.bias_act });
        b.arg(x).arg(bias).arg(out).arg(&n).arg(&d).arg(&act);
        let rows = (x.len() / dim).clamp(1, 1 << 20) as u32;
        let threads = if vec_ok { 128 } else { 256 };
        let cfg = LaunchConfig {
            grid_dim: (rows, 1, 1),
            block_dim: (threads, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: rows r < n / dim and columns c < dim give indices < n = x.len() <= out.len();
        // bias index c < dim <= bias.len().
        unsafe { b.launch(cfg) }.map_err(drv("bias_act launch"))?;
        Ok(())
    }

    /// y[rows, out] = x[rows, inp] W^T, W HF-style [out, inp] (cuBLAS, f32 accumulation).
    #[allow(clippy::too_many_arguments)]
    pub fn linear<T: Elem>(
        &self,
        x: &CudaView<'_, T>,
        w: &CudaSlice<T>,
        y: &mut CudaViewMut<'_, T>,
        rows: usize,
        inp: usize,
        outd: usize,
    ) -> Result<()>
    where
        CudaBlas: Gemm<T>,
    {
        check_linear(x.len(), w.len(), y.len(), rows, inp, outd)?;
        if rows == 0 || outd == 0 {
            return Ok(());
        }
        let big = |n: usize| n > i32::MAX as usize;
        if big(rows) || big(inp) || big(outd) {
            return Err(crate::error::shape("x", "GEMM dimension exceeds i32"));
        }
        let cfg = GemmConfig {
            transa: cublasOperation_t::CUBLAS_OP_T,
            transb: cublasOperation_t::CUBLAS_OP_N,
            m: outd as i32,
            n: rows as i32,
            k: inp as i32,
            alpha: T::from_f32(1.0),
            lda: inp as i32,
            ldb: inp as i32,
            beta: T::from_f32(0.0),
            ldc: outd as i32,
        };
        // SAFETY: check_linear proved x holds rows*inp, w inp*outd and y rows*outd elements,
        // exactly the column-major extents cuBLAS reads and writes with these leading dims.
        unsafe { self.blas.gemm(cfg, w, x, y) }.map_err(|e| Error::Blas {
            op: "gemm",
            msg: format!("{e:?}"),
        })
    }
}

fn grid_1d(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(256).clamp(1, 65535 * 8) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}
