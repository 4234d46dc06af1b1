//! Corrupt media mid-stream, through the binary: H.264 with flipped bits, an audio track that
//! stops while the video goes on, a file whose timestamps jump backwards. Each stream keeps
//! going or ends with one clear error naming the file, the exit code says which, and every
//! window already written stays valid: one JSON object per line, contiguous indices,
//! strictly increasing and never overlapping times.

mod common;

use std::path::Path;

use common::*;
use sensorium_engine::rng::Rng;
use serde_json::Value;

fn run_file(dir: &Path, file: &Path) -> std::process::Output {
    let cfg = config(
        dir,
        "fps = 2.0\nwindow = 4\nstride = 4",
        &[("clip", file_source(file))],
    );
    sensorium(&["run", "--config", &cfg])
}

/// The windows written are well formed whatever happened after them.
fn assert_valid_windows(lines: &[Value], what: &str) {
    for (i, w) in lines.iter().enumerate() {
        assert_eq!(u(&w["index"]), i as u64, "{what}: {w}");
        assert!(u(&w["t_end"]) > u(&w["t_start"]), "{what}: {w}");
        assert_eq!(w["valid"].as_array().map(Vec::len), Some(4), "{what}: {w}");
    }
    for p in lines.windows(2) {
        assert!(
            u(&p[1]["t_start"]) >= u(&p[0]["t_end"]),
            "{what}: {} {}",
            p[0],
            p[1]
        );
    }
}

/// Exit 0 with no error line, or exit 3 with exactly one naming the file.
fn assert_goes_on_or_one_error(o: &std::process::Output, file: &Path, what: &str) {
    match o.status.code() {
        Some(0) => assert!(error_lines(o).is_empty(), "{what}: {}", stderr(o)),
        Some(3) => {
            let errors = error_lines(o);
            assert_eq!(errors.len(), 1, "{what}: {}", stderr(o));
            assert!(
                errors[0].starts_with(&format!("sensorium: stream 'clip': {}", file.display()))
                    || errors[0].contains(&file.display().to_string()),
                "{what}: {}",
                errors[0]
            );
        }
        other => panic!("{what}: exit {other:?}: {}", stderr(o)),
    }
}

#[test]
fn h264_with_flipped_bits_keeps_going_or_ends_with_one_error() {
    let (_d, dir) = tmp();
    let clean = dir.join("clean.mkv");
    make_av_mkv(&clean, 6);
    let bytes = std::fs::read(&clean).unwrap();
    let mut rng = Rng::new(7);
    let mut outcomes = Vec::new();
    for trial in 0..4 {
        let mut b = bytes.clone();
        // Flip bits in the middle half (past the headers, before the index): frames break,
        // the container mostly survives.
        let (lo, hi) = (b.len() / 4, 3 * b.len() / 4);
        for _ in 0..(20 + 40 * trial) {
            let at = lo + rng.below(hi - lo);
            b[at] ^= 1 << rng.below(8);
        }
        let file = dir.join(format!("flipped{trial}.mkv"));
        std::fs::write(&file, &b).unwrap();
        let o = run_file(&dir, &file);
        let what = format!("flipped{trial}");
        assert_goes_on_or_one_error(&o, &file, &what);
        let lines = lines_of(&o);
        assert_valid_windows(&lines, &what);
        outcomes.push((o.status.code(), lines.len()));
    }
    eprintln!("flipped bits: (exit, windows) {outcomes:?}");
    // Some of the stream survives the damage in every trial (the first seconds are clean).
    assert!(outcomes.iter().all(|(_, n)| *n >= 1), "{outcomes:?}");
}

#[test]
fn audio_that_stops_while_video_goes_on_keeps_the_stream_going() {
    let (_d, dir) = tmp();
    let file = dir.join("audio_stops.mkv");
    // 6 s of video, 2 s of audio.
    run_to_eos(&format!(
        "matroskamux name=m ! filesink location={} \
         videotestsrc pattern=ball num-buffers=60 ! video/x-raw,width=160,height=120,framerate=10/1 \
         ! x264enc speed-preset=ultrafast key-int-max=10 bframes=0 ! h264parse ! queue ! m. \
         audiotestsrc wave=sine freq=440 samplesperbuffer=960 num-buffers=100 \
         ! audio/x-raw,rate=48000,channels=1 ! opusenc ! queue ! m.",
        file.display()
    ));
    let o = run_file(&dir, &file);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(error_lines(&o).is_empty(), "{}", stderr(&o));
    let lines = lines_of(&o);
    assert_valid_windows(&lines, "audio stops");
    // 12 frames at 2 fps: three full windows; audio only in the first 2 s.
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(bools(&lines[0]["has_audio"]), vec![true; 4]);
    assert_eq!(bools(&lines[2]["has_audio"]), vec![false; 4]);
    assert_eq!(bools(&lines[2]["has_video"]), vec![true; 4]);
}

#[test]
fn timestamps_that_jump_backwards_keep_the_stream_going() {
    let (_d, dir) = tmp();
    // Two MPEG-TS files of 3 s each, concatenated: the second part's timestamps start at
    // zero again (what a camera recording restarted in the same file looks like).
    let parts: Vec<_> = (0..2)
        .map(|i| {
            let p = dir.join(format!("part{i}.ts"));
            run_to_eos(&format!(
                "mpegtsmux name=m ! filesink location={} \
                 videotestsrc pattern=ball num-buffers=30 ! video/x-raw,width=160,height=120,framerate=10/1 \
                 ! x264enc speed-preset=ultrafast key-int-max=10 bframes=0 ! h264parse ! queue ! m. \
                 audiotestsrc wave=sine freq=440 samplesperbuffer=1024 num-buffers=141 \
                 ! audio/x-raw,rate=48000,channels=1 ! avenc_aac ! aacparse ! queue ! m.",
                p.display()
            ));
            std::fs::read(p).unwrap()
        })
        .collect();
    let file = dir.join("jumps_back.ts");
    std::fs::write(&file, parts.concat()).unwrap();
    let o = run_file(&dir, &file);
    assert_goes_on_or_one_error(&o, &file, "jumps back");
    let lines = lines_of(&o);
    assert_valid_windows(&lines, "jumps back");
    // Both parts made it into windows (12 frames at 2 fps; one more where the second part's
    // first frame straddles the seam), not only the first.
    let frames: u64 = lines.iter().map(|l| u(&l["frames"])).sum();
    assert!(
        (11..=14).contains(&frames),
        "{frames} frames: {}",
        stderr(&o)
    );
}
