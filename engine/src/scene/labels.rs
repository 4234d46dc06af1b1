//! Frame-level facts of a window as a dense label vector: what the trainer's auxiliary
//! loss teaches the Q-Former's query tokens to carry (which objects are there, where they
//! are and which way they go, what sounds, whether clicks are in sync, what came first), so
//! that the encoders and the Q-Former get a direct signal from the world instead of only the
//! one that reaches them through the LLM's answer tokens. Every label is a binary target
//! with a mask (a fact that does not apply to the window is masked out); one-of-n facts are
//! one-hot groups.

use super::qa::{direction, scene_window, SceneWindow};
use super::world::{Colour, Origin, Scene, SceneTimeline, Shape, Sound};

const PAIRS: usize = Colour::ALL.len() * Shape::ALL.len();
/// Direction answers, in label order.
const DIRECTIONS: [&str; 7] = [
    "left",
    "right",
    "up",
    "down",
    "it is still",
    "left and right",
    "up and down",
];
const SOUNDS: [Sound; 5] = [
    Sound::Silence,
    Sound::LowTone,
    Sound::HighTone,
    Sound::Noise,
    Sound::Clicks,
];
/// Click counts 0..=5, the last meaning "five or more".
const CLICK_BINS: usize = 6;
/// Coarse position of an object's centre: four columns, four rows.
const POS_BINS: usize = 4;

/// Offsets of each group in the label vector.
const PRESENT: usize = 0;
const COUNT: usize = PRESENT + PAIRS;
const DIRECTION: usize = COUNT + 3;
const POSITION: usize = DIRECTION + PAIRS * DIRECTIONS.len();
const SOUND: usize = POSITION + PAIRS * 2 * POS_BINS;
const CLICKS: usize = SOUND + SOUNDS.len();
const SYNC: usize = CLICKS + CLICK_BINS;
const SOURCE: usize = SYNC + 2;
const FIRST: usize = SOURCE + PAIRS + 1;

/// Length of the label vector.
pub const LABELS: usize = FIRST + 2;

/// A window's labels: `target[i]` is 0 or 1 where `mask[i]` is 1.
#[derive(Clone, Debug, PartialEq)]
pub struct Labels {
    pub target: Vec<f32>,
    pub mask: Vec<f32>,
}

impl Labels {
    fn new() -> Self {
        Self::with_len(LABELS)
    }

    fn with_len(n: usize) -> Self {
        Self {
            target: vec![0.0; n],
            mask: vec![0.0; n],
        }
    }

    /// A one-hot group of `n` labels at `at`, `hot` set.
    fn one_hot(&mut self, at: usize, n: usize, hot: usize) {
        self.mask[at..at + n].fill(1.0);
        self.target[at + hot] = 1.0;
    }
}

fn pair(colour: Colour, shape: Shape) -> usize {
    let c = Colour::ALL.iter().position(|x| *x == colour).unwrap_or(0);
    let s = Shape::ALL.iter().position(|x| *x == shape).unwrap_or(0);
    c * Shape::ALL.len() + s
}

fn bin(v: f64, extent: f64) -> usize {
    ((v / extent.max(1e-9) * POS_BINS as f64).floor().max(0.0) as usize).min(POS_BINS - 1)
}

/// The labels of stream window `[t0, t1)` (s); `None` when it is not inside one scene.
pub fn window_labels(tl: &mut SceneTimeline, t0: f64, t1: f64) -> Option<Labels> {
    scene_labels(tl.at(t0), t0, t1)
}

