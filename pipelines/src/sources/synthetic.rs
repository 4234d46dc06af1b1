//! `synthetic`: a source generated here, without GStreamer: a moving picture at the
//! stream's size and rate and a sine tone at 16 kHz, on an exact timeline.
//!
//! Video frame `i` has pts `round(i·1e9/fps)`; audio chunk `j` holds samples
//! `[j·n, (j+1)·n)` (`n = 16·chunk_ms`) at pts `round(j·n·1e9/16000)`; sample `p` is
//! `volume·sin(2π·freq·p/16000)`. With `duration_s = d` the source delivers the frames whose
//! pts is below `d` and `round(d·16000)` samples, then EOS. A live source hands each item
//! over when the wall clock reaches its end (a frame at its pts, a chunk once its last
//! sample is "recorded"), as a camera and microphone would; a non-live one as fast as the
//! queue takes them.
//!
//! It lets a build without the media stack (the binary carried to a GPU machine) run the
//! whole engine and model stack, and it gives benchmarks a source whose own cost is tiny.

use std::f64::consts::TAU;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sensorium_engine::config::{SceneSource, SyntheticPattern, SyntheticSource};
use sensorium_engine::frame::{AudioChunk, SourceEvent, VideoFrame, AUDIO_RATE};
use sensorium_engine::queue::QueueSender;
use sensorium_engine::scene::{self, SceneTimeline, WorldParams};
use sensorium_engine::source::{SourceHandle, SourceParams, SourceStartError};
use sensorium_engine::stop::StopToken;

const NS_PER_SEC: f64 = 1e9;

/// A running synthetic source; stopping (or dropping) it joins its thread.
pub struct SyntheticHandle {
    stop: StopToken,
    thread: Option<JoinHandle<()>>,
}

