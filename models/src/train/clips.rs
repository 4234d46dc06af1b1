//! Clips to features, through exactly the path `sensorium run` serves with: a file source
//! (pipelines) → synchroniser → frame encoder ([`AvFrameEncoder`]) → window assembler. The
//! windows' per-frame encoder outputs are captured by a window stage and cached on disk, so
//! later epochs and runs decode and encode nothing.
//!
//! Cache: one safetensors file per media under the cache directory, named by a SHA-256 over
//! the media files' bytes, the encoder checkpoints' files (config + weights), the engine
//! settings that shape frames and windows (fps, frame size, window, stride) and the visual
//! slot mode. Tensors `f{i}.audio` / `f{i}.visual` per frame; the windows (first frame, valid
//! flags, times) in the header's metadata. A time range (`start_s`/`end_s`) selects windows
//! of the cached whole-file decode, so two samples of one file share one decode.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use sensorium_engine::config::{FileSource, LaunchSource, SourceConfig, StreamConfig};
use sensorium_engine::frame::Window;
use sensorium_engine::model::{StageError, WindowModel};
use sensorium_engine::source::SourceFactory;
use sensorium_engine::{Config, Runtime, StreamEnd};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::data::{Media, Sample};
use super::TrainError;
use crate::qformer::FrameInput;
use crate::stage::{AvFrameEncoder, EncoderInput, InputPreparer, SharedFrameEncoder};
use crate::tensor_file::{self, StFile, StTensor};
use sensorium_engine::frame::FrameFeatures;

/// One assembled window of a clip.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClipWindow {
    /// Stream index of the window's first frame.
    pub first: u64,
    /// One flag per frame (false: padding of a last partial window).
    pub valid: Vec<bool>,
    pub t_start: u64,
    pub t_end: u64,
}

/// A decoded, encoded media: every frame's encoder outputs and the windows over them.
#[derive(Clone, Debug)]
pub struct ClipFeatures {
    /// Frames `0..n` of the stream (features of frame `i` at index `i`); empty features when
    /// the encoders are trained (then `inputs` holds what they read).
    pub frames: Vec<FrameInput>,
    /// The encoders' inputs of frames `0..n` (`train_encoders`); empty otherwise.
    pub inputs: Vec<EncoderInput>,
    pub windows: Vec<ClipWindow>,
}

impl ClipFeatures {
    /// Indices of the windows a sample uses: those overlapping `[start_s, end_s)` (the
    /// whole media without a range), oldest first.
    pub fn windows_in(&self, start_s: Option<f64>, end_s: Option<f64>) -> Vec<usize> {
        let s = start_s.map_or(0, |s| (s * 1e9) as u64);
        let e = end_s.map_or(u64::MAX, |e| (e * 1e9) as u64);
        (0..self.windows.len())
            .filter(|&i| self.windows[i].t_start < e && self.windows[i].t_end > s)
            .collect()
    }
}

/// Counts what the extractor did (the test of the cache reads them).
#[derive(Debug, Default)]
pub struct ExtractStats {
    /// Media decoded and encoded.
    pub decoded: AtomicU64,
    /// Media served from the cache.
    pub cached: AtomicU64,
}

#[derive(Default)]
struct Captured {
    frames: BTreeMap<u64, FrameInput>,
    inputs: BTreeMap<u64, EncoderInput>,
    windows: Vec<ClipWindow>,
}

/// The window stage that keeps what the Q-Former would have been given.
struct Capture(Arc<Mutex<Captured>>);

