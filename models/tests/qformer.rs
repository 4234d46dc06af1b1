//! Causal Q-Former against the PyTorch reference (tools/qformer_reference.py) in both mask
//! directions and both slot contexts, and incremental streaming against full recomputation
//! over many slides: one harness, every test over every backend ([`backends`]: candle, the
//! fused kernels on their CPU references, and CUDA f32 when a device is present). Relative
//! error is `max|a - b| / max|b|` (`ops::max_rel_err`).

use candle_core::Device;
use sensorium_kernels::{Backend, DeviceSpec};
use sensorium_models::ops::max_rel_err;
use sensorium_models::qformer::{
    model::random_tensors, FrameInput, MaskDirection, QFormer, QFormerConfig, QFormerOutput,
    QFormerRunner, SlotContext, StoragePrecision, StreamFrame,
};

mod qformer_common;
use qformer_common::{dir, fixture, flat, frame_input, tiny_cfg, Fixture, CASES};

/// One backend of the harness: its name and how it runs a candle-loaded model.
struct BackendCase {
    name: String,
    make: Box<dyn Fn(QFormer) -> QFormerRunner>,
}

/// Every backend the Q-Former runs on here: candle; the fused kernels on `Backend::Cpu`
/// (their plain-Rust references, the same launch code as CUDA); CUDA f32 when a device
/// opens (prints SKIP otherwise).
fn backends() -> Vec<BackendCase> {
    let mut v = vec![
        BackendCase {
            name: "candle".into(),
            make: Box::new(|qf| QFormerRunner::Candle(Box::new(qf))),
        },
        BackendCase {
            name: "kernels-cpu".into(),
            make: Box::new(|qf| {
                QFormerRunner::kernels(qf, Backend::Cpu, StoragePrecision::F32).unwrap()
            }),
        },
    ];
    match DeviceSpec::Cuda(0).open() {
        Ok(be) => v.push(BackendCase {
            name: format!("kernels-{}", be.describe()),
            make: Box::new(move |qf| {
                QFormerRunner::kernels(qf, be.clone(), StoragePrecision::F32).unwrap()
            }),
        }),
        Err(e) => eprintln!("SKIP the CUDA backend: {e}"),
    }
    v
}

fn check(out: &QFormerOutput, io: &Fixture, case: &str, tol: f32) {
    let e = max_rel_err(
        &flat(&out.hidden),
        &flat(&io.io[&format!("{case}.hidden")]),
        1e-6,
    );
    assert!(e <= tol, "{case} hidden rel err {e}");
    let e = max_rel_err(
        &flat(&out.projected),
        &flat(&io.io[&format!("{case}.projected")]),
        1e-6,
    );
    assert!(e <= tol, "{case} projected rel err {e}");
}

fn rel(a: &QFormerOutput, b: &QFormerOutput) -> f32 {
    max_rel_err(&flat(&a.hidden), &flat(&b.hidden), 1e-6).max(max_rel_err(
        &flat(&a.projected),
        &flat(&b.projected),
        1e-6,
    ))
}

/// The frames `range` of a stream of `n_frames` (padding past its end, as the engine does).
fn stream_frames(range: std::ops::Range<usize>, n_frames: usize) -> Vec<StreamFrame> {
    range
        .map(|i| StreamFrame {
            index: i as u64,
            valid: i < n_frames,
            input: if i < n_frames {
                frame_input(i)
            } else {
                FrameInput::default()
            },
        })
        .collect()
}

#[test]
fn matches_pytorch_reference_all_mask_modes() {
    let fx = fixture();
    for b in backends() {
        for (case, used, mask, ctx) in CASES {
            let mut qf = QFormer::load(&dir(), &Device::Cpu).unwrap();
            qf.cfg.mask = mask;
            qf.cfg.context = ctx;
            let r = (b.make)(qf);
            let valid: Vec<bool> = flat(&fx.io[&format!("{case}.valid")])
                .iter()
                .map(|v| *v > 0.5)
                .collect();
            let out = r
                .forward_sequence(&fx.frames[9 - used..], &valid, 9 - used as u64, 5)
                .unwrap();
            assert_eq!(out.hidden.dims(), &[1, 4, 32]);
            assert_eq!(out.projected.dims(), &[1, 4, 24]);
            check(&out, &fx, case, 1e-4);
            eprintln!("{}: {case}: ok", b.name);
        }
    }
    // The two mask directions really differ on the same input.
    let a = flat(&fx.io["past_window.hidden"]);
    let b = flat(&fx.io["future_window.hidden"]);
    let d = max_rel_err(&a, &b, 1e-6);
    assert!(d > 1e-2, "past and future masks differ by only {d}");
}

