//! The scene world: the procedural audio-visual world the default model learns (and the
//! `scene` source kind that streams it). [`world`] draws seeded scenes with exact timelines,
//! [`render`] draws their frames and samples at any size, [`qa`] asks questions about a
//! window with ground-truth answers.

pub mod labels;
pub mod qa;
pub mod render;
pub mod world;

pub use labels::{
    frame_labels, window_labels, FrameLabels, LabelGroup, Labels, AUDIO_GROUPS, AUDIO_LABELS,
    LABELS, VISION_GROUPS, VISION_LABELS,
};
pub use qa::{questions, Question, TASKS};
pub use world::{
    Colour, Motion, Object, Origin, Rng, Scene, SceneTimeline, Shape, Sound, WorldParams,
};
