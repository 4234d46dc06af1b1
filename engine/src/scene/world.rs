//! The scene world's facts: what is on screen and what sounds, on an exact timeline.
//!
//! A stream is an endless sequence of scenes, scene `k` drawn from `(seed, k)` alone (so any
//! part of a stream can be rebuilt without the rest). Each scene lasts a whole number of
//! windows, so a window never straddles two scenes. Within a scene:
//! - 0–2 flat-coloured objects (circle, square, triangle; red, green, blue, yellow, white),
//!   about 1/8–1/4 of the frame height, still or moving left/right/up/down at constant speed
//!   and bouncing off the frame edges;
//! - one sound: silence, a low tone (200–300 Hz), a high tone (800–1200 Hz), white noise or
//!   clicks. Clicks may belong to an object (it clicks exactly when it bounces), come from
//!   off screen, or be the object's clicks shifted by at least 1 s (out of sync). In
//!   "sounding object" scenes the shape decides the sound (circle: high tone, square: clicks
//!   at its bounces, triangle: noise).
//! - in "onset" scenes the object or the sound starts a second or more after the other.
//!
//! Coordinates are in frame heights: x in `[0, aspect]`, y in `[0, 1]`, so a scene looks the
//! same at any resolution of the same aspect ratio.

use serde::{Deserialize, Serialize};

pub use crate::rng::Rng;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    Circle,
    Square,
    Triangle,
}

impl Shape {
    pub const ALL: [Shape; 3] = [Shape::Circle, Shape::Square, Shape::Triangle];

