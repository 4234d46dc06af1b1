//! How much faster than real time the file source decodes: makes an H.264 + Opus Matroska
//! file of N seconds (default 60, 640x480 at 25 fps, 48 kHz) in a temp dir, runs it through
//! the file source (lossless queue, a consumer that only counts) and prints media seconds
//! per wall second. Run: `cargo run -p sensorium-pipelines --example file_throughput -- 60`.

use std::time::Instant;

use gstreamer as gst;
use gstreamer::prelude::*;
use sensorium_engine::config::{FileSource, SourceConfig, StreamConfig};
use sensorium_engine::{bounded, QueueMode, SourceEvent, SourceParams};
use sensorium_pipelines::Sources;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let secs: u32 = std::env::args().nth(1).map_or(Ok(60), |s| s.parse())?;
    gst::init()?;
    let dir = std::env::temp_dir().join(format!("sensorium-throughput-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("clip.mkv");
    let desc = format!(
        "matroskamux name=m ! filesink location={} \
         videotestsrc pattern=ball num-buffers={} ! video/x-raw,width=640,height=480,framerate=25/1 \
           ! x264enc speed-preset=ultrafast ! h264parse ! queue ! m. \
         audiotestsrc samplesperbuffer=960 num-buffers={} ! audio/x-raw,rate=48000,channels=2 \
           ! opusenc ! queue ! m.",
        path.display(),
        secs * 25,
        secs * 50
    );
    let p = gst::parse::launch(&desc)?;
    p.set_state(gst::State::Playing)?;
    let bus = p.bus().ok_or("no bus")?;
    bus.timed_pop_filtered(None, &[gst::MessageType::Eos, gst::MessageType::Error]);
    p.set_state(gst::State::Null)?;

    let stream = StreamConfig {
        name: "clip".into(),
        source: SourceConfig::File(FileSource {
            path: path.clone(),
            looping: false,
            video: true,
            audio: true,
        }),
        mode: None,
        fps: None,
        width: None,
        height: None,
    };
    let params = SourceParams {
        fps: 2.0,
        width: 224,
        height: 224,
        mode: QueueMode::Lossless,
    };
    let (tx, rx) = bounded(32, params.mode);
    let t0 = Instant::now();
    let _h = Sources::new().start_source(&stream, &params, tx)?;
    let (mut frames, mut samples) = (0u64, 0u64);
    while let Some(ev) = rx.recv() {
        match ev {
            SourceEvent::Video(_) => frames += 1,
            SourceEvent::Audio(a) => samples += a.samples.len() as u64,
            SourceEvent::Eos => break,
            SourceEvent::Error { message } => return Err(message.into()),
            SourceEvent::Discontinuity { .. } => {}
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    println!(
        "{secs} s of 640x480@25 H.264 + 48 kHz stereo Opus -> {frames} frames 224x224@2 fps, \
         {samples} samples @16 kHz in {wall:.2} s wall: {:.1}x real time",
        secs as f64 / wall
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