#[test]
fn streaming_matches_pytorch_reference() {
    let fx = fixture();
    for b in backends() {
        let mut qf = QFormer::load(&dir(), &Device::Cpu).unwrap();
        qf.cfg.context = SlotContext::Lookback;
        assert!(qf.cfg.incremental());
        let r = (b.make)(qf);
        let mut st = r.new_stream();
        let mut last = None;
        for start in [0u64, 2, 4] {
            let frames: Vec<StreamFrame> = (start..start + 5)
                .map(|i| StreamFrame {
                    index: i,
                    valid: true,
                    input: fx.frames[i as usize].clone(),
                })
                .collect();
            let w = r.window(&mut st, &frames).unwrap();
            last = Some(r.query_batch(&[w]).unwrap());
        }
        assert_eq!(
            st.frames_computed(),
            9,
            "{}: each frame pushed through the slot layers once",
            b.name
        );
        check(&last.unwrap(), &fx, "past_lookback", 1e-4);
    }
}

#[test]
fn incremental_equals_full_recompute_over_many_slides() {
    let n_frames = 40usize;
    let inputs: Vec<FrameInput> = (0..n_frames).map(frame_input).collect();
    for b in backends() {
        let r = (b.make)(QFormer::random(tiny_cfg(), 42, 0.2, &Device::Cpu).unwrap());
        for (k, stride) in [(5usize, 1usize), (5, 2), (6, 4), (4, 3), (3, 3)] {
            let mut st = r.new_stream();
            let mut windows = 0;
            let mut start = 0usize;
            loop {
                // The last window is padded past the end of the stream, as the engine does.
                let frames = stream_frames(start..start + k, n_frames);
                let w = r.window(&mut st, &frames).unwrap();
                let inc = r.query_batch(&[w]).unwrap();
                let all: Vec<FrameInput> = frames.iter().map(|f| f.input.clone()).collect();
                let mut seq: Vec<FrameInput> = inputs[..start.min(n_frames)].to_vec();
                seq.extend(all);
                let valid: Vec<bool> = (0..start + k).map(|i| i < n_frames).collect();
                let full = r.forward_sequence(&seq, &valid, 0, k).unwrap();
                let e = max_rel_err(&flat(&inc.projected), &flat(&full.projected), 1e-6);
                assert!(
                    e <= 1e-5,
                    "{}: k={k} stride={stride} window at {start}: rel err {e}",
                    b.name
                );
                if start >= 4 && start + k <= n_frames {
                    // The earlier frames matter: without them the result is measurably
                    // different, so the equality above is not vacuous.
                    let alone = r
                        .forward_sequence(
                            &inputs[start..start + k],
                            &valid[start..],
                            start as u64,
                            k,
                        )
                        .unwrap();
                    let d = max_rel_err(&flat(&alone.projected), &flat(&full.projected), 1e-6);
                    assert!(d > 1e-4, "context made no difference ({d})");
                }
                assert!(st.cached() <= k.max(4));
                windows += 1;
                if start + k >= n_frames {
                    break;
                }
                start += stride;
            }
            assert!(windows >= 9);
            assert_eq!(
                st.frames_computed() as usize,
                start + k,
                "{}: each frame computed once",
                b.name
            );
        }
    }
}

