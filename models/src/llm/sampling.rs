//! Choosing the next token from logits: greedy, temperature, top-k, top-p (nucleus) and a
//! CTRL-style repetition penalty, with a seeded RNG so sampled answers are reproducible.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// Sampling settings (`[llm.sampling]`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SamplingConfig {
    /// 0 = greedy (argmax).
    pub temperature: f32,
    /// Keep only the k most likely tokens (0 = off).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability sums to at least p (1.0 = off).
    pub top_p: f32,
    /// > 1 discourages tokens already in the question or the answer (FAVOR: 1.5; 1.0 = off).
    pub repetition_penalty: f32,
    /// RNG seed for temperature sampling.
    pub seed: u64,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            seed: 299_792_458,
        }
    }
}

/// Stateful sampler (owns the RNG).
#[derive(Debug)]
pub struct Sampler {
    cfg: SamplingConfig,
    rng: StdRng,
}

impl Sampler {
    pub fn new(cfg: SamplingConfig) -> Self {
        let rng = StdRng::seed_from_u64(cfg.seed);
        Self { cfg, rng }
    }

    /// Picks the next token; `seen` are the ids the repetition penalty applies to.
    pub fn sample(&mut self, logits: &mut [f32], seen: &[u32]) -> u32 {
        let rp = self.cfg.repetition_penalty;
        if rp != 1.0 {
            let mut done = std::collections::HashSet::new();
            for &t in seen {
                if let Some(l) = logits.get_mut(t as usize) {
                    if done.insert(t) {
                        *l = if *l >= 0.0 { *l / rp } else { *l * rp };
                    }
                }
            }
        }
        if self.cfg.temperature <= 0.0 {
            return super::model::argmax(logits);
        }
        let mut idx: Vec<usize> = (0..logits.len()).collect();
        idx.sort_unstable_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        if self.cfg.top_k > 0 {
            idx.truncate(self.cfg.top_k.max(1));
        }
        let max = logits[idx[0]];
        let mut probs: Vec<f32> = idx
            .iter()
            .map(|&i| ((logits[i] - max) / self.cfg.temperature).exp())
            .collect();
        let sum: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= sum);
        if self.cfg.top_p < 1.0 {
            let mut acc = 0.0;
            let mut keep = probs.len();
            for (n, p) in probs.iter().enumerate() {
                acc += p;
                if acc >= self.cfg.top_p {
                    keep = n + 1;
                    break;
                }
            }
            probs.truncate(keep);
            idx.truncate(keep);
        }
        let total: f32 = probs.iter().sum();
        let mut r = self.rng.random::<f32>() * total;
        for (p, &i) in probs.iter().zip(&idx) {
            if r < *p {
                return i as u32;
            }
            r -= p;
        }
        idx[idx.len() - 1] as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_argmax_and_penalty_can_flip_it() {
        let mut s = Sampler::new(SamplingConfig::default());
        assert_eq!(s.sample(&mut [0.1, 2.0, 1.5], &[]), 1);
        let mut s = Sampler::new(SamplingConfig {
            repetition_penalty: 1.5,
            ..Default::default()
        });
        // 2.0 / 1.5 = 1.33 < 1.5
        assert_eq!(s.sample(&mut [0.1, 2.0, 1.5], &[1, 1]), 2);
    }

    #[test]
    fn top_k_one_is_greedy_and_top_p_restricts_support() {
        let mut s = Sampler::new(SamplingConfig {
            temperature: 1.0,
            top_k: 1,
            ..Default::default()
        });
        for _ in 0..50 {
            assert_eq!(s.sample(&mut [0.0, 1.0, 0.5, 0.9], &[]), 1);
        }
        // p(0) = e^3 / (e^3 + 3) = 0.87 >= top_p 0.8: only token 0 is ever drawn.
        let mut s = Sampler::new(SamplingConfig {
            temperature: 1.0,
            top_p: 0.8,
            ..Default::default()
        });
        for _ in 0..200 {
            assert_eq!(s.sample(&mut [3.0, 0.0, 0.0, 0.0], &[]), 0);
        }
    }

    #[test]
    fn temperature_sampling_follows_the_distribution() {
        let mut s = Sampler::new(SamplingConfig {
            temperature: 1.0,
            ..Default::default()
        });
        let logits = [0.0f32, (3.0f32).ln()]; // p = 0.25, 0.75
        let n = 4000;
        let ones = (0..n)
            .filter(|_| s.sample(&mut logits.clone(), &[]) == 1)
            .count();
        let frac = ones as f64 / n as f64;
        assert!((frac - 0.75).abs() < 0.03, "{frac}");
    }
}
