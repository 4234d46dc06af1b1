//! GStreamer's test sources rendered to memory, in process: the raw media of the
//! distillation's `test-sources` clip world (the models crate asks for it through the
//! engine's [`TestMedia`] trait; nothing there links GStreamer or runs a tool).
//!
//! ```text
//! videotestsrc pattern=P num-buffers=N ! video/x-raw,width=W,height=H,framerate=F/1,format=RGB
//!   ! appsink
//! audiotestsrc wave=WAVE freq=HZ volume=V samplesperbuffer=S num-buffers=N
//!   ! audio/x-raw,format=F32LE,rate=16000,channels=1 ! appsink
//! ```

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use sensorium_engine::source::TestMedia;

use crate::error::PipelineError;
use crate::graph::{make, set_f64, set_nick};

/// The engine's [`TestMedia`] over [`test_video`] and [`test_audio`].
#[derive(Clone, Copy, Debug, Default)]
pub struct GstTestMedia;

impl TestMedia for GstTestMedia {
    fn video(
        &self,
        pattern: &str,
        width: u32,
        height: u32,
        fps: u32,
        frames: usize,
    ) -> Result<Vec<u8>, String> {
        test_video(pattern, width, height, fps, frames).map_err(|e| e.to_string())
    }

    fn audio(
        &self,
        wave: &str,
        freq: f64,
        volume: f64,
        samples_per_buffer: usize,
        buffers: usize,
    ) -> Result<Vec<f32>, String> {
        test_audio(wave, freq, volume, samples_per_buffer, buffers).map_err(|e| e.to_string())
    }
}

/// `frames` RGB frames of `videotestsrc pattern=…` at `width`x`height`, frame after frame.
pub fn test_video(
    pattern: &str,
    width: u32,
    height: u32,
    fps: u32,
    frames: usize,
) -> Result<Vec<u8>, PipelineError> {
    crate::init()?;
    let input = format!("videotestsrc pattern={pattern}");
    let src = make("videotestsrc", &input)?;
    set_nick(&src, "pattern", pattern, "videotestsrc pattern")?;
    src.set_property("num-buffers", frames as i32);
    let caps = gst::Caps::builder("video/x-raw")
        .field("format", "RGB")
        .field("width", width as i32)
        .field("height", height as i32)
        .field("framerate", gst::Fraction::new(fps.max(1) as i32, 1))
        .build();
    let bytes = pull_all(src, caps, &input)?;
    let want = frames * (width * height * 3) as usize;
    check_len(&input, bytes.len(), want)?;
    Ok(bytes)
}

/// `buffers x samples_per_buffer` mono 16 kHz samples of `audiotestsrc wave=…`.
pub fn test_audio(
    wave: &str,
    freq: f64,
    volume: f64,
    samples_per_buffer: usize,
    buffers: usize,
) -> Result<Vec<f32>, PipelineError> {
    crate::init()?;
    let input = format!("audiotestsrc wave={wave}");
    let src = make("audiotestsrc", &input)?;
    set_nick(&src, "wave", wave, "audiotestsrc wave")?;
    set_f64(&src, "freq", freq, "audiotestsrc freq")?;
    set_f64(&src, "volume", volume, "audiotestsrc volume")?;
    src.set_property("samplesperbuffer", samples_per_buffer as i32);
    src.set_property("num-buffers", buffers as i32);
    let caps = gst::Caps::builder("audio/x-raw")
        .field("format", "F32LE")
        .field("layout", "interleaved")
        .field("rate", 16_000i32)
        .field("channels", 1i32)
        .build();
    let bytes = pull_all(src, caps, &input)?;
    check_len(&input, bytes.len(), buffers * samples_per_buffer * 4)?;
    // GStreamer 1.22's `ticks` now and then starts a tick with a NaN sample (in one of a few
    // dozen buffers, not reproducibly): such a sample is silence.
    Ok(bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .map(|x| if x.is_finite() { x } else { 0.0 })
        .collect())
}

fn check_len(input: &str, got: usize, want: usize) -> Result<(), PipelineError> {
    if got == want {
        return Ok(());
    }
    Err(PipelineError::Build {
        input: input.into(),
        message: format!("produced {got} bytes, expected {want}"),
    })
}

/// `src ! capsfilter caps=… ! appsink`, played to its end; every buffer's bytes in order.
fn pull_all(src: gst::Element, caps: gst::Caps, input: &str) -> Result<Vec<u8>, PipelineError> {
    let build = |message: String| PipelineError::Build {
        input: input.into(),
        message,
    };
    let pipeline = gst::Pipeline::new();
    let filter = make("capsfilter", input)?;
    filter.set_property("caps", &caps);
    let sink = gst_app::AppSink::builder().sync(false).build();
    pipeline
        .add_many([&src, &filter, sink.upcast_ref()])
        .map_err(|e| build(e.to_string()))?;
    gst::Element::link_many([&src, &filter, sink.upcast_ref()])
        .map_err(|e| build(e.to_string()))?;
    let stop = || {
        let _ = pipeline.set_state(gst::State::Null);
    };
    if let Err(e) = pipeline.set_state(gst::State::Playing) {
        stop();
        return Err(PipelineError::StateChange {
            input: input.into(),
            message: e.to_string(),
        });
    }
    let mut bytes = Vec::new();
    // `pull_sample` returns an error at EOS (or when the pipeline fails: the bus says why).
    while let Ok(sample) = sink.pull_sample() {
        if let Some(map) = sample.buffer().and_then(|b| b.map_readable().ok()) {
            bytes.extend_from_slice(map.as_slice());
        }
    }
    let failed = pipeline.bus().and_then(|bus| {
        bus.pop_filtered(&[gst::MessageType::Error])
            .and_then(|m| match m.view() {
                gst::MessageView::Error(e) => Some(PipelineError::Stream {
                    input: input.into(),
                    element: m
                        .src()
                        .map(|s| s.name().to_string())
                        .unwrap_or_else(|| "?".into()),
                    message: e.error().to_string(),
                }),
                _ => None,
            })
    });
    stop();
    match failed {
        Some(e) => Err(e),
        None => Ok(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_sources_render_exact_sizes_and_real_content() {
        let v = test_video("red", 8, 6, 2, 3).unwrap();
        assert_eq!(v.len(), 3 * 8 * 6 * 3);
        // `red` is pure red, every pixel.
        assert!(v.chunks_exact(3).all(|p| p == [255, 0, 0]), "{:?}", &v[..9]);
        let a = test_audio("sine", 1000.0, 0.5, 800, 2).unwrap();
        assert_eq!(a.len(), 1600);
        let peak = a.iter().fold(0f32, |m, x| m.max(x.abs()));
        assert!((peak - 0.5).abs() < 0.01, "peak {peak}");
    }

    #[test]
    fn every_wave_of_the_distillation_classes_sounds_within_its_volume() {
        for wave in [
            "ticks",
            "white-noise",
            "sine",
            "square",
            "pink-noise",
            "triangle",
            "saw",
        ] {
            let a = test_audio(wave, 1000.0, 0.5, 8000, 6).unwrap();
            assert_eq!(a.len(), 48_000, "{wave}");
            assert!(a.iter().all(|x| x.is_finite()), "{wave}");
            let peak = a.iter().fold(0f32, |m, x| m.max(x.abs()));
            assert!((0.1..=1.0).contains(&peak), "{wave}: peak {peak}");
        }
    }

    #[test]
    fn a_bad_pattern_is_named() {
        let e = test_video("no-such-pattern", 8, 6, 2, 1).unwrap_err();
        assert!(e.to_string().contains("no-such-pattern"), "{e}");
    }
}
