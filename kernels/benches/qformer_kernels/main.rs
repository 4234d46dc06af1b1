//! The kernels' GPU benchmark: the measured ceilings (cuBLAS bf16 GEMM, device-to-device
//! copy), the fused slot attention at FAVOR shape (CUDA-core and tensor-core kernels), and
//! one FAVOR-shaped Q-Former layer (see `layer.rs`) over batch sizes with both LayerNorm
//! launches, then a per-step profile of the layer. Without CUDA it says why and exits 0.
//!
//! ```text
//! cargo bench -p sensorium-kernels --bench qformer_kernels -- [--device cuda[:N]] [--json PATH] [--batches 1,4,16,64,256]
//! ```
//! To run it on a machine without Rust, build it with `--no-run` (cargo prints the
//! executable's path) and copy that file; `kernels/BENCHMARKS.md` has the commands.

mod layer;
mod timing;

use std::process::ExitCode;

use anyhow::Context;
use sensorium_kernels::cuda::{AttnKernel, Gpu, LnVariant};
use sensorium_kernels::DeviceSpec;

use layer::LayerConfig;

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("qformer_kernels bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

const USAGE: &str =
    "usage: qformer_kernels [--device cuda[:N]] [--json PATH] [--batches 1,4,16,64,256]";

fn run() -> anyhow::Result<ExitCode> {
    let mut device = DeviceSpec::Cuda(0);
    let mut json: Option<String> = None;
    let mut batches = vec![1usize, 4, 16, 64, 256];
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--bench" => {} // cargo bench passes it to every bench target
            "--device" => device = DeviceSpec::parse(it.next().context("--device needs a value")?)?,
            "--json" => json = Some(it.next().context("--json needs a path")?.clone()),
            "--batches" => {
                batches = it
                    .next()
                    .context("--batches needs a list")?
                    .split(',')
                    .map(|s| {
                        s.trim()
                            .parse::<usize>()
                            .with_context(|| format!("bad batch size {s:?} in --batches"))
                    })
                    .collect::<anyhow::Result<_>>()?
            }
            other => anyhow::bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    let ordinal = match device {
        DeviceSpec::Cuda(n) => n,
        _ => 0,
    };
    let g = match Gpu::new(ordinal) {
        Ok(g) => g,
        Err(e) => {
            println!("qformer_kernels bench: no CUDA ({e}); nothing to time on this machine");
            return Ok(ExitCode::SUCCESS);
        }
    };
    println!("device: {}", g.describe());
    for dt in sensorium_kernels::DType::ALL {
        g.warm(dt)?;
    }
    let (gemm, bw) = timing::ceilings(&g)?;
    println!("ceiling: cuBLAS bf16 GEMM 8192^3 {gemm:.1} TFLOP/s; device-to-device copy {bw:.1} GB/s (read+write)");
    let cfg = LayerConfig::default();
    let mut rows = Vec::new();
    for which in [AttnKernel::Scalar, AttnKernel::TensorCore] {
        for &b in &batches {
            rows.push(timing::bench_attention(&g, which, b)?);
        }
    }
    for v in [LnVariant::WarpPerRow, LnVariant::BlockPerRow] {
        g.set_ln_variant(v);
        for &b in &batches {
            let mut t = timing::bench_layer(&g, &cfg, b)?;
            t.name = format!("Q-Former layer bf16 ours, LN {v:?}");
            rows.push(t);
        }
    }
    g.set_ln_variant(LnVariant::BlockPerRow);
    println!(
        "{:<58} {:>6} {:>10} {:>9} {:>9} {:>8}",
        "item", "batch", "median ms", "TFLOP/s", "GB/s", "%roof"
    );
    for r in &rows {
        // Roofline: min over compute and memory ceilings of the achievable time.
        let t_c = r.tflops * r.median_ms / gemm;
        let t_m = r.gbps * r.median_ms / bw;
        let pct = 100.0 * t_c.max(t_m) / r.median_ms;
        println!(
            "{:<58} {:>6} {:>10.4} {:>9.1} {:>9.1} {:>7.1}%",
            r.name, r.batch, r.median_ms, r.tflops, r.gbps, pct
        );
    }
    let prof_batch = *batches.iter().max().unwrap_or(&64);
    let prof = timing::profile_layer(&g, &cfg, prof_batch)?;
    let total: f64 = prof.iter().map(|p| p.1).sum();
    println!("layer steps at batch {prof_batch} (median ms; sum {total:.3}):");
    for (name, ms) in &prof {
        println!("  {name:<22} {ms:>8.4}  {:>5.1}%", 100.0 * ms / total);
    }
    if let Some(p) = json {
        let v = serde_json::json!({ "device": g.describe(), "gemm_bf16_tflops": gemm, "copy_gbps": bw, "rows": rows, "profile_batch": prof_batch, "profile": prof });
        std::fs::write(&p, serde_json::to_string_pretty(&v)?)
            .with_context(|| format!("writing {p}"))?;
    }
    Ok(ExitCode::SUCCESS)
}
