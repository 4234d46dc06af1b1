//! Fused training forms with an analytic backward, CPU f32: LayerNorm, softmax over the last
//! axis, CLIP's quick GELU and a bias added to every row.
//!
//! candle 0.11.1's fused LayerNorm and softmax record no backward, so a training graph used
//! their composed forms: LayerNorm alone was ten nodes with a full-size intermediate each,
//! and every broadcast parameter (a bias, LayerNorm's weight and bias) got its gradient from
//! candle's generic reduction over leading axes, which walks the gradient element by element
//! with a division per element. Profiled on the vision tower's pretraining (`perf`, 64 frames
//! a step), that reduction, the intermediates' allocation and the extra passes were most of
//! the step. Each op here is one pass forward and one backward over contiguous rows, with
//! the parameters' gradients summed row by row.
//!
//! Forward values equal the composed forms up to float rounding (a reciprocal square root
//! instead of a division); the tests check values and gradients against them at sizes that
//! are not multiples of a SIMD width.

use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor,
};

/// The contiguous f32 slice of a custom op's input.
fn slice<'a>(op: &str, s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => bail!("{op}: non-contiguous input"),
    }
}

/// A tensor's values, row-major.
fn values(t: &Tensor) -> Result<Vec<f32>> {
    t.flatten_all()?.to_vec1::<f32>()
}

/// Whether `x` may take the fused training forms: part of a training graph, f32, on the CPU.
pub(super) fn applies(x: &Tensor) -> bool {
    x.track_op() && x.dtype() == candle_core::DType::F32 && x.device().is_cpu()
}

/// `(x - mean) / sqrt(var + eps) * w + b` over the last axis (biased variance).
pub(super) struct LayerNorm {
    pub(super) eps: f32,
}

impl LayerNorm {
    /// The row's mean and `1 / sqrt(var + eps)`.
    fn stats(&self, row: &[f32]) -> (f32, f32) {
        let n = row.len() as f32;
        let mean = row.iter().sum::<f32>() / n;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
        (mean, 1.0 / (var + self.eps).sqrt())
    }
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "layer-norm-train"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = slice(self.name(), s1, l1)?;
        let (w, b) = (slice(self.name(), s2, l2)?, slice(self.name(), s3, l3)?);
        let n = w.len();
        if n == 0 || b.len() != n || l1.dims().last() != Some(&n) {
            bail!(
                "{}: x {:?} against weight {n} and bias {}",
                self.name(),
                l1.dims(),
                b.len()
            );
        }
        let mut y = vec![0f32; x.len()];
        for (row, out) in x.chunks_exact(n).zip(y.chunks_exact_mut(n)) {
            let (mean, rstd) = self.stats(row);
            for i in 0..n {
                out[i] = (row[i] - mean) * rstd * w[i] + b[i];
            }
        }
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (xs, ws, gs) = (values(x)?, values(w)?, values(grad)?);
        let n = ws.len();
        let mut dx = vec![0f32; xs.len()];
        let (mut dw, mut db) = (vec![0f32; n], vec![0f32; n]);
        let mut xhat = vec![0f32; n];
        for ((row, g), d) in xs
            .chunks_exact(n)
            .zip(gs.chunks_exact(n))
            .zip(dx.chunks_exact_mut(n))
        {
            let (mean, rstd) = self.stats(row);
            let (mut sum_dy, mut sum_dy_xhat) = (0f32, 0f32);
            for i in 0..n {
                xhat[i] = (row[i] - mean) * rstd;
                let dy = g[i] * ws[i];
                sum_dy += dy;
                sum_dy_xhat += dy * xhat[i];
                dw[i] += g[i] * xhat[i];
                db[i] += g[i];
            }
            let (m1, m2) = (sum_dy / n as f32, sum_dy_xhat / n as f32);
            for i in 0..n {
                d[i] = rstd * (g[i] * ws[i] - m1 - xhat[i] * m2);
            }
        }
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), dev)?),
            Some(Tensor::from_vec(dw, w.shape(), dev)?),
            Some(Tensor::from_vec(db, w.shape(), dev)?),
        ))
    }
}

/// Softmax over the last axis (max-subtracted).
pub(super) struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "softmax-train"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(self.name(), s, l)?;
        let n = l.dims().last().copied().unwrap_or(1).max(1);
        let mut y = vec![0f32; x.len()];
        for (row, out) in x.chunks_exact(n).zip(y.chunks_exact_mut(n)) {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for (o, v) in out.iter_mut().zip(row) {
                *o = (v - max).exp();
                sum += *o;
            }
            let inv = 1.0 / sum;
            out.iter_mut().for_each(|o| *o *= inv);
        }
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (ys, mut gs) = (values(res)?, values(grad)?);
        let n = res.dims().last().copied().unwrap_or(1).max(1);
        for (y, g) in ys.chunks_exact(n).zip(gs.chunks_exact_mut(n)) {
            let dot: f32 = y.iter().zip(g.iter()).map(|(a, b)| a * b).sum();
            for (gi, yi) in g.iter_mut().zip(y) {
                *gi = yi * (*gi - dot);
            }
        }
        Ok(Some(Tensor::from_vec(gs, res.shape(), res.device())?))
    }
}

/// CLIP's `x * sigmoid(1.702 x)`.
pub(super) struct QuickGelu;

fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + (-v).exp())
}

