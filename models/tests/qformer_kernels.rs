//! What is particular to the fused-kernels backend (`KernelQFormer`); the parity and
//! streaming tests run over every backend in `tests/qformer.rs`. Here: the CUDA storage
//! types against candle and PyTorch when a device is present (f32 within 1e-4, f16 within
//! 1e-2, bf16 within 2e-2; prints SKIP otherwise), the ring cache's fixed window length,
//! `--device` parsing and the `auto` fallback message, and warm-up.

use candle_core::Device;
use sensorium_kernels::{Backend, DeviceSpec, Elem};
use sensorium_models::ops::max_rel_err;
use sensorium_models::qformer::{
    KStream, KernelQFormer, MaskDirection, QFormer, QFormerBackend, QFormerOutput, QFormerRunner,
    SlotContext, StoragePrecision, StreamFrame,
};

mod qformer_common;
use qformer_common::{dir, fixture, flat, frame_input, tiny_cfg, Fixture, CASES};

fn rel(a: &QFormerOutput, b: &QFormerOutput) -> f32 {
    max_rel_err(&flat(&a.hidden), &flat(&b.hidden), 1e-6).max(max_rel_err(
        &flat(&a.projected),
        &flat(&b.projected),
        1e-6,
    ))
}

fn rel_ref(a: &QFormerOutput, fx: &Fixture, case: &str) -> f32 {
    max_rel_err(
        &flat(&a.hidden),
        &flat(&fx.io[&format!("{case}.hidden")]),
        1e-6,
    )
    .max(max_rel_err(
        &flat(&a.projected),
        &flat(&fx.io[&format!("{case}.projected")]),
        1e-6,
    ))
}

fn load(mask: MaskDirection, ctx: SlotContext) -> QFormer {
    let mut qf = QFormer::load(&dir(), &Device::Cpu).unwrap();
    qf.cfg.mask = mask;
    qf.cfg.context = ctx;
    qf
}

/// Every fixture case, full recomputation, on `be`; returns the worst error against
/// candle and against PyTorch.
fn fixture_cases<T: Elem>(be: &Backend) -> (f32, f32)
where
    cudarc::cublas::CudaBlas: cudarc::cublas::Gemm<T>,
{
    let fx = fixture();
    let (mut worst_c, mut worst_t) = (0f32, 0f32);
    for (case, used, mask, ctx) in CASES {
        let cq = load(mask, ctx);
        let kq = KernelQFormer::<T>::new(load(mask, ctx), be.clone()).unwrap();
        let valid: Vec<bool> = flat(&fx.io[&format!("{case}.valid")])
            .iter()
            .map(|v| *v > 0.5)
            .collect();
        let first = 9 - used;
        let c = cq
            .forward_sequence(&fx.frames[first..], &valid, first as u64, 5)
            .unwrap();
        let k = kq
            .forward_sequence(&fx.frames[first..], &valid, first as u64, 5)
            .unwrap();
        assert_eq!(k.hidden.dims(), &[1, 4, 32]);
        assert_eq!(k.projected.dims(), &[1, 4, 24]);
        let (ec, et) = (rel(&k, &c), rel_ref(&k, &fx, case));
        eprintln!(
            "{case} on {}: vs candle {ec:.2e}, vs PyTorch {et:.2e}",
            be.describe()
        );
        worst_c = worst_c.max(ec);
        worst_t = worst_t.max(et);
    }
    (worst_c, worst_t)
}

#[test]
fn kernels_stream_rejects_a_longer_window_than_its_cache() {
    let kq = KernelQFormer::<f32>::new(
        QFormer::random(tiny_cfg(), 5, 0.2, &Device::Cpu).unwrap(),
        Backend::Cpu,
    )
    .unwrap();
    let mk = |n: usize| -> Vec<StreamFrame> {
        (0..n)
            .map(|i| StreamFrame {
                index: i as u64,
                valid: true,
                input: frame_input(i),
            })
            .collect()
    };
    let mut st = KStream::new();
    st.window(&kq, &mk(5)).unwrap();
    let err = st.window(&kq, &mk(7)).err().unwrap().to_string();
    assert!(
        err.contains("window of 7 frames exceeds this stream's cache of 5 frames"),
        "{err}"
    );
}

