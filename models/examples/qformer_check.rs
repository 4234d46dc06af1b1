//! GPU check of the kernels-backed Q-Former (no GStreamer, so it can be copied to the device
//! machine alone): loads the committed Q-Former fixture and compares CUDA (f32 within 1e-4,
//! f16 within 1e-2, bf16 within 2e-2) against the candle CPU path and the PyTorch reference
//! outputs, full and streaming; then times streaming windows at FAVOR sizes (random weights) on candle-CPU and
//! CUDA f32/bf16/f16. Exit status 1 when a tolerance fails, 2 when no CUDA device opens.
//!
//! `qformer_check <fixture dir> [--device cuda:N] [--bench-windows N]`

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};
use cudarc::cublas::{CudaBlas, Gemm};
use sensorium_kernels::{Backend, DeviceSpec, Elem};
use sensorium_models::ops::max_rel_err;
use sensorium_models::qformer::{
    FrameInput, KStream, KernelQFormer, MaskDirection, QFormer, QFormerBackend, QFormerConfig,
    QFormerOutput, QFormerStream, SlotContext, StreamFrame,
};

type Res<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn flat(t: &Tensor) -> Res<Vec<f32>> {
    Ok(t.flatten_all()?.to_vec1::<f32>()?)
}

fn rel(a: &QFormerOutput, h: &Tensor, p: &Tensor) -> Res<f32> {
    Ok(
        max_rel_err(&flat(&a.hidden)?, &flat(h)?, 1e-6).max(max_rel_err(
            &flat(&a.projected)?,
            &flat(p)?,
            1e-6,
        )),
    )
}

const CASES: [(&str, usize, MaskDirection, SlotContext); 4] = [
    ("past_window", 5, MaskDirection::Past, SlotContext::Window),
    (
        "future_window",
        5,
        MaskDirection::Future,
        SlotContext::Window,
    ),
    (
        "past_lookback",
        9,
        MaskDirection::Past,
        SlotContext::Lookback,
    ),
    (
        "past_lookback_pad",
        9,
        MaskDirection::Past,
        SlotContext::Lookback,
    ),
];

fn fixture_check<T: Elem>(dir: &Path, be: &Backend, tol: f32) -> Res<bool>
where
    CudaBlas: Gemm<T>,
{
    let io = candle_core::safetensors::load(dir.join("io.safetensors"), &Device::Cpu)?;
    let (ha, hv) = (flat(&io["has_audio"])?, flat(&io["has_video"])?);
    let frames: Vec<FrameInput> = (0..9)
        .map(|i| {
            Ok(FrameInput {
                audio: if ha[i] > 0.5 {
                    Some(io["audio"].get(i)?)
                } else {
                    None
                },
                visual: if hv[i] > 0.5 {
                    Some(io["visual"].get(i)?)
                } else {
                    None
                },
            })
        })
        .collect::<Res<_>>()?;
    let mut ok = true;
    let name = T::DTYPE.name();
    for (case, used, mask, ctx) in CASES {
        let load = || -> Res<QFormer> {
            let mut q = QFormer::load(dir, &Device::Cpu)?;
            q.cfg.mask = mask;
            q.cfg.context = ctx;
            Ok(q)
        };
        let cq = load()?;
        let kq = KernelQFormer::<T>::new(load()?, be.clone())?;
        let valid: Vec<bool> = flat(&io[&format!("{case}.valid")])?
            .iter()
            .map(|v| *v > 0.5)
            .collect();
        let first = 9 - used;
        let c = cq.forward_sequence(&frames[first..], &valid, first as u64, 5)?;
        let k = kq.forward_sequence(&frames[first..], &valid, first as u64, 5)?;
        let ec = rel(&k, &c.hidden, &c.projected)?;
        let et = rel(
            &k,
            &io[&format!("{case}.hidden")],
            &io[&format!("{case}.projected")],
        )?;
        let pass = ec <= tol && et <= tol;
        ok &= pass;
        println!(
            "fixture {case:18} {name:4} full:      vs candle {ec:.2e}  vs PyTorch {et:.2e}  (tol {tol:.0e}) {}",
            if pass { "ok" } else { "FAIL" }
        );
        if ctx == SlotContext::Lookback && case == "past_lookback" {
            let mut st = KStream::new();
            let mut last = None;
            for start in [0u64, 2, 4] {
                let w: Vec<StreamFrame> = (start..start + 5)
                    .map(|i| StreamFrame {
                        index: i,
                        valid: true,
                        input: frames[i as usize].clone(),
                    })
                    .collect();
                let kw = st.window(&kq, &w)?;
                last = Some(kq.query_batch(&[&kw])?);
            }
            let last = last.ok_or("no window")?;
            let et = rel(
                &last,
                &io[&format!("{case}.hidden")],
                &io[&format!("{case}.projected")],
            )?;
            let pass = et <= tol && st.frames_computed == 9;
            ok &= pass;
            println!(
                "fixture {case:18} {name:4} streaming: vs PyTorch {et:.2e}, frames computed {} (tol {tol:.0e}) {}",
                st.frames_computed,
                if pass { "ok" } else { "FAIL" }
            );
        }
    }
    Ok(ok)
}

