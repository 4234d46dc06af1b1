//! The engine adapters end to end on tiny real-format models: frames -> AvFrameEncoder ->
//! features -> windows -> QFormerWindowModel -> JSON fields and LLM tokens, checked against
//! running the same models directly.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use candle_core::Device;
use sensorium_engine::frame::{StreamId, SyncedFrame, VideoFrame, Window};
use sensorium_engine::model::{FrameEncoder, WindowModel};
use sensorium_engine::FrameFeatures;
use sensorium_models::audio::AudioEncoder;
use sensorium_models::ops::max_rel_err;
use sensorium_models::qformer::{FrameInput, QFormer, QFormerBackend, QFormerConfig};
use sensorium_models::stage::{AvFrameEncoder, AvTokens, QFormerWindowModel};
use sensorium_models::tokens::SlotMode;
use sensorium_models::vision::VisionEncoder;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn frame(stream: &StreamId, i: u64) -> SyncedFrame {
    let audio: Vec<f32> = (0..8000)
        .map(|n| 0.3 * ((n as f32 + i as f32 * 8000.0) * 0.05).sin())
        .collect();
    let rgb: Vec<u8> = (0..40 * 30 * 3)
        .map(|n| ((n as u64 * 7 + i * 13) % 251) as u8)
        .collect();
    let has_video = i != 2;
    SyncedFrame {
        stream: stream.clone(),
        index: i,
        t: i * 500_000_000,
        duration: 500_000_000,
        video: has_video.then(|| VideoFrame {
            pts: i * 500_000_000,
            width: 40,
            height: 30,
            rgb: rgb.into(),
            captured: Instant::now(),
        }),
        audio: audio.into(),
        has_video,
        has_audio: i != 4,
        captured: None,
        features: None,
        timing: Default::default(),
    }
}

fn qcfg() -> QFormerConfig {
    QFormerConfig {
        hidden_size: 16,
        num_attention_heads: 2,
        intermediate_size: 32,
        num_query_tokens: 3,
        slots_per_frame: 4,
        audio_width: 32,
        audio_slot_width: 8,
        visual_width: 32,
        visual_slot_width: 32,
        max_slot_positions: 64,
        slot_attention_heads: 2,
        lookback: 3,
        llm_hidden_size: 12,
        ..QFormerConfig::default()
    }
}

#[test]
fn encoder_and_qformer_stages_end_to_end() {
    let dev = Device::Cpu;
    let mut enc = AvFrameEncoder::new(
        Some(AudioEncoder::load(&fixture("whisper80"), &dev).unwrap()),
        Some(VisionEncoder::load(&fixture("clip"), &dev).unwrap()),
        SlotMode::Pool(4),
    );
    let s: StreamId = "cam1".into();
    let mut frames: Vec<SyncedFrame> = (0..7).map(|i| frame(&s, i)).collect();
    let refs: Vec<&SyncedFrame> = frames.iter().collect();
    let feats = enc.encode(&refs).unwrap();
    assert_eq!(feats.len(), 7);
    for (f, x) in frames.iter_mut().zip(feats) {
        f.features = Some(std::sync::Arc::new(x));
    }
    let e2 = frames[2].features.as_ref().unwrap().encoded().unwrap();
    assert!(
        e2.visual.is_none(),
        "frame without video has no visual tokens"
    );
    assert_eq!(e2.audio.as_ref().unwrap().dims(), &[25, 32]);
    let e4 = frames[4].features.as_ref().unwrap().encoded().unwrap();
    assert!(e4.audio.is_none());
    assert_eq!(e4.visual.as_ref().unwrap().dims(), &[4, 32]);

    let qf = QFormer::random(qcfg(), 9, 0.2, &dev).unwrap();
    let reference = QFormer::random(qcfg(), 9, 0.2, &dev).unwrap();
    let got: Arc<Mutex<Vec<AvTokens>>> = Arc::default();
    let sink = got.clone();
    let mut model = QFormerWindowModel::new(
        qf,
        Some(Arc::new(move |t: AvTokens| sink.lock().unwrap().push(t))),
    );
    // Windows of k = 3, stride 2; the last one padded past frame 6.
    let mut fields = Vec::new();
    for (wi, start) in [0u64, 2, 4, 6].into_iter().enumerate() {
        let mut wf = Vec::new();
        let mut valid = Vec::new();
        for i in start..start + 3 {
            if i < 7 {
                wf.push(frames[i as usize].clone());
                valid.push(true);
            } else {
                let mut p = frame(&s, i);
                p.video = None;
                valid.push(false);
                wf.push(p);
            }
        }
        let w = Window {
            stream: s.clone(),
            index: wi as u64,
            t_start: start * 500_000_000,
            t_end: (start + 3).min(7) * 500_000_000,
            frames: wf,
            valid,
        };
        fields.extend(model.process(&[&w]).unwrap());
    }
    assert_eq!(fields.len(), 4);
    let q = &fields[3]["qformer"];
    assert_eq!(q["tokens"], 3);
    assert_eq!(q["dim"], 12);
    assert_eq!(q["valid_frames"], 1);
    assert!(q["norm"].as_f64().unwrap() > 0.0);

    // The tokens handed to the LLM equal a direct full recomputation on the same features.
    let inputs: Vec<FrameInput> = frames
        .iter()
        .map(|f| {
            let e = f.features.as_ref().unwrap().encoded().unwrap();
            FrameInput {
                audio: e.audio.clone(),
                visual: e.visual.clone(),
            }
        })
        .collect();
    let delivered = got.lock().unwrap();
    assert_eq!(delivered.len(), 4);
    assert_eq!(delivered[2].window, 2);
    assert_eq!(delivered[2].tokens.dims(), &[3, 12]);
    let full = reference
        .forward_sequence(&inputs[..7], &[true; 7], 0, 3)
        .unwrap();
    let a = delivered[2]
        .tokens
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let b = full
        .projected
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let e = max_rel_err(&a, &b, 1e-6);
    assert!(e <= 1e-5, "stage tokens vs direct rel err {e}");
    drop(delivered);

    assert_eq!(model.streams(), 1);
    model.end_stream("cam1");
    assert_eq!(model.streams(), 0);
}