/// Every backend streams exactly what candle streams (30 frames, last window padded).
#[test]
fn every_backend_streams_what_candle_streams() {
    let n_frames = 30usize;
    let candle = QFormerRunner::Candle(Box::new(
        QFormer::random(tiny_cfg(), 42, 0.2, &Device::Cpu).unwrap(),
    ));
    for b in backends() {
        let r = (b.make)(QFormer::random(tiny_cfg(), 42, 0.2, &Device::Cpu).unwrap());
        for (k, stride) in [(5usize, 1usize), (5, 2), (6, 4), (4, 3), (3, 3)] {
            let (mut cs, mut rs) = (candle.new_stream(), r.new_stream());
            let (mut worst, mut windows, mut start) = (0f32, 0, 0usize);
            loop {
                let frames = stream_frames(start..start + k, n_frames);
                let c = candle
                    .query_batch(&[candle.window(&mut cs, &frames).unwrap()])
                    .unwrap();
                let o = r
                    .query_batch(&[r.window(&mut rs, &frames).unwrap()])
                    .unwrap();
                worst = worst.max(rel(&o, &c));
                windows += 1;
                if start + k >= n_frames {
                    break;
                }
                start += stride;
            }
            assert!(windows >= 7);
            assert_eq!(cs.frames_computed(), rs.frames_computed());
            assert!(
                worst <= 1e-4,
                "{}: k={k} stride={stride}: rel err {worst}",
                b.name
            );
            eprintln!(
                "{}: k={k} stride={stride}: {} frames, rel err {worst:.2e}",
                b.name,
                rs.frames_computed()
            );
        }
    }
}

/// lookback 4 < 7 frames: the banded slot attention of a full recomputation, both
/// directions, on every backend equal to candle's.
#[test]
fn banded_and_future_lookback_full_recompute() {
    for mask in [MaskDirection::Past, MaskDirection::Future] {
        let cfg = QFormerConfig { mask, ..tiny_cfg() };
        let cq = QFormer::random(cfg.clone(), 9, 0.2, &Device::Cpu).unwrap();
        let frames: Vec<FrameInput> = (0..7).map(frame_input).collect();
        let valid = [true, true, true, true, true, true, false];
        let c = QFormerRunner::Candle(Box::new(cq))
            .forward_sequence(&frames, &valid, 3, 5)
            .unwrap();
        for b in backends() {
            let r = (b.make)(QFormer::random(cfg.clone(), 9, 0.2, &Device::Cpu).unwrap());
            let o = r.forward_sequence(&frames, &valid, 3, 5).unwrap();
            let e = rel(&o, &c);
            assert!(e <= 1e-4, "{}: {mask:?}: rel err {e}", b.name);
        }
    }
}

#[test]
fn batched_windows_equal_single_windows() {
    let mk = |off: usize| -> Vec<StreamFrame> {
        (0..5)
            .map(|i| StreamFrame {
                index: i as u64,
                valid: true,
                input: frame_input(i + off),
            })
            .collect()
    };
    for b in backends() {
        let r = (b.make)(QFormer::random(tiny_cfg(), 5, 0.2, &Device::Cpu).unwrap());
        let (mut s1, mut s2) = (r.new_stream(), r.new_stream());
        let both = r
            .query_batch(&[
                r.window(&mut s1, &mk(0)).unwrap(),
                r.window(&mut s2, &mk(11)).unwrap(),
            ])
            .unwrap();
        let (mut s1, mut s2) = (r.new_stream(), r.new_stream());
        let one = r
            .query_batch(&[r.window(&mut s2, &mk(11)).unwrap()])
            .unwrap();
        let e = max_rel_err(
            &flat(&both.projected.get(1).unwrap()),
            &flat(&one.projected.get(0).unwrap()),
            1e-6,
        );
        assert!(e <= 1e-5, "{}: batched vs single rel err {e}", b.name);
        let one = r
            .query_batch(&[r.window(&mut s1, &mk(0)).unwrap()])
            .unwrap();
        let e = max_rel_err(
            &flat(&both.projected.get(0).unwrap()),
            &flat(&one.projected),
            1e-6,
        );
        assert!(e <= 1e-5, "{}: {e}", b.name);
        let d = max_rel_err(
            &flat(&both.projected.get(0).unwrap()),
            &flat(&both.projected.get(1).unwrap()),
            1e-6,
        );
        assert!(
            d > 1e-3,
            "{}: the two windows gave the same output ({d})",
            b.name
        );
    }
}