/// [`window_labels`] of scene `s`.
pub fn scene_labels(s: &Scene, t0: f64, t1: f64) -> Option<Labels> {
    let SceneWindow {
        a,
        b,
        object_onset,
        sound_onset,
    } = scene_window(s, t0, t1)?;
    let mut l = Labels::new();

    if let Some(i) = SOUNDS.iter().position(|x| *x == s.sound) {
        if !sound_onset {
            l.one_hot(SOUND, SOUNDS.len(), i);
        }
    }
    if object_onset || sound_onset {
        if let (Some(o), true) = (s.objects.first(), s.sound != Sound::Silence) {
            l.one_hot(FIRST, 2, usize::from(o.onset_s < s.sound_onset_s));
        }
        return Some(l);
    }

    l.one_hot(COUNT, 3, s.objects.len().min(2));
    l.mask[PRESENT..PRESENT + PAIRS].fill(1.0);
    for o in s.objects.iter().filter(|o| o.visible(a)) {
        l.target[PRESENT + pair(o.colour, o.shape)] = 1.0;
    }
    for o in &s.objects {
        let p = pair(o.colour, o.shape);
        let twins = s
            .objects
            .iter()
            .filter(|q| q.colour == o.colour && q.shape == o.shape)
            .count();
        if twins > 1 || !o.visible(a) {
            continue; // which one is meant would be ambiguous
        }
        let d = direction(o, s, a, b);
        if let Some(i) = DIRECTIONS.iter().position(|x| *x == d) {
            l.one_hot(DIRECTION + p * DIRECTIONS.len(), DIRECTIONS.len(), i);
        }
        let (x, y) = o.centre(a, s.aspect);
        let at = POSITION + p * 2 * POS_BINS;
        l.one_hot(at, POS_BINS, bin(x, s.aspect));
        l.one_hot(at + POS_BINS, POS_BINS, bin(y, 1.0));
    }
    if s.sound == Sound::Clicks {
        l.one_hot(CLICKS, CLICK_BINS, s.clicks(a, b).len().min(CLICK_BINS - 1));
        let sync = match s.origin {
            Origin::Object { .. } => Some(true),
            Origin::Shifted { .. } => Some(false),
            Origin::OffScreen => None,
        };
        if let Some(sync) = sync.filter(|_| !s.clicks(a, b).is_empty()) {
            l.one_hot(SYNC, 2, usize::from(sync));
        }
    }
    if s.sound != Sound::Silence {
        match s.origin {
            Origin::Object { index } => {
                if let Some(o) = s.objects.get(index) {
                    l.one_hot(SOURCE, PAIRS + 1, pair(o.colour, o.shape));
                }
            }
            Origin::OffScreen => l.one_hot(SOURCE, PAIRS + 1, PAIRS),
            Origin::Shifted { .. } => {}
        }
    }
    Some(l)
}

/// Per-frame vision labels: which (colour, shape) pairs are on screen, how many objects,
/// and where each pair is (coarse column and row).
pub const VISION_LABELS: usize = PAIRS + 3 + PAIRS * 2 * POS_BINS;
/// Per-frame audio labels: which sound plays, and whether a click falls in the frame.
pub const AUDIO_LABELS: usize = SOUNDS.len() + 1;

/// A named part of a label vector, as a reader of the labels scores it: `len` labels from
/// `at`, read as independent yes/no facts (`one_of == 1`: the part is right when every masked
/// fact is) or as one-hot groups of `one_of` labels (each masked group is right when its
/// largest score is the hot label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LabelGroup {
    pub name: &'static str,
    pub at: usize,
    pub len: usize,
    pub one_of: usize,
}

/// The parts of [`FrameLabels::vision`].
pub const VISION_GROUPS: [LabelGroup; 3] = [
    LabelGroup {
        name: "objects",
        at: 0,
        len: PAIRS,
        one_of: 1,
    },
    LabelGroup {
        name: "count",
        at: PAIRS,
        len: 3,
        one_of: 3,
    },
    LabelGroup {
        name: "position",
        at: PAIRS + 3,
        len: PAIRS * 2 * POS_BINS,
        one_of: POS_BINS,
    },
];
/// The parts of [`FrameLabels::audio`].
pub const AUDIO_GROUPS: [LabelGroup; 2] = [
    LabelGroup {
        name: "sound",
        at: 0,
        len: SOUNDS.len(),
        one_of: SOUNDS.len(),
    },
    LabelGroup {
        name: "click",
        at: SOUNDS.len(),
        len: 1,
        one_of: 1,
    },
];

impl LabelGroup {
    /// How many of this part's scored items `scores` (one per label, any monotone scale with
    /// 0 as the yes/no threshold: logits) gets right against `labels`: `(right, scored)`.
    /// Yes/no parts score one item per vector (when any fact is masked in), one-hot parts one
    /// per masked group.
    pub fn score(&self, scores: &[f32], labels: &Labels) -> (usize, usize) {
        let range = self.at..self.at + self.len;
        let (s, t, m) = (
            &scores[range.clone()],
            &labels.target[range.clone()],
            &labels.mask[range],
        );
        if self.one_of <= 1 {
            if m.iter().all(|&m| m == 0.0) {
                return (0, 0);
            }
            let right = s
                .iter()
                .zip(t)
                .zip(m)
                .all(|((&s, &t), &m)| m == 0.0 || (s > 0.0) == (t > 0.5));
            return (usize::from(right), 1);
        }
        let (mut right, mut scored) = (0, 0);
        for ((s, t), m) in s
            .chunks(self.one_of)
            .zip(t.chunks(self.one_of))
            .zip(m.chunks(self.one_of))
        {
            if m.iter().all(|&m| m == 0.0) {
                continue;
            }
            scored += 1;
            let best = s
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map_or(0, |(i, _)| i);
            right += usize::from(t[best] > 0.5);
        }
        (right, scored)
    }
}

