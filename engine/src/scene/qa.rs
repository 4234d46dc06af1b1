//! Questions about a window of a scene stream, with their ground-truth answers, after
//! AVHBench's and MUSIC-AVQA's task types: visual, audio, AV hallucination, AV sync,
//! temporal order and caption. Each question has several phrasings; answers are short and
//! canonical. A window that straddles two scenes, or a question whose answer would be
//! ambiguous in that window, is not asked.

use super::render::name;
use super::world::{Motion, Object, Origin, Rng, Scene, SceneTimeline, Shape, Sound};

/// The task types, in report order.
pub const TASKS: [&str; 6] = [
    "visual",
    "audio",
    "av_hallucination",
    "av_sync",
    "temporal",
    "caption",
];

/// One question about one window.
#[derive(Clone, Debug, PartialEq)]
pub struct Question {
    pub task: &'static str,
    /// Which question it is (e.g. `colour`), whatever the phrasing.
    pub kind: &'static str,
    pub question: String,
    pub answer: String,
}

const NUMBERS: [&str; 7] = ["none", "one", "two", "three", "four", "five", "six"];

fn number(n: usize) -> String {
    NUMBERS
        .get(n)
        .map_or_else(|| n.to_string(), |s| (*s).to_owned())
}

const SEE: [&str; 4] = [
    "What do you see?",
    "What is on the screen?",
    "What can you see?",
    "What is in the picture?",
];
const HEAR: [&str; 4] = [
    "What do you hear?",
    "What can you hear?",
    "What sound is playing?",
    "What is the sound?",
];
const CAPTION: [&str; 3] = [
    "Describe what you see and hear.",
    "Describe the scene.",
    "What do you see and hear?",
];

/// A stream window `[t0, t1)` inside one scene, in scene time `[a, b)`, and whether an
/// object or the sound starts inside it.
pub(super) struct SceneWindow {
    pub a: f64,
    pub b: f64,
    pub object_onset: bool,
    pub sound_onset: bool,
}

/// `[t0, t1)` in scene `s`; `None` when the window is not inside the scene.
pub(super) fn scene_window(s: &Scene, t0: f64, t1: f64) -> Option<SceneWindow> {
    if t0 + 1e-6 < s.start_s || t1 > s.end_s() + 1e-6 {
        return None;
    }
    let (a, b) = (t0 - s.start_s, t1 - s.start_s);
    let onset_here = |t: f64| t > 0.0 && t + 1e-9 >= a && t < b;
    Some(SceneWindow {
        a,
        b,
        object_onset: s.objects.iter().any(|o| onset_here(o.onset_s)),
        sound_onset: onset_here(s.sound_onset_s),
    })
}

/// Every question one may ask about `[t0, t1)` (stream time, s), each in a phrasing drawn
/// from `r`. Empty when the window is not inside one scene.
pub fn questions(tl: &mut SceneTimeline, t0: f64, t1: f64, r: &mut Rng) -> Vec<Question> {
    scene_questions(tl.at(t0), t0, t1, r)
}

