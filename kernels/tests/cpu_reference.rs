//! Properties of the CPU references: attention against a naive dense softmax with a
//! materialised mask (f64), direction semantics, incremental == full, masking, LayerNorm and
//! GELU values, device-spec parsing and error messages.

use rand::{Rng, SeedableRng};
use sensorium_kernels::{cpu, AttnBias, AttnParams, Backend, Causal, DeviceSpec, Error, Strides};

fn rand_vec(rng: &mut impl Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// Dense reference: materialise the [q, k] mask, full softmax in f64.
fn dense(p: &AttnParams, q: &[f32], k: &[f32], v: &[f32], mask: Option<&[u8]>) -> Vec<f32> {
    let mut out = vec![0f32; p.batch * p.heads * p.q_len * p.head_dim];
    for b in 0..p.batch {
        for h in 0..p.heads {
            let allowed: Vec<Vec<bool>> = (0..p.q_len)
                .map(|i| {
                    (0..p.kv_len)
                        .map(|j| {
                            let (qf, kf) =
                                ((p.q_offset + i) / p.slots_per_frame, j / p.slots_per_frame);
                            let dir = match p.causal {
                                Causal::None => true,
                                Causal::Past => kf <= qf,
                                Causal::Future => kf >= qf,
                            };
                            dir && mask.map_or(true, |m| m[b * p.key_frames + kf] != 0)
                        })
                        .collect()
                })
                .collect();
            for i in 0..p.q_len {
                let qi =
                    &q[p.offsets[0] + b * p.q.batch + h * p.q.head + i * p.q.row..][..p.head_dim];
                let s: Vec<f64> = (0..p.kv_len)
                    .map(|j| {
                        let kj = &k[p.offsets[1] + b * p.k.batch + h * p.k.head + j * p.k.row..]
                            [..p.head_dim];
                        let d: f64 = qi.iter().zip(kj).map(|(a, b)| *a as f64 * *b as f64).sum();
                        if allowed[i][j] {
                            d * p.scale as f64
                        } else {
                            f64::NEG_INFINITY
                        }
                    })
                    .collect();
                let mx = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let w: Vec<f64> = s
                    .iter()
                    .map(|x| if mx.is_finite() { (x - mx).exp() } else { 0.0 })
                    .collect();
                let z: f64 = w.iter().sum();
                for d in 0..p.head_dim {
                    let mut acc = 0f64;
                    for j in 0..p.kv_len {
                        acc += w[j]
                            * v[p.offsets[2] + b * p.v.batch + h * p.v.head + j * p.v.row + d]
                                as f64;
                    }
                    out[((b * p.heads + h) * p.q_len + i) * p.head_dim + d] =
                        if z > 0.0 { (acc / z) as f32 } else { 0.0 };
                }
            }
        }
    }
    out
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn attention_matches_dense_masked_softmax() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    for &(spf, frames) in &[(1usize, 3usize), (7, 3), (32, 2), (33, 3)] {
        for causal in [Causal::None, Causal::Past, Causal::Future] {
            for with_mask in [false, true] {
                let (b, h, hd) = (2, 3, 16);
                let s = spf * frames;
                let mut p = AttnParams::contiguous(b, h, s, s, hd, causal, spf);
                let q = rand_vec(&mut rng, b * h * s * hd);
                let k = rand_vec(&mut rng, b * h * s * hd);
                let v = rand_vec(&mut rng, b * h * s * hd);
                let mask: Vec<u8> = (0..b * frames).map(|i| u8::from(i % 3 != 1)).collect();
                p.key_frames = frames;
                let m = with_mask.then_some(&mask[..]);
                let mut out = vec![f32::NAN; q.len()];
                cpu::attention(&p, &q, &k, &v, None, m, &mut out).unwrap();
                let want = dense(&p, &q, &k, &v, m);
                let err = max_abs_diff(&out, &want);
                assert!(
                    err < 1e-6,
                    "spf {spf} frames {frames} {causal:?} mask {with_mask}: max diff {err}"
                );
            }
        }
    }
}

#[test]
fn packed_strides_and_offsets_match_contiguous() {
    // Q|K|V fused in one [batch, seq, 3*heads*hd] buffer, as the layer's projection writes it.
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    let (b, h, hd, spf, frames) = (2, 2, 8, 5, 3);
    let s = spf * frames;
    let width = 3 * h * hd;
    let fused = rand_vec(&mut rng, b * s * width);
    let mut p = AttnParams::contiguous(b, h, s, s, hd, Causal::Past, spf);
    p.q = Strides::packed(s, hd, width);
    p.k = p.q;
    p.v = p.q;
    p.o = Strides::packed(s, hd, h * hd);
    p.offsets = [0, h * hd, 2 * h * hd, 0];
    let mut packed_out = vec![f32::NAN; b * s * h * hd];
    cpu::attention(&p, &fused, &fused, &fused, None, None, &mut packed_out).unwrap();
    // Same data rearranged to contiguous [b, h, s, hd].
    let gather = |part: usize| -> Vec<f32> {
        let mut t = vec![0f32; b * h * s * hd];
        for bi in 0..b {
            for hi in 0..h {
                for si in 0..s {
                    for d in 0..hd {
                        t[((bi * h + hi) * s + si) * hd + d] =
                            fused[(bi * s + si) * width + part * h * hd + hi * hd + d];
                    }
                }
            }
        }
        t
    };
    let pc = AttnParams::contiguous(b, h, s, s, hd, Causal::Past, spf);
    let mut out = vec![f32::NAN; b * h * s * hd];
    cpu::attention(
        &pc,
        &gather(0),
        &gather(1),
        &gather(2),
        None,
        None,
        &mut out,
    )
    .unwrap();
    for bi in 0..b {
        for hi in 0..h {
            for si in 0..s {
                for d in 0..hd {
                    assert_eq!(
                        packed_out[(bi * s + si) * h * hd + hi * hd + d],
                        out[((bi * h + hi) * s + si) * hd + d]
                    );
                }
            }
        }
    }
}

#[test]
fn past_and_future_directions_see_the_right_frames() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let (spf, frames, hd) = (4, 3, 8);
    let s = spf * frames;
    let q = rand_vec(&mut rng, s * hd);
    let k = rand_vec(&mut rng, s * hd);
    let v = rand_vec(&mut rng, s * hd);
    let run = |causal| {
        let p = AttnParams::contiguous(1, 1, s, s, hd, causal, spf);
        let mut out = vec![f32::NAN; s * hd];
        cpu::attention(&p, &q, &k, &v, None, None, &mut out).unwrap();
        out
    };
    let (past, future, none) = (run(Causal::Past), run(Causal::Future), run(Causal::None));
    let frame = |x: &[f32], f: usize| x[f * spf * hd..(f + 1) * spf * hd].to_vec();
    // Single-frame attention over frame f alone.
    let alone = |f: usize| {
        let r = f * spf * hd..(f + 1) * spf * hd;
        let p = AttnParams::contiguous(1, 1, spf, spf, hd, Causal::None, spf);
        let mut out = vec![f32::NAN; spf * hd];
        cpu::attention(
            &p,
            &q[r.clone()],
            &k[r.clone()],
            &v[r],
            None,
            None,
            &mut out,
        )
        .unwrap();
        out
    };
    // Past-only: frame 0 sees only itself; the last frame sees everything.
    assert!(max_abs_diff(&frame(&past, 0), &alone(0)) < 1e-6);
    assert!(max_abs_diff(&frame(&past, frames - 1), &frame(&none, frames - 1)) < 1e-6);
    // Future (as released by FAVOR): the last frame sees only itself; frame 0 sees everything.
    assert!(max_abs_diff(&frame(&future, frames - 1), &alone(frames - 1)) < 1e-6);
    assert!(max_abs_diff(&frame(&future, 0), &frame(&none, 0)) < 1e-6);
    // The middle frame differs between the two directions.
    assert!(max_abs_diff(&frame(&past, 1), &frame(&future, 1)) > 1e-3);
}

