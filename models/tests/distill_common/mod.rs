//! Shared helpers of the distillation tests: synthetic GStreamer scenes cached per test run,
//! windows built from clips, a teacher fitted on a few labelled frames.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use sensorium_engine::frame::{SyncedFrame, VideoFrame, Window, NS_PER_SEC};
use sensorium_models::distill::labelled::{self, Clip, LabelledSpec};
use sensorium_models::distill::{
    DistillConfig, GridVisualFeatures, SpectralAudioFeatures, Teacher, VisualFeatureExtractor,
};

/// The 8-class scene set (3 hard classes at `hard_snr_db`), `clips` clips per class.
pub fn scenes(dir: &Path, clips: usize, hard_snr_db: f64) -> (LabelledSpec, Vec<Clip>) {
    let spec = LabelledSpec::new(dir.join("media"), clips, hard_snr_db);
    let clips = labelled::generate(&spec, Some(&sensorium_pipelines::render::GstTestMedia))
        .expect("GStreamer renders the test sources");
    (spec, clips)
}

pub fn config_for(spec: &LabelledSpec) -> DistillConfig {
    DistillConfig {
        classes: spec.classes.iter().map(|c| c.name.clone()).collect(),
        ..DistillConfig::default()
    }
}

/// A linear visual teacher fitted on the first frame of the first `per_class` clips of
/// every class (labels used only here).
pub fn fit_visual_teacher(clips: &[Clip], k: usize, per_class: usize) -> Teacher {
    let ex = GridVisualFeatures::default();
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for c in clips.iter().filter(|c| c.index < per_class) {
        xs.push(ex.extract(&c.frames[0], c.width, c.height).unwrap());
        ys.push(c.class);
    }
    Teacher::fit_linear(&xs, &ys, k, 300, 1).unwrap()
}

/// Mean of per-frame audio features of a clip (what the stage pools per window).
pub fn clip_audio_features(clip: &Clip, spf: usize) -> Vec<f32> {
    use sensorium_models::distill::AudioFeatureExtractor;
    let ex = SpectralAudioFeatures::default();
    let per: Vec<Vec<f32>> = clip
        .audio
        .chunks(spf)
        .map(|a| ex.extract(a).unwrap())
        .collect();
    let mut out = vec![0f32; per[0].len()];
    for v in &per {
        for (o, x) in out.iter_mut().zip(v) {
            *o += x / per.len() as f32;
        }
    }
    out
}

/// One engine window holding all frames of `clip` (2 fps, audio cut per frame).
pub fn clip_window(clip: &Clip, stream: &Arc<str>, index: u64, spf: usize) -> Window {
    let dur = NS_PER_SEC / 2;
    let n = clip.frames.len() as u64;
    let frames: Vec<SyncedFrame> = clip
        .frames
        .iter()
        .enumerate()
        .map(|(i, rgb)| {
            let t = (index * n + i as u64) * dur;
            SyncedFrame {
                stream: stream.clone(),
                index: index * n + i as u64,
                t,
                duration: dur,
                video: Some(VideoFrame {
                    pts: t,
                    width: clip.width,
                    height: clip.height,
                    rgb: Arc::from(rgb.as_slice()),
                    captured: Instant::now(),
                }),
                audio: Arc::from(&clip.audio[i * spf..(i + 1) * spf]),
                has_video: true,
                has_audio: true,
                captured: None,
                features: None,
                timing: Default::default(),
            }
        })
        .collect();
    Window {
        stream: stream.clone(),
        index,
        t_start: index * n * dur,
        t_end: (index + 1) * n * dur,
        valid: vec![true; frames.len()],
        frames,
    }
}
