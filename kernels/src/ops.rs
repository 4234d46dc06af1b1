//! Device-agnostic buffers and op dispatch: each op takes [`Buf`]s and runs the CPU reference
//! or the CUDA kernel depending on the backend; mixing host and device buffers is an error.

use cudarc::cublas::{CudaBlas, Gemm};
use cudarc::driver::CudaSlice;

use crate::cpu;
use crate::device::Backend;
use crate::dtype::Elem;
use crate::error::{Error, Result};
use crate::params::{AttnBias, AttnParams};

/// A tensor's storage: host memory for the CPU backend, device memory for CUDA.
#[derive(Debug)]
pub enum Buf<T> {
    /// Host memory.
    Host(Vec<T>),
    /// Device memory.
    Cuda(CudaSlice<T>),
}

impl<T> Buf<T> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Buf::Host(v) => v.len(),
            Buf::Cuda(s) => s.len(),
        }
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn host<'a, T>(b: &'a Buf<T>, name: &'static str) -> Result<&'a [T]> {
    match b {
        Buf::Host(v) => Ok(v),
        Buf::Cuda(_) => Err(Error::WrongDevice {
            tensor: name,
            msg: "on CUDA, backend is cpu",
        }),
    }
}
fn host_mut<'a, T>(b: &'a mut Buf<T>, name: &'static str) -> Result<&'a mut [T]> {
    match b {
        Buf::Host(v) => Ok(v),
        Buf::Cuda(_) => Err(Error::WrongDevice {
            tensor: name,
            msg: "on CUDA, backend is cpu",
        }),
    }
}
fn dev<'a, T>(b: &'a Buf<T>, name: &'static str) -> Result<&'a CudaSlice<T>> {
    match b {
        Buf::Cuda(s) => Ok(s),
        Buf::Host(_) => Err(Error::WrongDevice {
            tensor: name,
            msg: "on the host, backend is CUDA",
        }),
    }
}
fn dev_mut<'a, T>(b: &'a mut Buf<T>, name: &'static str) -> Result<&'a mut CudaSlice<T>> {
    match b {
        Buf::Cuda(s) => Ok(s),
        Buf::Host(_) => Err(Error::WrongDevice {
            tensor: name,
            msg: "on the host, backend is CUDA",
        }),
    }
}

impl Backend {
    /// Moves host data to this backend.
    pub fn upload<T: crate::dtype::Plain>(&self, x: &[T]) -> Result<Buf<T>> {
        match self {
            Backend::Cpu => Ok(Buf::Host(x.to_vec())),
            Backend::Cuda(g) => g.upload(x).map(Buf::Cuda),
        }
    }
    /// Copies a buffer back to the host.
    pub fn download<T: crate::dtype::Plain>(&self, x: &Buf<T>) -> Result<Vec<T>> {
        match (self, x) {
            (_, Buf::Host(v)) => Ok(v.clone()),
            (Backend::Cuda(g), Buf::Cuda(s)) => g.download(s),
            (Backend::Cpu, Buf::Cuda(_)) => Err(Error::WrongDevice {
                tensor: "x",
                msg: "on CUDA, backend is cpu",
            }),
        }
    }
    /// A zeroed buffer.
    pub fn zeros<T: crate::dtype::Plain>(&self, n: usize) -> Result<Buf<T>> {
        match self {
            Backend::Cpu => Ok(Buf::Host(vec![T::default(); n])),
            Backend::Cuda(g) => g.zeros(n).map(Buf::Cuda),
        }
    }

    /// Fused block-causal attention; layouts in [`AttnParams`].
    #[allow(clippy::too_many_arguments)]
    pub fn attention<T: Elem>(
        &self,
        p: &AttnParams,
        q: &Buf<T>,
        k: &Buf<T>,
        v: &Buf<T>,
        bias: Option<AttnBias<'_, Buf<f32>>>,
        key_mask: Option<&Buf<u8>>,
        out: &mut Buf<T>,
    ) -> Result<()> {
        match self {
            Backend::Cpu => {
                let bias = match bias {
                    Some(b) => Some(AttnBias {
                        q: host(b.q, "q_bias")?,
                        k: host(b.k, "k_bias")?,
                        v: host(b.v, "v_bias")?,
                    }),
                    None => None,
                };
                let mask = key_mask.map(|m| host(m, "key_mask")).transpose()?;
                cpu::attention(
                    p,
                    host(q, "q")?,
                    host(k, "k")?,
                    host(v, "v")?,
                    bias,
                    mask,
                    host_mut(out, "out")?,
                )
            }
            Backend::Cuda(g) => {
                let bias = match bias {
                    Some(b) => Some(AttnBias {
                        q: dev(b.q, "q_bias")?,
                        k: dev(b.k, "k_bias")?,
                        v: dev(b.v, "v_bias")?,
                    }),
                    None => None,
                };
                let mask = key_mask.map(|m| dev(m, "key_mask")).transpose()?;
                g.attention(
                    p,
                    dev(q, "q")?,
                    dev(k, "k")?,
                    dev(v, "v")?,
                    bias,
                    mask,
                    dev_mut(out, "out")?,
                )
            }
        }
    }