impl WindowModel for Capture {
    fn name(&self) -> &str {
        "train-capture"
    }
    fn process(
        &mut self,
        windows: &[&Window],
    ) -> Result<Vec<serde_json::Map<String, serde_json::Value>>, StageError> {
        let mut c = self.0.lock();
        for w in windows {
            for (f, valid) in w.frames.iter().zip(&w.valid) {
                if !*valid || c.frames.contains_key(&f.index) || c.inputs.contains_key(&f.index) {
                    continue;
                }
                let feats = f
                    .features
                    .as_ref()
                    .ok_or_else(|| StageError::new("train", "frame without encoder features"))?;
                match &**feats {
                    FrameFeatures::Encoded(enc) => {
                        c.frames.insert(
                            f.index,
                            FrameInput {
                                audio: enc.audio.clone(),
                                visual: enc.visual.clone(),
                            },
                        );
                    }
                    FrameFeatures::Inputs(inp) => {
                        c.inputs.insert(f.index, inp.clone());
                    }
                }
            }
            c.windows.push(ClipWindow {
                first: w.frames.first().map_or(0, |f| f.index),
                valid: w.valid.clone(),
                t_start: w.t_start,
                t_end: w.t_end,
            });
        }
        Ok(vec![serde_json::Map::new(); windows.len()])
    }
}

/// A sink that drops window records (training needs only the captured features).
struct NullSink;

impl sensorium_engine::sink::WindowSink for NullSink {
    fn write(&mut self, _: &serde_json::Value) -> Result<(), sensorium_engine::sink::SinkError> {
        Ok(())
    }
}

/// Decodes and encodes media through the engine, with the on-disk cache.
pub struct ClipExtractor {
    engine: Config,
    encoder: Arc<AvFrameEncoder>,
    factory: Arc<dyn SourceFactory>,
    cache_dir: Option<PathBuf>,
    /// Hash of everything but the media that the features depend on.
    settings_key: String,
    pub stats: ExtractStats,
    /// This run's features by media path: a file is hashed and read once per run.
    memo: Mutex<HashMap<Media, Arc<ClipFeatures>>>,
    /// Capture the encoders' inputs instead of their outputs (`train_encoders`).
    inputs_only: bool,
}

fn hash_file(h: &mut Sha256, path: &Path) -> Result<(), TrainError> {
    let mut f = std::fs::File::open(path).map_err(|e| TrainError::Media {
        path: path.to_owned(),
        message: format!("cannot read: {e}"),
    })?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(|e| TrainError::Media {
            path: path.to_owned(),
            message: format!("cannot read: {e}"),
        })?;
        if n == 0 {
            return Ok(());
        }
        h.update(&buf[..n]);
    }
}

/// Hashes a checkpoint directory's files (names and bytes, sorted by name).
fn hash_dir(h: &mut Sha256, dir: &Path) -> Result<(), TrainError> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| TrainError::Media {
            path: dir.to_owned(),
            message: format!("cannot list: {e}"),
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    names.sort();
    for p in names {
        h.update(p.file_name().map(|n| n.as_encoded_bytes()).unwrap_or(b""));
        hash_file(h, &p)?;
    }
    Ok(())
}

impl ClipExtractor {
    /// `engine` supplies `[engine]` (fps, frame size, window, stride...); `encoder_dirs` are
    /// the checkpoints behind `encoder` (hashed into the cache key); `visual_slots` names the
    /// slot mode (also part of the key).
    pub fn new(
        engine: &Config,
        encoder: Arc<AvFrameEncoder>,
        encoder_dirs: &[&Path],
        visual_slots: &str,
        factory: Arc<dyn SourceFactory>,
        cache_dir: Option<PathBuf>,
    ) -> Result<Self, TrainError> {
        let mut h = Sha256::new();
        h.update(b"sensorium clip features v1\0");
        let e = &engine.engine;
        h.update(
            format!(
                "fps={} {}x{} window={} stride={} slots={visual_slots}\0",
                e.fps, e.width, e.height, e.window, e.stride
            )
            .as_bytes(),
        );
        for d in encoder_dirs {
            hash_dir(&mut h, d)?;
        }
        let mut base = engine.clone();
        base.streams.clear();
        base.models = None;
        base.llm = None;
        base.distill = None;
        base.train = None;
        base.metrics = Default::default();
        Ok(Self {
            engine: base,
            encoder,
            factory,
            cache_dir,
            settings_key: hex(&h.finalize()),
            stats: ExtractStats::default(),
            memo: Mutex::new(HashMap::new()),
            inputs_only: false,
        })
    }

