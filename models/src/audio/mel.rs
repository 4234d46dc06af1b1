//! Log-mel front end for Whisper on raw 16 kHz audio, matching transformers'
//! `WhisperFeatureExtractor` (STFT n_fft=400, hop=160, periodic Hann window, centred with
//! reflect padding, power spectrum, Slaney mel filters 0..8 kHz, log10 clamped at 1e-10,
//! dynamic range limited to max-8, then `(x + 4) / 4`; the last STFT frame is dropped), but
//! without padding to 30 s: `n` samples give `n / 160` frames.
//!
//! Computed in f64 (as numpy does) with a real FFT (`realfft`).

use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex};

use crate::error::{ModelError, Result};

pub const SAMPLE_RATE: usize = 16_000;
pub const N_FFT: usize = 400;
pub const HOP: usize = 160;

/// A reusable log-mel extractor (filters and FFT plan built once).
pub struct LogMel {
    n_mels: usize,
    /// The Slaney filters, each as its non-zero span of FFT bins: a triangle covers a few
    /// bins of 201, so the filter bank costs ~2 multiply-adds per bin instead of `n_mels`.
    filters: Vec<Span>,
    window: Vec<f64>,
    fft: Arc<dyn RealToComplex<f64>>,
}

/// One mel filter: `weights[i]` applies to FFT bin `first + i`.
struct Span {
    first: usize,
    weights: Vec<f64>,
}

impl Span {
    /// The non-zero part of a dense filter row (an all-zero row keeps no weights).
    fn of(row: &[f64]) -> Span {
        let first = row.iter().position(|w| *w != 0.0).unwrap_or(row.len());
        let last = row.iter().rposition(|w| *w != 0.0).map_or(first, |l| l + 1);
        Span {
            first,
            weights: row[first..last].to_vec(),
        }
    }

    fn apply(&self, power: &[f64]) -> f64 {
        self.weights
            .iter()
            .zip(&power[self.first..])
            .map(|(w, p)| w * p)
            .sum()
    }
}

impl std::fmt::Debug for LogMel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LogMel(n_mels={})", self.n_mels)
    }
}

fn hz_to_mel(hz: f64) -> f64 {
    let f_sp = 200.0 / 3.0;
    let min_log_hz = 1000.0;
    let min_log_mel = min_log_hz / f_sp;
    let logstep = 27.0 / 6.4f64.ln();
    if hz >= min_log_hz {
        min_log_mel + (hz / min_log_hz).ln() * logstep
    } else {
        hz / f_sp
    }
}

fn mel_to_hz(mel: f64) -> f64 {
    let f_sp = 200.0 / 3.0;
    let min_log_hz = 1000.0;
    let min_log_mel = min_log_hz / f_sp;
    let logstep = 6.4f64.ln() / 27.0;
    if mel >= min_log_mel {
        min_log_hz * (logstep * (mel - min_log_mel)).exp()
    } else {
        f_sp * mel
    }
}

fn linspace(a: f64, b: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![a];
    }
    (0..n)
        .map(|i| a + (b - a) * i as f64 / (n - 1) as f64)
        .collect()
}

/// Slaney-normalised triangular mel filters as in `transformers.audio_utils.mel_filter_bank`.
pub fn mel_filters(n_freq: usize, n_mels: usize, fmin: f64, fmax: f64, sr: f64) -> Vec<Vec<f64>> {
    let mels = linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2);
    let ff: Vec<f64> = mels.iter().map(|m| mel_to_hz(*m)).collect();
    let fft_freqs = linspace(0.0, (sr as usize / 2) as f64, n_freq);
    (0..n_mels)
        .map(|m| {
            let enorm = 2.0 / (ff[m + 2] - ff[m]);
            fft_freqs
                .iter()
                .map(|f| {
                    let down = (f - ff[m]) / (ff[m + 1] - ff[m]);
                    let up = (ff[m + 2] - f) / (ff[m + 2] - ff[m + 1]);
                    down.min(up).max(0.0) * enorm
                })
                .collect()
        })
        .collect()
}

