//! Feature extractors: the small traits through which distillation sees audio and video, and
//! two tiny deterministic extractors used by the tests and the eval command.
//!
//! The real encoders (Whisper audio encoder, CLIP vision tower) implement the same traits by
//! pooling their output tensor into one vector per frame, so they drop in without touching
//! the trainer. [`SpectralAudioFeatures`] and [`GridVisualFeatures`] are *stand-ins*: cheap,
//! hand-made features (log-mel band statistics from a real FFT; a colour grid with texture
//! statistics) that are enough to tell synthetic test scenes apart, not learnt encoders.

use std::sync::Arc;

use realfft::RealFftPlanner;

pub use sensorium_engine::frame::DistillFeatures;
use sensorium_engine::frame::{FrameFeatures, SyncedFrame};

use super::error::DistillError;

/// Audio samples (mono f32 at 16 kHz, one frame period) -> one feature vector.
pub trait AudioFeatureExtractor: Send + Sync {
    fn name(&self) -> &str;
    /// Length of every vector `extract` returns.
    fn dim(&self) -> usize;
    fn extract(&self, samples: &[f32]) -> Result<Vec<f32>, DistillError>;
    /// The same vector from what an upstream frame encoder already attached to the frame
    /// (so a frame is encoded once); `None` when this extractor cannot use `features`.
    fn pool_upstream(&self, _features: &FrameFeatures) -> Option<Result<Vec<f32>, DistillError>> {
        None
    }
}

/// One RGB24 frame (packed rows) -> one feature vector.
pub trait VisualFeatureExtractor: Send + Sync {
    fn name(&self) -> &str;
    fn dim(&self) -> usize;
    fn extract(&self, rgb: &[u8], width: u32, height: u32) -> Result<Vec<f32>, DistillError>;
    /// See [`AudioFeatureExtractor::pool_upstream`].
    fn pool_upstream(&self, _features: &FrameFeatures) -> Option<Result<Vec<f32>, DistillError>> {
        None
    }
}

const FFT_SIZE: usize = 512;
const HOP: usize = 256;
const SAMPLE_RATE: f32 = 16_000.0;
const EPS: f32 = 1e-10;

/// Power spectra (|X|^2 / N) of Hann-windowed frames of `samples` (zero-padded to one frame).
fn power_frames(samples: &[f32]) -> Vec<Vec<f32>> {
    let mut planner = RealFftPlanner::<f32>::new();
    let fft = planner.plan_fft_forward(FFT_SIZE);
    let window: Vec<f32> = (0..FFT_SIZE)
        .map(|i| 0.5 - 0.5 * (2.0 * std::f32::consts::PI * i as f32 / FFT_SIZE as f32).cos())
        .collect();
    let mut input = fft.make_input_vec();
    let mut output = fft.make_output_vec();
    let mut frames = Vec::new();
    let mut start = 0;
    loop {
        for (i, x) in input.iter_mut().enumerate() {
            *x = samples.get(start + i).copied().unwrap_or(0.0) * window[i];
        }
        // The buffers have the planner's own lengths, so this cannot fail.
        if fft.process(&mut input, &mut output).is_ok() {
            frames.push(
                output
                    .iter()
                    .map(|c| c.norm_sqr() / FFT_SIZE as f32)
                    .collect(),
            );
        }
        start += HOP;
        if start + FFT_SIZE > samples.len() {
            break;
        }
    }
    frames
}

/// Energy and a blind SNR estimate of a stretch of audio, inputs of the difficulty model.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct AudioStats {
    /// 10 log10(mean square), dB full scale (floored at -120).
    pub energy_db: f32,
    /// Spectral peak-to-floor ratio, dB: mean power of the strongest 5% of FFT bins over the
    /// median bin (time-averaged spectrum). ~0-3 dB for white noise or silence, tens of dB for
    /// a clean tone or clicks; mixing noise into a tone lowers it. A heuristic, not a true SNR.
    pub snr_db: f32,
}

/// Compute [`AudioStats`] of `samples` (any length; empty gives the floor values).
pub fn audio_stats(samples: &[f32]) -> AudioStats {
    if samples.is_empty() {
        return AudioStats {
            energy_db: -120.0,
            snr_db: 0.0,
        };
    }
    let ms = samples.iter().map(|x| x * x).sum::<f32>() / samples.len() as f32;
    let energy_db = (10.0 * (ms + 1e-12).log10()).max(-120.0);
    if energy_db < -90.0 {
        return AudioStats {
            energy_db,
            snr_db: 0.0,
        };
    }
    let frames = power_frames(samples);
    let bins = FFT_SIZE / 2 + 1;
    let mut mean = vec![0f32; bins];
    for f in &frames {
        for (m, p) in mean.iter_mut().zip(f) {
            *m += p / frames.len() as f32;
        }
    }
    mean.sort_by(|a, b| b.total_cmp(a));
    let top = (bins / 20).max(1);
    let peak = mean[..top].iter().sum::<f32>() / top as f32;
    let median = mean[bins / 2];
    AudioStats {
        energy_db,
        snr_db: (10.0 * ((peak + EPS) / (median + EPS)).log10()).clamp(0.0, 80.0),
    }
}

