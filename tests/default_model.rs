//! The shipped default model (`default-model/`): its accuracy on held-out scene streams
//! (`sensorium eval --bench scenes`), its answers on a live `scene` stream checked against the
//! world's ground truth, on another renderer (GStreamer's test sources written as H.264 +
//! AAC), and the errors around it.

mod common;

use common::{text, write};
use std::time::Duration;

use sensorium_engine::scene::{self, Rng, SceneTimeline, WorldParams};
use serde_json::Value;

fn sensorium(args: &[&str]) -> std::process::Output {
    common::sensorium_within(args, Duration::from_secs(600))
}

/// Per-task lower bounds on the first 200 held-out questions (seeded and greedy, so the
/// same questions and answers every run): a few points under what the shipped model measured
/// (visual 28/48 = 58.3%, audio 44/44, AV hallucination 34/46 = 73.9%, AV sync 6/6,
/// temporal 5/5, caption 14/51 = 27.5%, overall 65.5%), which is still under the issue's
/// targets for visual, AV hallucination and caption (README, "The default model"). They
/// guard the shipped weights and the serving path against regressions.
const BOUNDS: [(&str, f64); 6] = [
    ("visual", 0.52),
    ("audio", 0.93),
    ("av_hallucination", 0.65),
    ("av_sync", 0.80),
    ("temporal", 0.60),
    ("caption", 0.22),
];

