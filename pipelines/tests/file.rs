//! File source on media made by GStreamer in a tempdir: exact frame counts and times at two
//! frame rates, exact audio sample counts and continuity, audio-only / video-only files,
//! looping, and the bad inputs (missing, not media, truncated).

mod common;

use std::path::Path;

use sensorium_engine::frame::NS_PER_SEC;
use sensorium_engine::{QueueMode, SourceEvent, SourceFactory};
use sensorium_pipelines::{PipelineError, Sources};

use common::*;

/// One 4 s media set shared by the tests of this file (made once per test; cheap).
struct Media {
    _dir: tempfile::TempDir,
    av: std::path::PathBuf,
    audio_only: std::path::PathBuf,
    video_only: std::path::PathBuf,
    dir: std::path::PathBuf,
}

fn media() -> Media {
    let dir = tempfile::tempdir().unwrap();
    let av = dir.path().join("av.mkv");
    let audio_only = dir.path().join("tone.ogg");
    let video_only = dir.path().join("ball.mkv");
    make_av_mkv(&av, 4);
    make_audio_ogg(&audio_only, 4);
    make_video_mkv(&video_only, 4);
    Media {
        dir: dir.path().to_owned(),
        _dir: dir,
        av,
        audio_only,
        video_only,
    }
}

fn file_stream(path: &Path, extra: &str) -> sensorium_engine::config::StreamConfig {
    stream(&format!(
        "kind = \"file\"\npath = \"{}\"\n{extra}",
        path.display()
    ))
}

/// Total samples and the largest gap/overlap between consecutive chunks, ns.
fn audio_continuity(audio: &[(u64, usize)]) -> (usize, u64) {
    let total = audio.iter().map(|a| a.1).sum();
    let mut worst = 0;
    for w in audio.windows(2) {
        let expected = w[0].0 + w[0].1 as u64 * NS_PER_SEC / 16_000;
        worst = worst.max(w[1].0.abs_diff(expected));
    }
    (total, worst)
}

#[test]
fn av_file_exact_frames_and_samples_at_two_rates() {
    let m = media();
    for (fps, frames) in [(2.0, 8usize), (5.0, 20)] {
        let (_h, rx) = start(
            &file_stream(&m.av, ""),
            &params(fps, QueueMode::Lossless),
            8,
        )
        .unwrap();
        let events = collect(&rx);
        let sp = split(&events);
        assert!(matches!(sp.last, Some(SourceEvent::Eos)), "{:?}", sp.last);
        let step = (NS_PER_SEC as f64 / fps) as u64;
        let expected: Vec<u64> = (0..frames as u64).map(|i| i * step).collect();
        assert_eq!(sp.video_pts, expected, "fps {fps}");
        // Opus priming is removed by the demuxer/decoder: exactly 4 s of 16 kHz samples,
        // starting at 0, with chunk timestamps contiguous to the nanosecond.
        let (total, worst_gap) = audio_continuity(&sp.audio);
        assert_eq!(total, 64_000, "fps {fps}");
        assert_eq!(sp.audio[0].0, 0);
        assert_eq!(worst_gap, 0, "audio chunks must be contiguous");
        for e in &events {
            if let SourceEvent::Video(v) = e {
                assert_eq!((v.width, v.height, v.rgb.len()), (64, 48, 64 * 48 * 3));
            }
        }
        assert_eq!(sp.discontinuities, 0);
    }
}

#[test]
fn video_frames_carry_the_picture() {
    // The ball pattern: a white ball on black. Some pixels bright, most dark.
    let m = media();
    let (_h, rx) = start(
        &file_stream(&m.video_only, ""),
        &params(2.0, QueueMode::Lossless),
        8,
    )
    .unwrap();
    let events = collect(&rx);
    let SourceEvent::Video(v) = &events[0] else {
        panic!("first event should be video: {:?}", events[0]);
    };
    let bright = v
        .rgb
        .chunks(3)
        .filter(|p| p.iter().all(|c| *c > 200))
        .count();
    let dark = v
        .rgb
        .chunks(3)
        .filter(|p| p.iter().all(|c| *c < 40))
        .count();
    let n = v.rgb.len() / 3;
    assert!(bright > 0 && bright < n / 4, "bright {bright} of {n}");
    assert!(dark > n / 2, "dark {dark} of {n}");
}

