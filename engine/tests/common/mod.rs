//! A synthetic [`SourceFactory`] for runtime tests: each stream plays a scripted source on
//! its own thread (video frames at 2 fps, audio in fixed chunks, optional failure or endless
//! play), counting every send it makes.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use sensorium_engine::config::StreamConfig;
use sensorium_engine::{
    AudioChunk, Config, QueueSender, SourceEvent, SourceFactory, SourceHandle, SourceParams,
    SourceStartError, VideoFrame,
};

#[derive(Clone, Debug)]
pub struct Script {
    /// Frames to play; `None` plays until stopped.
    pub frames: Option<u64>,
    /// Audio samples per chunk.
    pub chunk: usize,
    /// Send `Error` instead of frame `n`.
    pub fail_at: Option<u64>,
    /// Refuse to start.
    pub start_error: Option<String>,
    /// Send a `Discontinuity` before frame `n` (time runs on, as after a re-base).
    pub disc_at: Option<u64>,
}

impl Script {
    pub fn frames(n: u64) -> Self {
        Script {
            frames: Some(n),
            chunk: 1600,
            fail_at: None,
            start_error: None,
            disc_at: None,
        }
    }
    pub fn endless() -> Self {
        Script {
            frames: None,
            ..Script::frames(0)
        }
    }
}

/// Per-stream counters of what the source did.
#[derive(Default, Debug)]
pub struct Pushed {
    pub calls: AtomicU64,
    pub ok: AtomicU64,
    pub done: AtomicBool,
}

#[derive(Default, Clone)]
pub struct SynthFactory {
    pub scripts: HashMap<String, Script>,
    pub pushed: Arc<Mutex<HashMap<String, Arc<Pushed>>>>,
    /// Called by a source after its last send (used to gate slow models).
    pub on_done: Option<crossbeam_channel::Sender<String>>,
}

impl SynthFactory {
    pub fn with(mut self, name: &str, script: Script) -> Self {
        self.scripts.insert(name.into(), script);
        self
    }
    pub fn pushed(&self, name: &str) -> Arc<Pushed> {
        self.pushed
            .lock()
            .get(name)
            .cloned()
            .expect("stream started")
    }
}

struct Handle {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SourceHandle for Handle {
    fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.stop();
    }
}

pub const FPS: f64 = 2.0;
pub const FRAME_NS: u64 = 500_000_000;
pub const FRAME_SAMPLES: usize = 8000;

pub fn video(i: u64) -> SourceEvent {
    SourceEvent::Video(VideoFrame {
        pts: i * FRAME_NS,
        width: 2,
        height: 2,
        rgb: vec![i as u8; 12].into(),
        captured: Instant::now(),
    })
}

impl SourceFactory for SynthFactory {
    fn start(
        &self,
        stream: &StreamConfig,
        _params: &SourceParams,
        out: QueueSender<SourceEvent>,
    ) -> Result<Box<dyn SourceHandle>, SourceStartError> {
        let script = self
            .scripts
            .get(&stream.name)
            .cloned()
            .ok_or_else(|| SourceStartError {
                stream: stream.name.clone(),
                message: "no script".into(),
            })?;
        if let Some(message) = script.start_error.clone() {
            return Err(SourceStartError {
                stream: stream.name.clone(),
                message,
            });
        }
        let pushed = Arc::new(Pushed::default());
        self.pushed
            .lock()
            .insert(stream.name.clone(), pushed.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let done = self.on_done.clone();
        let name = stream.name.clone();
        let thread = std::thread::spawn(move || {
            let send = |ev: SourceEvent| -> bool {
                pushed.calls.fetch_add(1, Ordering::Relaxed);
                let ok = out.send(ev).is_ok();
                if ok {
                    pushed.ok.fetch_add(1, Ordering::Relaxed);
                }
                ok
            };
            for ev in events(&script, &name) {
                if stop2.load(Ordering::Acquire) {
                    return;
                }
                let last = matches!(ev, SourceEvent::Eos | SourceEvent::Error { .. });
                if !send(ev) && !last {
                    return;
                }
            }
            pushed.done.store(true, Ordering::Release);
            if let Some(d) = done {
                let _ = d.send(name);
            }
        });
        Ok(Box::new(Handle {
            stop,
            thread: Some(thread),
        }))
    }
}

/// A config with `streams` as `(name, mode)`, all `kind = "test"` (the factory ignores it).
pub fn config(streams: &[(&str, &str)], extra_engine: &str) -> Config {
    let mut t = format!("[engine]\n{extra_engine}\n");
    for (name, mode) in streams {
        t.push_str(&format!(
            "[[stream]]\nname = \"{name}\"\nmode = \"{mode}\"\nsource = {{ kind = \"test\" }}\n"
        ));
    }
    Config::from_toml_str(&t, "<test>").expect("valid test config")
}

/// The events a script plays, in order (endless scripts never end).
pub fn events(script: &Script, name: &str) -> impl Iterator<Item = SourceEvent> + Send {
    let script = script.clone();
    let name = name.to_string();
    let mut i = 0u64;
    let mut sample = 0usize;
    let mut queue: std::collections::VecDeque<SourceEvent> = Default::default();
    let mut finished = false;
    std::iter::from_fn(move || {
        while queue.is_empty() && !finished {
            if script.frames.is_some_and(|n| i >= n) {
                queue.push_back(SourceEvent::Eos);
                finished = true;
                break;
            }
            if script.fail_at == Some(i) {
                queue.push_back(SourceEvent::Error {
                    message: format!("stream '{name}': synthetic decoder failure at frame {i}"),
                });
                finished = true;
                break;
            }
            if script.disc_at == Some(i) {
                queue.push_back(SourceEvent::Discontinuity {
                    reason: "synthetic reconnect".into(),
                });
            }
            queue.push_back(video(i));
            let end = (i as usize + 1) * FRAME_SAMPLES;
            while sample < end {
                let n = script.chunk.min(end - sample);
                queue.push_back(SourceEvent::Audio(AudioChunk {
                    pts: sample as u64 * 62_500,
                    samples: (sample..sample + n).map(|v| (v + 1) as f32).collect(),
                    captured: Instant::now(),
                }));
                sample += n;
            }
            i += 1;
        }
        queue.pop_front()
    })
}