    /// out = LayerNorm(x + bias + residual) * gamma + beta over [rows, dim].
    #[allow(clippy::too_many_arguments)]
    pub fn bias_residual_layernorm<T: Elem>(
        &self,
        x: &Buf<T>,
        bias: Option<&Buf<f32>>,
        residual: Option<&Buf<T>>,
        gamma: &Buf<f32>,
        beta: &Buf<f32>,
        out: &mut Buf<T>,
        rows: usize,
        dim: usize,
        eps: f32,
    ) -> Result<()> {
        match self {
            Backend::Cpu => cpu::bias_residual_layernorm(
                host(x, "x")?,
                bias.map(|b| host(b, "bias")).transpose()?,
                residual.map(|r| host(r, "residual")).transpose()?,
                host(gamma, "gamma")?,
                host(beta, "beta")?,
                host_mut(out, "out")?,
                rows,
                dim,
                eps,
            ),
            Backend::Cuda(g) => g.bias_residual_layernorm(
                dev(x, "x")?,
                bias.map(|b| dev(b, "bias")).transpose()?,
                residual.map(|r| dev(r, "residual")).transpose()?,
                dev(gamma, "gamma")?,
                dev(beta, "beta")?,
                dev_mut(out, "out")?,
                rows,
                dim,
                eps,
            ),
        }
    }

    /// out = act(x + bias) over rows of `dim`; act = GELU (erf) when `gelu`.
    pub fn bias_act<T: Elem>(
        &self,
        x: &Buf<T>,
        bias: &Buf<f32>,
        out: &mut Buf<T>,
        dim: usize,
        gelu: bool,
    ) -> Result<()> {
        match self {
            Backend::Cpu => cpu::bias_act(
                host(x, "x")?,
                host(bias, "bias")?,
                host_mut(out, "out")?,
                dim,
                gelu,
            ),
            Backend::Cuda(g) => g.bias_act(
                dev(x, "x")?,
                dev(bias, "bias")?,
                dev_mut(out, "out")?,
                dim,
                gelu,
            ),
        }
    }

    /// y[rows, out] = x[rows, inp] W^T (W HF [out, inp]).
    pub fn linear<T: Elem>(
        &self,
        x: &Buf<T>,
        w: &Buf<T>,
        y: &mut Buf<T>,
        rows: usize,
        inp: usize,
        outd: usize,
    ) -> Result<()>
    where
        CudaBlas: Gemm<T>,
    {
        match self {
            Backend::Cpu => cpu::linear(
                host(x, "x")?,
                host(w, "weight")?,
                host_mut(y, "y")?,
                rows,
                inp,
                outd,
            ),
            Backend::Cuda(g) => {
                let xv = dev(x, "x")?.as_view();
                let mut yv = dev_mut(y, "y")?.as_view_mut();
                g.linear(&xv, dev(w, "weight")?, &mut yv, rows, inp, outd)
            }
        }
    }
    /// `linear` on a row range: y[y_row0 .. y_row0+rows, outd] = x[x_row0 .. x_row0+rows, inp]
    /// W^T, for writing one frame's projection into a slot of a resident cache.
    #[allow(clippy::too_many_arguments)]
    pub fn linear_rows<T: Elem>(
        &self,
        x: &Buf<T>,
        x_row0: usize,
        w: &Buf<T>,
        y: &mut Buf<T>,
        y_row0: usize,
        rows: usize,
        inp: usize,
        outd: usize,
    ) -> Result<()>
    where
        CudaBlas: Gemm<T>,
    {
        let xr = x_row0 * inp..(x_row0 + rows) * inp;
        let yr = y_row0 * outd..(y_row0 + rows) * outd;
        if xr.end > x.len() {
            return Err(crate::error::shape(
                "x",
                format!(
                    "rows {x_row0}..{} of width {inp} exceed {} elements",
                    x_row0 + rows,
                    x.len()
                ),
            ));
        }
        if yr.end > y.len() {
            return Err(crate::error::shape(
                "y",
                format!(
                    "rows {y_row0}..{} of width {outd} exceed {} elements",
                    y_row0 + rows,
                    y.len()
                ),
            ));
        }
        match self {
            Backend::Cpu => cpu::linear(
                &host(x, "x")?[xr],
                host(w, "weight")?,
                &mut host_mut(y, "y")?[yr],
                rows,
                inp,
                outd,
            ),
            Backend::Cuda(g) => {
                let xv = dev(x, "x")?.slice(xr);
                let mut yv = dev_mut(y, "y")?.slice_mut(yr);
                g.linear(&xv, dev(w, "weight")?, &mut yv, rows, inp, outd)
            }
        }
    }

    /// Copies `n` elements `src[src_off..]` to `dst[dst_off..]` on the backend.
    pub fn copy<T: crate::dtype::Plain>(
        &self,
        src: &Buf<T>,
        src_off: usize,
        dst: &mut Buf<T>,
        dst_off: usize,
        n: usize,
    ) -> Result<()> {
        if src_off + n > src.len() {
            return Err(crate::error::shape(
                "src",
                format!("copy of {n} from {src_off} exceeds {} elements", src.len()),
            ));
        }
        if dst_off + n > dst.len() {
            return Err(crate::error::shape(
                "dst",
                format!("copy of {n} to {dst_off} exceeds {} elements", dst.len()),
            ));
        }
        match self {
            Backend::Cpu => {
                let s = &host(src, "src")?[src_off..src_off + n];
                host_mut(dst, "dst")?[dst_off..dst_off + n].copy_from_slice(s);
                Ok(())
            }
            Backend::Cuda(g) => {
                let s = dev(src, "src")?.slice(src_off..src_off + n);
                let mut d = dev_mut(dst, "dst")?.slice_mut(dst_off..dst_off + n);
                g.stream()
                    .memcpy_dtod(&s, &mut d)
                    .map_err(crate::error::drv("copy"))
            }
        }
    }
}
