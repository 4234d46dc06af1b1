//! The scene world as an example source (the default model's training data): each seed is a
//! `scene` stream run through exactly the path `sensorium run` serves with (source →
//! synchroniser → frame encoder → windows), and each window gets questions with ground-truth
//! answers from the world's timeline (`sensorium_engine::scene::qa`).

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use sensorium_engine::config::{SceneSource, SourceConfig};
use sensorium_engine::scene::{self, Question, Rng, SceneTimeline, WorldParams};

use super::clips::ClipExtractor;
use super::data::Turn;
use super::pretrain::FrameExample;
use super::source::ExampleSource;
use super::trainer::{Example, Trainer};
use super::TrainError;

pub use super::config::{ScenesConfig, HELD_OUT_SEEDS};

/// Up to `n` of a window's questions, tasks taken in turn (shuffled), each task's questions
/// shuffled: a balanced draw.
pub fn pick_questions(all: Vec<Question>, n: usize, r: &mut Rng) -> Vec<Question> {
    let mut by_task: BTreeMap<&str, Vec<Question>> = BTreeMap::new();
    for q in all {
        by_task.entry(q.task).or_default().push(q);
    }
    let mut tasks: Vec<Vec<Question>> = by_task.into_values().collect();
    for t in &mut tasks {
        for i in (1..t.len()).rev() {
            t.swap(i, r.below(i + 1));
        }
    }
    for i in (1..tasks.len()).rev() {
        tasks.swap(i, r.below(i + 1));
    }
    let mut out = Vec::new();
    while out.len() < n && tasks.iter().any(|t| !t.is_empty()) {
        for t in &mut tasks {
            if out.len() < n {
                if let Some(q) = t.pop() {
                    out.push(q);
                }
            }
        }
    }
    out
}

/// The scene source config of stream `seed`, as training and evaluation run it.
pub fn stream_source(seed: u64, seconds: f64, window_s: f64) -> SourceConfig {
    SourceConfig::Scene(SceneSource {
        seed,
        window_s,
        is_live: false,
        duration_s: Some(seconds),
        ..SceneSource::default()
    })
}

/// Examples from the scene streams `seeds`.
pub struct SceneExamples<'a> {
    pub seeds: Range<u64>,
    pub seconds: f64,
    pub questions: usize,
    /// Only these tasks; empty: all.
    pub tasks: Vec<String>,
    /// The engine's window span, s (`window / fps`) and frame aspect (width / height).
    pub window_s: f64,
    pub aspect: f64,
    pub extractor: &'a ClipExtractor,
}

impl ExampleSource for SceneExamples<'_> {
    fn examples(&self, trainer: &Trainer) -> Result<Vec<Example>, TrainError> {
        Ok(self.examples_and_frames(trainer, false)?.0)
    }
}

impl SceneExamples<'_> {
    /// The examples, and with `frames` every frame of the streams with its labels (the
    /// encoders' pretraining data, [`Trainer::pretrain_encoders`]).
    pub fn examples_and_frames(
        &self,
        trainer: &Trainer,
        frames: bool,
    ) -> Result<(Vec<Example>, Vec<FrameExample>), TrainError> {
        let mut out = Vec::new();
        let mut frame_out = Vec::new();
        let bar = crate::progress::bar(self.seeds.end - self.seeds.start, "scene stream");
        for seed in self.seeds.clone() {
            bar.inc(1);
            let key = format!("scene seed={seed} seconds={}", self.seconds);
            let clip = self
                .extractor
                .source_features(stream_source(seed, self.seconds, self.window_s), &key)?;
            let mut tl = SceneTimeline::new(
                seed,
                WorldParams {
                    window_s: self.window_s,
                    aspect: self.aspect,
                },
            );
            let mut r = Rng::for_item(seed, 0x9A);
            if frames {
                let mut seen = std::collections::HashSet::new();
                for w in &clip.windows {
                    let k = w.valid.len().max(1) as u64;
                    let span = (w.t_end - w.t_start) as f64 / 1e9 / k as f64;
                    for (i, _) in w.valid.iter().enumerate().filter(|(_, v)| **v) {
                        let j = w.first + i as u64;
                        if (j as usize) < clip.inputs.len() && seen.insert(j) {
                            let t = w.t_start as f64 / 1e9 + i as f64 * span;
                            frame_out.push(FrameExample {
                                clip: clip.clone(),
                                frame: j as usize,
                                labels: scene::frame_labels(&mut tl, t, span),
                            });
                        }
                    }
                }
            }
            for (wi, w) in clip.windows.iter().enumerate() {
                if w.valid.iter().any(|v| !v) {
                    continue; // the padded last window
                }
                let (t0, t1) = (w.t_start as f64 / 1e9, w.t_end as f64 / 1e9);
                let mut qs = scene::questions(&mut tl, t0, t1, &mut r);
                if !self.tasks.is_empty() {
                    qs.retain(|q| self.tasks.iter().any(|t| t == q.task));
                }
                let labels = scene::window_labels(&mut tl, t0, t1).map(Arc::new);
                for q in pick_questions(qs, self.questions, &mut r) {
                    let turn = Turn {
                        question: q.question,
                        answer: q.answer,
                    };
                    let mut ex = trainer.example(
                        clip.clone(),
                        vec![wi],
                        q.task,
                        &format!("scene {seed} window {wi}"),
                        &turn,
                    )?;
                    ex.labels = labels.clone();
                    out.push(ex);
                }
            }
        }
        Ok((out, frame_out))
    }
}

