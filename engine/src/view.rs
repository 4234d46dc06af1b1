//! The view hub: what the engine perceives, offered to whoever watches (the live web view,
//! the annotated RTSP re-stream) without ever waiting for them.
//!
//! Stages [`publish`](ViewHub::publish) synced frames (the picture after scaling, the audio
//! the model hears), window records and answers; each watcher holds a [`Subscription`] with
//! its own bounded queue. Publishing never blocks: an event that finds a watcher's queue
//! full is dropped for that watcher alone and counted on its subscription, so a stalled
//! viewer costs the pipeline one failed `try_send` per event. With nobody watching a stream
//! its frames are not even cloned ([`ViewHub::watched`]).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use parking_lot::Mutex;
use serde_json::Value;

use crate::frame::{StreamId, SyncedFrame};

/// Something a watcher may see.
#[derive(Clone, Debug)]
pub enum ViewEvent {
    /// A synced frame: picture (after scaling: what the encoders see) and audio.
    Frame(Arc<SyncedFrame>),
    /// A window's record, as written to the output.
    Window {
        stream: StreamId,
        record: Arc<Value>,
    },
    /// One token of a scheduled answer as it is decoded.
    Token {
        stream: StreamId,
        window: u64,
        question: Arc<str>,
        index: usize,
        text: String,
    },
    /// A finished answer's record (its output line).
    Answer {
        stream: StreamId,
        record: Arc<Value>,
    },
}

impl ViewEvent {
    pub fn stream(&self) -> &str {
        match self {
            Self::Frame(f) => &f.stream,
            Self::Window { stream, .. }
            | Self::Token { stream, .. }
            | Self::Answer { stream, .. } => stream,
        }
    }
}

/// Counter: events a watcher's full queue dropped (`stream`).
pub const VIEW_DROPPED: &str = "sensorium_view_events_dropped_total";

/// Called after an event was queued for a watcher (an async watcher wakes its task).
pub type Waker = Arc<dyn Fn() + Send + Sync>;

struct Watcher {
    id: u64,
    stream: Option<String>,
    frames: bool,
    tx: Sender<ViewEvent>,
    wake: Option<Waker>,
    dropped: Arc<AtomicU64>,
    /// Frames queued for this watcher, and how many it may have queued.
    frames_queued: Arc<AtomicUsize>,
    max_frames: usize,
}

#[derive(Default)]
struct Inner {
    watchers: Mutex<Vec<Watcher>>,
    /// Watchers that take frames, for the publisher's fast path.
    frame_watchers: AtomicUsize,
    next_id: AtomicU64,
    streams: Mutex<Vec<String>>,
}

/// Shared by the runtime, the answer service's output and the watchers; cheap to clone.
#[derive(Clone, Default)]
pub struct ViewHub(Arc<Inner>);

/// What a watcher wants.
#[derive(Clone, Debug)]
pub struct Interest {
    /// One stream, or all.
    pub stream: Option<String>,
    /// Frames too (pictures and audio), or records and answers only.
    pub frames: bool,
    /// Events queued for this watcher at most; more are dropped (and counted).
    pub capacity: usize,
    /// Of which frames at most (pictures are the large events): a frame past this is
    /// dropped while records and answers still get through.
    pub max_frames: usize,
}

/// A watcher's end: events arrive on [`events`](Self::events); dropping it unsubscribes.
pub struct Subscription {
    id: u64,
    rx: Receiver<ViewEvent>,
    dropped: Arc<AtomicU64>,
    frames_queued: Arc<AtomicUsize>,
    hub: Weak<Inner>,
}

impl Subscription {
    fn took(&self, ev: ViewEvent) -> ViewEvent {
        if matches!(ev, ViewEvent::Frame(_)) {
            self.frames_queued.fetch_sub(1, Ordering::Relaxed);
        }
        ev
    }

    /// The next queued event, if any.
    pub fn try_recv(&self) -> Option<ViewEvent> {
        self.rx.try_recv().ok().map(|ev| self.took(ev))
    }

    /// The next event, waiting at most `d`.
    pub fn recv_timeout(&self, d: std::time::Duration) -> Result<ViewEvent, RecvTimeoutError> {
        self.rx.recv_timeout(d).map(|ev| self.took(ev))
    }

