//! Exact-match evaluation through the live inference path: the Q-Former's streaming runner
//! over a clip's windows in order, the answer service's [`Answerer`] (greedy) on the
//! newest windows, as `sensorium run` answers a scheduled question.

use std::collections::BTreeMap;
use std::sync::Arc;

use candle_core::Tensor;
use serde::Serialize;

use super::clips::{ClipExtractor, ClipFeatures};
use super::data::Sample;
use super::TrainError;
use crate::llm::{Answerer, CancelToken, WindowMeta};
use crate::qformer::{FrameInput, QFormerRunner, RunnerStream, StreamFrame};

/// Lower case, surrounding whitespace and one final full stop ignored.
pub fn normalise_answer(s: &str) -> String {
    let t = s.trim().to_lowercase();
    t.strip_suffix('.').unwrap_or(&t).trim_end().to_owned()
}

/// One wrong answer, for the report.
#[derive(Clone, Debug, Serialize)]
pub struct Miss {
    pub origin: String,
    pub task: String,
    pub question: String,
    pub expected: String,
    pub got: String,
}

/// Accuracy per task and overall.
#[derive(Clone, Debug, Default, Serialize)]
pub struct EvalReport {
    /// task → (correct, total)
    pub tasks: BTreeMap<String, (usize, usize)>,
    pub correct: usize,
    pub total: usize,
    pub misses: Vec<Miss>,
}

impl EvalReport {
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.total.max(1) as f64
    }

    /// A table: one row per task and the overall row.
    pub fn table(&self) -> String {
        let mut s = format!(
            "{:<16} {:>8} {:>8} {:>9}\n",
            "task", "correct", "total", "accuracy"
        );
        for (t, (c, n)) in &self.tasks {
            s += &format!(
                "{t:<16} {c:>8} {n:>8} {:>8.1}%\n",
                100.0 * *c as f64 / (*n).max(1) as f64
            );
        }
        s += &format!(
            "{:<16} {:>8} {:>8} {:>8.1}%\n",
            "overall",
            self.correct,
            self.total,
            100.0 * self.accuracy()
        );
        s
    }

    pub fn json(&self) -> serde_json::Value {
        let tasks: serde_json::Map<String, serde_json::Value> = self
            .tasks
            .iter()
            .map(|(t, (c, n))| {
                (
                    t.clone(),
                    serde_json::json!({"correct": c, "total": n, "accuracy": *c as f64 / (*n).max(1) as f64}),
                )
            })
            .collect();
        serde_json::json!({
            "tasks": tasks, "correct": self.correct, "total": self.total,
            "accuracy": self.accuracy(), "misses": self.misses,
        })
    }
}

/// Answers every question of `samples` and scores it.
pub fn evaluate(
    samples: &[Sample],
    extractor: &ClipExtractor,
    qformer: &QFormerRunner,
    answerer: &mut Answerer,
) -> Result<EvalReport, TrainError> {
    let mut r = EvalReport::default();
    let bar = crate::progress::bar(samples.len() as u64, "question");
    for (si, s) in samples.iter().enumerate() {
        bar.set_position(si as u64);
        if r.total > 0 {
            bar.set_message(format!(
                "{:.1}% right",
                100.0 * r.correct as f64 / r.total as f64
            ));
        }
        let clip = extractor.features(s)?;
        let selected = clip.windows_in(s.start_s, s.end_s);
        if selected.is_empty() {
            return Err(TrainError::Manifest {
                origin: s.origin.clone(),
                message: "no window lies in the sample's time range".into(),
            });
        }
        let stream: Arc<str> = Arc::from(format!("eval-{si}"));
        let mut st = qformer.new_stream();
        // Windows in stream order, as the live path sees them; answers use the selected.
        for (wi, _) in clip.windows.iter().enumerate() {
            push_window(
                &clip,
                wi,
                &stream,
                qformer,
                &mut st,
                answerer,
                selected.contains(&wi),
            )?;
        }
        for t in &s.turns {
            let a = answerer.answer(&stream, &t.question, &CancelToken::new(), &mut |_| {})?;
            r.score(&s.origin, &s.task, &t.question, &t.answer, a.text);
        }
        answerer.end_stream(&stream);
    }
    Ok(r)
}

impl EvalReport {
    /// Counts one answer against its expected one.
    pub fn score(&mut self, origin: &str, task: &str, question: &str, expected: &str, got: String) {
        let e = self.tasks.entry(task.to_owned()).or_default();
        e.1 += 1;
        self.total += 1;
        if normalise_answer(&got) == normalise_answer(expected) {
            e.0 += 1;
            self.correct += 1;
        } else {
            self.misses.push(Miss {
                origin: origin.to_owned(),
                task: task.to_owned(),
                question: question.to_owned(),
                expected: expected.to_owned(),
                got,
            });
        }
    }
}

/// Runs window `wi` of `clip` through the streaming Q-Former (its cache `st`), and when
/// `answer_it`, hands its tokens to the answerer as stream `stream`'s newest window.
pub fn push_window(
    clip: &ClipFeatures,
    wi: usize,
    stream: &str,
    qformer: &QFormerRunner,
    st: &mut RunnerStream,
    answerer: &mut Answerer,
    answer_it: bool,
) -> Result<(), TrainError> {
    let w = &clip.windows[wi];
    let n = clip.frames.len() as u64;
    let frames: Vec<StreamFrame> = w
        .valid
        .iter()
        .enumerate()
        .map(|(j, v)| {
            let index = w.first + j as u64;
            let valid = *v && index < n;
            StreamFrame {
                index,
                valid,
                input: if valid {
                    clip.frames[index as usize].clone()
                } else {
                    FrameInput::default()
                },
            }
        })
        .collect();
    let kv = qformer.window(st, &frames)?;
    if !answer_it {
        return Ok(());
    }
    let out = qformer.query_batch(&[kv])?;
    let tokens: Tensor = out.projected.get(0)?;
    answerer.push_window(
        WindowMeta {
            stream: stream.to_string(),
            index: wi as u64,
            t_start: w.t_start,
            t_end: w.t_end,
            captured: None,
            queued: None,
        },
        &tokens,
    )?;
    Ok(())
}