/// `sensorium eval --bench scenes`: held-out scene streams `seeds` (from
/// [`HELD_OUT_SEEDS`] on) through the live inference path; every window's questions (a
/// balanced draw of `per_window`) answered right after the window, until `limit` questions.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_scenes(
    seeds: Range<u64>,
    seconds: f64,
    per_window: usize,
    limit: usize,
    window_s: f64,
    aspect: f64,
    extractor: &ClipExtractor,
    qformer: &crate::qformer::QFormerRunner,
    answerer: &mut crate::llm::Answerer,
) -> Result<super::EvalReport, TrainError> {
    let mut report = super::EvalReport::default();
    let bar = crate::progress::bar(limit as u64, "question");
    for seed in seeds {
        bar.set_position(report.total as u64);
        if report.total > 0 {
            bar.set_message(format!(
                "{:.1}% right",
                100.0 * report.correct as f64 / report.total as f64
            ));
        }
        if report.total >= limit {
            break;
        }
        let key = format!("scene seed={seed} seconds={seconds}");
        let clip = extractor.source_features(stream_source(seed, seconds, window_s), &key)?;
        let mut tl = SceneTimeline::new(seed, WorldParams { window_s, aspect });
        let mut r = Rng::for_item(seed, 0xE7A1);
        let stream = format!("scene-{seed}");
        let mut st = qformer.new_stream();
        for (wi, w) in clip.windows.iter().enumerate() {
            let full = w.valid.iter().all(|v| *v);
            let (t0, t1) = (w.t_start as f64 / 1e9, w.t_end as f64 / 1e9);
            let qs = if full {
                pick_questions(
                    scene::questions(&mut tl, t0, t1, &mut r),
                    per_window,
                    &mut r,
                )
            } else {
                Vec::new()
            };
            super::eval::push_window(
                &clip,
                wi,
                &stream,
                qformer,
                &mut st,
                answerer,
                !qs.is_empty(),
            )?;
            for q in qs {
                if report.total >= limit {
                    break;
                }
                let a = answerer.answer(
                    &stream,
                    &q.question,
                    &crate::llm::CancelToken::new(),
                    &mut |_| {},
                )?;
                report.score(
                    &format!("scene {seed} window {wi}"),
                    q.task,
                    &q.question,
                    &q.answer,
                    a.text,
                );
            }
        }
        answerer.end_stream(&stream);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(c: ScenesConfig) -> String {
        c.validate().unwrap_err().to_string()
    }

    #[test]
    fn scene_configs_are_checked() {
        assert!(ScenesConfig::default().validate().is_ok());
        let c = ScenesConfig {
            val_seeds: [1500, 1600],
            ..ScenesConfig::default()
        };
        let e = err(c);
        assert!(
            e.contains("train.scenes.val_seeds") && e.contains("must not overlap"),
            "{e}"
        );
        let c = ScenesConfig {
            train_seeds: [0, HELD_OUT_SEEDS + 1],
            ..ScenesConfig::default()
        };
        assert!(err(c).contains("held out for evaluation"));
        let c = ScenesConfig {
            tasks: vec!["smell".into()],
            ..ScenesConfig::default()
        };
        assert!(err(c).contains("unknown task \"smell\""));
    }

    #[test]
    fn a_balanced_draw_takes_tasks_in_turn() {
        let q = |task: &'static str, i: usize| Question {
            task,
            kind: "k",
            question: format!("{task}{i}"),
            answer: "a".into(),
        };
        let all: Vec<Question> = (0..5)
            .map(|i| q("visual", i))
            .chain([q("audio", 0), q("caption", 0)])
            .collect();
        let got = pick_questions(all, 3, &mut Rng::new(1));
        let mut tasks: Vec<&str> = got.iter().map(|q| q.task).collect();
        tasks.sort();
        assert_eq!(tasks, ["audio", "caption", "visual"]);
    }
}