    /// Events queued.
    pub fn len(&self) -> usize {
        self.rx.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    /// Events dropped for this watcher because its queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(inner) = self.hub.upgrade() {
            let mut w = inner.watchers.lock();
            if let Some(i) = w.iter().position(|w| w.id == self.id) {
                if w.remove(i).frames {
                    inner.frame_watchers.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
    }
}

impl ViewHub {
    pub fn new() -> Self {
        Self::default()
    }

    /// The streams of the run, in config order (the view's index).
    pub fn set_streams(&self, names: Vec<String>) {
        *self.0.streams.lock() = names;
    }

    pub fn streams(&self) -> Vec<String> {
        self.0.streams.lock().clone()
    }

    pub fn subscribe(&self, interest: Interest, wake: Option<Waker>) -> Subscription {
        let (tx, rx) = crossbeam_channel::bounded(interest.capacity.max(1));
        let id = self.0.next_id.fetch_add(1, Ordering::Relaxed);
        let dropped = Arc::new(AtomicU64::new(0));
        let frames_queued = Arc::new(AtomicUsize::new(0));
        if interest.frames {
            self.0.frame_watchers.fetch_add(1, Ordering::Relaxed);
        }
        self.0.watchers.lock().push(Watcher {
            id,
            stream: interest.stream,
            frames: interest.frames,
            tx,
            wake,
            dropped: dropped.clone(),
            frames_queued: frames_queued.clone(),
            max_frames: interest.max_frames.max(1),
        });
        Subscription {
            id,
            rx,
            dropped,
            frames_queued,
            hub: Arc::downgrade(&self.0),
        }
    }

    /// Whether anyone takes frames (of any stream): the publisher's cheap check before it
    /// clones a frame.
    pub fn watched(&self) -> bool {
        self.0.frame_watchers.load(Ordering::Relaxed) > 0
    }

    /// Offers `event` to every interested watcher; never blocks. Returns how many watchers
    /// dropped it (their queue was full).
    pub fn publish(&self, event: ViewEvent) -> u64 {
        let is_frame = matches!(event, ViewEvent::Frame(_));
        let mut full = 0;
        let mut wake = Vec::new();
        {
            let mut watchers = self.0.watchers.lock();
            let mut gone = Vec::new();
            for (i, w) in watchers.iter().enumerate() {
                if (is_frame && !w.frames)
                    || w.stream.as_deref().is_some_and(|s| s != event.stream())
                {
                    continue;
                }
                if is_frame && w.frames_queued.load(Ordering::Relaxed) >= w.max_frames {
                    w.dropped.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!(VIEW_DROPPED, "stream" => event.stream().to_owned())
                        .increment(1);
                    full += 1;
                    wake.extend(w.wake.clone());
                    continue;
                }
                match w.tx.try_send(event.clone()) {
                    Ok(()) => {
                        if is_frame {
                            w.frames_queued.fetch_add(1, Ordering::Relaxed);
                        }
                        wake.extend(w.wake.clone())
                    }
                    Err(TrySendError::Full(_)) => {
                        w.dropped.fetch_add(1, Ordering::Relaxed);
                        metrics::counter!(VIEW_DROPPED, "stream" => event.stream().to_owned())
                            .increment(1);
                        full += 1;
                        // Wake it anyway: it may be behind because it slept.
                        wake.extend(w.wake.clone());
                    }
                    Err(TrySendError::Disconnected(_)) => gone.push(i),
                }
            }
            for i in gone.into_iter().rev() {
                if watchers.remove(i).frames {
                    self.0.frame_watchers.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
        for w in wake {
            w();
        }
        full
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(stream: &str, i: u64) -> ViewEvent {
        ViewEvent::Window {
            stream: stream.into(),
            record: Arc::new(serde_json::json!({ "index": i })),
        }
    }

    #[test]
    fn a_full_watcher_loses_events_alone() {
        let hub = ViewHub::new();
        let slow = hub.subscribe(
            Interest {
                stream: None,
                frames: false,
                capacity: 2,
                max_frames: 2,
            },
            None,
        );
        let woken = Arc::new(AtomicU64::new(0));
        let w2 = woken.clone();
        let fast = hub.subscribe(
            Interest {
                stream: Some("a".into()),
                frames: false,
                capacity: 100,
                max_frames: 100,
            },
            Some(Arc::new(move || {
                w2.fetch_add(1, Ordering::Relaxed);
            })),
        );
        let mut full = 0;
        for i in 0..10 {
            full += hub.publish(record("a", i));
        }
        hub.publish(record("b", 0));
        assert_eq!(full, 8);
        // b's record found slow's queue full too.
        assert_eq!(slow.dropped(), 9);
        assert_eq!(slow.len(), 2);
        assert_eq!(fast.dropped(), 0);
        assert_eq!(fast.len(), 10, "stream b is not fast's");
        assert_eq!(woken.load(Ordering::Relaxed), 10);
        assert!(!hub.watched(), "nobody takes frames");
        drop(slow);
        drop(fast);
        assert!(hub.0.watchers.lock().is_empty());
    }

    #[test]
    fn frame_watchers_are_counted_and_leave() {
        let hub = ViewHub::new();
        let s = hub.subscribe(
            Interest {
                stream: None,
                frames: true,
                capacity: 1,
                max_frames: 1,
            },
            None,
        );
        assert!(hub.watched());
        drop(s);
        assert!(!hub.watched());
    }

    #[test]
    fn frames_past_their_bound_are_dropped_while_records_pass() {
        let hub = ViewHub::new();
        let s = hub.subscribe(
            Interest {
                stream: None,
                frames: true,
                capacity: 100,
                max_frames: 3,
            },
            None,
        );
        let frame = |i: u64| {
            ViewEvent::Frame(Arc::new(SyncedFrame {
                stream: "a".into(),
                index: i,
                t: 0,
                duration: 1,
                video: None,
                audio: Arc::from(vec![0f32; 4]),
                has_video: false,
                has_audio: true,
                captured: None,
                features: None,
                timing: Default::default(),
            }))
        };
        for i in 0..5 {
            hub.publish(frame(i));
            hub.publish(record("a", i));
        }
        assert_eq!(s.dropped(), 2, "frames 3 and 4");
        assert_eq!(s.len(), 8);
        // Taking a frame makes room for the next one.
        let mut frames = 0;
        while let Some(ev) = s.try_recv() {
            frames += usize::from(matches!(ev, ViewEvent::Frame(_)));
        }
        assert_eq!(frames, 3);
        hub.publish(frame(5));
        assert!(matches!(s.try_recv(), Some(ViewEvent::Frame(_))));
    }
}
