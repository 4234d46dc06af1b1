//! Timings on a CUDA device with events (warm-up, then the median of many runs): the measured
//! ceilings (cuBLAS bf16 GEMM, device-to-device copy), the fused attention at FAVOR shape and
//! the composed Q-Former layer over batch sizes.

use std::sync::Arc;

use cudarc::driver::sys::CUevent_flags;
use serde::Serialize;

use sensorium_kernels::cuda::{AttnKernel, Gpu};
use sensorium_kernels::{AttnBias, AttnParams, Backend, Causal, Error, Result};

use crate::layer::{self, HostInit, LayerConfig, LayerWeights, Scratch};

fn drv(op: &'static str) -> impl FnOnce(cudarc::driver::DriverError) -> Error {
    move |e| Error::Driver {
        op,
        msg: format!("{e:?}"),
    }
}

/// One timed item.
#[derive(Debug, Clone, Serialize)]
pub struct Timing {
    /// What ran.
    pub name: String,
    /// Windows.
    pub batch: usize,
    /// Median milliseconds.
    pub median_ms: f64,
    /// Achieved TFLOP/s (0 when not meaningful).
    pub tflops: f64,
    /// Achieved GB/s against the minimum bytes.
    pub gbps: f64,
}

/// Times `f` with CUDA events: `warm` untimed runs, then the median of `reps`.
pub fn time_ms(
    g: &Gpu,
    warm: usize,
    reps: usize,
    mut f: impl FnMut() -> Result<()>,
) -> Result<f64> {
    for _ in 0..warm {
        f()?;
    }
    g.sync()?;
    let ctx = g.context();
    let mut t = Vec::with_capacity(reps);
    for _ in 0..reps {
        let a = ctx
            .new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(drv("event"))?;
        let b = ctx
            .new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(drv("event"))?;
        a.record(g.stream()).map_err(drv("event record"))?;
        f()?;
        b.record(g.stream()).map_err(drv("event record"))?;
        b.synchronize().map_err(drv("event sync"))?;
        t.push(a.elapsed_ms(&b).map_err(drv("elapsed"))? as f64);
    }
    t.sort_by(|x, y| x.total_cmp(y));
    Ok(t[t.len() / 2])
}

/// Measured ceilings: bf16 GEMM TFLOP/s (8192^3) and copy GB/s (bytes read + written).
pub fn ceilings(g: &Arc<Gpu>) -> Result<(f64, f64)> {
    let n = 8192usize;
    let mut init = HostInit::new(7);
    let a = g.upload(&init.vec::<half::bf16>(n * n, 1.0))?;
    let b = g.upload(&init.vec::<half::bf16>(n * n, 1.0))?;
    let mut c = g.zeros::<half::bf16>(n * n)?;
    let ms = time_ms(g, 3, 10, || {
        let av = a.as_view();
        let mut cv = c.as_view_mut();
        g.linear(&av, &b, &mut cv, n, n, n)
    })?;
    let gemm = 2.0 * (n as f64).powi(3) / (ms * 1e-3) / 1e12;
    drop((a, b, c));
    let bytes = 1usize << 30;
    let src = g.zeros::<u8>(bytes)?;
    let mut dst = g.zeros::<u8>(bytes)?;
    let ms = time_ms(g, 3, 10, || {
        g.stream().memcpy_dtod(&src, &mut dst).map_err(drv("dtod"))
    })?;
    let bw = 2.0 * bytes as f64 / (ms * 1e-3) / 1e9;
    Ok((gemm, bw))
}

/// Slot self-attention alone at FAVOR shape (12 heads x 128, 10 frames x 32 slots), bf16.
pub fn bench_attention(g: &Arc<Gpu>, which: AttnKernel, batch: usize) -> Result<Timing> {
    let (h, hd, spf, frames) = (12usize, 128usize, 32usize, 10usize);
    let s = spf * frames;
    let p = AttnParams::contiguous(batch, h, s, s, hd, Causal::Past, spf);
    let mut init = HostInit::new(3);
    let n = batch * h * s * hd;
    let q = g.upload(&init.vec::<half::bf16>(n, 1.0))?;
    let k = g.upload(&init.vec::<half::bf16>(n, 1.0))?;
    let v = g.upload(&init.vec::<half::bf16>(n, 1.0))?;
    let bq = g.upload(&init.vec::<f32>(h * hd, 0.1))?;
    let mut o = g.zeros::<half::bf16>(n)?;
    let ms = time_ms(g, 3, 20, || {
        g.attention_with(
            which,
            &p,
            &q,
            &k,
            &v,
            Some(AttnBias {
                q: &bq,
                k: &bq,
                v: &bq,
            }),
            None,
            &mut o,
        )
    })?;
    let pairs = (spf * spf * frames * (frames + 1) / 2) as f64;
    let flops = 4.0 * pairs * hd as f64 * (h * batch) as f64;
    let bytes = 4.0 * n as f64 * 2.0;
    Ok(Timing {
        name: format!("slot self-attention bf16 past-only [{which:?}]"),
        batch,
        median_ms: ms,
        tflops: flops / (ms * 1e-3) / 1e12,
        gbps: bytes / (ms * 1e-3) / 1e9,
    })
}