fn favor_frame(i: usize, cfg: &QFormerConfig) -> Res<FrameInput> {
    let a: Vec<f32> = (0..25 * cfg.audio_width)
        .map(|j| (((i * 131 + j * 7) % 1009) as f32 * 0.037).sin())
        .collect();
    let v: Vec<f32> = (0..32 * cfg.visual_width)
        .map(|j| (((i * 71 + j * 5) % 997) as f32 * 0.023).cos())
        .collect();
    Ok(FrameInput {
        audio: Some(Tensor::from_vec(a, (25, cfg.audio_width), &Device::Cpu)?),
        visual: Some(Tensor::from_vec(v, (32, cfg.visual_width), &Device::Cpu)?),
    })
}

fn window(start: usize, k: usize, inputs: &[FrameInput]) -> Vec<StreamFrame> {
    (start..start + k)
        .map(|i| StreamFrame {
            index: i as u64,
            valid: true,
            input: inputs[i].clone(),
        })
        .collect()
}

/// Streams `n` windows (k = 10, stride 1) at FAVOR sizes; returns ms per window after a
/// 10-window warm-up and the last output.
fn bench_kernels<T: Elem>(
    be: &Backend,
    inputs: &[FrameInput],
    n: usize,
) -> Res<(f64, QFormerOutput)>
where
    CudaBlas: Gemm<T>,
{
    let cfg = QFormerConfig::default();
    let kq = KernelQFormer::<T>::new(QFormer::random(cfg, 7, 0.02, &Device::Cpu)?, be.clone())?;
    let mut st = KStream::new();
    let mut out = None;
    let mut t0 = Instant::now();
    for s in 0..10 + n {
        if s == 10 {
            be.sync()?;
            t0 = Instant::now();
        }
        let w = st.window(&kq, &window(s, 10, inputs))?;
        out = Some(kq.query_batch(&[&w])?);
    }
    let ms = t0.elapsed().as_secs_f64() * 1e3 / n as f64;
    Ok((ms, out.ok_or("no window")?))
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    let dir = PathBuf::from(
        args.get(1)
            .ok_or("usage: qformer_check <fixture dir> [--device cuda:N] [--bench-windows N]")?,
    );
    let opt = |k: &str| {
        args.iter()
            .position(|a| a == k)
            .and_then(|i| args.get(i + 1))
    };
    let spec = DeviceSpec::parse(opt("--device").map_or("cuda", |s| s.as_str()))?;
    let n_bench: usize = opt("--bench-windows").map_or(Ok(50), |s| s.parse())?;
    let be = match spec.open() {
        Ok(be) => be,
        Err(e) => {
            eprintln!("qformer_check: {e}");
            std::process::exit(2);
        }
    };
    println!("device: {}", be.describe());
    let mut ok = fixture_check::<f32>(&dir, &be, 1e-4)?;
    // bf16 (8 mantissa bits) measured 1.08e-2 on the fixture on an H100: bounded at 2e-2.
    ok &= fixture_check::<half::bf16>(&dir, &be, 2e-2)?;
    ok &= fixture_check::<half::f16>(&dir, &be, 1e-2)?;

    if n_bench > 0 {
        let cfg = QFormerConfig::default();
        let inputs: Vec<FrameInput> = (0..10 + n_bench + 10)
            .map(|i| favor_frame(i, &cfg))
            .collect::<Res<_>>()?;
        // candle on the CPU: fewer windows (slow), same stream.
        let cq = QFormer::random(cfg.clone(), 7, 0.02, &Device::Cpu)?;
        let mut st = QFormerStream::new();
        let nc = n_bench.min(10);
        let mut t0 = Instant::now();
        let mut cout = None;
        for s in 0..10 + nc {
            if s == 10 {
                t0 = Instant::now();
            }
            let w = st.window(&cq, &window(s, 10, &inputs))?;
            cout = Some(cq.query_batch(&[&w])?);
        }
        let cms = t0.elapsed().as_secs_f64() * 1e3 / nc as f64;
        let cout = cout.ok_or("no window")?;
        println!(
            "FAVOR sizes (2 layers, 32 slots x 1536, 32 queries x 768, lookback 10, k 10, stride 1), per window:"
        );
        println!(
            "  candle cpu  {cms:8.3} ms  ({nc} windows, {} threads)",
            candle_core::utils::get_num_threads()
        );
        // Compare the outputs of the same window (window index 10 + nc - 1) on all paths.
        for (name, res) in [
            ("cuda f32 ", bench_kernels::<f32>(&be, &inputs, nc)),
            ("cuda bf16", bench_kernels::<half::bf16>(&be, &inputs, nc)),
            ("cuda f16 ", bench_kernels::<half::f16>(&be, &inputs, nc)),
        ] {
            let (ms, out) = res?;
            let e = rel(&out, &cout.hidden, &cout.projected)?;
            println!("  {name}   {ms:8.3} ms  ({nc} windows)  rel err vs candle {e:.2e}  speed-up {:.1}x", cms / ms);
        }
        for (name, res) in [
            ("cuda f32 ", bench_kernels::<f32>(&be, &inputs, n_bench)),
            (
                "cuda bf16",
                bench_kernels::<half::bf16>(&be, &inputs, n_bench),
            ),
            (
                "cuda f16 ",
                bench_kernels::<half::f16>(&be, &inputs, n_bench),
            ),
        ] {
            let (ms, _) = res?;
            println!("  {name}   {ms:8.3} ms  ({n_bench} windows)");
        }
    }
    if !ok {
        eprintln!("qformer_check: FAILED");
        std::process::exit(1);
    }
    println!("qformer_check: all fixture comparisons within tolerance");
    Ok(())
}