#[test]
fn audio_only_file_has_no_video() {
    let m = media();
    let (_h, rx) = start(
        &file_stream(&m.audio_only, ""),
        &params(2.0, QueueMode::Lossless),
        8,
    )
    .unwrap();
    let sp = split(&collect(&rx));
    assert!(matches!(sp.last, Some(SourceEvent::Eos)), "{:?}", sp.last);
    assert!(sp.video_pts.is_empty());
    let (total, worst_gap) = audio_continuity(&sp.audio);
    assert_eq!(total, 64_000);
    assert_eq!(worst_gap, 0);
    // The tone: 440 Hz at volume 0.5 -> peak close to 0.5 and RMS close to 0.5/sqrt(2).
    let (_h, rx) = start(
        &file_stream(&m.audio_only, ""),
        &params(2.0, QueueMode::Lossless),
        8,
    )
    .unwrap();
    let samples: Vec<f32> = collect(&rx)
        .iter()
        .filter_map(|e| match e {
            SourceEvent::Audio(a) => Some(a.samples.to_vec()),
            _ => None,
        })
        .flatten()
        .collect();
    let mid = &samples[16_000..48_000];
    let rms = (mid.iter().map(|x| x * x).sum::<f32>() / mid.len() as f32).sqrt();
    assert!((rms - 0.5 / 2f32.sqrt()).abs() < 0.02, "rms {rms}");
    // 440 Hz: 880 sign changes per second; 2 s of it, +-2 for where the window cuts.
    let crossings = mid
        .windows(2)
        .filter(|w| (w[0] < 0.0) != (w[1] < 0.0))
        .count();
    assert!(crossings.abs_diff(1760) <= 2, "zero crossings {crossings}");
}

#[test]
fn lossless_file_with_slow_consumer_loses_nothing() {
    let m = media();
    let (mut h, rx) = start(
        &file_stream(&m.av, ""),
        &params(2.0, QueueMode::Lossless),
        1,
    )
    .unwrap();
    let mut events = Vec::new();
    loop {
        // A consumer slower than decoding: the decoder must wait, not drop.
        std::thread::sleep(std::time::Duration::from_millis(1));
        let ev = rx.recv_timeout(HANG_GUARD).expect("hang guard");
        let end = matches!(ev, SourceEvent::Eos | SourceEvent::Error { .. });
        events.push(ev);
        if end {
            break;
        }
    }
    // The sender counts an item after handing it over: join the source before reading the
    // counters.
    h.stop();
    let sp = split(&events);
    assert!(matches!(sp.last, Some(SourceEvent::Eos)));
    assert_eq!(sp.video_pts.len(), 8);
    assert_eq!(audio_continuity(&sp.audio), (64_000, 0));
    assert_eq!(rx.stats().dropped(), 0);
    assert_eq!(rx.stats().sent(), events.len() as u64);
}

#[test]
fn video_only_file_has_no_audio() {
    let m = media();
    let (_h, rx) = start(
        &file_stream(&m.video_only, ""),
        &params(2.0, QueueMode::Lossless),
        8,
    )
    .unwrap();
    let sp = split(&collect(&rx));
    assert!(matches!(sp.last, Some(SourceEvent::Eos)), "{:?}", sp.last);
    assert!(sp.audio.is_empty());
    assert_eq!(sp.video_pts.len(), 8);
}