/// What one frame shows and what its audio holds: the targets of the encoders' pretraining
/// stage (`[train.scenes] pretrain_steps`), which teaches the small encoders to see and hear
/// the world before the Q-Former and the LLM learn to read them, as Whisper and CLIP are
/// pretrained before FAVOR trains on them.
#[derive(Clone, Debug, PartialEq)]
pub struct FrameLabels {
    pub vision: Labels,
    pub audio: Labels,
}

/// Labels of the frame at stream time `t` (s) whose audio spans `[t, t + span)`.
pub fn frame_labels(tl: &mut SceneTimeline, t: f64, span: f64) -> FrameLabels {
    scene_frame_labels(tl.at(t), t, span)
}

/// [`frame_labels`] of scene `s`.
pub fn scene_frame_labels(s: &Scene, t: f64, span: f64) -> FrameLabels {
    let local = t - s.start_s;
    let mut vision = Labels::with_len(VISION_LABELS);
    vision.mask[..PAIRS].fill(1.0);
    let visible: Vec<_> = s.objects.iter().filter(|o| o.visible(local)).collect();
    vision.one_hot(PAIRS, 3, visible.len().min(2));
    for o in &visible {
        let p = pair(o.colour, o.shape);
        vision.target[p] = 1.0;
        if visible
            .iter()
            .filter(|q| q.colour == o.colour && q.shape == o.shape)
            .count()
            > 1
        {
            continue;
        }
        let (x, y) = o.centre(local, s.aspect);
        let at = PAIRS + 3 + p * 2 * POS_BINS;
        vision.one_hot(at, POS_BINS, bin(x, s.aspect));
        vision.one_hot(at + POS_BINS, POS_BINS, bin(y, 1.0));
    }
    let mut audio = Labels::with_len(AUDIO_LABELS);
    let end = local + span;
    if end <= s.duration_s + 1e-9 {
        let playing = if end <= s.sound_onset_s + 1e-9 {
            Some(Sound::Silence)
        } else if local + 1e-9 >= s.sound_onset_s {
            Some(s.sound)
        } else {
            None // the sound starts inside this frame
        };
        if let Some(i) = playing.and_then(|p| SOUNDS.iter().position(|x| *x == p)) {
            audio.one_hot(0, SOUNDS.len(), i);
        }
        if s.sound == Sound::Clicks {
            audio.mask[SOUNDS.len()] = 1.0;
            audio.target[SOUNDS.len()] = f32::from(u8::from(!s.clicks(local, end).is_empty()));
        }
    }
    FrameLabels { vision, audio }
}

#[cfg(test)]
mod tests {
    use super::super::world::{Motion, Object};
    use super::*;

    fn scene(objects: Vec<Object>, sound: Sound, origin: Origin) -> Scene {
        super::super::world::test_scene(0.0, objects, sound, origin)
    }

    fn square(colour: Colour, x0: f64, motion: Motion) -> Object {
        Object {
            shape: Shape::Square,
            colour,
            radius: 0.1,
            x0,
            y0: 0.5,
            motion,
            speed: 0.05,
            onset_s: 0.0,
        }
    }

    fn hot(l: &Labels, at: usize, n: usize) -> Option<usize> {
        assert!(l.mask[at..at + n].iter().all(|m| *m == 1.0) || l.mask[at] == 0.0);
        (l.mask[at] == 1.0).then(|| l.target[at..at + n].iter().position(|t| *t == 1.0))?
    }