#[test]
fn random_init_is_seeded_and_matches_reference_layout() {
    let cfg = tiny_cfg();
    let a = random_tensors(&cfg, 1, 0.02, &Device::Cpu).unwrap();
    let b = random_tensors(&cfg, 1, 0.02, &Device::Cpu).unwrap();
    let c = random_tensors(&cfg, 2, 0.02, &Device::Cpu).unwrap();
    let name = "video_Qformer.bert.encoder.layer.1.crossattention.self.key.weight";
    assert_eq!(flat(&a[name]), flat(&b[name]));
    assert_ne!(flat(&a[name]), flat(&c[name]));
    // Same names and shapes as the PyTorch reference module's state_dict.
    let (path, v) = sensorium_models::checkpoint::read_config(&dir()).unwrap();
    let fcfg: QFormerConfig = sensorium_models::checkpoint::parse_config(&path, &v).unwrap();
    let ours = random_tensors(&fcfg, 0, 0.02, &Device::Cpu).unwrap();
    let theirs =
        candle_core::safetensors::load(dir().join("model.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(ours.len(), theirs.len());
    for (k, t) in &theirs {
        assert_eq!(ours[k].dims(), t.dims(), "{k}");
    }
}

/// The coarse-sync ablation: each window's audio is its frames' mean, the same in the
/// streaming runner (serving, `eval`) and in `forward_sequence` (training); the order of the
/// sound inside a window no longer matters, while it does with frame-level sync.
#[test]
fn coarse_sync_pools_each_windows_audio_in_streaming_and_training_alike() {
    use sensorium_models::qformer::{pool_window_audio, AudioSync};
    let inputs: Vec<FrameInput> = (0..8).map(frame_input).collect();
    let valid = vec![true; 8];

    let pooled = pool_window_audio(&inputs, &valid, 4).unwrap();
    let mean: Vec<f32> = {
        let a: Vec<Vec<f32>> = (4..8)
            .map(|i| flat(inputs[i].audio.as_ref().unwrap()))
            .collect();
        (0..a[0].len())
            .map(|j| a.iter().map(|x| x[j]).sum::<f32>() / 4.0)
            .collect()
    };
    for f in &pooled[4..8] {
        let e = max_rel_err(&flat(f.audio.as_ref().unwrap()), &mean, 1e-6);
        assert!(e < 1e-6, "window mean: {e}");
    }
    assert!(
        pooled[3].audio.is_none(),
        "a frame without audio stays without"
    );
    assert_eq!(
        flat(pooled[5].visual.as_ref().unwrap()),
        flat(inputs[5].visual.as_ref().unwrap()),
        "pictures untouched"
    );

    let out = |b: &BackendCase, sync: AudioSync, inputs: &[FrameInput]| {
        let cfg = QFormerConfig {
            audio_sync: sync,
            ..tiny_cfg()
        };
        let qf = QFormer::random(cfg, 9, 0.2, &Device::Cpu).unwrap();
        let runner = (b.make)(qf);
        let training = runner.forward_sequence(inputs, &valid, 0, 4).unwrap();
        let mut st = runner.new_stream();
        let mut last = None;
        for start in [0usize, 4] {
            let frames: Vec<StreamFrame> = (start..start + 4)
                .map(|i| StreamFrame {
                    index: i as u64,
                    valid: true,
                    input: inputs[i].clone(),
                })
                .collect();
            let w = runner.window(&mut st, &frames).unwrap();
            last = Some(runner.query_batch(&[w]).unwrap());
        }
        let streaming = flat(&last.unwrap().projected);
        let e = max_rel_err(&streaming, &flat(&training.projected), 1e-6);
        assert!(
            e <= 1e-5,
            "{}: {sync:?}: streaming vs training rel err {e}",
            b.name
        );
        streaming
    };
    // The same sounds in another order inside the last window.
    let mut swapped = inputs.clone();
    let a4 = swapped[4].audio.clone();
    swapped[4].audio = swapped[6].audio.clone();
    swapped[6].audio = a4;
    for b in backends() {
        let coarse = max_rel_err(
            &out(&b, AudioSync::Window, &inputs),
            &out(&b, AudioSync::Window, &swapped),
            1e-6,
        );
        assert!(
            coarse < 1e-5,
            "{}: coarse sync keeps no order: {coarse}",
            b.name
        );
        let fine = max_rel_err(
            &out(&b, AudioSync::Frame, &inputs),
            &out(&b, AudioSync::Frame, &swapped),
            1e-6,
        );
        assert!(
            fine > 1e-3,
            "{}: frame-level sync sees the order: {fine}",
            b.name
        );
    }
    // Frame-level configs keep their config.json as before.
    let json = serde_json::to_string(&tiny_cfg()).unwrap();
    assert!(!json.contains("audio_sync"), "{json}");
}