#[test]
fn modalities_can_be_turned_off() {
    let m = media();
    let (_h, rx) = start(
        &file_stream(&m.av, "video = false"),
        &params(2.0, QueueMode::Lossless),
        8,
    )
    .unwrap();
    let sp = split(&collect(&rx));
    assert!(sp.video_pts.is_empty());
    assert_eq!(audio_continuity(&sp.audio).0, 64_000);

    let (_h, rx) = start(
        &file_stream(&m.av, "audio = false"),
        &params(2.0, QueueMode::Lossless),
        8,
    )
    .unwrap();
    let sp = split(&collect(&rx));
    assert!(sp.audio.is_empty());
    assert_eq!(sp.video_pts.len(), 8);
    assert!(matches!(sp.last, Some(SourceEvent::Eos)));

    // Asking only for what the file lacks is an error naming the file.
    let (_h, rx) = start(
        &file_stream(&m.audio_only, "audio = false"),
        &params(2.0, QueueMode::Lossless),
        8,
    )
    .unwrap();
    let msg = error_message(&split(&collect(&rx)).last);
    assert!(msg.contains(&m.audio_only.display().to_string()), "{msg}");
    assert!(msg.contains("no usable stream (wanted video)"), "{msg}");
}

#[test]
fn looping_keeps_time_increasing() {
    let m = media();
    let (mut h, rx) = start(
        &file_stream(&m.av, "loop = true"),
        &params(2.0, QueueMode::Lossless),
        4,
    )
    .unwrap();
    // 2.5 passes over the 4 s file: frames continue exactly on the 500 ms grid and the
    // audio stays contiguous across the seams.
    let mut events = Vec::new();
    while events
        .iter()
        .filter(|e| matches!(e, SourceEvent::Video(_)))
        .count()
        < 20
    {
        match rx.recv_timeout(HANG_GUARD) {
            Ok(ev @ (SourceEvent::Video(_) | SourceEvent::Audio(_))) => events.push(ev),
            Ok(other) => panic!("unexpected {other:?}"),
            Err(_) => panic!("hang guard"),
        }
    }
    h.stop();
    let sp = split(&events);
    let expected: Vec<u64> = (0..20).map(|i| i * 500_000_000).collect();
    assert_eq!(sp.video_pts, expected);
    let (total, worst_gap) = audio_continuity(&sp.audio);
    assert!(total > 64_000, "audio went past the first seam: {total}");
    assert_eq!(worst_gap, 0, "audio contiguous across loop seams");
}