impl CustomOp1 for QuickGelu {
    fn name(&self) -> &'static str {
        "quick-gelu-train"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(self.name(), s, l)?;
        let y = x.iter().map(|&v| v * sigmoid(1.702 * v)).collect();
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (xs, mut gs) = (values(x)?, values(grad)?);
        for (g, &v) in gs.iter_mut().zip(&xs) {
            let s = sigmoid(1.702 * v);
            *g *= s + 1.702 * v * s * (1.0 - s);
        }
        Ok(Some(Tensor::from_vec(gs, x.shape(), x.device())?))
    }
}

/// `x + b` with `b` (the last axis of `x`) added to every row.
pub(super) struct AddRow;

impl CustomOp2 for AddRow {
    fn name(&self) -> &'static str {
        "add-row-train"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, b) = (slice(self.name(), s1, l1)?, slice(self.name(), s2, l2)?);
        let n = b.len();
        if n == 0 || l1.dims().last() != Some(&n) {
            bail!("{}: x {:?} against a bias of {n}", self.name(), l1.dims());
        }
        let mut y = x.to_vec();
        for row in y.chunks_exact_mut(n) {
            row.iter_mut().zip(b).for_each(|(v, b)| *v += b);
        }
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let gs = values(grad)?;
        let n = b.elem_count();
        let mut db = vec![0f32; n];
        for row in gs.chunks_exact(n) {
            db.iter_mut().zip(row).for_each(|(d, g)| *d += g);
        }
        Ok((
            Some(grad.clone()),
            Some(Tensor::from_vec(db, b.shape(), b.device())?),
        ))
    }
}

/// `x + b` over the last axis, fused for training.
pub(super) fn add_row(x: &Tensor, b: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op2(&b.contiguous()?, AddRow)
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor, Var, D};

    use super::*;

    fn random(shape: &[usize], seed: u64) -> Tensor {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0
            })
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn close(a: &Tensor, b: &Tensor, tol: f32, what: &str) {
        let (a, b) = (values(a).unwrap(), values(b).unwrap());
        assert_eq!(a.len(), b.len(), "{what}");
        let err = crate::ops::max_rel_err(&a, &b, 1.0);
        assert!(err < tol, "{what}: relative error {err:e} >= {tol:e}");
    }

    /// The fused op and the composed form on the same vars: values and every gradient.
    fn check(
        shapes: &[&[usize]],
        fused: impl Fn(&[Tensor]) -> Result<Tensor>,
        composed: impl Fn(&[Tensor]) -> Result<Tensor>,
        what: &str,
    ) {
        let vars: Vec<Var> = shapes
            .iter()
            .enumerate()
            .map(|(i, s)| Var::from_tensor(&random(s, 7 + i as u64)).unwrap())
            .collect();
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        // A weighted sum, so that every output element gets its own gradient.
        let out_shape = composed(&ts).unwrap().dims().to_vec();
        let weight = random(&out_shape, 99);
        let (yf, yc) = (fused(&ts).unwrap(), composed(&ts).unwrap());
        close(&yf, &yc, 1e-5, &format!("{what} forward"));
        let gf = (&yf * &weight)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gc = (&yc * &weight)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for (i, v) in vars.iter().enumerate() {
            let (a, b) = (gf.get(v).unwrap(), gc.get(v).unwrap());
            close(a, b, 1e-4, &format!("{what} gradient of input {i}"));
        }
    }

    #[test]
    fn layer_norm_matches_the_composed_form() {
        for shape in [[3usize, 5, 17], [2, 65, 64], [1, 1, 130]] {
            let n = shape[2];
            check(
                &[&shape, &[n], &[n]],
                |t| {
                    t[0].contiguous()?
                        .apply_op3(&t[1], &t[2], LayerNorm { eps: 1e-5 })
                },
                |t| {
                    let mean = t[0].mean_keepdim(D::Minus1)?;
                    let xc = t[0].broadcast_sub(&mean)?;
                    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
                    xc.broadcast_div(&(var + 1e-5)?.sqrt()?)?
                        .broadcast_mul(&t[1])?
                        .broadcast_add(&t[2])
                },
                &format!("layer norm {shape:?}"),
            );
        }
    }

    #[test]
    fn softmax_matches_the_composed_form() {
        for shape in [[2usize, 3, 7, 9], [1, 4, 65, 65], [1, 1, 1, 33]] {
            check(
                &[&shape],
                |t| t[0].contiguous()?.apply_op1(Softmax),
                |t| candle_nn::ops::softmax(&t[0], D::Minus1),
                &format!("softmax {shape:?}"),
            );
        }
    }

    #[test]
    fn quick_gelu_matches_the_composed_form() {
        check(
            &[&[5, 37]],
            |t| t[0].contiguous()?.apply_op1(QuickGelu),
            |t| &t[0] * candle_nn::ops::sigmoid(&(&t[0] * 1.702)?)?,
            "quick gelu",
        );
    }

    #[test]
    fn add_row_matches_broadcast_add() {
        for shape in [[4usize, 3, 19], [2, 65, 128]] {
            let n = shape[2];
            check(
                &[&shape, &[n]],
                |t| add_row(&t[0], &t[1]),
                |t| t[0].broadcast_add(&t[1]),
                &format!("add row {shape:?}"),
            );
        }
    }

    #[test]
    fn a_bias_of_the_wrong_width_is_an_error() {
        let x = random(&[2, 5], 1);
        let b = random(&[4], 2);
        let err = add_row(&x, &b).unwrap_err().to_string();
        assert!(
            err.contains("add-row-train: x [2, 5] against a bias of 4"),
            "{err}"
        );
    }
}