#[test]
fn held_out_accuracy_of_the_shipped_model() {
    let o = sensorium(&["eval", "--bench", "scenes", "--questions", "200", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let v: Value = serde_json::from_str(&text(&o.stdout)).unwrap();
    assert_eq!(v["total"], 200, "{v}");
    eprintln!("{}", serde_json::to_string_pretty(&v["tasks"]).unwrap());
    for (task, min) in BOUNDS {
        let acc = v["tasks"][task]["accuracy"].as_f64().unwrap_or(0.0);
        assert!(acc >= min, "{task}: {acc:.3} < {min} ({v})");
    }
    let overall = v["accuracy"].as_f64().unwrap();
    assert!(overall >= 0.60, "overall {overall:.3}");
}

/// Distillation on the default model's own encoders (`distill-eval --world scenes`): a visual
/// teacher fitted on 24 labelled frames per shape teaches the audio student the sounding
/// objects' classes. Measured (5 seeds, 60 clips per class, 20 held out): teacher 1.000;
/// student 0.280 before, 0.863 after difficulty-aware selection, 0.943 after uniform; the
/// hard class (circle, its tone under 20 dB of noise) 0.800 vs 0.970 (on these encoders the
/// weighted arm does not beat the uniform one). The bounds are below.
#[test]
fn distillation_runs_on_the_default_models_encoders() {
    let o = sensorium(&[
        "distill-eval",
        "--world",
        "scenes",
        "--audio",
        "default-model/audio",
        "--vision",
        "default-model/vision",
        "--clips",
        "60",
        "--test-clips",
        "20",
        "--teacher-frames",
        "24",
        "--seeds",
        "5",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(
        out.contains("features: audio whisper-mean (64 floats), visual vision-mean (64 floats)"),
        "{out}"
    );
    let row = |name: &str| -> Vec<f64> {
        let line = out
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name}: {out}"));
        line.split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect()
    };
    // teacher, before, warm, after-diff, after-uni
    let overall = row("overall");
    let (teacher, before, after_d, after_u) = (overall[0], overall[1], overall[3], overall[4]);
    assert!(teacher >= 0.45, "teacher {teacher}: {out}");
    assert!(after_d >= before + 0.3 && after_u >= before + 0.25, "{out}");
    let circle = out
        .lines()
        .find(|l| l.starts_with("circle"))
        .unwrap_or_default();
    assert_eq!(
        circle.split_whitespace().nth(1),
        Some("yes"),
        "the circle is the hard class: {out}"
    );
}

/// What the world says the answer to `question` is for stream time `[t0, t1)`.
fn truth(tl: &mut SceneTimeline, t0: f64, t1: f64, question: &str) -> Option<String> {
    // Phrasings are drawn at random: look through draws until this one comes up.
    (0..200u64).find_map(|k| {
        scene::questions(tl, t0, t1, &mut Rng::new(k))
            .into_iter()
            .find(|q| q.question == question)
            .map(|q| q.answer)
    })
}

#[test]
fn a_live_scene_stream_is_answered_as_it_plays() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "live.toml",
        "[[stream]]\nname = \"scene\"\nsource = { kind = \"scene\", seed = 1, duration_s = 12.0 }\n",
    );
    let out = dir.path().join("out.jsonl");
    let o = sensorium(&[
        "run",
        "--config",
        &cfg,
        "--question",
        "What do you hear?",
        "--question",
        "How many objects are there?",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let mut tl = SceneTimeline::new(
        1,
        WorldParams {
            window_s: 2.0,
            aspect: 1.0,
        },
    );
    let (mut right, mut asked) = (0, 0);
    for l in std::fs::read_to_string(&out).unwrap().lines() {
        let v: Value = serde_json::from_str(l).unwrap();
        if v["type"] != "answer" {
            continue;
        }
        let t0 = v["t_start_ns"].as_u64().unwrap() as f64 / 1e9;
        let t1 = v["t_end_ns"].as_u64().unwrap() as f64 / 1e9;
        let q = v["question"].as_str().unwrap();
        let Some(want) = truth(&mut tl, t0, t1, q) else {
            continue; // not askable in this window (e.g. an onset)
        };
        asked += 1;
        if v["answer"].as_str().unwrap() == want {
            right += 1;
        } else {
            eprintln!("[{t0}, {t1}) {q}: expected {want:?}, got {}", v["answer"]);
        }
    }
    eprintln!("{right}/{asked} right");
    assert!(asked >= 10, "{asked} answers checked");
    // The shipped model measured 12/12 here: the bound guards the
    // live path (scene source -> bundle -> answers) against regressions.
    assert!(right * 10 >= asked * 7, "{right}/{asked} right");
}

/// GStreamer draws the scene instead of our renderer: `videotestsrc pattern=ball` (a white
/// disc on black) with a 1 kHz `audiotestsrc` sine, written as H.264 + AAC in MP4 at
/// 320x240; the engine scales it to the model's 64x64.
#[test]
fn another_renderer_gets_colour_shape_and_sound_right() {
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("ball.mp4");
    sensorium_pipelines::testutil::run_to_eos(&format!(
        "mp4mux name=m ! filesink location={} \
         videotestsrc pattern=ball num-buffers=60 ! video/x-raw,width=320,height=240,framerate=10/1 \
         ! x264enc speed-preset=ultrafast key-int-max=10 bframes=0 ! h264parse ! queue ! m. \
         audiotestsrc wave=sine freq=1000 volume=0.4 samplesperbuffer=1600 num-buffers=180 \
         ! audio/x-raw,rate=48000,channels=1 ! avenc_aac ! aacparse ! queue ! m.",
        clip.display()
    ));
    let out = dir.path().join("out.jsonl");
    let o = sensorium(&[
        "run",
        "--source",
        clip.to_str().unwrap(),
        "-q",
        "What colour is the circle?",
        "-q",
        "What shape is the white object?",
        "-q",
        "What do you hear?",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let mut got: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for l in std::fs::read_to_string(&out).unwrap().lines() {
        let v: Value = serde_json::from_str(l).unwrap();
        if v["type"] == "answer" {
            got.entry(v["question"].as_str().unwrap().into())
                .or_default()
                .push(v["answer"].as_str().unwrap().into());
        }
    }
    eprintln!("{got:?}");
    let majority = |q: &str, want: &str| {
        let a = &got[q];
        let n = a.iter().filter(|x| *x == want).count();
        assert!(2 * n > a.len(), "{q}: {a:?}, expected mostly {want:?}");
    };
    majority("What colour is the circle?", "white");
    majority("What shape is the white object?", "circle");
    majority("What do you hear?", "a high tone");
}

#[test]
fn errors_around_the_default_model() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let o = sensorium(&["run", "--source", "scene:1", "--question", " "]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("--question: the question is empty"));

    // A bundle with a part missing.
    let bad = d.join("bundle");
    std::fs::create_dir_all(&bad).unwrap();
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("default-model");
    std::fs::copy(shipped.join("bundle.toml"), bad.join("bundle.toml")).unwrap();
    let o = sensorium(&[
        "run",
        "--source",
        "scene:1",
        "-q",
        "What do you see?",
        "--model",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("part audio/ is missing model.safetensors"),
        "{}",
        text(&o.stderr)
    );

    // Settings that conflict with what the model was trained with.
    let cfg = write(
        d,
        "fps.toml",
        "[engine]\nfps = 5.0\n[[stream]]\nname = \"s\"\nsource = { kind = \"scene\", duration_s = 2.0 }\n",
    );
    let o = sensorium(&["run", "--config", &cfg, "-q", "What do you see?"]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("engine.fps = 5 conflicts with the model bundle")
            && err.trim().lines().count() == 1,
        "{err}"
    );
    // Benchmark seeds below the held-out range are refused.
    let o = sensorium(&["eval", "--bench", "scenes", "--seed", "5"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("benchmark seeds start at"));
}