#[test]
fn missing_file_fails_at_start_naming_the_path() {
    let m = media();
    let missing = m.dir.join("no-such-clip.mkv");
    let err = start(
        &file_stream(&missing, ""),
        &params(2.0, QueueMode::Lossless),
        8,
    )
    .err()
    .unwrap();
    assert!(matches!(err, PipelineError::FileNotFound { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "media file {} does not exist or is not a file",
            missing.display()
        )
    );
    // Through the engine's trait: the stream is named too.
    let (tx, _rx) = sensorium_engine::bounded(8, QueueMode::Lossless);
    let e = Sources::new()
        .start(
            &file_stream(&missing, ""),
            &params(2.0, QueueMode::Lossless),
            tx,
        )
        .err()
        .unwrap();
    assert_eq!(e.stream, "s");
    assert!(e.to_string().contains("no-such-clip.mkv"), "{e}");
}

#[test]
fn non_media_file_is_an_error_naming_the_path() {
    let m = media();
    let notes = m.dir.join("notes.mkv");
    std::fs::write(&notes, "these are meeting notes, not a video\n".repeat(200)).unwrap();
    let (_h, rx) = start(
        &file_stream(&notes, ""),
        &params(2.0, QueueMode::Lossless),
        8,
    )
    .unwrap();
    let sp = split(&collect(&rx));
    assert!(sp.video_pts.is_empty() && sp.audio.is_empty());
    let msg = error_message(&sp.last);
    assert!(
        msg.starts_with(&format!("{}: element '", notes.display())),
        "{msg}"
    );
}

#[test]
fn truncated_file_yields_what_decodes_then_fails_naming_it() {
    let m = media();
    let bytes = std::fs::read(&m.av).unwrap();
    let cut = m.dir.join("cut.mkv");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let (_h, rx) = start(&file_stream(&cut, ""), &params(2.0, QueueMode::Lossless), 8).unwrap();
    let events = collect(&rx); // panics on a hang
    let sp = split(&events);
    assert!(
        !sp.video_pts.is_empty() && sp.video_pts.len() < 8,
        "some but not all frames: {:?}",
        sp.video_pts
    );
    let total = audio_continuity(&sp.audio).0;
    assert!(total > 0 && total < 64_000, "some audio: {total}");
    // The container declares 4 s: ending well before that is reported, naming the file.
    let msg = error_message(&sp.last);
    let end_s = *sp.video_pts.last().unwrap() as f64 / 1e9 + 0.5;
    assert!(
        msg.starts_with(&format!("{}: truncated: media ends at ", cut.display())),
        "{msg}"
    );
    assert!(msg.ends_with(" s of its 4.000 s duration"), "{msg}");
    assert!(end_s < 3.0, "{end_s}");
}

#[test]
fn uri_source_reads_file_uris_and_rejects_unknown_protocols() {
    let m = media();
    let uri = format!("file://{}", m.video_only.display());
    let (_h, rx) = start(
        &stream(&format!("kind = \"uri\"\nuri = \"{uri}\"")),
        &params(2.0, QueueMode::Lossless),
        8,
    )
    .unwrap();
    assert_eq!(split(&collect(&rx)).video_pts.len(), 8);

    let err = start(
        &stream("kind = \"uri\"\nuri = \"nosuchproto://u:secretpw@host/x\""),
        &params(2.0, QueueMode::Lossless),
        8,
    )
    .err()
    .unwrap()
    .to_string();
    assert_eq!(
        err,
        "invalid URI 'nosuchproto://host/x': no installed GStreamer source handles this protocol"
    );
    let missing = format!("file://{}/gone.mkv", m.dir.display());
    let err = start(
        &stream(&format!("kind = \"uri\"\nuri = \"{missing}\"")),
        &params(2.0, QueueMode::Lossless),
        8,
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("gone.mkv"), "{err}");
}

#[test]
fn probe_reports_container_streams_and_duration() {
    let m = media();
    let info = sensorium_pipelines::probe(m.av.to_str().unwrap()).unwrap();
    assert_eq!(info.container.as_deref(), Some("Matroska"));
    assert_eq!(info.duration_ns, Some(4 * NS_PER_SEC));
    assert_eq!(info.video.len(), 1);
    let v = &info.video[0];
    assert!(v.codec.starts_with("H.264"), "{}", v.codec);
    assert_eq!((v.width, v.height, v.fps), (320, 240, Some(10.0)));
    assert_eq!(info.audio.len(), 1);
    let a = &info.audio[0];
    assert_eq!(
        (a.codec.as_str(), a.sample_rate, a.channels),
        ("Opus", 48_000, 1)
    );
    let text = info.to_string();
    assert!(text.contains("container: Matroska"), "{text}");
    assert!(text.contains("320x240"), "{text}");
    let json = serde_json::to_value(&info).unwrap();
    assert_eq!(json["audio"][0]["sample_rate"], 48_000);

    let ogg = sensorium_pipelines::probe(m.audio_only.to_str().unwrap()).unwrap();
    assert_eq!(ogg.container.as_deref(), Some("Ogg"));
    assert!(ogg.video.is_empty());
    assert_eq!(ogg.audio.len(), 1);

    let missing = m.dir.join("nope.mp4");
    let err = sensorium_pipelines::probe(missing.to_str().unwrap()).unwrap_err();
    assert!(matches!(err, PipelineError::FileNotFound { .. }));
    let notes = m.dir.join("notes.mp4");
    std::fs::write(&notes, "plain text\n".repeat(100)).unwrap();
    let err = sensorium_pipelines::probe(notes.to_str().unwrap()).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("cannot probe {}:", notes.display())),
        "{err}"
    );
}
