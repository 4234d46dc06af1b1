//! Compiles every kernel module (f32, f16, bf16) to PTX for sm_80 and sm_90 with NVRTC only
//! (no driver); skips with a message when libnvrtc.so.13 is not installed.

use sensorium_kernels::cuda::nvrtc;
use sensorium_kernels::DType;

#[test]
fn every_kernel_compiles_for_sm80_and_sm90() {
    if !nvrtc::nvrtc_present() {
        println!("SKIP: libnvrtc.so.13 not found (pip install nvidia-cuda-nvrtc)");
        return;
    }
    for arch in ["compute_80", "compute_90"] {
        for dt in DType::ALL {
            let ptx = nvrtc::compile(dt, arch).unwrap_or_else(|e| panic!("{e}"));
            let src = ptx.to_src();
            for f in [
                "attention_fwd",
                "bias_residual_layernorm",
                "bias_act",
                "fill_nan",
                "broadcast_rows",
                "layernorm_warp",
                "bias_act_vec",
            ] {
                assert!(
                    src.contains(&format!(".entry {f}")),
                    "{f} missing from {arch} {dt:?} PTX"
                );
            }
            if dt != DType::F32 {
                for f in ["attention_mma_hd64", "attention_mma_hd128"] {
                    assert!(
                        src.contains(&format!(".entry {f}")),
                        "{f} missing from {arch} {dt:?} PTX"
                    );
                }
                assert!(
                    src.contains("mma.sync.aligned.m16n8k16"),
                    "no tensor-core mma in {arch} {dt:?} PTX"
                );
            }
            let target = arch.replace("compute_", "sm_");
            assert!(
                src.contains(&format!(".target {target}")),
                "PTX not for {target}"
            );
        }
    }
}
