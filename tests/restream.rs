//! The annotated RTSP re-stream (`[output] rtsp`), read back by a GStreamer client
//! (`rtspsrc ! decodebin`): frames and audio arrive, and the overlay is there (OCR-free: the
//! source is black, so bright pixels in the text box are the overlay's, and the rest of the
//! picture stays black).

mod common;

use std::time::Duration;

use common::web::{free_port, wait_for_lines, Running};
use common::*;

#[test]
fn the_restream_carries_picture_sound_and_the_overlay() {
    let port = free_port();
    let (_d, dir) = tmp();
    let cfg = write(
        &dir,
        "restream.toml",
        &format!(
            "[engine]\nfps = 10\nwidth = 160\nheight = 120\nwindow = 5\nstride = 5\n\n\
             [output]\npath = \"{}\"\nrtsp = \"127.0.0.1:{port}/out\"\n\n\
             [[stream]]\nname = \"cam\"\nmode = \"realtime\"\n\
             source = {{ kind = \"test\", pattern = \"black\", wave = \"sine\", freq = 440.0, \
             volume = 0.5, is_live = true }}\n",
            dir.join("out.jsonl").display()
        ),
    );
    // --http only to learn when it is up (the re-stream is announced just before).
    let run = Running::start(&["run", "--config", &cfg, "--http", "127.0.0.1:0"]);
    // The first window (0.5 s) has been written: the overlay shows its time.
    wait_for_lines(&dir.join("out.jsonl"), 1);
    let got = read_rtsp(
        &format!("rtsp://127.0.0.1:{port}/out/cam"),
        Duration::from_secs(5),
    );
    let (code, err) = run.stop();
    assert_eq!(code, Some(130), "{err}");
    assert!(
        err.contains(&format!("re-served on rtsp://127.0.0.1:{port}/out/cam")),
        "{err}"
    );

    // Frames: the 160x120 picture scaled 4x to 640x480, at about the stream's 10 fps.
    assert!(got.frames.len() >= 20, "{} frames in 5 s", got.frames.len());
    let (w, h, last) = got.frames.last().unwrap();
    assert_eq!((*w, *h), (640, 480));
    let px = |x: u32, y: u32| {
        let i = ((y * w + x) * 3) as usize;
        last[i..i + 3].iter().copied().max().unwrap()
    };
    // The overlay: bright text in the top-left box ...
    let mut bright = 0;
    for y in 0..40 {
        for x in 0..320 {
            if px(x, y) > 150 {
                bright += 1;
            }
        }
    }
    assert!(bright > 300, "{bright} bright pixels in the text box");
    // ... and nothing but the black source below it.
    let mut lit = 0;
    for y in 240..480 {
        for x in 0..640 {
            if px(x, y) > 60 {
                lit += 1;
            }
        }
    }
    assert!(lit < 50, "{lit} lit pixels outside the overlay");

    // Audio: the 440 Hz tone at volume 0.5 (RMS 0.35), through AAC.
    assert!(got.audio.len() >= 16_000 * 3, "{} samples", got.audio.len());
    let tail = &got.audio[got.audio.len() - 16_000..];
    let rms = (tail.iter().map(|s| s * s).sum::<f32>() / tail.len() as f32).sqrt();
    assert!((0.2..0.5).contains(&rms), "audio RMS {rms}");
}

#[test]
fn a_restream_address_that_is_not_loopback_is_refused() {
    let (_d, dir) = tmp();
    let cfg = write(
        &dir,
        "bad.toml",
        "[output]\nrtsp = \"0.0.0.0:8554/out\"\n\n[[stream]]\nname = \"cam\"\n\
         source = { kind = \"test\", duration_s = 1.0 }\n",
    );
    let o = sensorium(&["run", "--config", &cfg]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("output.rtsp: 0.0.0.0:8554 is not a loopback address"),
        "{}",
        stderr(&o)
    );
    let cfg = write(
        &dir,
        "bad2.toml",
        "[output]\nrtsp = \"nowhere\"\n\n[[stream]]\nname = \"cam\"\n\
         source = { kind = \"test\", duration_s = 1.0 }\n",
    );
    let o = sensorium(&["run", "--config", &cfg]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("output.rtsp"), "{}", stderr(&o));
}
