//! The heuristic difficulty model: per class, how hard the class currently is for the
//! student, from running statistics of the live pairs.
//!
//! For every accepted pair, the class the teacher picks (c) gets its exponential moving
//! averages updated (weight `ema`, or 1/n while a class has fewer than 1/ema observations,
//! so early estimates are plain means):
//! - `d_c` disagreement: 1 when the student's top class differs from the teacher's, else 0;
//! - `h_c` student entropy, normalised by ln K (1 = uniform);
//! - `q_c` teacher confidence (top probability at T = 1);
//! - `s_c` audio SNR estimate in dB ([`super::features::AudioStats::snr_db`]).
//!
//! The predicted difficulty is the logistic
//! `sigmoid(bias + w_d d_c + w_h h_c + w_q (2 q_c - 1) + w_s clamp((snr_ref - s_c) / snr_scale, -3, 3))`:
//! disagreement and uncertainty of the student make a class hard; a confident teacher makes
//! a class worth teaching; a low SNR makes the sound of the class hard to hear. A class not
//! seen yet is taken as d = h = 1, q = 0.5, s = snr_ref (hard with the default weights).
//! A class is "hard" when its difficulty is at least `threshold`.

use super::config::{DifficultyConfig, Selection};

/// Per-class running statistics and the difficulty formula over them.
#[derive(Clone, Debug, PartialEq)]
pub struct DifficultyModel {
    cfg: DifficultyConfig,
    pub(crate) disagreement: Vec<f32>,
    pub(crate) entropy: Vec<f32>,
    pub(crate) teacher_confidence: Vec<f32>,
    pub(crate) snr_db: Vec<f32>,
    pub(crate) count: Vec<f32>,
}

impl DifficultyModel {
    pub fn new(cfg: DifficultyConfig, num_classes: usize) -> Self {
        let snr = cfg.snr_ref_db as f32;
        Self {
            cfg,
            disagreement: vec![1.0; num_classes],
            entropy: vec![1.0; num_classes],
            teacher_confidence: vec![0.5; num_classes],
            snr_db: vec![snr; num_classes],
            count: vec![0.0; num_classes],
        }
    }

    pub(crate) fn set_selection(&mut self, selection: Selection) {
        self.cfg.selection = selection;
    }

    pub fn num_classes(&self) -> usize {
        self.count.len()
    }

    /// Record one pair: the teacher's class and confidence, the student's probabilities
    /// (T = 1) and the audio SNR estimate.
    pub fn observe(
        &mut self,
        teacher_class: usize,
        teacher_confidence: f32,
        student_probs: &[f32],
        snr_db: f32,
    ) {
        let c = teacher_class;
        if c >= self.num_classes() {
            return;
        }
        let k = student_probs.len().max(2) as f32;
        let (s_class, _) = super::teacher::argmax(student_probs);
        let ent = -student_probs
            .iter()
            .filter(|p| **p > 0.0)
            .map(|p| p * p.ln())
            .sum::<f32>()
            / k.ln();
        self.count[c] += 1.0;
        let a = (self.cfg.ema as f32).max(1.0 / self.count[c]);
        let upd = |v: &mut f32, x: f32| *v += a * (x - *v);
        upd(
            &mut self.disagreement[c],
            if s_class == c { 0.0 } else { 1.0 },
        );
        upd(&mut self.entropy[c], ent.clamp(0.0, 1.0));
        upd(&mut self.teacher_confidence[c], teacher_confidence);
        upd(&mut self.snr_db[c], snr_db);
    }

    /// Predicted difficulty of class `c`, in (0, 1).
    pub fn difficulty(&self, c: usize) -> f32 {
        let k = &self.cfg;
        let snr_term = ((k.snr_ref_db - self.snr_db[c] as f64) / k.snr_scale_db).clamp(-3.0, 3.0);
        let z = k.bias
            + k.w_disagreement * self.disagreement[c] as f64
            + k.w_entropy * self.entropy[c] as f64
            + k.w_teacher_confidence * (2.0 * self.teacher_confidence[c] as f64 - 1.0)
            + k.w_snr * snr_term;
        (1.0 / (1.0 + (-z).exp())) as f32
    }

    pub fn difficulties(&self) -> Vec<f32> {
        (0..self.num_classes())
            .map(|c| self.difficulty(c))
            .collect()
    }

    pub fn is_hard(&self, c: usize) -> bool {
        self.difficulty(c) as f64 >= self.cfg.threshold
    }

    /// Running agreement of student and teacher on class `c` (1 - disagreement EMA).
    pub fn agreement(&self, c: usize) -> f32 {
        1.0 - self.disagreement[c]
    }

    /// Sampling weight of a pair whose teacher class is `c`, under the configured selection.
    /// `any_hard` says whether some class is currently hard (else `hard` falls back to uniform).
    pub fn selection_weight(&self, c: usize, any_hard: bool) -> f64 {
        match self.cfg.selection {
            Selection::Uniform => 1.0,
            Selection::Weighted => self.cfg.floor + self.difficulty(c) as f64,
            Selection::Hard => {
                if !any_hard || self.is_hard(c) {
                    1.0
                } else {
                    0.0
                }
            }
        }
    }

    pub fn any_hard(&self) -> bool {
        (0..self.num_classes()).any(|c| self.is_hard(c))
    }

    /// The five per-class state vectors, in checkpoint order.
    pub(crate) fn state(&self) -> [(&'static str, &Vec<f32>); 5] {
        [
            ("difficulty.disagreement", &self.disagreement),
            ("difficulty.entropy", &self.entropy),
            ("difficulty.teacher_confidence", &self.teacher_confidence),
            ("difficulty.snr_db", &self.snr_db),
            ("difficulty.count", &self.count),
        ]
    }

    pub(crate) fn set_state(&mut self, name: &str, values: Vec<f32>) {
        match name {
            "difficulty.disagreement" => self.disagreement = values,
            "difficulty.entropy" => self.entropy = values,
            "difficulty.teacher_confidence" => self.teacher_confidence = values,
            "difficulty.snr_db" => self.snr_db = values,
            "difficulty.count" => self.count = values,
            _ => {}
        }
    }
}
