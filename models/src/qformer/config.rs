//! Configuration of the causal Q-Former (`config.json` of a Q-Former checkpoint directory).
//! Defaults are FAVOR's sizes: BERT-base (768-d, 12 heads, 3072 FFN), 2 layers with
//! cross-attention in every layer, 32 queries, 32 slots per frame of 1536-d
//! (`[audio 768 ; visual 768]`), Whisper-large 1280-d audio projected to 768.

use serde::{Deserialize, Serialize};

/// Direction of the block-causal mask over frames in the slot self-attention.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskDirection {
    /// Frame i attends to frames j <= i (streaming; enables incremental computation).
    Past,
    /// Frame i attends to frames j >= i: FAVOR's released `kron(triu(ones), ones(32, 32))`
    /// read through HF `invert_attention_mask` (rows are queries). Compatibility only.
    Future,
}

/// Which frames a slot self-attention row may see besides the mask direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotContext {
    /// Only frames of the same window (FAVOR: windows are independent). Each window is
    /// recomputed in full.
    Window,
    /// The `lookback` most recent frames of the stream, ending at the frame itself, across
    /// window boundaries (default). With the past mask a frame's states never change once
    /// computed, so each frame is pushed through the slot layers once and cached.
    Lookback,
}

/// How slot position ids are assigned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PositionMode {
    /// `id = (frame_index mod P) * slots_per_frame + slot`, `P = max_slot_positions /
    /// slots_per_frame`, with the frame index counted from the stream start (default).
    /// A frame's id never changes when the window slides, so cached states stay valid.
    Absolute,
    /// `id = (frame_index - window_start) * slots_per_frame + slot` (FAVOR). Sliding changes
    /// every cached frame's id, so each window is recomputed in full.
    Window,
}

/// How a frame's audio reaches its slots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AudioSync {
    /// Each frame carries its own audio (FAVOR's frame-level synchronisation; default).
    #[default]
    Frame,
    /// Every frame of a window carries the window's audio averaged over its frames: no
    /// timing of the sound within the window is left (the coarse-sync ablation of
    /// `eval --bench scenes`).
    Window,
}

impl AudioSync {
    pub fn is_frame(&self) -> bool {
        *self == AudioSync::Frame
    }
}

/// Q-Former hyper-parameters. Field names follow HF `BertConfig` where one exists.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct QFormerConfig {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub layer_norm_eps: f64,
    pub hidden_act: String,
    pub num_query_tokens: usize,
    pub slots_per_frame: usize,
    /// Raw audio encoder width (Whisper `d_model`).
    pub audio_width: usize,
    /// Audio part of a slot (after `speech_pre_qformer_proj` when `audio_proj`).
    pub audio_slot_width: usize,
    pub audio_proj: bool,
    /// Raw visual token width.
    pub visual_width: usize,
    /// Visual part of a slot (after `visual_pre_qformer_proj` when `visual_proj`).
    pub visual_slot_width: usize,
    pub visual_proj: bool,
    /// Rows of `video_frame_position_embedding` (FAVOR: 4096).
    pub max_slot_positions: usize,
    /// Heads of the slot (frame) self-attention, over `audio_slot_width + visual_slot_width`.
    pub slot_attention_heads: usize,
    /// Whether each layer runs the block-causal slot self-attention (FAVOR `causal_encoder`).
    pub causal_slots: bool,
    pub mask: MaskDirection,
    pub context: SlotContext,
    /// Frames visible to a slot row in `Lookback` context (normally the window length k).
    pub lookback: usize,
    pub positions: PositionMode,
    /// Width of the LLM the output is projected to (`llama_proj`).
    pub llm_hidden_size: usize,
    /// Frame-level audio (default) or window-pooled audio (an ablation); not written when
    /// it is the default, so existing checkpoints' `config.json` stay as they are.
    #[serde(skip_serializing_if = "AudioSync::is_frame")]
    pub audio_sync: AudioSync,
}

impl Default for QFormerConfig {
    fn default() -> Self {
        Self {
            hidden_size: 768,
            num_hidden_layers: 2,
            num_attention_heads: 12,
            intermediate_size: 3072,
            layer_norm_eps: 1e-12,
            hidden_act: "gelu".into(),
            num_query_tokens: 32,
            slots_per_frame: 32,
            audio_width: 1280,
            audio_slot_width: 768,
            audio_proj: true,
            visual_width: 768,
            visual_slot_width: 768,
            visual_proj: false,
            max_slot_positions: 4096,
            slot_attention_heads: 12,
            causal_slots: true,
            mask: MaskDirection::Past,
            context: SlotContext::Lookback,
            lookback: 10,
            positions: PositionMode::Absolute,
            llm_hidden_size: 5120,
            audio_sync: AudioSync::Frame,
        }
    }
}

impl QFormerConfig {
    /// Width of one slot: `[audio ; visual]`.
    pub fn slot_width(&self) -> usize {
        self.audio_slot_width + self.visual_slot_width
    }

    /// Whether a stream can push each frame through the slot layers once and reuse it.
    pub fn incremental(&self) -> bool {
        self.positions == PositionMode::Absolute
            && (!self.causal_slots
                || (self.mask == MaskDirection::Past && self.context == SlotContext::Lookback))
    }

    /// Checks internal consistency; the message names the offending field.
    pub fn validate(&self) -> Result<(), String> {
        let chk = |ok: bool, m: &str| if ok { Ok(()) } else { Err(m.to_string()) };
        chk(
            self.num_attention_heads > 0
                && self.hidden_size.is_multiple_of(self.num_attention_heads),
            "hidden_size must be a multiple of num_attention_heads",
        )?;
        chk(
            self.slot_attention_heads > 0
                && self.slot_width().is_multiple_of(self.slot_attention_heads),
            "audio_slot_width + visual_slot_width must be a multiple of slot_attention_heads",
        )?;
        chk(
            self.slots_per_frame > 0 && self.max_slot_positions >= self.slots_per_frame,
            "max_slot_positions must hold at least one frame of slots_per_frame",
        )?;
        chk(self.lookback > 0, "lookback must be at least 1")?;
        chk(
            self.audio_proj || self.audio_width == self.audio_slot_width,
            "audio_width must equal audio_slot_width when audio_proj is false",
        )?;
        chk(
            self.visual_proj || self.visual_width == self.visual_slot_width,
            "visual_width must equal visual_slot_width when visual_proj is false",
        )?;
        Ok(())
    }

    /// Frames representable by distinct position ids.
    pub fn position_period(&self) -> usize {
        self.max_slot_positions / self.slots_per_frame
    }
}