    /// Captures what the encoders read ([`EncoderInput`]: log-mel, pixels) rather than what
    /// they output, for training the encoders. The on-disk cache is bypassed (it holds
    /// encoder outputs, which change as the encoders learn); each media is still decoded
    /// once per run.
    pub fn inputs_only(mut self) -> Self {
        self.inputs_only = true;
        self.cache_dir = None;
        self
    }

    fn key(&self, media: &Media) -> Result<String, TrainError> {
        let mut h = Sha256::new();
        h.update(self.settings_key.as_bytes());
        for f in media.files() {
            h.update(b"\0media\0");
            hash_file(&mut h, f)?;
        }
        Ok(hex(&h.finalize()))
    }

    /// Features of a sample's media (decoded once per run, then from memory or disk).
    pub fn features(&self, sample: &Sample) -> Result<Arc<ClipFeatures>, TrainError> {
        if let Some(f) = self.memo.lock().get(&sample.media) {
            return Ok(f.clone());
        }
        let key = self.key(&sample.media)?;
        let path = self
            .cache_dir
            .as_ref()
            .map(|d| d.join(format!("{key}.safetensors")));
        let cached = path
            .as_ref()
            .filter(|p| p.is_file())
            .and_then(|p| read_cache(p));
        let feats = match cached {
            Some(f) => {
                self.stats.cached.fetch_add(1, Ordering::Relaxed);
                f
            }
            None => {
                let f = self.decode(sample)?;
                self.stats.decoded.fetch_add(1, Ordering::Relaxed);
                if let Some(p) = &path {
                    write_cache(p, &f)?;
                }
                f
            }
        };
        let feats = Arc::new(feats);
        self.memo.lock().insert(sample.media.clone(), feats.clone());
        Ok(feats)
    }

    /// Features of a generated source (e.g. a `scene` stream), through the same path;
    /// `key` names it in the cache (it must identify everything the source generates).
    pub fn source_features(
        &self,
        source: SourceConfig,
        key: &str,
    ) -> Result<Arc<ClipFeatures>, TrainError> {
        let mut h = Sha256::new();
        h.update(self.settings_key.as_bytes());
        h.update(b"\0source\0");
        h.update(key.as_bytes());
        let path = self
            .cache_dir
            .as_ref()
            .map(|d| d.join(format!("{}.safetensors", hex(&h.finalize()))));
        if let Some(f) = path
            .as_ref()
            .filter(|p| p.is_file())
            .and_then(|p| read_cache(p))
        {
            self.stats.cached.fetch_add(1, Ordering::Relaxed);
            return Ok(Arc::new(f));
        }
        let f = self.run_source(source, Path::new(key))?;
        self.stats.decoded.fetch_add(1, Ordering::Relaxed);
        if let Some(p) = &path {
            write_cache(p, &f)?;
        }
        Ok(Arc::new(f))
    }

    /// Runs the media through the engine once.
    fn decode(&self, sample: &Sample) -> Result<ClipFeatures, TrainError> {
        let source = match &sample.media {
            Media::File(p) => SourceConfig::File(FileSource {
                path: p.clone(),
                looping: false,
                video: true,
                audio: true,
            }),
            Media::Pair(v, a) => SourceConfig::Launch(LaunchSource {
                pipeline: format!(
                    "filesrc location={} ! decodebin ! appsink name=video \
                     filesrc location={} ! decodebin ! appsink name=audio",
                    quote(v),
                    quote(a)
                ),
                live: false,
            }),
        };
        self.run_source(source, sample.media.files()[0])
    }