#[test]
fn device_spec_parsing_and_auto_fallback() {
    assert_eq!(DeviceSpec::parse("auto").unwrap(), DeviceSpec::Auto);
    assert_eq!(DeviceSpec::parse("CPU").unwrap(), DeviceSpec::Cpu);
    assert_eq!(DeviceSpec::parse("cuda").unwrap(), DeviceSpec::Cuda(0));
    assert_eq!(DeviceSpec::parse("cuda:3").unwrap(), DeviceSpec::Cuda(3));
    let e = DeviceSpec::parse("tpu").unwrap_err().to_string();
    assert_eq!(
        e,
        "invalid device \"tpu\": expected auto, cpu, cuda or cuda:N"
    );
    let qf = || QFormer::load(&dir(), &Device::Cpu).unwrap();
    let (r, note) = QFormerRunner::open(qf(), Some("cpu"), StoragePrecision::F32).unwrap();
    assert!(matches!(r, QFormerRunner::Candle(_)) && note.is_none());
    let err = QFormerRunner::open(qf(), Some("cuda:x"), StoragePrecision::F32)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("invalid device \"cuda:x\""), "{err}");
    let (r, note) = QFormerRunner::open(qf(), None, StoragePrecision::F32).unwrap();
    match DeviceSpec::Cuda(0).open() {
        Err(cuda_err) => {
            // No usable device here: auto runs candle on the CPU and says why, once.
            assert!(matches!(r, QFormerRunner::Candle(_)));
            let note = note.expect("auto must say why it fell back");
            assert!(note.starts_with("no CUDA device: "), "{note}");
            assert!(note.ends_with("; running on the CPU"), "{note}");
            assert!(note.contains(&cuda_err.to_string()), "{note}");
            let err = QFormerRunner::open(qf(), Some("cuda"), StoragePrecision::F32)
                .err()
                .unwrap()
                .to_string();
            assert!(
                err.starts_with("kernels: CUDA device 0 unavailable: "),
                "{err}"
            );
        }
        Ok(_) => {
            assert!(matches!(r, QFormerRunner::KernelsF32(_)));
            assert!(note.is_none());
        }
    }
}

#[test]
fn cuda_matches_candle_when_a_device_is_present() {
    let be = match DeviceSpec::Cuda(0).open() {
        Ok(be) => be,
        Err(e) => {
            eprintln!("SKIP cuda_matches_candle_when_a_device_is_present: {e}");
            return;
        }
    };
    let (c, t) = fixture_cases::<f32>(&be);
    assert!(
        c <= 1e-4 && t <= 1e-4,
        "cuda f32: vs candle {c}, vs PyTorch {t}"
    );
    let (c, t) = fixture_cases::<half::f16>(&be);
    assert!(
        c <= 1e-2 && t <= 1e-2,
        "cuda f16: vs candle {c}, vs PyTorch {t}"
    );
    // bf16 keeps 8 mantissa bits: on an H100 the past_window case measured 1.08e-2 (the
    // kernels' CPU reference in bf16: 8.3e-3), so 1e-2 is not met there; 2e-2 bounds it.
    let (c, t) = fixture_cases::<half::bf16>(&be);
    assert!(
        c <= 2e-2 && t <= 2e-2,
        "cuda bf16: vs candle {c}, vs PyTorch {t}"
    );
}

/// `warm_up` runs a window through each runner kind and leaves nothing behind: a stream
/// started afterwards gives exactly what it gives on an untouched runner.
#[test]
fn warm_up_leaves_no_state_behind() {
    let frames: Vec<StreamFrame> = (0..4)
        .map(|i| StreamFrame {
            index: i,
            valid: true,
            input: frame_input(i as usize),
        })
        .collect();
    let run = |r: &QFormerRunner| {
        let mut st = r.new_stream();
        let w = r.window(&mut st, &frames).unwrap();
        r.query_batch(&[w]).unwrap()
    };
    let qf = || QFormer::random(tiny_cfg(), 42, 0.2, &Device::Cpu).unwrap();
    let kernels = || QFormerRunner::kernels(qf(), Backend::Cpu, StoragePrecision::F32).unwrap();
    let candle = || {
        QFormerRunner::open(qf(), Some("cpu"), StoragePrecision::F32)
            .unwrap()
            .0
    };
    for runner in [&kernels as &dyn Fn() -> QFormerRunner, &candle] {
        let cold = run(&runner());
        let warm = runner();
        warm.warm_up(4).unwrap();
        let after = run(&warm);
        assert_eq!(rel(&after, &cold), 0.0);
    }
}
