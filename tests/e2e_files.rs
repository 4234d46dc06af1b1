//! The whole binary on real media made by GStreamer: a 5 s Matroska file with H.264 video
//! (ball pattern) and Opus audio (440 Hz), video-only and audio-only files, bad inputs.
//! Windows are checked field by field: at 2 fps a frame is 0.5 s and 8000 samples, so a
//! 5 s file is exactly 10 frames.

mod common;

use std::path::Path;

use serde_json::Value;

use common::*;

const SEC: u64 = 1_000_000_000;

/// Checks one window line: index, times, valid frame count and the three masks.
fn check_window(w: &Value, index: u64, t_start: u64, valid: usize, video: bool, audio: bool) {
    let k = w["valid"].as_array().expect("valid").len();
    let frames = valid as u64;
    assert_eq!(u(&w["index"]), index, "{w}");
    assert_eq!(u(&w["t_start"]), t_start, "{w}");
    assert_eq!(u(&w["t_end"]), t_start + frames * SEC / 2, "{w}");
    assert_eq!(u(&w["frames"]), frames, "{w}");
    // Samples of the valid frames (zeros where the file has no audio).
    assert_eq!(u(&w["audio_samples"]), frames * 8000, "{w}");
    let mask = |on: bool| -> Vec<bool> { (0..k).map(|i| on && i < valid).collect() };
    assert_eq!(bools(&w["valid"]), mask(true), "{w}");
    assert_eq!(bools(&w["has_video"]), mask(video), "{w}");
    assert_eq!(bools(&w["has_audio"]), mask(audio), "{w}");
    assert!(w["latency_ms"].as_f64().is_some_and(|l| l >= 0.0), "{w}");
}

fn run_file(dir: &Path, file: &Path, engine: &str) -> std::process::Output {
    let cfg = config(dir, engine, &[("clip", file_source(file))]);
    sensorium(&["run", "--config", &cfg])
}

#[test]
fn av_file_fixed_windows_are_exact_and_the_last_is_padded() {
    let (_d, dir) = tmp();
    let av = dir.join("av.mkv");
    make_av_mkv(&av, 5);
    let o = run_file(&dir, &av, "fps = 2.0\nwindow = 4\nstride = 4");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(error_lines(&o).is_empty(), "{}", stderr(&o));
    let lines = lines_of(&o);
    assert_eq!(lines.len(), 3);
    check_window(&lines[0], 0, 0, 4, true, true);
    check_window(&lines[1], 1, 2 * SEC, 4, true, true);
    // Frames 8 and 9, then two padding frames (no video, no audio, not valid).
    check_window(&lines[2], 2, 4 * SEC, 2, true, true);
    assert!(lines.iter().all(|l| l["stream"] == "clip"));
    // A file is lossless by default: nothing dropped on the way.
    assert_eq!(
        summary(&o, "clip"),
        "sensorium: stream 'clip': 10 frames, 3 windows written, 0 items dropped"
    );
}

#[test]
fn av_file_sliding_windows_are_exact() {
    let (_d, dir) = tmp();
    let av = dir.join("av.mkv");
    make_av_mkv(&av, 5);
    let o = run_file(&dir, &av, "fps = 2.0\nwindow = 4\nstride = 2");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let lines = lines_of(&o);
    // Windows start every 2 frames (1 s); frames 8..9 are covered by the 4th window, so no
    // padded window follows.
    assert_eq!(lines.len(), 4);
    for (i, w) in lines.iter().enumerate() {
        check_window(w, i as u64, i as u64 * SEC, 4, true, true);
    }
}

#[test]
fn video_only_and_audio_only_files_have_the_right_masks() {
    let (_d, dir) = tmp();
    let video = dir.join("ball.mkv");
    let audio = dir.join("tone.mkv");
    make_video_mkv(&video, 5);
    make_audio_mkv(&audio, 5);
    for (file, has_v, has_a) in [(&video, true, false), (&audio, false, true)] {
        let o = run_file(&dir, file, "fps = 2.0\nwindow = 4\nstride = 4");
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let lines = lines_of(&o);
        assert_eq!(lines.len(), 3, "{}", file.display());
        check_window(&lines[0], 0, 0, 4, has_v, has_a);
        check_window(&lines[1], 1, 2 * SEC, 4, has_v, has_a);
        check_window(&lines[2], 2, 4 * SEC, 2, has_v, has_a);
    }
}

