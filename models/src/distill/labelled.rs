//! Labelled audio-visual clips for tests and the eval command, from one of two worlds:
//! GStreamer's test sources ([`ClipWorld::TestSources`]) or the default model's scene world
//! ([`ClipWorld::Scenes`], rendered in Rust).
//!
//! **Scenes**: the classes are the three shapes of the scene world's "sounding object" scenes
//! (circle <-> a high tone, square <-> clicks at its bounces, triangle <-> white noise), each
//! clip one such scene with its own colour, size, position, motion, brightness and level,
//! drawn at `width`x`height` (what the default model's encoders read). The circle is the hard
//! class: its tone is buried in white noise at `hard_snr_db`, so it sounds like a triangle.
//!
//! **Test sources**:
//! Each class pairs a `videotestsrc` pattern with its own `audiotestsrc` sound (ball <-> ticks,
//! snow <-> white noise, ...). Some classes are made hard for an audio student by mixing white
//! noise into their sound at a low SNR (done here in Rust, seeded). The media comes from a
//! [`TestMedia`] renderer (the engine's contract; the pipelines crate's is GStreamer in process:
//! nothing here links GStreamer or runs a tool), once per class, into raw files cached in
//! `cache_dir`; clips are consecutive cuts of those streams:
//!
//! ```text
//! videotestsrc pattern=ball num-buffers=N
//!   ! video/x-raw,width=64,height=64,framerate=2/1,format=RGB        -> ball-64x64-2fps-N.rgb
//! audiotestsrc wave=ticks freq=440 volume=0.5 samplesperbuffer=8000 num-buffers=N
//!   ! audio/x-raw,format=F32LE,rate=16000,channels=1                 -> ticks-440hz-….f32
//! ```

use std::path::{Path, PathBuf};

pub use sensorium_engine::source::TestMedia;

use super::error::DistillError;
use super::student::Rng;

/// One scene class: what is seen and what is heard.
#[derive(Clone, Debug, PartialEq)]
pub struct SceneClass {
    pub name: String,
    /// `videotestsrc pattern` nick.
    pub pattern: String,
    /// `audiotestsrc wave` nick, its frequency (Hz) and volume.
    pub wave: String,
    pub freq: f64,
    pub volume: f64,
    /// White noise mixed in at this SNR (dB) relative to the clip's sound; `None`: clean.
    pub snr_db: Option<f64>,
}

impl SceneClass {
    pub fn new(name: &str, pattern: &str, wave: &str, freq: f64, volume: f64) -> Self {
        Self {
            name: name.into(),
            pattern: pattern.into(),
            wave: wave.into(),
            freq,
            volume,
            snr_db: None,
        }
    }
    pub fn with_snr(mut self, snr_db: f64) -> Self {
        self.snr_db = Some(snr_db);
        self
    }
}

/// The default 8-class scene set; the last three are hard (sound buried in noise at
/// `hard_snr_db`).
pub fn default_classes(hard_snr_db: f64) -> Vec<SceneClass> {
    vec![
        SceneClass::new("ball", "ball", "ticks", 1000.0, 0.5),
        SceneClass::new("snow", "snow", "white-noise", 440.0, 0.3),
        SceneClass::new("smpte", "smpte", "sine", 440.0, 0.5),
        SceneClass::new("checkers", "checkers-8", "square", 220.0, 0.4),
        SceneClass::new("red", "red", "pink-noise", 440.0, 0.3),
        SceneClass::new("circular", "circular", "triangle", 1000.0, 0.5).with_snr(hard_snr_db),
        SceneClass::new("pinwheel", "pinwheel", "saw", 660.0, 0.5).with_snr(hard_snr_db),
        SceneClass::new("zone-plate", "zone-plate", "sine", 2500.0, 0.5).with_snr(hard_snr_db),
    ]
}

/// Where the clips come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClipWorld {
    /// `videotestsrc` patterns with `audiotestsrc` sounds (needs a [`TestMedia`]).
    #[default]
    TestSources,
    /// The scene world's sounding objects, one class per shape (no GStreamer).
    Scenes,
}

/// The scene world's shape classes: circle (hard: its high tone buried in noise at
/// `hard_snr_db`), square, triangle. `pattern`/`wave` name the shape and its sound.
pub fn scene_classes(hard_snr_db: f64) -> Vec<SceneClass> {
    vec![
        SceneClass::new("circle", "circle", "high-tone", 1000.0, 0.5).with_snr(hard_snr_db),
        SceneClass::new("square", "square", "clicks", 0.0, 0.5),
        SceneClass::new("triangle", "triangle", "noise", 0.0, 0.5),
    ]
}