/// [`questions`] about scene `s` (stream times `t0..t1`).
pub fn scene_questions(s: &Scene, t0: f64, t1: f64, r: &mut Rng) -> Vec<Question> {
    let Some(SceneWindow {
        a,
        b,
        object_onset,
        sound_onset,
    }) = scene_window(s, t0, t1)
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    // Phrasings draw from their own generator, so the facts asked about do not depend on
    // which phrasing came before.
    let mut phrasing = Rng::new(r.next_u64());
    let mut ask =
        |task, kind, phrasings: &[&str], fill: &dyn Fn(&str) -> String, answer: String| {
            let q = fill(phrasings[phrasing.below(phrasings.len())]);
            out.push(Question {
                task,
                kind,
                question: q,
                answer,
            });
        };
    let id = |q: &str| q.to_owned();
    let hear = hear(s);

    if object_onset || sound_onset {
        // The window where something starts: what came first, and the sound.
        if let (Some(o), true) = (s.objects.first(), s.sound != Sound::Silence) {
            let shape = o.shape.name();
            let first = if o.onset_s < s.sound_onset_s {
                format!("the {shape}")
            } else {
                "the sound".to_owned()
            };
            ask(
                "temporal",
                "order",
                &[
                    "What came first, the sound or the {s}?",
                    "Which came first, the {s} or the sound?",
                    "What started first, the sound or the {s}?",
                ],
                &|q| q.replace("{s}", shape),
                first,
            );
        }
        if !sound_onset {
            ask("audio", "hear", &HEAR, &id, hear);
        }
        return out;
    }

    let see = see(s, a, b);
    ask("visual", "see", &SEE, &id, see.clone());
    ask(
        "visual",
        "count",
        &[
            "How many objects are there?",
            "How many objects do you see?",
            "How many shapes are on the screen?",
        ],
        &id,
        number(s.objects.len()),
    );
    for o in &s.objects {
        let (c, sh) = (o.colour.name(), o.shape.name());
        if s.objects.iter().filter(|q| q.shape == o.shape).count() == 1 {
            ask(
                "visual",
                "colour",
                &[
                    "What colour is the {s}?",
                    "Which colour is the {s}?",
                    "What is the colour of the {s}?",
                ],
                &|q| q.replace("{s}", sh),
                c.to_owned(),
            );
        }
        if s.objects.iter().filter(|q| q.colour == o.colour).count() == 1 {
            ask(
                "visual",
                "shape",
                &["What shape is the {c} object?", "Which shape is {c}?"],
                &|q| q.replace("{c}", c),
                sh.to_owned(),
            );
        }
        ask(
            "visual",
            "direction",
            &[
                "Which way is the {n} moving?",
                "Where is the {n} going?",
                "In which direction does the {n} move?",
            ],
            &|q| q.replace("{n}", &name(o.colour, o.shape)),
            direction(o, s, a, b),
        );
    }
    ask("audio", "hear", &HEAR, &id, hear.clone());
    if s.sound == Sound::Clicks {
        ask(
            "audio",
            "clicks",
            &[
                "How many clicks do you hear?",
                "How many clicks are there?",
                "Count the clicks.",
            ],
            &id,
            number(s.clicks(a, b).len()),
        );
    }
    // Hallucination: a present object, or an absent one, asked about.
    let exists = [
        "Is there a {n}?",
        "Do you see a {n}?",
        "Is a {n} on the screen?",
    ];
    let present = !s.objects.is_empty() && r.chance(0.5);
    if let Some(o) = present.then(|| &s.objects[r.below(s.objects.len())]) {
        let n = name(o.colour, o.shape);
        ask(
            "av_hallucination",
            "exists",
            &exists,
            &|q| q.replace("{n}", &n),
            "yes".into(),
        );
    } else {
        let absent = absent_object(s, r);
        ask(
            "av_hallucination",
            "exists",
            &exists,
            &|q| q.replace("{n}", &absent),
            "no".into(),
        );
    }
    if s.sound != Sound::Silence && !matches!(s.origin, Origin::Shifted { .. }) {
        for (i, o) in s.objects.iter().enumerate() {
            let yes = matches!(s.origin, Origin::Object { index } if index == i);
            let n = name(o.colour, o.shape);
            ask(
                "av_hallucination",
                "source",
                &[
                    "Is the {n} making the sound?",
                    "Does the sound come from the {n}?",
                    "Is the {n} the source of the sound?",
                ],
                &|q| q.replace("{n}", &n),
                if yes { "yes" } else { "no" }.into(),
            );
        }
    }
    if s.sound == Sound::Clicks {
        let sync = match s.origin {
            Origin::Object { .. } => Some(true),
            Origin::Shifted { .. } => Some(false),
            Origin::OffScreen => None,
        };
        if let Some(sync) = sync.filter(|_| !s.clicks(a, b).is_empty()) {
            ask(
                "av_sync",
                "sync",
                &[
                    "Are the sound and the picture in sync?",
                    "Is the sound in sync with the picture?",
                    "Do the sound and the picture match in time?",
                ],
                &id,
                if sync { "yes" } else { "no" }.into(),
            );
        }
    }
    ask(
        "caption",
        "caption",
        &CAPTION,
        &id,
        format!("{see} and {hear}"),
    );
    out
}

/// "What do you see?" in `[a, b)` (scene time): the objects left to right with their motion.
pub fn see(s: &Scene, a: f64, b: f64) -> String {
    let mut objs: Vec<&Object> = s.objects.iter().filter(|o| o.visible(a)).collect();
    objs.sort_by(|p, q| p.centre(a, s.aspect).0.total_cmp(&q.centre(a, s.aspect).0));
    if objs.is_empty() {
        return "nothing".into();
    }
    objs.iter()
        .map(|o| {
            let motion = match direction(o, s, a, b).as_str() {
                "it is still" => "standing still".to_owned(),
                d => format!("moving {d}"),
            };
            format!("a {} {motion}", name(o.colour, o.shape))
        })
        .collect::<Vec<_>>()
        .join(" and ")
}

/// "What do you hear?" (one sound per scene).
pub fn hear(s: &Scene) -> String {
    s.sound.answer().to_owned()
}