#[test]
fn incremental_rows_equal_full_rows() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let (b, h, hd, spf, frames) = (2, 2, 16, 7, 4);
    let s = spf * frames;
    let q = rand_vec(&mut rng, b * h * s * hd);
    let k = rand_vec(&mut rng, b * h * s * hd);
    let v = rand_vec(&mut rng, b * h * s * hd);
    let bias: Vec<Vec<f32>> = (0..3).map(|_| rand_vec(&mut rng, h * hd)).collect();
    let ab = AttnBias {
        q: &bias[0][..],
        k: &bias[1][..],
        v: &bias[2][..],
    };
    let full_p = AttnParams::contiguous(b, h, s, s, hd, Causal::Past, spf);
    let mut full = vec![f32::NAN; q.len()];
    cpu::attention(&full_p, &q, &k, &v, Some(ab), None, &mut full).unwrap();
    for f in 0..frames {
        // Only frame f's query rows, against the cache of frames 0..=f.
        let kv = (f + 1) * spf;
        let mut p = AttnParams::contiguous(b, h, spf, kv, hd, Causal::Past, spf);
        p.q = Strides::contiguous(h, s, hd);
        p.k = Strides::contiguous(h, s, hd);
        p.v = p.k;
        p.offsets = [f * spf * hd, 0, 0, 0];
        p.q_offset = f * spf;
        let mut out = vec![f32::NAN; b * h * spf * hd];
        cpu::attention(&p, &q, &k, &v, Some(ab), None, &mut out).unwrap();
        for bi in 0..b {
            for hi in 0..h {
                let got = &out[(bi * h + hi) * spf * hd..][..spf * hd];
                let want = &full[((bi * h + hi) * s + f * spf) * hd..][..spf * hd];
                assert_eq!(got, want, "frame {f} batch {bi} head {hi}");
            }
        }
    }
}