/// What to generate.
#[derive(Clone, Debug, PartialEq)]
pub struct LabelledSpec {
    pub world: ClipWorld,
    /// Raw media is cached here (created if missing) and reused by later calls.
    pub cache_dir: PathBuf,
    pub classes: Vec<SceneClass>,
    pub clips_per_class: usize,
    pub frames_per_clip: usize,
    pub width: u32,
    pub height: u32,
    /// Frames per second; each frame carries 16000 / fps samples of audio.
    pub fps: u32,
    /// Seed of the per-clip gain and noise.
    pub seed: u64,
}

impl LabelledSpec {
    /// 64x64 at 2 fps, 2 frames (1 s) per clip, the default classes.
    pub fn new(cache_dir: impl Into<PathBuf>, clips_per_class: usize, hard_snr_db: f64) -> Self {
        Self {
            world: ClipWorld::TestSources,
            cache_dir: cache_dir.into(),
            classes: default_classes(hard_snr_db),
            clips_per_class,
            frames_per_clip: 2,
            width: 64,
            height: 64,
            fps: 2,
            seed: 7,
        }
    }
    /// The scene world's shape classes: 64x64 at 2 fps, 4 frames (2 s, one window of the
    /// default model) per clip; nothing is cached (rendering is cheap).
    pub fn scenes(clips_per_class: usize, hard_snr_db: f64) -> Self {
        Self {
            world: ClipWorld::Scenes,
            cache_dir: PathBuf::new(),
            classes: scene_classes(hard_snr_db),
            clips_per_class,
            frames_per_clip: 4,
            width: 64,
            height: 64,
            fps: 2,
            seed: 7,
        }
    }

    pub fn samples_per_frame(&self) -> usize {
        16_000 / self.fps.max(1) as usize
    }
}

/// One labelled clip: `frames_per_clip` RGB frames and their audio.
#[derive(Clone, Debug)]
pub struct Clip {
    /// Index into `LabelledSpec::classes`.
    pub class: usize,
    /// Index of the clip within its class.
    pub index: usize,
    pub width: u32,
    pub height: u32,
    pub frames: Vec<Vec<u8>>,
    /// `samples_per_frame` samples per frame, frame after frame.
    pub audio: Vec<f32>,
}

/// `path` (of `len` bytes) from the cache, or made by `make` and cached.
fn cached(
    path: &Path,
    len: usize,
    make: impl FnOnce() -> Result<Vec<u8>, String>,
) -> Result<Vec<u8>, DistillError> {
    if let Ok(bytes) = std::fs::read(path) {
        if bytes.len() == len {
            return Ok(bytes);
        }
    }
    let tool = |message: String| DistillError::Tool {
        tool: "GStreamer test sources".into(),
        message,
    };
    let bytes = make().map_err(|e| tool(format!("{}: {e}", path.display())))?;
    if bytes.len() != len {
        return Err(tool(format!(
            "{}: produced {} bytes, expected {len}",
            path.display(),
            bytes.len()
        )));
    }
    // Unique temporary name: parallel test processes may fill the same cache.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, &bytes).map_err(|e| DistillError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| DistillError::io(path, e))?;
    Ok(bytes)
}

/// Generate (or load from the cache) every clip of `spec`, class after class; `media`
/// renders the test-sources world (the scene world needs none).
pub fn generate(
    spec: &LabelledSpec,
    media: Option<&dyn TestMedia>,
) -> Result<Vec<Clip>, DistillError> {
    match (spec.world, media) {
        (ClipWorld::TestSources, Some(m)) => test_source_clips(spec, m),
        (ClipWorld::TestSources, None) => Err(DistillError::Tool {
            tool: "GStreamer test sources".into(),
            message: "the test-sources clip world needs GStreamer, which this build does not \
                      include (use the scenes world)"
                .into(),
        }),
        (ClipWorld::Scenes, _) => scene_clips(spec),
    }
}

