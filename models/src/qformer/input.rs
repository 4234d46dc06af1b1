//! What the Q-Former takes and gives, shared by both backends and the stream logic: a
//! frame's encoder outputs ([`FrameInput`]), a frame of a window ([`StreamFrame`]), a frame
//! a stream has cached ([`CachedFrame`]), the per-window output ([`QFormerOutput`]), and the
//! coarse-sync audio pooling.

use candle_core::Tensor;

use crate::error::Result;

/// One frame's encoder outputs as the Q-Former takes them. `None` = modality missing for
/// this frame (its half of every slot is zero, FAVOR's 0/1 modality mask).
#[derive(Clone, Debug, Default)]
pub struct FrameInput {
    /// Audio tokens `[T_a, audio_width]` (e.g. 25 Whisper frames per 0.5 s).
    pub audio: Option<Tensor>,
    /// Visual tokens `[T_v, visual_width]`.
    pub visual: Option<Tensor>,
}

/// [`super::AudioSync::Window`]: each run of `k` frames, counted back from the last one (the
/// window, then the windows before it that the lookback reaches), gets the mean of its valid
/// frames' audio tokens in place of each frame's own; pictures are untouched.
pub fn pool_window_audio(
    frames: &[FrameInput],
    valid: &[bool],
    k: usize,
) -> Result<Vec<FrameInput>> {
    let mut out = frames.to_vec();
    if k == 0 {
        return Ok(out);
    }
    let mut end = frames.len();
    while end > 0 {
        let start = end.saturating_sub(k);
        let audio: Vec<&Tensor> = (start..end)
            .filter(|&i| valid.get(i).copied().unwrap_or(false))
            .filter_map(|i| frames[i].audio.as_ref())
            .collect();
        if !audio.is_empty() {
            let mean = (Tensor::stack(&audio, 0)?.sum(0)? / audio.len() as f64)?;
            for f in &mut out[start..end] {
                if f.audio.is_some() {
                    f.audio = Some(mean.clone());
                }
            }
        }
        end = start;
    }
    Ok(out)
}

/// Per-window Q-Former output.
#[derive(Clone, Debug)]
pub struct QFormerOutput {
    /// Query states after the last layer `[B, Q, H]`.
    pub hidden: Tensor,
    /// `llama_proj(hidden)` `[B, Q, llm_hidden_size]`: the LLM input tokens.
    pub projected: Tensor,
}

/// One frame of a window as the stream receives it.
#[derive(Clone, Debug)]
pub struct StreamFrame {
    /// Frame index within the stream.
    pub index: u64,
    /// False for padding frames of a last partial window.
    pub valid: bool,
    pub input: FrameInput,
}

/// A frame a stream has pushed through the slot layers (its per-layer K/V live in the
/// backend's cache).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CachedFrame {
    /// Frame index within the stream.
    pub index: u64,
    /// False for padding frames of a last partial window.
    pub valid: bool,
}