    /// The sound of this shape in "sounding object" scenes.
    pub fn sound(self) -> Sound {
        match self {
            Shape::Circle => Sound::HighTone,
            Shape::Square => Sound::Clicks,
            Shape::Triangle => Sound::Noise,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Shape::Circle => "circle",
            Shape::Square => "square",
            Shape::Triangle => "triangle",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Colour {
    Red,
    Green,
    Blue,
    Yellow,
    White,
}

impl Colour {
    pub const ALL: [Colour; 5] = [
        Colour::Red,
        Colour::Green,
        Colour::Blue,
        Colour::Yellow,
        Colour::White,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Colour::Red => "red",
            Colour::Green => "green",
            Colour::Blue => "blue",
            Colour::Yellow => "yellow",
            Colour::White => "white",
        }
    }

    /// Pure sRGB primaries (yellow = red + green).
    pub fn rgb(self) -> [f64; 3] {
        match self {
            Colour::Red => [1.0, 0.0, 0.0],
            Colour::Green => [0.0, 1.0, 0.0],
            Colour::Blue => [0.0, 0.0, 1.0],
            Colour::Yellow => [1.0, 1.0, 0.0],
            Colour::White => [1.0, 1.0, 1.0],
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Motion {
    Still,
    Left,
    Right,
    Up,
    Down,
}

impl Motion {
    pub const MOVING: [Motion; 4] = [Motion::Left, Motion::Right, Motion::Up, Motion::Down];

    fn horizontal(self) -> bool {
        matches!(self, Motion::Left | Motion::Right)
    }

    fn sign(self) -> f64 {
        match self {
            Motion::Left | Motion::Up => -1.0,
            Motion::Right | Motion::Down => 1.0,
            Motion::Still => 0.0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sound {
    Silence,
    LowTone,
    HighTone,
    Noise,
    Clicks,
}

impl Sound {
    /// The canonical answer to "What do you hear?".
    pub fn answer(self) -> &'static str {
        match self {
            Sound::Silence => "silence",
            Sound::LowTone => "a low tone",
            Sound::HighTone => "a high tone",
            Sound::Noise => "noise",
            Sound::Clicks => "clicks",
        }
    }
}

/// Where the sound comes from.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Origin {
    /// No visible source (silence, or a sound from off screen).
    OffScreen,
    /// Object `index` makes it (clicks: at its bounces; sounding objects: its shape's sound).
    Object { index: usize },
    /// Object `index`'s clicks, shifted by `shift_s` (≥ 1 s): out of sync.
    Shifted { index: usize, shift_s: f64 },
}

/// One object; position of its centre `x(t), y(t)` in frame heights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Object {
    pub shape: Shape,
    pub colour: Colour,
    /// Half the object's extent (radius; half side), frame heights.
    pub radius: f64,
    pub x0: f64,
    pub y0: f64,
    pub motion: Motion,
    /// Frame heights per second.
    pub speed: f64,
    /// Appears this long after the scene starts (0 except in onset scenes).
    pub onset_s: f64,
}

/// One scene of a stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scene {
    /// Start on the stream's timeline, s.
    pub start_s: f64,
    pub duration_s: f64,
    pub aspect: f64,
    pub objects: Vec<Object>,
    pub sound: Sound,
    pub origin: Origin,
    /// The sound starts this long after the scene starts.
    pub sound_onset_s: f64,
    /// Tone frequency (Hz) for tones; click rate (Hz) for off-screen clicks.
    pub freq: f64,
    /// Peak amplitude of the sound.
    pub level: f64,
    /// Off-screen clicks: time of the first click after the sound's onset.
    pub click_phase_s: f64,
    /// Picture brightness factor (±20%) and sensor-noise std (0..1 scale).
    pub brightness: f64,
    pub noise_std: f64,
    /// Seeds the scene's sensor noise and white noise.
    pub seed: u64,
}

/// How streams of scenes are drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WorldParams {
    /// One window's span, s (`window / fps`): every scene lasts a whole number of them.
    pub window_s: f64,
    /// Frame width / height.
    pub aspect: f64,
}

const LOW_BAND: (f64, f64) = (200.0, 300.0);
const HIGH_BAND: (f64, f64) = (800.0, 1200.0);

impl Object {
    /// Travel limits of the centre along the motion's axis.
    fn limits(&self, aspect: f64) -> (f64, f64) {
        let hi = if self.motion.horizontal() {
            aspect
        } else {
            1.0
        };
        (self.radius, hi - self.radius)
    }

    /// Unfolded coordinate along the motion's axis at scene time `t` (no reflection).
    fn unfolded(&self, t: f64) -> f64 {
        let start = if self.motion.horizontal() {
            self.x0
        } else {
            self.y0
        };
        start + self.motion.sign() * self.speed * t
    }

    /// Centre at scene time `t`, bouncing off the edges.
    pub fn centre(&self, t: f64, aspect: f64) -> (f64, f64) {
        if self.motion == Motion::Still {
            return (self.x0, self.y0);
        }
        let (lo, hi) = self.limits(aspect);
        let span = (hi - lo).max(1e-9);
        let u = (self.unfolded(t) - lo).rem_euclid(2.0 * span);
        let pos = lo + if u <= span { u } else { 2.0 * span - u };
        if self.motion.horizontal() {
            (pos, self.y0)
        } else {
            (self.x0, pos)
        }
    }

    /// Direction of travel at scene time `t` (after any bounces).
    pub fn direction(&self, t: f64, aspect: f64) -> Motion {
        if self.motion == Motion::Still {
            return Motion::Still;
        }
        let (lo, hi) = self.limits(aspect);
        let span = (hi - lo).max(1e-9);
        let u = (self.unfolded(t) - lo).rem_euclid(2.0 * span);
        // Position rises with `u` on the first half of the fold and falls on the second;
        // `u` itself rises with time when the motion's sign is positive.
        let positive = (u < span) == (self.motion.sign() > 0.0);
        match (self.motion.horizontal(), positive) {
            (true, true) => Motion::Right,
            (true, false) => Motion::Left,
            (false, true) => Motion::Down,
            (false, false) => Motion::Up,
        }
    }

    /// Bounce times (scene time) in `[from, to)`.
    pub fn bounces(&self, from: f64, to: f64, aspect: f64) -> Vec<f64> {
        if self.motion == Motion::Still || self.speed <= 0.0 {
            return Vec::new();
        }
        let (lo, hi) = self.limits(aspect);
        let span = (hi - lo).max(1e-9);
        let v = self.motion.sign() * self.speed;
        // The unfolded coordinate hits lo + k·span at t = (lo + k·span - u0) / v.
        let u0 = self.unfolded(0.0);
        let (ka, kb) = {
            let a = (u0 + v * from - lo) / span;
            let b = (u0 + v * to - lo) / span;
            (a.min(b).floor() as i64, a.max(b).ceil() as i64)
        };
        let mut out: Vec<f64> = (ka..=kb)
            .map(|k| (lo + k as f64 * span - u0) / v)
            .filter(|t| *t >= from && *t < to && *t > 1e-9)
            .collect();
        out.sort_by(f64::total_cmp);
        out
    }

    /// Visible at scene time `t`.
    pub fn visible(&self, t: f64) -> bool {
        t + 1e-9 >= self.onset_s
    }
}

impl Scene {
    /// Scene `k` of stream `seed`, starting at `start_s`.
    pub fn draw(seed: u64, k: u64, start_s: f64, p: &WorldParams) -> Scene {
        let mut r = Rng::for_item(seed, k);
        let windows = if r.chance(0.5) { 1 } else { 2 };
        let duration_s = windows as f64 * p.window_s;
        let n_objects = match r.unit() {
            u if u < 0.12 => 0,
            u if u < 0.70 => 1,
            _ => 2,
        };
        let mut objects: Vec<Object> = Vec::new();
        while objects.len() < n_objects {
            let o = draw_object(&mut r, p.aspect, p.window_s);
            // Two objects differ in colour or shape, so each can be named.
            if objects
                .iter()
                .all(|q| q.colour != o.colour || q.shape != o.shape)
            {
                objects.push(o);
            }
        }
        // Name objects left to right, as the answers list them.
        objects.sort_by(|a, b| a.x0.total_cmp(&b.x0));
        let mut s = Scene {
            start_s,
            duration_s,
            aspect: p.aspect,
            objects,
            sound: Sound::Silence,
            origin: Origin::OffScreen,
            sound_onset_s: 0.0,
            freq: 0.0,
            level: r.range(0.2, 0.7),
            click_phase_s: 0.0,
            brightness: r.range(0.8, 1.2),
            noise_std: r.range(0.0, 0.04),
            seed: r.next_u64(),
        };
        let sounding = s.objects.len() == 1 && r.chance(0.15);
        if sounding {
            // The shape decides the sound.
            let o = &mut s.objects[0];
            s.sound = o.shape.sound();
            if s.sound == Sound::Clicks {
                make_bouncy(o, &mut r, p.aspect, p.window_s);
            }
            s.origin = Origin::Object { index: 0 };
        } else {
            s.sound = match r.unit() {
                u if u < 0.14 => Sound::Silence,
                u if u < 0.28 => Sound::LowTone,
                u if u < 0.42 => Sound::HighTone,
                u if u < 0.56 => Sound::Noise,
                _ => Sound::Clicks,
            };
            if s.sound == Sound::Clicks && !s.objects.is_empty() && r.chance(0.75) {
                let index = r.below(s.objects.len());
                make_bouncy(&mut s.objects[index], &mut r, p.aspect, p.window_s);
                s.origin = if r.chance(0.6) {
                    Origin::Object { index }
                } else {
                    Origin::Shifted {
                        index,
                        shift_s: r.range(1.0, 1.5),
                    }
                };
            }
        }
        s.freq = match s.sound {
            Sound::LowTone => r.range(LOW_BAND.0, LOW_BAND.1),
            Sound::HighTone => r.range(HIGH_BAND.0, HIGH_BAND.1),
            Sound::Clicks => r.range(1.2, 2.5),
            _ => 0.0,
        };
        s.click_phase_s = r.range(0.05, 1.0 / s.freq.max(1.0));
        // Onset scenes: one object and a sound, one starting ≥ 1 s after the other, within
        // the first window (so a window sees both onsets).
        if s.objects.len() == 1
            && !matches!(s.sound, Sound::Silence)
            && !matches!(s.origin, Origin::Shifted { .. })
            && p.window_s >= 2.0
            && r.chance(0.2)
        {
            let late = (r.below(2) as f64 + 2.0) * 0.5; // 1.0 or 1.5 s
            let late = late.min(p.window_s - 0.5);
            if r.chance(0.5) {
                s.objects[0].onset_s = late;
            } else {
                s.sound_onset_s = late;
            }
        }
        s
    }

    /// A "sounding object" scene of `duration_s` from `start_s`, drawn from `(seed, k)`: one
    /// object of `shape` that makes its shape's sound (circle: a high tone, square: clicks at
    /// its bounces, triangle: noise), as in [`Scene::draw`]'s sounding scenes. What
    /// distillation's shape classes are made of.
    pub fn sounding(
        seed: u64,
        k: u64,
        shape: Shape,
        start_s: f64,
        duration_s: f64,
        p: &WorldParams,
    ) -> Scene {
        let mut r = Rng::for_item(seed ^ 0x50_0D1D, k);
        let mut o = draw_object(&mut r, p.aspect, p.window_s);
        o.shape = shape;
        let sound = shape.sound();
        if sound == Sound::Clicks {
            make_bouncy(&mut o, &mut r, p.aspect, duration_s);
        }
        Scene {
            start_s,
            duration_s,
            aspect: p.aspect,
            objects: vec![o],
            sound,
            origin: Origin::Object { index: 0 },
            sound_onset_s: 0.0,
            freq: if sound == Sound::HighTone {
                r.range(HIGH_BAND.0, HIGH_BAND.1)
            } else {
                0.0
            },
            level: r.range(0.2, 0.7),
            click_phase_s: 0.0,
            brightness: r.range(0.8, 1.2),
            noise_std: r.range(0.0, 0.04),
            seed: r.next_u64(),
        }
    }

    pub fn end_s(&self) -> f64 {
        self.start_s + self.duration_s
    }

    /// Click times (scene time) in `[from, to)`.
    pub fn clicks(&self, from: f64, to: f64) -> Vec<f64> {
        if self.sound != Sound::Clicks {
            return Vec::new();
        }
        let from = from.max(self.sound_onset_s);
        if from >= to {
            return Vec::new();
        }
        match self.origin {
            Origin::OffScreen => {
                let period = 1.0 / self.freq.max(0.1);
                let first = self.sound_onset_s + self.click_phase_s;
                let k0 = ((from - first) / period).ceil().max(0.0) as i64;
                (k0..)
                    .map(|k| first + k as f64 * period)
                    .take_while(|t| *t < to)
                    .filter(|t| *t >= from)
                    .collect()
            }
            Origin::Object { index } => self.objects[index].bounces(from, to, self.aspect),
            Origin::Shifted { index, shift_s } => self.objects[index]
                .bounces(from - shift_s, to - shift_s, self.aspect)
                .into_iter()
                .map(|t| t + shift_s)
                .collect(),
        }
    }
}

fn draw_object(r: &mut Rng, aspect: f64, window_s: f64) -> Object {
    let radius = r.range(1.0 / 16.0, 1.0 / 8.0);
    let motion = if r.chance(0.3) {
        Motion::Still
    } else {
        r.pick(&Motion::MOVING)
    };
    let mut o = Object {
        shape: r.pick(&Shape::ALL),
        colour: r.pick(&Colour::ALL),
        radius,
        x0: r.range(radius, aspect - radius),
        y0: r.range(radius, 1.0 - radius),
        motion,
        speed: 0.0,
        onset_s: 0.0,
    };
    if motion != Motion::Still {
        // Slow enough to see the direction over a frame or two.
        o.speed = r.range(0.15, 0.5) / window_s.max(0.5) * 2.0;
    }
    o
}

/// Makes `o` move fast enough to bounce about once or twice per window (a clicking object).
fn make_bouncy(o: &mut Object, r: &mut Rng, aspect: f64, window_s: f64) {
    if o.motion == Motion::Still {
        o.motion = r.pick(&Motion::MOVING);
    }
    let (lo, hi) = o.limits(aspect);
    let span = (hi - lo).max(0.1);
    // One bounce every 0.6–1.2 windows.
    o.speed = span / (window_s * r.range(0.6, 1.2));
}

/// The scenes of stream `seed` that overlap `[from_s, to_s)`, in order. Scene boundaries
/// follow from the seed alone (scene `k` starts where scene `k-1` ends).
#[derive(Clone, Debug)]
pub struct SceneTimeline {
    seed: u64,
    params: WorldParams,
    scenes: Vec<Scene>,
}

impl SceneTimeline {
    pub fn new(seed: u64, params: WorldParams) -> Self {
        Self {
            seed,
            params,
            scenes: Vec::new(),
        }
    }

    /// A timeline that starts with `scenes` (back to back from 0 s) and continues with
    /// stream `seed`'s own draws after them.
    pub fn with_scenes(seed: u64, params: WorldParams, scenes: Vec<Scene>) -> Self {
        Self {
            seed,
            params,
            scenes,
        }
    }

    pub fn params(&self) -> &WorldParams {
        &self.params
    }

    /// The scene at stream time `t` (drawing scenes up to it on first use).
    pub fn at(&mut self, t: f64) -> &Scene {
        let i = self.index_at(t);
        &self.scenes[i]
    }

    fn index_at(&mut self, t: f64) -> usize {
        loop {
            let i = self.scenes.partition_point(|s| s.end_s() <= t + 1e-9);
            if i < self.scenes.len() {
                return i;
            }
            let start = self.scenes.last().map_or(0.0, Scene::end_s);
            let k = self.scenes.len() as u64;
            self.scenes
                .push(Scene::draw(self.seed, k, start, &self.params));
        }
    }
}

/// A hand-built one-scene test fixture: 4 s from `start_s`, square frame, full brightness,
/// no sensor noise.
#[cfg(test)]
pub(crate) fn test_scene(
    start_s: f64,
    objects: Vec<Object>,
    sound: Sound,
    origin: Origin,
) -> Scene {
    Scene {
        start_s,
        duration_s: 4.0,
        aspect: 1.0,
        objects,
        sound,
        origin,
        sound_onset_s: 0.0,
        freq: 1000.0,
        level: 0.5,
        click_phase_s: 0.1,
        brightness: 1.0,
        noise_std: 0.0,
        seed: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> WorldParams {
        WorldParams {
            window_s: 2.0,
            aspect: 4.0 / 3.0,
        }
    }

    /// A bounce is where the centre touches its limit and the direction flips.
    #[test]
    fn bounces_are_where_the_object_turns() {
        let o = Object {
            shape: Shape::Square,
            colour: Colour::Red,
            radius: 0.1,
            x0: 0.5,
            y0: 0.5,
            motion: Motion::Left,
            speed: 0.8,
            onset_s: 0.0,
        };
        let aspect = 4.0 / 3.0;
        // From 0.5 left to 0.1 (0.5 s), right to aspect - 0.1 (+1.1333/0.8 s), left again.
        let b = o.bounces(0.0, 3.0, aspect);
        assert_eq!(b.len(), 2, "{b:?}");
        assert!((b[0] - 0.5).abs() < 1e-9, "{b:?}");
        assert!((b[1] - (0.5 + (aspect - 0.2) / 0.8)).abs() < 1e-9, "{b:?}");
        assert!((o.centre(b[0], aspect).0 - 0.1).abs() < 1e-9);
        assert_eq!(o.direction(b[0] - 0.01, aspect), Motion::Left);
        assert_eq!(o.direction(b[0] + 0.01, aspect), Motion::Right);
        assert_eq!(o.direction(b[1] + 0.01, aspect), Motion::Left);
        // Never outside the frame.
        for i in 0..300 {
            let (x, y) = o.centre(i as f64 * 0.01, aspect);
            assert!((0.1 - 1e-9..=aspect - 0.1 + 1e-9).contains(&x) && y == 0.5);
        }
    }

    /// In-sync clicks are the object's bounces; shifted ones the same times later.
    #[test]
    fn clicks_follow_the_bounces_or_are_shifted() {
        let p = params();
        let mut found = (false, false);
        for k in 0..400 {
            let s = Scene::draw(7, k, 0.0, &p);
            match s.origin {
                Origin::Object { index } if s.sound == Sound::Clicks => {
                    let want = s.objects[index].bounces(s.sound_onset_s, s.duration_s, p.aspect);
                    assert_eq!(s.clicks(0.0, s.duration_s), want);
                    found.0 = true;
                }
                Origin::Shifted { index, shift_s } => {
                    assert!(shift_s >= 1.0);
                    let b = s.objects[index].bounces(-shift_s, s.duration_s - shift_s, p.aspect);
                    let c = s.clicks(0.0, s.duration_s);
                    let want: Vec<f64> = b
                        .iter()
                        .map(|t| t + shift_s)
                        .filter(|t| *t >= 0.0)
                        .collect();
                    assert_eq!(c, want);
                    found.1 = true;
                }
                _ => {}
            }
        }
        assert!(found.0 && found.1, "both kinds drawn in 400 scenes");
    }

    /// Scenes tile the timeline in whole windows, the same for the same seed.
    #[test]
    fn scenes_tile_the_timeline_in_windows() {
        let mut a = SceneTimeline::new(3, params());
        let mut b = SceneTimeline::new(3, params());
        let mut t = 0.0;
        for _ in 0..50 {
            let s = a.at(t).clone();
            assert!((s.start_s - t).abs() < 1e-9);
            let w = s.duration_s / 2.0;
            assert!((w - w.round()).abs() < 1e-9 && w >= 1.0);
            assert_eq!(&s, b.at(t + 0.3));
            t = s.end_s();
        }
        assert_ne!(SceneTimeline::new(4, params()).at(0.0), a.at(0.0));
    }

    /// Sounding-object scenes: the shape decides the sound, the object makes it, and the
    /// rest varies with the item; a timeline built on them plays them first.
    #[test]
    fn a_sounding_scene_sounds_like_its_shape() {
        let p = params();
        for (shape, sound) in [
            (Shape::Circle, Sound::HighTone),
            (Shape::Square, Sound::Clicks),
            (Shape::Triangle, Sound::Noise),
        ] {
            let a = Scene::sounding(3, 1, shape, 0.0, 2.0, &p);
            let b = Scene::sounding(3, 2, shape, 0.0, 2.0, &p);
            assert_eq!(
                (a.objects.len(), a.objects[0].shape, a.sound),
                (1, shape, sound)
            );
            assert_eq!(a.origin, Origin::Object { index: 0 });
            assert_eq!(a, Scene::sounding(3, 1, shape, 0.0, 2.0, &p), "seeded");
            assert_ne!(a.objects[0].x0, b.objects[0].x0);
            if sound == Sound::HighTone {
                assert!((HIGH_BAND.0..=HIGH_BAND.1).contains(&a.freq));
            }
        }
        let s = Scene::sounding(3, 1, Shape::Square, 0.0, 2.0, &p);
        let mut tl = SceneTimeline::with_scenes(9, p, vec![s.clone()]);
        assert_eq!(tl.at(1.9), &s);
        assert_eq!(tl.at(2.0).start_s, 2.0, "the stream's own scenes follow");
    }
}