/// Stand-in audio encoder: log-mel band statistics over 32 ms frames.
///
/// Output (dim = 2 * bands + 2): per band the time-mean of the log band power relative to the
/// frame's mean log power (spectral shape, /5), per band its time standard deviation
/// (temporal modulation, /5), then the mean and standard deviation of the frame log power
/// (/10 and /5). The scalings keep every entry roughly within [-3, 3].
pub struct SpectralAudioFeatures {
    /// Triangular mel filters over the FFT bins, `bands x bins`.
    filters: Vec<Vec<f32>>,
}

impl SpectralAudioFeatures {
    /// `bands` mel bands between 50 Hz and 8 kHz.
    pub fn new(bands: usize) -> Self {
        let mel = |f: f32| 2595.0 * (1.0 + f / 700.0).log10();
        let hz = |m: f32| 700.0 * (10f32.powf(m / 2595.0) - 1.0);
        let (lo, hi) = (mel(50.0), mel(SAMPLE_RATE / 2.0));
        let edges: Vec<f32> = (0..bands + 2)
            .map(|i| hz(lo + (hi - lo) * i as f32 / (bands + 1) as f32))
            .collect();
        let bins = FFT_SIZE / 2 + 1;
        let bin_hz = SAMPLE_RATE / FFT_SIZE as f32;
        let filters = (0..bands)
            .map(|b| {
                let (l, c, r) = (edges[b], edges[b + 1], edges[b + 2]);
                let mut f: Vec<f32> = (0..bins)
                    .map(|k| {
                        let x = k as f32 * bin_hz;
                        if x <= l || x >= r {
                            0.0
                        } else if x <= c {
                            (x - l) / (c - l)
                        } else {
                            (r - x) / (r - c)
                        }
                    })
                    .collect();
                // Narrow low bands may fall between bins: give them their nearest bin.
                if f.iter().all(|w| *w == 0.0) {
                    let k = ((c / bin_hz).round() as usize).min(bins - 1);
                    f[k] = 1.0;
                }
                f
            })
            .collect();
        Self { filters }
    }
}

impl Default for SpectralAudioFeatures {
    fn default() -> Self {
        Self::new(24)
    }
}

impl AudioFeatureExtractor for SpectralAudioFeatures {
    fn name(&self) -> &str {
        "spectral-stand-in"
    }
    fn dim(&self) -> usize {
        2 * self.filters.len() + 2
    }
    fn extract(&self, samples: &[f32]) -> Result<Vec<f32>, DistillError> {
        if samples.is_empty() {
            return Err(DistillError::input("audio samples", "no samples"));
        }
        if let Some(i) = samples.iter().position(|x| !x.is_finite()) {
            return Err(DistillError::input(
                "audio samples",
                format!("sample {i} is not finite"),
            ));
        }
        let bands = self.filters.len();
        let frames = power_frames(samples);
        let n = frames.len() as f32;
        let mut rel = vec![vec![0f32; bands]; frames.len()];
        let mut level = vec![0f32; frames.len()];
        for (t, p) in frames.iter().enumerate() {
            let logs: Vec<f32> = self
                .filters
                .iter()
                .map(|f| (f.iter().zip(p).map(|(w, x)| w * x).sum::<f32>() + EPS).ln())
                .collect();
            level[t] = logs.iter().sum::<f32>() / bands as f32;
            for b in 0..bands {
                rel[t][b] = logs[b] - level[t];
            }
        }
        let mut out = Vec::with_capacity(self.dim());
        let means: Vec<f32> = (0..bands)
            .map(|b| rel.iter().map(|r| r[b]).sum::<f32>() / n)
            .collect();
        out.extend(means.iter().map(|m| m / 5.0));
        for (b, m) in means.iter().enumerate() {
            let var = rel.iter().map(|r| (r[b] - m).powi(2)).sum::<f32>() / n;
            out.push(var.sqrt() / 5.0);
        }
        let lm = level.iter().sum::<f32>() / n;
        let ls = (level.iter().map(|l| (l - lm).powi(2)).sum::<f32>() / n).sqrt();
        out.push(lm / 10.0);
        out.push(ls / 5.0);
        Ok(out)
    }
}

/// Stand-in visual encoder: a `grid x grid` colour thumbnail plus colour and texture statistics.
///
/// Output (dim = 3 * grid^2 + 8), all in `[0, 1]`: per cell the mean R, G, B; per channel the
/// frame mean and standard deviation; the mean absolute horizontal and vertical differences
/// of neighbouring pixels' luma (texture: high for snow and checkers, zero for solid colour).
pub struct GridVisualFeatures {
    grid: usize,
}

impl GridVisualFeatures {
    pub fn new(grid: usize) -> Self {
        Self { grid: grid.max(1) }
    }
}