#[test]
fn lossless_file_with_tiny_queues_loses_nothing() {
    // Every queue holds one item and the stages take one at a time: decoding must wait
    // for the consumer instead of dropping.
    let (_d, dir) = tmp();
    let av = dir.join("av.mkv");
    make_av_mkv(&av, 5);
    let o = run_file(
        &dir,
        &av,
        "fps = 2.0\nwindow = 1\nstride = 1\nqueue_capacity = 1\nbatch = 1",
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let lines = lines_of(&o);
    assert_eq!(lines.len(), 10);
    for (i, w) in lines.iter().enumerate() {
        check_window(w, i as u64, i as u64 * SEC / 2, 1, true, true);
    }
    assert_eq!(
        summary(&o, "clip"),
        "sensorium: stream 'clip': 10 frames, 10 windows written, 0 items dropped"
    );
}

#[test]
fn one_bad_stream_does_not_stop_the_good_one() {
    let (_d, dir) = tmp();
    let av = dir.join("av.mkv");
    make_av_mkv(&av, 5);
    let notes = dir.join("notes.mkv");
    make_text(&notes);
    let out = dir.join("windows.jsonl");
    let cfg = config(
        &dir,
        "fps = 2.0\nwindow = 4\nstride = 4",
        &[("good", file_source(&av)), ("bad", file_source(&notes))],
    );
    let o = sensorium(&["run", "--config", &cfg, "--output", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let errors = error_lines(&o);
    assert_eq!(errors.len(), 1, "{}", stderr(&o));
    assert!(
        errors[0].starts_with(&format!("sensorium: stream 'bad': {}: ", notes.display())),
        "{}",
        errors[0]
    );
    assert!(o.stdout.is_empty(), "windows go to the output file");
    let lines = lines_in(&out);
    let good = of_stream(&lines, "good");
    assert_eq!(good.len(), 3);
    check_window(good[0], 0, 0, 4, true, true);
    check_window(good[1], 1, 2 * SEC, 4, true, true);
    check_window(good[2], 2, 4 * SEC, 2, true, true);
    assert!(of_stream(&lines, "bad").is_empty());
    assert_eq!(lines.len(), 3);
    assert!(summary(&o, "good").ends_with("10 frames, 3 windows written, 0 items dropped"));
    assert!(summary(&o, "bad").ends_with("0 frames, 0 windows written, 0 items dropped"));
}

#[test]
fn a_missing_file_fails_only_its_stream() {
    // Checked when its stream starts, not up front: the other stream runs to its end.
    let (_d, dir) = tmp();
    let av = dir.join("av.mkv");
    make_av_mkv(&av, 5);
    let gone = dir.join("removed.mkv");
    let cfg = config(
        &dir,
        "fps = 2.0\nwindow = 4\nstride = 4",
        &[("gone", file_source(&gone)), ("good", file_source(&av))],
    );
    let o = sensorium(&["run", "--config", &cfg]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert_eq!(
        error_lines(&o),
        vec![format!(
            "sensorium: stream 'gone': media file {} does not exist or is not a file",
            gone.display()
        )]
    );
    let lines = lines_of(&o);
    assert_eq!(lines.len(), 3);
    check_window(&lines[0], 0, 0, 4, true, true);
    check_window(&lines[1], 1, 2 * SEC, 4, true, true);
    check_window(&lines[2], 2, 4 * SEC, 2, true, true);
    assert!(lines.iter().all(|l| l["stream"] == "good"));
}

#[test]
fn missing_file_exits_3_naming_it() {
    let (_d, dir) = tmp();
    let gone = dir.join("gone.mkv");
    let o = run_file(&dir, &gone, "");
    assert_eq!(o.status.code(), Some(3));
    assert_eq!(
        stderr(&o),
        format!(
            "sensorium: stream 'clip': media file {} does not exist or is not a file\n",
            gone.display()
        )
    );
    assert!(o.stdout.is_empty());
}

#[test]
fn non_media_file_exits_3_naming_it() {
    let (_d, dir) = tmp();
    let notes = dir.join("notes.mp4");
    make_text(&notes);
    let o = sensorium(&["run", "--source", notes.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let errors = error_lines(&o);
    assert_eq!(errors.len(), 1, "{}", stderr(&o));
    assert!(
        errors[0].starts_with(&format!(
            "sensorium: stream 'source': {}: ",
            notes.display()
        )),
        "{}",
        errors[0]
    );
    assert!(lines_of(&o).is_empty());
}

#[test]
fn truncated_file_writes_the_decodable_windows() {
    let (_d, dir) = tmp();
    let av = dir.join("av.mkv");
    make_av_mkv(&av, 5);
    let cut = dir.join("cut.mkv");
    make_truncated(&av, &cut);
    let o = run_file(&dir, &cut, "fps = 2.0\nwindow = 2\nstride = 2");
    // The cut is reported (the container says 5 s) as one line naming the file ...
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let errors = error_lines(&o);
    assert_eq!(errors.len(), 1, "{}", stderr(&o));
    let prefix = format!(
        "sensorium: stream 'clip': {}: truncated: media ends at ",
        cut.display()
    );
    assert!(errors[0].starts_with(&prefix), "{}", errors[0]);
    assert!(
        errors[0].ends_with(" s of its 5.000 s duration"),
        "{}",
        errors[0]
    );
    // ... and what decoded before it is written: every line is valid JSON, windows are in
    // order on the 1 s grid, and some but not all of the 10 frames made it.
    let lines = lines_of(&o);
    assert!(
        !lines.is_empty() && lines.len() < 5,
        "{} windows",
        lines.len()
    );
    for (i, w) in lines.iter().enumerate() {
        assert_eq!(u(&w["index"]), i as u64);
        assert_eq!(u(&w["t_start"]), i as u64 * SEC);
    }
    let frames: u64 = lines.iter().map(|w| u(&w["frames"])).sum();
    assert!(frames > 0 && frames < 10, "{frames} frames");
    assert!(summary(&o, "clip").contains(&format!(" {frames} frames, ")));
}

#[test]
fn unknown_source_kind_and_malformed_toml_exit_2() {
    let (_d, dir) = tmp();
    let cfg = config(&dir, "", &[("cam", "kind = \"webcam\"".into())]);
    let o = sensorium(&["run", "--config", &cfg]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o),
        format!(
            "sensorium: {cfg}: field `stream[0].source.kind`: unknown source kind \"webcam\" \
             (expected one of: test, file, uri, rtsp, camera, microphone, launch, synthetic, scene)\n"
        )
    );
    let bad = write(
        &dir,
        "bad.toml",
        "[engine]\nfps = 2.0\n[[stream]\nname = \"a\"\n",
    );
    let o = sensorium(&["run", "--config", &bad]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(
        e.starts_with(&format!("sensorium: {bad}: malformed TOML at line 3")),
        "{e}"
    );
    assert!(o.stdout.is_empty());
}

#[test]
fn probe_describes_the_file_and_names_a_missing_one() {
    let (_d, dir) = tmp();
    let av = dir.join("av.mkv");
    make_av_mkv(&av, 4);
    let o = sensorium(&["probe", av.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.contains("container: Matroska"), "{text}");
    assert!(text.contains("duration:  4.000 s"), "{text}");
    let video = text
        .lines()
        .find(|l| l.starts_with("video #0:"))
        .expect(&text);
    assert!(
        video.contains("H.264") && video.contains("320x240"),
        "{video}"
    );
    let audio = text
        .lines()
        .find(|l| l.starts_with("audio #0:"))
        .expect(&text);
    assert!(audio.contains("Opus 48000 Hz, 1 channel"), "{audio}");

    let gone = dir.join("gone.mkv");
    let o = sensorium(&["probe", gone.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3));
    let e = stderr(&o);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(
        e.starts_with(&format!("sensorium: cannot probe '{}'", gone.display())),
        "{e}"
    );
    assert!(e.contains("does not exist"), "{e}");
}