    #[test]
    fn label_groups_tile_the_vectors_and_score_what_is_masked_in() {
        for (groups, len) in [
            (&VISION_GROUPS[..], VISION_LABELS),
            (&AUDIO_GROUPS[..], AUDIO_LABELS),
        ] {
            let mut at = 0;
            for g in groups {
                assert_eq!(g.at, at, "{}", g.name);
                assert_eq!(g.len % g.one_of, 0, "{}", g.name);
                at += g.len;
            }
            assert_eq!(at, len);
        }
        // Sound one-hot (5) and the click flag: sound 2 hot, click masked out.
        let mut l = Labels::with_len(AUDIO_LABELS);
        l.one_hot(0, 5, 2);
        let [sound, click] = AUDIO_GROUPS;
        assert_eq!(sound.score(&[0.0, 0.1, 0.9, -1.0, 0.2, 5.0], &l), (1, 1));
        assert_eq!(sound.score(&[0.0, 0.95, 0.9, -1.0, 0.2, 5.0], &l), (0, 1));
        assert_eq!(click.score(&[0.0, 0.0, 0.0, 0.0, 0.0, 5.0], &l), (0, 0));
        l.mask[5] = 1.0;
        assert_eq!(click.score(&[0.0, 0.0, 0.0, 0.0, 0.0, 5.0], &l), (0, 1));
        assert_eq!(click.score(&[0.0, 0.0, 0.0, 0.0, 0.0, -5.0], &l), (1, 1));
        // Position: two masked groups of four, one right.
        let pos = VISION_GROUPS[2];
        let mut v = Labels::with_len(VISION_LABELS);
        v.one_hot(pos.at, 4, 1);
        v.one_hot(pos.at + 8, 4, 3);
        let mut scores = vec![0.0; VISION_LABELS];
        scores[pos.at + 1] = 2.0;
        scores[pos.at + 8] = 2.0;
        assert_eq!(pos.score(&scores, &v), (1, 2));
        // Objects: every masked flag must be right.
        let objects = VISION_GROUPS[0];
        v.mask[..PAIRS].fill(1.0);
        v.target[4] = 1.0;
        scores[..PAIRS].fill(-1.0);
        assert_eq!(objects.score(&scores, &v), (0, 1));
        scores[4] = 1.0;
        assert_eq!(objects.score(&scores, &v), (1, 1));
    }

    #[test]
    fn a_red_square_moving_left_and_a_high_tone_from_off_screen() {
        let s = scene(
            vec![square(Colour::Red, 0.2, Motion::Left)],
            Sound::HighTone,
            Origin::OffScreen,
        );
        let l = scene_labels(&s, 0.0, 2.0).expect("inside the scene");
        assert_eq!(l.target.len(), LABELS);
        let red_square = pair(Colour::Red, Shape::Square);
        let present: Vec<usize> = (0..PAIRS)
            .filter(|p| l.target[PRESENT + p] == 1.0)
            .collect();
        assert_eq!(present, [red_square]);
        assert_eq!(hot(&l, COUNT, 3), Some(1));
        assert_eq!(
            hot(&l, DIRECTION + red_square * 7, 7),
            Some(0),
            "moving left"
        );
        let pos = POSITION + red_square * 8;
        assert_eq!(hot(&l, pos, 4), Some(0), "in the left column");
        assert_eq!(hot(&l, pos + 4, 4), Some(2), "just below the middle");
        assert_eq!(hot(&l, SOUND, 5), Some(2), "a high tone");
        assert_eq!(hot(&l, SOURCE, PAIRS + 1), Some(PAIRS), "off screen");
        // No clicks: click count and sync do not apply; absent pairs' directions neither.
        assert_eq!(l.mask[CLICKS], 0.0);
        assert_eq!(l.mask[SYNC], 0.0);
        assert_eq!(l.mask[DIRECTION], 0.0);
        assert_eq!(l.mask[FIRST], 0.0);
    }

    #[test]
    fn a_frame_shows_its_objects_and_hears_its_sound() {
        let s = scene(
            vec![square(Colour::Blue, 0.8, Motion::Still)],
            Sound::LowTone,
            Origin::OffScreen,
        );
        let f = scene_frame_labels(&s, 1.0, 0.5);
        let blue_square = pair(Colour::Blue, Shape::Square);
        let on: Vec<usize> = (0..PAIRS).filter(|p| f.vision.target[*p] == 1.0).collect();
        assert_eq!(on, [blue_square]);
        assert_eq!(hot(&f.vision, PAIRS, 3), Some(1), "one object");
        let at = PAIRS + 3 + blue_square * 8;
        assert_eq!(hot(&f.vision, at, 4), Some(3), "in the right column");
        assert_eq!(hot(&f.audio, 0, 5), Some(1), "a low tone");
        assert_eq!(f.audio.mask[5], 0.0, "no clicks to count");
        // The last frame's audio would run past the scene: not labelled.
        let f = scene_frame_labels(&s, 3.75, 0.5);
        assert!(f.audio.mask.iter().all(|m| *m == 0.0));
    }

    #[test]
    fn a_window_across_two_scenes_has_no_labels() {
        let s = scene(vec![], Sound::Silence, Origin::OffScreen);
        assert!(scene_labels(&s, 3.0, 5.0).is_none());
        let l = scene_labels(&s, 0.0, 2.0).expect("inside");
        assert_eq!(hot(&l, COUNT, 3), Some(0));
        assert_eq!(hot(&l, SOUND, 5), Some(0));
        assert_eq!(l.mask[SOURCE], 0.0, "silence has no source");
    }
}
