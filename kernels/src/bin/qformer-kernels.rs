//! Check binary for the Q-Former kernels: `check` compares every CUDA kernel with its CPU
//! reference on fresh random inputs at sizes crossing warp and block boundaries. Without
//! CUDA it says why and exits 0. No GStreamer, no candle. (The timings are the bench target
//! `qformer_kernels`, `kernels/benches/`; the real Q-Former on these kernels is checked by
//! `models/examples/qformer_check.rs`.)

use std::process::ExitCode;

use anyhow::Context;
use sensorium_kernels::cuda::Gpu;
use sensorium_kernels::{check, DeviceSpec};

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("qformer-kernels: {e:#}");
            ExitCode::from(2)
        }
    }
}

const USAGE: &str = "usage: qformer-kernels check [--device cuda[:N]]";

fn run() -> anyhow::Result<ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) != Some("check") {
        eprintln!("{USAGE}");
        return Ok(ExitCode::from(2));
    }
    let mut device = DeviceSpec::Cuda(0);
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--device" => device = DeviceSpec::parse(it.next().context("--device needs a value")?)?,
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
            println!("qformer-kernels: no CUDA ({e}); nothing to check on this machine");
            return Ok(ExitCode::SUCCESS);
        }
    };
    println!("device: {}", g.describe());
    let res = check::run_all(&g)?;
    let mut failed = 0;
    for r in &res {
        let ok = r.passed();
        failed += usize::from(!ok);
        println!(
            "{} rel_err {:.3e} (tol {:.0e}) {}",
            if ok { "PASS" } else { "FAIL" },
            r.rel_err,
            r.tol,
            r.name
        );
    }
    println!("{} passed, {} failed", res.len() - failed, failed);
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
