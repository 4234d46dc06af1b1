//! [`ModelStack`]: the one [`WindowModel`] the CLI gives the engine when models are
//! configured. Per batch of windows it runs the causal Q-Former (fields `qformer`), hands
//! each window's projected tokens to the LLM answer service (answers come back on the
//! service's own output, asynchronously), and runs online distillation (fields `student`,
//! `teacher`, `student_version`). Every part is optional.
//!
//! The distillation stage is shared (`Arc<Mutex<..>>`) so that its owner can shut it down
//! after the run for the final checkpoint and the trainer summary.

use std::sync::Arc;

use parking_lot::Mutex;
use sensorium_engine::frame::Window;
use sensorium_engine::model::{StageError, WindowModel};
use serde_json::{json, Map, Value};

use crate::distill::DistillStage;
use crate::error::stage_error;
use crate::llm::{ServiceHandle, WindowMeta};
use crate::stage::QFormerWindowModel;
use crate::tokens;

/// Q-Former -> LLM, and distillation, as one window stage.
pub struct ModelStack {
    qformer: Option<QFormerWindowModel>,
    llm: Option<ServiceHandle>,
    distill: Option<Arc<Mutex<Option<DistillStage>>>>,
}

impl ModelStack {
    /// `llm` needs `qformer` (its tokens are the LLM's input); checked here.
    pub fn new(
        qformer: Option<QFormerWindowModel>,
        llm: Option<ServiceHandle>,
        distill: Option<Arc<Mutex<Option<DistillStage>>>>,
    ) -> Result<Self, String> {
        if llm.is_some() && qformer.is_none() {
            return Err("the LLM needs the Q-Former's tokens: configure [models] qformer".into());
        }
        Ok(Self {
            qformer,
            llm,
            distill,
        })
    }

    fn run_qformer(
        &mut self,
        windows: &[&Window],
        out: &mut [Map<String, Value>],
    ) -> Result<(), StageError> {
        let Some(qf) = self.qformer.as_mut() else {
            return Ok(());
        };
        let projected = qf.run(windows)?;
        let err = |e: candle_core::Error| stage_error("qformer", e);
        for (b, w) in windows.iter().enumerate() {
            let t = projected.get(b).map_err(err)?;
            let (q, d) = t.dims2().map_err(err)?;
            let norm = tokens::mean_norm(&t).map_err(|e| stage_error("qformer", e))?;
            out[b].insert(
                "qformer".into(),
                json!({ "tokens": q, "dim": d, "norm": norm, "valid_frames": w.valid_frames() }),
            );
            if let Some(llm) = &self.llm {
                llm.push_window(WindowMeta::from_window(w), t)
                    .map_err(|e| StageError::new("llm", e))?;
            }
        }
        Ok(())
    }
}

impl WindowModel for ModelStack {
    fn name(&self) -> &str {
        "models"
    }

    fn process(&mut self, windows: &[&Window]) -> Result<Vec<Map<String, Value>>, StageError> {
        let mut out = vec![Map::new(); windows.len()];
        self.run_qformer(windows, &mut out)?;
        if let Some(d) = &self.distill {
            let mut guard = d.lock();
            if let Some(stage) = guard.as_mut() {
                for (m, extra) in out.iter_mut().zip(stage.process(windows)?) {
                    m.extend(extra);
                }
            }
        }
        Ok(out)
    }

    fn end_stream(&mut self, stream: &str) {
        if let Some(qf) = self.qformer.as_mut() {
            qf.end_stream(stream);
        }
        if let Some(llm) = &self.llm {
            // The service stopping first is not this stream's problem.
            let _ = llm.end_stream(stream);
        }
        if let Some(d) = &self.distill {
            if let Some(stage) = d.lock().as_mut() {
                stage.end_stream(stream);
            }
        }
    }
}
