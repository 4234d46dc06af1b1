//! Every CUDA kernel against its CPU reference on fresh random inputs (the same sweep as
//! `qformer-kernels check`); runs only where a CUDA device is present, prints SKIP otherwise.

use sensorium_kernels::{check, cuda::Gpu};

#[test]
fn cuda_kernels_match_cpu_references() {
    let g = match Gpu::new(0) {
        Ok(g) => g,
        Err(e) => {
            println!("SKIP: {e}");
            return;
        }
    };
    let res = check::run_all(&g).expect("check sweep");
    let failed: Vec<_> = res.iter().filter(|r| !r.passed()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} failed: {failed:#?}",
        failed.len(),
        res.len()
    );
    assert!(res.len() > 300, "sweep shrank to {} cases", res.len());
}