#[test]
fn window_without_features_names_stream_and_frame() {
    let qf = QFormer::random(qcfg(), 1, 0.02, &Device::Cpu).unwrap();
    let mut model = QFormerWindowModel::new(qf, None);
    let s: StreamId = "mic7".into();
    let w = Window {
        stream: s.clone(),
        index: 0,
        t_start: 0,
        t_end: 1_000_000_000,
        frames: vec![frame(&s, 0), frame(&s, 1)],
        valid: vec![true, true],
    };
    let msg = model.process(&[&w]).unwrap_err().to_string();
    assert!(
        msg.contains("stream mic7 frame 0") && msg.contains("no encoder features"),
        "{msg}"
    );
    // Features of the wrong kind (the encoders' inputs, as training prepares them) are named.
    let mut w = w;
    for f in &mut w.frames {
        f.features = Some(std::sync::Arc::new(FrameFeatures::Inputs(
            Default::default(),
        )));
    }
    let msg = model.process(&[&w]).unwrap_err().to_string();
    assert!(
        msg.contains(
            "stream mic7 frame 0: the Q-Former needs encoder tokens, the frame has encoder inputs"
        ),
        "{msg}"
    );
}

/// A model's failure reaches the engine typed: the `StageError` the window model returns
/// carries the Q-Former's `ModelError` (here its width check), not only its text; it is one
/// part of the crate's boundary error, `sensorium_models::Error`.
#[test]
fn model_errors_reach_the_engine_typed() {
    use sensorium_engine::frame::EncodedFrame;
    use sensorium_models::error::ModelError;
    use sensorium_models::Error;
    let cfg = qcfg();
    let qf = QFormer::random(cfg.clone(), 1, 0.02, &Device::Cpu).unwrap();
    let mut model = QFormerWindowModel::new(qf, None);
    let s: StreamId = "cam3".into();
    let wrong = cfg.audio_width + 1;
    let frames = (0..2)
        .map(|i| {
            let mut f = frame(&s, i);
            f.features = Some(Arc::new(FrameFeatures::Encoded(EncodedFrame {
                audio: Some(
                    candle_core::Tensor::zeros((4, wrong), candle_core::DType::F32, &Device::Cpu)
                        .unwrap(),
                ),
                visual: None,
                distill: None,
            })));
            f
        })
        .collect();
    let w = Window {
        stream: s.clone(),
        index: 5,
        t_start: 0,
        t_end: 1_000_000_000,
        frames,
        valid: vec![true, true],
    };
    let err = model.process(&[&w]).unwrap_err();
    assert_eq!(err.stage, "qformer");
    assert_eq!(err.context.as_deref(), Some("stream cam3 window 5"));
    let expected = format!(
        "audio tokens have width {wrong}, the Q-Former expects {}",
        cfg.audio_width
    );
    let typed = err
        .downcast_ref::<ModelError>()
        .expect("the Q-Former's ModelError");
    assert!(
        matches!(typed, ModelError::InvalidInput(m) if *m == expected),
        "{typed:?}"
    );
    let boundary: Error = ModelError::InvalidInput(expected.clone()).into();
    assert!(matches!(
        boundary,
        Error::Model(ModelError::InvalidInput(_))
    ));
    assert_eq!(boundary.to_string(), typed.to_string());
    assert_eq!(
        err.to_string(),
        format!(
            "qformer: stream cam3 window 5: invalid input: audio tokens have width {wrong}, the \
             Q-Former expects {}",
            cfg.audio_width
        )
    );
}