/// The scene world's clips: class `name` is a shape; clip `k` of a class is one sounding
/// scene of that shape drawn from `(seed, class, k)`.
fn scene_clips(spec: &LabelledSpec) -> Result<Vec<Clip>, DistillError> {
    use sensorium_engine::scene::{render, Scene, SceneTimeline, Shape, WorldParams};
    let fps = spec.fps.max(1) as f64;
    let duration = spec.frames_per_clip as f64 / fps;
    let params = WorldParams {
        window_s: duration,
        aspect: spec.width as f64 / spec.height.max(1) as f64,
    };
    let spf = spec.samples_per_frame();
    let mut clips = Vec::new();
    for (ci, class) in spec.classes.iter().enumerate() {
        let shape = Shape::ALL
            .into_iter()
            .find(|s| s.name() == class.pattern)
            .ok_or_else(|| {
                DistillError::input(
                    "scene class",
                    format!(
                        "{:?} is not a shape (circle, square, triangle)",
                        class.pattern
                    ),
                )
            })?;
        for k in 0..spec.clips_per_class {
            let item = ((ci as u64) << 32) | k as u64;
            let scene = Scene::sounding(spec.seed, item, shape, 0.0, duration, &params);
            let mut tl = SceneTimeline::with_scenes(spec.seed, params, vec![scene]);
            let frames = (0..spec.frames_per_clip)
                .map(|f| {
                    render::picture(&mut tl, f as f64 / fps, f as u64, spec.width, spec.height)
                })
                .collect();
            let mut audio = render::audio(&mut tl, 0, spec.frames_per_clip * spf);
            let mut rng = Rng::new(spec.seed ^ item.wrapping_mul(0x9E37_79B9));
            mix_noise(&mut audio, class.snr_db, &mut rng);
            clips.push(Clip {
                class: ci,
                index: k,
                width: spec.width,
                height: spec.height,
                frames,
                audio,
            });
        }
    }
    Ok(clips)
}

/// GStreamer's test sources, rendered once per class by `media` into the cache.
fn test_source_clips(
    spec: &LabelledSpec,
    media: &dyn TestMedia,
) -> Result<Vec<Clip>, DistillError> {
    std::fs::create_dir_all(&spec.cache_dir).map_err(|e| DistillError::io(&spec.cache_dir, e))?;
    let n_frames = spec.clips_per_class * spec.frames_per_clip;
    let spf = spec.samples_per_frame();
    let frame_bytes = (spec.width * spec.height * 3) as usize;
    let mut clips = Vec::new();
    for (ci, class) in spec.classes.iter().enumerate() {
        let vpath = spec.cache_dir.join(format!(
            "{}-{}x{}-{}fps-{}.rgb",
            class.pattern, spec.width, spec.height, spec.fps, n_frames
        ));
        let video = cached(&vpath, n_frames * frame_bytes, || {
            media.video(&class.pattern, spec.width, spec.height, spec.fps, n_frames)
        })?;
        let apath = spec.cache_dir.join(format!(
            "{}-{}hz-v{}-{}x{}.f32",
            class.wave, class.freq, class.volume, n_frames, spf
        ));
        let audio = cached(&apath, n_frames * spf * 4, || {
            let a = media.audio(&class.wave, class.freq, class.volume, spf, n_frames)?;
            Ok(a.iter().flat_map(|x| x.to_le_bytes()).collect())
        })?;
        let samples: Vec<f32> = audio
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let clip_samples = spec.frames_per_clip * spf;
        for k in 0..spec.clips_per_class {
            let mut rng =
                Rng::new(spec.seed ^ ((ci as u64) << 32) ^ (k as u64).wrapping_mul(0x9E37_79B9));
            let frames = (0..spec.frames_per_clip)
                .map(|f| {
                    let i = k * spec.frames_per_clip + f;
                    video[i * frame_bytes..(i + 1) * frame_bytes].to_vec()
                })
                .collect();
            let gain = 0.5 + rng.unit() as f32;
            let mut a: Vec<f32> = samples[k * clip_samples..(k + 1) * clip_samples]
                .iter()
                .map(|x| x * gain)
                .collect();
            mix_noise(&mut a, class.snr_db, &mut rng);
            clips.push(Clip {
                class: ci,
                index: k,
                width: spec.width,
                height: spec.height,
                frames,
                audio: a,
            });
        }
    }
    Ok(clips)
}

/// Add white Gaussian noise at `snr_db` below the signal's power (if given), plus a -80 dB
/// floor so no clip is digitally silent.
pub fn mix_noise(samples: &mut [f32], snr_db: Option<f64>, rng: &mut Rng) {
    let power = samples.iter().map(|x| x * x).sum::<f32>() / samples.len().max(1) as f32;
    let sigma = match snr_db {
        Some(s) => (power / 10f32.powf(s as f32 / 10.0)).sqrt(),
        None => 0.0,
    } + 1e-4;
    for x in samples.iter_mut() {
        *x += sigma * rng.normal() as f32;
    }
}