impl Default for GridVisualFeatures {
    fn default() -> Self {
        Self::new(8)
    }
}

impl VisualFeatureExtractor for GridVisualFeatures {
    fn name(&self) -> &str {
        "grid-stand-in"
    }
    fn dim(&self) -> usize {
        3 * self.grid * self.grid + 8
    }
    fn extract(&self, rgb: &[u8], width: u32, height: u32) -> Result<Vec<f32>, DistillError> {
        let (w, h) = (width as usize, height as usize);
        if w == 0 || h == 0 {
            return Err(DistillError::input(
                "video frame",
                format!("empty frame {width}x{height}"),
            ));
        }
        if rgb.len() != w * h * 3 {
            return Err(DistillError::input(
                "video frame",
                format!(
                    "{width}x{height} RGB needs {} bytes, got {}",
                    w * h * 3,
                    rgb.len()
                ),
            ));
        }
        let px = |x: usize, y: usize, c: usize| rgb[(y * w + x) * 3 + c] as f32 / 255.0;
        let g = self.grid;
        let mut out = Vec::with_capacity(self.dim());
        for cy in 0..g {
            let y0 = cy * h / g;
            let y1 = ((cy + 1) * h / g).max(y0 + 1).min(h);
            for cx in 0..g {
                let x0 = cx * w / g;
                let x1 = ((cx + 1) * w / g).max(x0 + 1).min(w);
                let n = ((y1 - y0) * (x1 - x0)) as f32;
                for c in 0..3 {
                    let mut s = 0.0;
                    for y in y0..y1 {
                        for x in x0..x1 {
                            s += px(x, y, c);
                        }
                    }
                    out.push(s / n);
                }
            }
        }
        let n = (w * h) as f32;
        for c in 0..3 {
            let mean = (0..w * h)
                .map(|i| rgb[i * 3 + c] as f32 / 255.0)
                .sum::<f32>()
                / n;
            let var = (0..w * h)
                .map(|i| (rgb[i * 3 + c] as f32 / 255.0 - mean).powi(2))
                .sum::<f32>()
                / n;
            out.push(mean);
            out.push(var.sqrt());
        }
        let luma =
            |x: usize, y: usize| 0.299 * px(x, y, 0) + 0.587 * px(x, y, 1) + 0.114 * px(x, y, 2);
        let (mut dx, mut dy) = (0f32, 0f32);
        for y in 0..h {
            for x in 0..w {
                if x + 1 < w {
                    dx += (luma(x + 1, y) - luma(x, y)).abs();
                }
                if y + 1 < h {
                    dy += (luma(x, y + 1) - luma(x, y)).abs();
                }
            }
        }
        out.push(dx / (h * (w.max(2) - 1)) as f32);
        out.push(dy / (w * (h.max(2) - 1)) as f32);
        Ok(out)
    }
}

/// The pair of extractors a distillation stage uses.
#[derive(Clone)]
pub struct Extractors {
    pub audio: Arc<dyn AudioFeatureExtractor>,
    pub visual: Arc<dyn VisualFeatureExtractor>,
}

impl Extractors {
    /// One frame's distillation features. The tokens an upstream encoder made of the frame
    /// (`upstream`: Whisper/vision-tower tokens) are pooled when the extractor understands
    /// them, so the frame is not encoded a second time; otherwise the extractor reads the
    /// frame's samples and pixels.
    pub fn frame(
        &self,
        f: &SyncedFrame,
        upstream: Option<&FrameFeatures>,
    ) -> Result<DistillFeatures, DistillError> {
        let has_audio = f.has_audio && !f.audio.is_empty();
        Ok(DistillFeatures {
            audio: if has_audio {
                match upstream.and_then(|u| self.audio.pool_upstream(u)) {
                    Some(r) => Some(r?),
                    None => Some(self.audio.extract(&f.audio)?),
                }
            } else {
                None
            },
            visual: match &f.video {
                Some(v) => match upstream.and_then(|u| self.visual.pool_upstream(u)) {
                    Some(r) => Some(r?),
                    None => Some(self.visual.extract(&v.rgb, v.width, v.height)?),
                },
                None => None,
            },
            snr_db: if has_audio {
                audio_stats(&f.audio).snr_db
            } else {
                0.0
            },
        })
    }

    /// The stand-in extractors ([`SpectralAudioFeatures`], [`GridVisualFeatures`]).
    pub fn stand_in() -> Self {
        Self {
            audio: Arc::new(SpectralAudioFeatures::default()),
            visual: Arc::new(GridVisualFeatures::default()),
        }
    }
}

/// Element-wise mean of equally long vectors (pooling frames of a window); `None` if empty.
pub fn mean_pool(vectors: &[Vec<f32>]) -> Option<Vec<f32>> {
    let first = vectors.first()?;
    let mut out = vec![0f32; first.len()];
    for v in vectors {
        for (o, x) in out.iter_mut().zip(v) {
            *o += x / vectors.len() as f32;
        }
    }
    Some(out)
}