    /// Runs `source` through the engine once; `origin` names it in errors.
    fn run_source(&self, source: SourceConfig, origin: &Path) -> Result<ClipFeatures, TrainError> {
        let mut config = self.engine.clone();
        config.streams = vec![StreamConfig {
            name: "clip".into(),
            source,
            mode: Some(sensorium_engine::QueueMode::Lossless),
            fps: None,
            width: None,
            height: None,
        }];
        let captured = Arc::new(Mutex::new(Captured::default()));
        let encoder: Box<dyn sensorium_engine::model::FrameEncoder> = if self.inputs_only {
            Box::new(InputPreparer(self.encoder.clone()))
        } else {
            Box::new(SharedFrameEncoder(self.encoder.clone()))
        };
        let report = Runtime::new(config, self.factory.clone())
            .with_encoder(encoder)
            .with_model(Box::new(Capture(captured.clone())))
            .with_sink(Box::new(NullSink))
            .run()
            .map_err(|e| TrainError::Media {
                path: origin.to_owned(),
                message: e.to_string(),
            })?;
        let media_err = |message: String| TrainError::Media {
            path: origin.to_owned(),
            message,
        };
        if let Some(s) = report.streams.first() {
            match &s.end {
                StreamEnd::StartFailed(m) | StreamEnd::SourceFailed(m) => {
                    return Err(media_err(m.clone()))
                }
                _ => {}
            }
            if let Some(m) = &s.model_error {
                return Err(media_err(m.clone()));
            }
        }
        let c = std::mem::take(&mut *captured.lock());
        if c.windows.is_empty() || (c.frames.is_empty() && c.inputs.is_empty()) {
            return Err(media_err(format!(
                "shorter than one frame at {} fps: no window to learn from",
                self.engine.engine.fps
            )));
        }
        let n = c
            .frames
            .keys()
            .chain(c.inputs.keys())
            .max()
            .map_or(0, |k| k + 1) as usize;
        let mut frames = vec![FrameInput::default(); n];
        for (i, f) in c.frames {
            frames[i as usize] = f;
        }
        let mut inputs = Vec::new();
        if !c.inputs.is_empty() {
            inputs = vec![EncoderInput::default(); n];
            for (i, f) in c.inputs {
                inputs[i as usize] = f;
            }
        }
        Ok(ClipFeatures {
            frames,
            inputs,
            windows: c.windows,
        })
    }
}

fn quote(p: &Path) -> String {
    format!("\"{}\"", p.display().to_string().replace('"', "\\\""))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn write_cache(path: &Path, f: &ClipFeatures) -> Result<(), TrainError> {
    let io = |e: String| TrainError::Output {
        path: path.to_owned(),
        message: e,
    };
    let mut tensors = Vec::new();
    for (i, fr) in f.frames.iter().enumerate() {
        for (part, t) in [("audio", &fr.audio), ("visual", &fr.visual)] {
            if let Some(t) = t {
                tensors.push(StTensor {
                    name: format!("f{i}.{part}"),
                    shape: t.dims().to_vec(),
                    data: t.flatten_all()?.to_vec1::<f32>()?,
                });
            }
        }
    }
    let meta = BTreeMap::from([
        ("frames".to_string(), f.frames.len().to_string()),
        (
            "windows".to_string(),
            serde_json::to_string(&f.windows).map_err(|e| io(e.to_string()))?,
        ),
    ]);
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| io(e.to_string()))?;
    }
    tensor_file::write_atomic(path, &tensor_file::to_bytes(&tensors, &meta))
        .map_err(|e| io(e.to_string()))
}

/// A cache file, or `None` when it is unreadable (then the media is decoded again).
fn read_cache(path: &Path) -> Option<ClipFeatures> {
    let mut file = StFile::read(path).ok()?;
    let n: usize = file.metadata.get("frames")?.parse().ok()?;
    let windows: Vec<ClipWindow> = serde_json::from_str(file.metadata.get("windows")?).ok()?;
    let frames = (0..n)
        .map(|i| FrameInput {
            audio: file.tensors.remove(&format!("f{i}.audio")),
            visual: file.tensors.remove(&format!("f{i}.visual")),
        })
        .collect();
    Some(ClipFeatures {
        frames,
        inputs: Vec::new(),
        windows,
    })
}