/// Which way `o` moves over `[a, b)`: one direction, "left and right" / "up and down" when it
/// bounces in the window, "it is still".
pub fn direction(o: &Object, s: &Scene, a: f64, b: f64) -> String {
    if o.motion == Motion::Still {
        return "it is still".into();
    }
    if !o.bounces(a, b, s.aspect).is_empty() {
        return match o.motion {
            Motion::Left | Motion::Right => "left and right",
            _ => "up and down",
        }
        .into();
    }
    match o.direction(a, s.aspect) {
        Motion::Left => "left",
        Motion::Right => "right",
        Motion::Up => "up",
        Motion::Down => "down",
        Motion::Still => "it is still",
    }
    .into()
}

/// A colour/shape pair not in the scene.
fn absent_object(s: &Scene, r: &mut Rng) -> String {
    loop {
        let c = r.pick(&super::world::Colour::ALL);
        let sh = r.pick(&Shape::ALL);
        if !s.objects.iter().any(|o| o.colour == c && o.shape == sh) {
            return name(c, sh);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scene::world::{Colour, Object};

    fn square(motion: Motion, speed: f64) -> Object {
        Object {
            shape: Shape::Square,
            colour: Colour::Red,
            radius: 0.1,
            x0: 0.6,
            y0: 0.5,
            motion,
            speed,
            onset_s: 0.0,
        }
    }

    fn scene(objects: Vec<Object>, sound: Sound, origin: Origin) -> Scene {
        super::super::world::test_scene(10.0, objects, sound, origin)
    }

    fn answers(s: &Scene, t0: f64) -> Vec<(&'static str, String)> {
        let mut r = Rng::new(5);
        scene_questions(s, t0, t0 + 2.0, &mut r)
            .into_iter()
            .map(|q| (q.kind, q.answer))
            .collect()
    }

    #[test]
    fn a_moving_square_and_a_tone_from_off_screen() {
        // Left at 0.05/s: 0.6 -> 0.5 over the window, no bounce.
        let s = scene(
            vec![square(Motion::Left, 0.05)],
            Sound::HighTone,
            Origin::OffScreen,
        );
        let a = answers(&s, 10.0);
        let get = |k: &str| {
            a.iter()
                .find(|(kind, _)| *kind == k)
                .map(|(_, x)| x.as_str())
        };
        assert_eq!(get("see"), Some("a red square moving left"));
        assert_eq!(get("count"), Some("one"));
        assert_eq!(get("colour"), Some("red"));
        assert_eq!(get("shape"), Some("square"));
        assert_eq!(get("direction"), Some("left"));
        assert_eq!(get("hear"), Some("a high tone"));
        assert_eq!(get("source"), Some("no"));
        assert_eq!(get("sync"), None, "a tone has no sync question");
        assert_eq!(
            get("caption"),
            Some("a red square moving left and a high tone")
        );
    }

    #[test]
    fn a_bouncing_clicking_square_is_in_sync_and_shifted_clicks_are_not() {
        // 0.6 -> left edge (0.1) at 0.5 s/0.5 = 1 s: one bounce, one click in the window.
        let o = square(Motion::Left, 0.5);
        let s = scene(vec![o.clone()], Sound::Clicks, Origin::Object { index: 0 });
        let a = answers(&s, 10.0);
        assert!(a.contains(&("sync", "yes".into())), "{a:?}");
        assert!(a.contains(&("clicks", "one".into())), "{a:?}");
        assert!(a.contains(&("source", "yes".into())), "{a:?}");
        assert!(a.contains(&("direction", "left and right".into())), "{a:?}");
        let s = scene(
            vec![o],
            Sound::Clicks,
            Origin::Shifted {
                index: 0,
                shift_s: 0.5,
            },
        );
        let a = answers(&s, 10.0);
        assert!(a.contains(&("sync", "no".into())), "{a:?}");
        assert!(
            !a.iter().any(|(k, _)| *k == "source"),
            "not asked out of sync: {a:?}"
        );
    }

    #[test]
    fn straddling_and_onset_windows() {
        let s = scene(
            vec![square(Motion::Still, 0.0)],
            Sound::Noise,
            Origin::OffScreen,
        );
        assert!(
            answers(&s, 13.0).is_empty(),
            "a window past the scene's end"
        );
        let mut late = s.clone();
        late.sound_onset_s = 1.0;
        let a = answers(&late, 10.0);
        assert_eq!(a, vec![("order", "the square".to_owned())]);
        let mut late = s;
        late.objects[0].onset_s = 1.5;
        let a = answers(&late, 10.0);
        assert_eq!(
            a,
            vec![
                ("order", "the sound".to_owned()),
                ("hear", "noise".to_owned())
            ]
        );
        // The next window of the same scene: everything steady, all questions.
        assert!(answers(&late, 12.0).len() > 5);
    }
}