impl LogMel {
    pub fn new(n_mels: usize) -> Self {
        let window = (0..N_FFT)
            .map(|n| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * n as f64 / N_FFT as f64).cos())
            .collect();
        let fft = RealFftPlanner::<f64>::new().plan_fft_forward(N_FFT);
        Self {
            n_mels,
            filters: mel_filters(N_FFT / 2 + 1, n_mels, 0.0, 8000.0, SAMPLE_RATE as f64)
                .iter()
                .map(|row| Span::of(row))
                .collect(),
            window,
            fft,
        }
    }

    pub fn n_mels(&self) -> usize {
        self.n_mels
    }

    /// Number of mel frames for `n` samples.
    pub fn frames(n: usize) -> usize {
        n / HOP
    }

    /// Log-mel features `[n_mels, n / 160]`, row-major.
    pub fn compute(&self, samples: &[f32]) -> Result<Vec<f32>> {
        self.compute_with(samples, |m, power| self.filters[m].apply(power))
    }

    /// [`Self::compute`] with `filter(m, power)` as mel bin `m`'s energy of one STFT frame's
    /// power spectrum (the tests pass the dense filter bank).
    fn compute_with(
        &self,
        samples: &[f32],
        filter: impl Fn(usize, &[f64]) -> f64,
    ) -> Result<Vec<f32>> {
        let n = samples.len();
        let pad = N_FFT / 2;
        if n <= pad {
            return Err(ModelError::InvalidInput(format!(
                "audio of {n} samples is too short for the log-mel front end (need > {pad})"
            )));
        }
        // Reflect padding (numpy/torch "reflect": the edge sample is not repeated).
        let mut x = Vec::with_capacity(n + 2 * pad);
        x.extend((1..=pad).rev().map(|i| samples[i] as f64));
        x.extend(samples.iter().map(|s| *s as f64));
        x.extend((0..pad).map(|i| samples[n - 2 - i] as f64));
        let n_frames = n / HOP; // 1 + n/HOP STFT frames, the last one dropped
        let n_freq = N_FFT / 2 + 1;
        let mut buf = self.fft.make_input_vec();
        let mut spec = self.fft.make_output_vec();
        let mut out = vec![0f64; self.n_mels * n_frames];
        let mut power = vec![0f64; n_freq];
        for t in 0..n_frames {
            let start = t * HOP;
            for (i, b) in buf.iter_mut().enumerate() {
                *b = x[start + i] * self.window[i];
            }
            self.fft
                .process(&mut buf, &mut spec)
                .map_err(|e| ModelError::InvalidInput(format!("fft: {e}")))?;
            for (p, c) in power.iter_mut().zip(&spec) {
                *p = c.norm_sqr();
            }
            for m in 0..self.n_mels {
                out[m * n_frames + t] = filter(m, &power).max(1e-10).log10();
            }
        }
        let max = out.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        Ok(out
            .iter()
            .map(|v| ((v.max(max - 8.0) + 4.0) / 4.0) as f32)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The filter bank as dense rows, summed over every bin (the form transformers uses).
    fn dense_reference(samples: &[f32], n_mels: usize) -> Vec<f32> {
        let dense = mel_filters(N_FFT / 2 + 1, n_mels, 0.0, 8000.0, SAMPLE_RATE as f64);
        LogMel::new(n_mels)
            .compute_with(samples, |m, power| {
                dense[m].iter().zip(power).map(|(f, p)| f * p).sum()
            })
            .unwrap()
    }

    #[test]
    fn sparse_filter_bank_equals_the_dense_one_exactly() {
        // Pseudo-random audio, lengths off the hop grid, 80 and 128 mel bins.
        let mut state = 12345u64;
        for (n, n_mels) in [(8000usize, 80usize), (4321, 128), (1001, 80)] {
            let samples: Vec<f32> = (0..n)
                .map(|_| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
                })
                .collect();
            let got = LogMel::new(n_mels).compute(&samples).unwrap();
            let want = dense_reference(&samples, n_mels);
            assert_eq!(got.len(), want.len());
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(*g, *w, "n={n} n_mels={n_mels} value {i}");
            }
        }
    }

    #[test]
    fn every_filter_keeps_its_non_zero_span() {
        for n_mels in [80, 128] {
            let dense = mel_filters(N_FFT / 2 + 1, n_mels, 0.0, 8000.0, SAMPLE_RATE as f64);
            let mel = LogMel::new(n_mels);
            for (row, span) in dense.iter().zip(&mel.filters) {
                let nonzero = row.iter().filter(|w| **w != 0.0).count();
                assert!(
                    !span.weights.is_empty(),
                    "a Slaney filter covers at least one bin"
                );
                assert_eq!(span.weights.iter().filter(|w| **w != 0.0).count(), nonzero);
                assert!(
                    span.weights.len() < 20,
                    "a narrow span: {}",
                    span.weights.len()
                );
            }
        }
    }
}