impl SourceHandle for SyntheticHandle {
    fn stop(&mut self) {
        self.stop.trigger();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for SyntheticHandle {
    fn drop(&mut self) {
        SourceHandle::stop(self);
    }
}

/// Starts a synthetic source for `stream` on its own thread.
pub fn start(
    stream: &str,
    cfg: &SyntheticSource,
    params: &SourceParams,
    out: QueueSender<SourceEvent>,
) -> Result<SyntheticHandle, SourceStartError> {
    spawn(stream, Generator::new(cfg, params), cfg.is_live, out)
}

/// Starts a `scene` source (the default model's world) for `stream` on its own thread.
pub fn start_scene(
    stream: &str,
    cfg: &SceneSource,
    params: &SourceParams,
    out: QueueSender<SourceEvent>,
) -> Result<SyntheticHandle, SourceStartError> {
    spawn(stream, Generator::scene(cfg, params), cfg.is_live, out)
}

fn spawn(
    stream: &str,
    mut gen: Generator,
    live: bool,
    out: QueueSender<SourceEvent>,
) -> Result<SyntheticHandle, SourceStartError> {
    let stop = StopToken::new();
    let flag = stop.clone();
    let thread = std::thread::Builder::new()
        .name(format!("synthetic-{stream}"))
        .spawn(move || {
            let t0 = Instant::now();
            while !flag.is_triggered() {
                let Some(ready) = gen.next_ready() else {
                    let _ = out.send_until(SourceEvent::Eos, &flag);
                    return;
                };
                // Paced like a live capture; a stop request wakes the wait at once.
                if live && flag.wait_until(t0 + Duration::from_nanos(ready)) {
                    return;
                }
                let Some(ev) = gen.next_event(Instant::now()) else {
                    continue;
                };
                if out.send_until(ev, &flag).is_err() {
                    return; // nobody listens any more
                }
            }
        })
        .map_err(|e| SourceStartError {
            stream: stream.to_owned(),
            message: format!("cannot start the synthetic source thread: {e}"),
        })?;
    Ok(SyntheticHandle {
        stop,
        thread: Some(thread),
    })
}

/// The picture and tone, item by item in the order a live capture would hand them over.
#[derive(Clone, Debug)]
pub struct Generator {
    pattern: SyntheticPattern,
    freq: f64,
    volume: f64,
    fps: f64,
    width: u32,
    height: u32,
    chunk: u64,
    /// Next video frame / first sample of the next chunk; `None` when the medium is off.
    frame: Option<u64>,
    sample: Option<u64>,
    /// Frames with pts below this, samples below `end_sample` (no end: forever).
    end_ns: Option<u64>,
    end_sample: Option<u64>,
    /// The scene world instead of the pattern and tone (`scene` sources).
    scene: Option<Box<SceneTimeline>>,
}

impl Generator {
    pub fn new(cfg: &SyntheticSource, params: &SourceParams) -> Self {
        let fps = if params.fps.is_finite() && params.fps > 0.0 {
            params.fps
        } else {
            1.0
        };
        Self {
            pattern: cfg.pattern,
            freq: cfg.freq,
            volume: cfg.volume,
            fps,
            width: params.width.max(1),
            height: params.height.max(1),
            chunk: (AUDIO_RATE as u64 * u64::from(cfg.chunk_ms.max(1)) / 1000).max(1),
            frame: cfg.video.then_some(0),
            sample: cfg.audio.then_some(0),
            end_ns: cfg.duration_s.map(|d| (d * NS_PER_SEC).round() as u64),
            end_sample: cfg
                .duration_s
                .map(|d| (d * AUDIO_RATE as f64).round() as u64),
            scene: None,
        }
    }

    /// A generator of the scene world: stream `cfg.seed`, drawn at the stream's size.
    pub fn scene(cfg: &SceneSource, params: &SourceParams) -> Self {
        let timing = SyntheticSource {
            video: cfg.video,
            audio: cfg.audio,
            is_live: cfg.is_live,
            duration_s: cfg.duration_s,
            chunk_ms: cfg.chunk_ms,
            ..SyntheticSource::default()
        };
        let mut g = Self::new(&timing, params);
        let aspect = g.width as f64 / g.height as f64;
        g.scene = Some(Box::new(SceneTimeline::new(
            cfg.seed,
            WorldParams {
                window_s: cfg.window_s,
                aspect,
            },
        )));
        g
    }

    fn frame_pts(&self, i: u64) -> u64 {
        (i as f64 * NS_PER_SEC / self.fps).round() as u64
    }

    fn sample_ns(p: u64) -> u64 {
        (p as f64 * NS_PER_SEC / AUDIO_RATE as f64).round() as u64
    }

    /// The next frame (if any is left) as (pts, ready time).
    fn video_item(&self) -> Option<(u64, u64)> {
        let i = self.frame?;
        let pts = self.frame_pts(i);
        (self.end_ns.is_none_or(|e| pts < e)).then_some((pts, pts))
    }

    /// The next chunk (if any is left) as (first sample, length, ready time).
    fn audio_item(&self) -> Option<(u64, u64, u64)> {
        let p = self.sample?;
        let end = self
            .end_sample
            .map_or(p + self.chunk, |e| e.min(p + self.chunk));
        (end > p).then(|| (p, end - p, Self::sample_ns(end)))
    }

    /// Running time (ns) at which the next item is complete; `None` at the end.
    pub fn next_ready(&self) -> Option<u64> {
        match (self.video_item(), self.audio_item()) {
            (Some((_, v)), Some((_, _, a))) => Some(v.min(a)),
            (Some((_, v)), None) => Some(v),
            (None, Some((_, _, a))) => Some(a),
            (None, None) => None,
        }
    }

    /// The next item, stamped as captured at `now`; `None` at the end.
    pub fn next_event(&mut self, now: Instant) -> Option<SourceEvent> {
        let video = self.video_item();
        let audio = self.audio_item();
        let take_video = match (video, audio) {
            (Some((_, v)), Some((_, _, a))) => v <= a,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return None,
        };
        if take_video {
            let i = self.frame.unwrap_or(0);
            self.frame = Some(i + 1);
            let pts = self.frame_pts(i);
            let rgb = match &mut self.scene {
                Some(tl) => {
                    scene::render::picture(tl, pts as f64 / NS_PER_SEC, i, self.width, self.height)
                }
                None => self.picture(i),
            };
            Some(SourceEvent::Video(VideoFrame {
                pts,
                width: self.width,
                height: self.height,
                rgb: rgb.into(),
                captured: now,
            }))
        } else {
            let (p, n, _) = audio?;
            self.sample = Some(p + n);
            let samples: Vec<f32> = match &mut self.scene {
                Some(tl) => scene::render::audio(tl, p, n as usize),
                None => (p..p + n).map(|q| self.tone(q)).collect(),
            };
            Some(SourceEvent::Audio(AudioChunk {
                pts: Self::sample_ns(p),
                samples: samples.into(),
                captured: now,
            }))
        }
    }

    /// Sample `p` of the tone.
    pub fn tone(&self, p: u64) -> f32 {
        // The phase is reduced before the sine so precision does not decay over hours.
        let cycles = (self.freq * p as f64 / AUDIO_RATE as f64).fract();
        (self.volume * (TAU * cycles).sin()) as f32
    }

    /// Frame `i`, RGB24 rows: a gradient (red across, green down, scrolled one column per
    /// frame), with `ball` a white disc bouncing left and right over 4 seconds.
    pub fn picture(&self, i: u64) -> Vec<u8> {
        let (w, h) = (self.width as u64, self.height as u64);
        let shift = match self.pattern {
            SyntheticPattern::Gradient => i % w,
            SyntheticPattern::Ball => 0,
        };
        let ball = (self.pattern == SyntheticPattern::Ball).then(|| {
            let r = (w.min(h) / 6).max(1) as f64;
            let period = (4.0 * self.fps).max(1.0);
            let phase = (i as f64 / period).fract();
            let tri = 1.0 - (2.0 * phase - 1.0).abs();
            let cx = r + (w as f64 - 2.0 * r).max(0.0) * tri;
            (cx, h as f64 / 2.0, r)
        });
        let mut rgb = Vec::with_capacity((w * h * 3) as usize);
        for y in 0..h {
            for x in 0..w {
                let inside = ball.is_some_and(|(cx, cy, r)| {
                    let (dx, dy) = (x as f64 + 0.5 - cx, y as f64 + 0.5 - cy);
                    dx * dx + dy * dy <= r * r
                });
                if inside {
                    rgb.extend_from_slice(&[255, 255, 255]);
                } else {
                    let red = ((x + shift) % w) * 255 / w.max(2).saturating_sub(1).max(1);
                    let green = y * 255 / h.max(2).saturating_sub(1).max(1);
                    rgb.extend_from_slice(&[red.min(255) as u8, green.min(255) as u8, 96]);
                }
            }
        }
        rgb
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sensorium_engine::queue::{bounded, QueueMode};

    fn params(fps: f64) -> SourceParams {
        SourceParams {
            fps,
            width: 8,
            height: 6,
            mode: QueueMode::Lossless,
        }
    }

    fn finite(d: f64) -> SyntheticSource {
        SyntheticSource {
            is_live: false,
            duration_s: Some(d),
            ..SyntheticSource::default()
        }
    }

    fn drain(cfg: &SyntheticSource, p: &SourceParams) -> Vec<SourceEvent> {
        let mut g = Generator::new(cfg, p);
        let mut out = Vec::new();
        while let Some(ev) = g.next_event(Instant::now()) {
            out.push(ev);
        }
        out
    }

    #[test]
    fn exact_timeline_for_a_finite_source() {
        // 1.01 s at 5 fps with 30 ms chunks: frames at 0, 200, ... 1000 ms (6), and 16160
        // samples in 33 chunks of 480 and one of 320.
        let cfg = SyntheticSource {
            chunk_ms: 30,
            ..finite(1.01)
        };
        let events = drain(&cfg, &params(5.0));
        let frames: Vec<u64> = events
            .iter()
            .filter_map(|e| match e {
                SourceEvent::Video(f) => Some(f.pts),
                _ => None,
            })
            .collect();
        assert_eq!(
            frames,
            vec![
                0,
                200_000_000,
                400_000_000,
                600_000_000,
                800_000_000,
                1_000_000_000
            ]
        );
        let chunks: Vec<&AudioChunk> = events
            .iter()
            .filter_map(|e| match e {
                SourceEvent::Audio(a) => Some(a),
                _ => None,
            })
            .collect();
        assert_eq!(chunks.len(), 34);
        let mut next = 0u64;
        for c in &chunks {
            assert_eq!(c.pts, next * 62_500, "chunks are contiguous");
            next += c.samples.len() as u64;
        }
        assert_eq!(next, 16_160);
        assert_eq!(chunks[33].samples.len(), 320);
        // The tone: 440 Hz at 0.5, sample 4 is 0.5·sin(2π·440·4/16000).
        let want = 0.5 * (TAU * 440.0 * 4.0 / 16000.0).sin();
        assert!((f64::from(chunks[0].samples[4]) - want).abs() < 1e-6);
        // Items come in the order they are complete: a frame at its pts, a chunk at its end.
        let ready: Vec<u64> = events
            .iter()
            .map(|e| match e {
                SourceEvent::Video(f) => f.pts,
                SourceEvent::Audio(a) => a.pts + a.samples.len() as u64 * 62_500,
                _ => unreachable!(),
            })
            .collect();
        assert!(ready.windows(2).all(|w| w[0] <= w[1]), "{ready:?}");
    }

    #[test]
    fn pictures_move_and_have_the_stream_size() {
        let g = Generator::new(&finite(1.0), &params(2.0));
        let (a, b) = (g.picture(0), g.picture(1));
        assert_eq!(a.len(), 8 * 6 * 3);
        assert_ne!(a, b, "the ball moves between frames");
        let grad = Generator::new(
            &SyntheticSource {
                pattern: SyntheticPattern::Gradient,
                ..finite(1.0)
            },
            &params(2.0),
        );
        // Column 0 of frame 1 shows what column 1 of frame 0 showed.
        assert_eq!(grad.picture(1)[0..3], grad.picture(0)[3..6]);
    }

    #[test]
    fn audio_only_and_video_only() {
        let audio = drain(
            &SyntheticSource {
                video: false,
                ..finite(0.5)
            },
            &params(2.0),
        );
        assert!(audio.iter().all(|e| matches!(e, SourceEvent::Audio(_))));
        let video = drain(
            &SyntheticSource {
                audio: false,
                ..finite(0.5)
            },
            &params(2.0),
        );
        assert_eq!(video.len(), 1);
        assert!(matches!(video[0], SourceEvent::Video(_)));
    }

    #[test]
    fn source_thread_ends_with_eos_and_a_live_one_stops_on_request() {
        let (tx, rx) = bounded(4, QueueMode::Lossless);
        let mut h = start("s", &finite(0.2), &params(10.0), tx).unwrap();
        let mut n = 0;
        loop {
            match rx.recv() {
                Some(SourceEvent::Eos) => break,
                Some(_) => n += 1,
                None => panic!("queue closed before EOS"),
            }
        }
        assert_eq!(n, 2 + 10, "2 frames and 10 chunks of 20 ms");
        h.stop();

        let (tx, rx) = bounded(4, QueueMode::Realtime);
        let mut h = start("s", &SyntheticSource::default(), &params(10.0), tx).unwrap();
        assert!(rx.recv().is_some(), "a live source delivers");
        h.stop(); // returns: the paced thread noticed the request
    }
}
