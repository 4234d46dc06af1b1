//! The distillation extractors over the real encoders (tiny Whisper and CLIP fixtures): the
//! vector pooled from an upstream `AvFrameEncoder`'s tokens equals the one the extractor
//! computes itself, equals the mean of the encoder's tokens, and an upstream-only extractor
//! without tokens fails with a message naming the missing encoder.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use candle_core::Device;
use sensorium_engine::frame::{StreamId, SyncedFrame, VideoFrame};
use sensorium_models::audio::AudioEncoder;
use sensorium_models::distill::{
    AudioFeatureExtractor, VisionTowerFeatures, VisualFeatureExtractor, WhisperAudioFeatures,
};
use sensorium_models::stage::AvFrameEncoder;
use sensorium_models::tokens::SlotMode;
use sensorium_models::vision::VisionEncoder;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn frame() -> SyncedFrame {
    let audio: Vec<f32> = (0..8000).map(|n| 0.3 * (n as f32 * 0.05).sin()).collect();
    let rgb: Vec<u8> = (0..40 * 30 * 3).map(|n| (n * 7 % 251) as u8).collect();
    SyncedFrame {
        stream: StreamId::from("s"),
        index: 0,
        t: 0,
        duration: 500_000_000,
        video: Some(VideoFrame {
            pts: 0,
            width: 40,
            height: 30,
            rgb: rgb.into(),
            captured: Instant::now(),
        }),
        audio: audio.into(),
        has_video: true,
        has_audio: true,
        captured: None,
        features: None,
        timing: Default::default(),
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn pooled_encoder_features_match_upstream_tokens() {
    let dev = Device::Cpu;
    let load_audio = || AudioEncoder::load(&fixture("whisper80"), &dev).unwrap();
    let load_vision = || VisionEncoder::load(&fixture("clip"), &dev).unwrap();
    let mode = SlotMode::Pool(4);
    let f = frame();
    let enc = AvFrameEncoder::new(Some(load_audio()), Some(load_vision()), mode);
    let encoded = enc.encode_frames(&[&f]).unwrap().remove(0);
    let features = sensorium_engine::FrameFeatures::Encoded(encoded.clone());

    let audio = WhisperAudioFeatures::with_encoder(Arc::new(load_audio()));
    assert_eq!(audio.dim(), 32);
    let own = audio.extract(&f.audio).unwrap();
    let up = audio.pool_upstream(&features).unwrap().unwrap();
    assert_eq!(own.len(), 32);
    assert!(max_abs_diff(&own, &up) < 1e-5);
    // The mean over Whisper's 25 frames of this 0.5 s chunk.
    let tokens = encoded.audio.as_ref().unwrap();
    assert_eq!(tokens.dims(), &[25, 32]);
    let rows: Vec<Vec<f32>> = tokens.to_vec2().unwrap();
    let mean: Vec<f32> = (0..32)
        .map(|j| rows.iter().map(|r| r[j]).sum::<f32>() / 25.0)
        .collect();
    assert!(max_abs_diff(&mean, &up) < 1e-5);

    let visual = VisionTowerFeatures::with_encoder(Arc::new(load_vision()), mode);
    assert_eq!(visual.dim(), 32);
    let v = f.video.as_ref().unwrap();
    let own = visual.extract(&v.rgb, v.width, v.height).unwrap();
    let up = visual.pool_upstream(&features).unwrap().unwrap();
    assert!(max_abs_diff(&own, &up) < 1e-5);
    assert!(own.iter().any(|x| x.abs() > 1e-3), "not all zeros");
}

#[test]
fn upstream_only_extractors_need_the_frame_encoder() {
    let audio = WhisperAudioFeatures::upstream(32);
    let err = audio.extract(&[0.0; 8000]).unwrap_err().to_string();
    assert!(err.contains("no Whisper tokens"), "{err}");
    let visual = VisionTowerFeatures::upstream(32);
    let err = visual.extract(&[0; 12], 2, 2).unwrap_err().to_string();
    assert!(err.contains("no visual tokens"), "{err}");
    // Features of another kind are not theirs to read.
    let other = sensorium_engine::FrameFeatures::Inputs(Default::default());
    assert!(audio.pool_upstream(&other).is_none());
    assert!(visual.pool_upstream(&other).is_none());
}
