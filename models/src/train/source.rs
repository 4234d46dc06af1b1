//! Where training examples come from. The manifest of clips is one source; a generator that
//! renders its own scenes with ground truth (the default model's world) is another: both give
//! the trainer [`Example`]s built by [`Trainer::example`], so they train through the same
//! step.

use super::clips::ClipExtractor;
use super::data::Sample;
use super::trainer::{Example, Trainer};
use super::TrainError;

/// A source of training (or validation) examples for a given trainer's LLM and template.
pub trait ExampleSource {
    fn examples(&self, trainer: &Trainer) -> Result<Vec<Example>, TrainError>;
}

/// Manifest samples, decoded through the run path by `extractor` (with its cache).
pub struct ManifestSource<'a> {
    pub samples: Vec<Sample>,
    pub extractor: &'a ClipExtractor,
}

impl ExampleSource for ManifestSource<'_> {
    fn examples(&self, trainer: &Trainer) -> Result<Vec<Example>, TrainError> {
        trainer.examples(&self.samples, self.extractor)
    }
}