/// The composed layer at FAVOR shapes, bf16 storage.
pub fn bench_layer(g: &Arc<Gpu>, cfg: &LayerConfig, batch: usize) -> Result<Timing> {
    let be = Backend::Cuda(g.clone());
    let w = LayerWeights::<half::bf16>::random(cfg, &be, 11)?;
    let mut s = Scratch::<half::bf16>::new(cfg, &be, batch)?;
    let mut init = HostInit::new(5);
    let n = batch * cfg.slots() * cfg.slot_dim;
    let m = batch * cfg.n_queries * cfg.query_dim;
    let si = be.upload(&init.vec::<half::bf16>(n, 1.0))?;
    let qi = be.upload(&init.vec::<half::bf16>(m, 1.0))?;
    let mk = be.upload(&vec![1u8; batch * cfg.frames])?;
    let mut so = be.zeros::<half::bf16>(n)?;
    let mut qo = be.zeros::<half::bf16>(m)?;
    let reps = if batch >= 64 { 10 } else { 30 };
    let ms = time_ms(g, 3, reps, || {
        layer::forward(cfg, &be, &w, &mut s, &si, &qi, Some(&mk), &mut so, &mut qo)
    })?;
    let flops = cfg.flops_per_window() * batch as f64;
    Ok(Timing {
        name: "Q-Former layer bf16 (ours: cuBLAS GEMMs + fused kernels)".into(),
        batch,
        median_ms: ms,
        tflops: flops / (ms * 1e-3) / 1e12,
        gbps: cfg.min_bytes(batch, 2) / (ms * 1e-3) / 1e9,
    })
}

/// Per-step median times of one layer call at `batch` (events between steps).
pub fn profile_layer(g: &Arc<Gpu>, cfg: &LayerConfig, batch: usize) -> Result<Vec<(String, f64)>> {
    let be = Backend::Cuda(g.clone());
    let w = LayerWeights::<half::bf16>::random(cfg, &be, 11)?;
    let mut s = Scratch::<half::bf16>::new(cfg, &be, batch)?;
    let mut init = HostInit::new(5);
    let n = batch * cfg.slots() * cfg.slot_dim;
    let m = batch * cfg.n_queries * cfg.query_dim;
    let si = be.upload(&init.vec::<half::bf16>(n, 1.0))?;
    let qi = be.upload(&init.vec::<half::bf16>(m, 1.0))?;
    let mk = be.upload(&vec![1u8; batch * cfg.frames])?;
    let mut so = be.zeros::<half::bf16>(n)?;
    let mut qo = be.zeros::<half::bf16>(m)?;
    let ctx = g.context().clone();
    let mut per: Vec<(String, Vec<f64>)> = Vec::new();
    for rep in 0..13 {
        let mut evs = vec![(
            "start",
            ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
                .map_err(drv("event"))?,
        )];
        evs[0].1.record(g.stream()).map_err(drv("event record"))?;
        layer::forward_marked(
            cfg,
            &be,
            &w,
            &mut s,
            &si,
            &qi,
            Some(&mk),
            &mut so,
            &mut qo,
            &mut |name| {
                let e = ctx
                    .new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
                    .map_err(drv("event"))?;
                e.record(g.stream()).map_err(drv("event record"))?;
                evs.push((name, e));
                Ok(())
            },
        )?;
        g.sync()?;
        if rep < 3 {
            continue; // warm-up
        }
        for i in 1..evs.len() {
            let ms = evs[i - 1].1.elapsed_ms(&evs[i].1).map_err(drv("elapsed"))? as f64;
            match per.get_mut(i - 1) {
                Some(p) => p.1.push(ms),
                None => per.push((evs[i].0.to_string(), vec![ms])),
            }
        }
    }
    Ok(per
        .into_iter()
        .map(|(n, mut v)| {
            v.sort_by(|a, b| a.total_cmp(b));
            (n, v[v.len() / 2])
        })
        .collect())
}
