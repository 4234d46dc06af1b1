//! sensorium-models: the model stack (Whisper audio encoder, CLIP/SigLIP vision towers,
//! causal Q-Former, LLM decoding with audio-visual tokens, online cross-modal distillation)
//! and its adapters to the engine's small model traits.

pub mod audio;
pub mod bundle;
pub mod checkpoint;
pub mod distill;
pub mod error;
pub mod llm;
pub mod ops;
pub mod progress;
pub mod qformer;
pub mod setup;
pub mod stack;
pub mod stage;
pub mod synth;
pub(crate) mod tensor_file;
pub mod tokens;
pub mod train;
pub mod vision;

/// The error of `sensorium-models` at its boundary: each part's own error, kept typed so a
/// caller can match the part and its variant. (Each part returns its own; this is what they
/// have in common for a caller that takes several. A model stage hands the engine its part's
/// error inside a `StageError`, from which `downcast_ref` gives it back.)
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Loading or running an encoder or the Q-Former.
    #[error(transparent)]
    Model(#[from] error::ModelError),
    /// The language model and its answer service.
    #[error(transparent)]
    Llm(#[from] llm::LlmError),
    /// Online distillation.
    #[error(transparent)]
    Distill(#[from] distill::DistillError),
    /// Training.
    #[error(transparent)]
    Train(#[from] train::TrainError),
    /// The model sections of a run's config.
    #[error(transparent)]
    Setup(#[from] setup::SetupError),
    /// A model bundle.
    #[error(transparent)]
    Bundle(#[from] bundle::BundleError),
}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Self::Model(error::ModelError::Candle(e))
    }
}

/// Settles candle's thread count once: candle 0.11.1 asks for it on every matmul and, unless
/// `RAYON_NUM_THREADS` is set, re-reads `/proc/cpuinfo` each time to count physical cores
/// (`candle_core::utils::get_num_threads`) — thousands of reads per training step, one per
/// linear layer per decoded token. Sets it to the physical core count, as candle would, unless
/// the user set it. Call it first thing in `main`, before any thread starts (it writes the
/// process environment).
pub fn pin_thread_count() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let n = num_cpus::get_physical().max(1);
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
}