#[test]
fn fully_masked_rows_are_zero_and_short_buffers_are_named() {
    let (spf, frames, hd) = (2, 2, 4);
    let s = spf * frames;
    let mut p = AttnParams::contiguous(1, 1, s, s, hd, Causal::Past, spf);
    p.key_frames = frames;
    let x: Vec<f32> = (0..s * hd).map(|i| (i as f32 * 0.37).sin()).collect();
    let mask = [0u8, 1]; // frame 0 dropped: its rows (past-only) see nothing
    let mut out = vec![f32::NAN; s * hd];
    cpu::attention(&p, &x, &x, &x, None, Some(&mask), &mut out).unwrap();
    assert!(out[..spf * hd].iter().all(|&y| y == 0.0));
    assert!(out[spf * hd..].iter().all(|y| y.is_finite() && *y != 0.0));
    let err = cpu::attention(&p, &x, &x[..5], &x, None, None, &mut out).unwrap_err();
    assert_eq!(
        err.to_string(),
        "tensor k: needs 16 elements for batch 1, heads 1, head_dim 4, but has 5"
    );
    let err = cpu::attention(&p, &x, &x, &x, None, Some(&mask[..1]), &mut out).unwrap_err();
    assert!(err.to_string().starts_with("tensor key_mask:"), "{err}");
}

#[test]
fn layernorm_and_gelu_values() {
    let x: Vec<f32> = (0..2 * 6).map(|i| i as f32 * 0.5 - 2.0).collect();
    let r: Vec<f32> = (0..2 * 6).map(|i| (i as f32).cos()).collect();
    let bias = [0.1f32, -0.2, 0.3, 0.0, 0.5, -0.5];
    let (g, b) = ([1.0f32; 6], [0.0f32; 6]);
    let mut out = vec![f32::NAN; 12];
    cpu::bias_residual_layernorm(&x, Some(&bias), Some(&r), &g, &b, &mut out, 2, 6, 1e-12).unwrap();
    for row in out.chunks(6) {
        let mean: f32 = row.iter().sum::<f32>() / 6.0;
        let var: f32 = row.iter().map(|y| (y - mean) * (y - mean)).sum::<f32>() / 6.0;
        assert!(
            mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5,
            "mean {mean} var {var}"
        );
    }
    // erf and BERT GELU against known values.
    assert!((cpu::erf(0.5) - 0.520_499_877_813_046_5).abs() < 1e-14);
    assert!((cpu::erf(3.0) - 0.999_977_909_503_001_4).abs() < 1e-14);
    assert!((cpu::erf(-1.2) + 0.910_313_978_229_635_4).abs() < 1e-14);
    assert!((cpu::gelu(1.0) - 0.841_344_746_068_542_9).abs() < 1e-14);
    assert!((cpu::gelu(-1.0) + 0.158_655_253_931_457_07).abs() < 1e-14);
    let mut o = [0f32; 2];
    cpu::bias_act(&[0.5f32, -1.5], &[0.5, 0.5], &mut o, 2, true).unwrap();
    assert!(
        (o[0] - 0.841_344_7).abs() < 1e-6 && (o[1] + 0.158_655_26).abs() < 1e-6,
        "{o:?}"
    );
    let err = cpu::bias_act(&[0.0f32; 3], &[0.0; 2], &mut [0.0; 3], 2, true).unwrap_err();
    assert_eq!(
        err.to_string(),
        "tensor x: length 3 is not a multiple of dim 2"
    );
}

#[test]
fn device_spec_parsing_and_cpu_fallback() {
    assert_eq!(DeviceSpec::parse("auto").unwrap(), DeviceSpec::Auto);
    assert_eq!(DeviceSpec::parse("CPU").unwrap(), DeviceSpec::Cpu);
    assert_eq!(DeviceSpec::parse("cuda").unwrap(), DeviceSpec::Cuda(0));
    assert_eq!(DeviceSpec::parse("cuda:3").unwrap(), DeviceSpec::Cuda(3));
    for bad in ["cuda:x", "tpu", "cuda:", ""] {
        let e = DeviceSpec::parse(bad).unwrap_err();
        assert!(matches!(e, Error::BadDeviceSpec { .. }));
        assert_eq!(
            e.to_string(),
            format!("invalid device {bad:?}: expected auto, cpu, cuda or cuda:N")
        );
    }
    if !sensorium_kernels::cuda::driver_present() {
        assert!(matches!(DeviceSpec::Auto.open().unwrap(), Backend::Cpu));
        let e = DeviceSpec::Cuda(0).open().unwrap_err();
        assert!(
            e.to_string()
                .starts_with("CUDA device 0 unavailable: the CUDA driver library"),
            "{e}"
        );
    }
}
