//! Per-stream audio-video synchroniser: turns a source's video frames and audio chunks (in
//! any chunking, possibly late or out of order) into [`SyncedFrame`]s on a fixed fps grid,
//! each carrying exactly the audio samples of its frame period.
//!
//! # Rules (the contract the tests check)
//!
//! * **Grid.** A segment (the stream from its start or from a discontinuity) is anchored at
//!   `t0`: the pts of the first video frame when the stream expects video, otherwise the
//!   earliest audio pts seen within the latency bound. Frame `i` of the segment covers
//!   `[t0 + round(i·1e9/fps), t0 + round((i+1)·1e9/fps))`; frame indices are contiguous
//!   across segments.
//! * **Samples.** Sample `p` of a segment sits at `t0 + p/16000 s`. Frame `i` owns samples
//!   `[round(i·16000/fps), round((i+1)·16000/fps))`, so consecutive frames tile the sample
//!   axis: no sample is lost or duplicated between frames.
//! * **Audio placement trusts timestamps.** A chunk starts at sample
//!   `round((pts − t0)·16000/1e9)`, whatever came before it; the samples inside a chunk are
//!   contiguous. The tolerance is therefore half a sample: a chunk whose timestamp is within
//!   ½ sample of where the previous chunk ended continues it seamlessly; beyond that it is
//!   re-anchored on its own timestamp. So drift between the sample count and the clock never
//!   accumulates (alignment error ≤ 0.5 sample at each chunk start, plus the drift inside one
//!   chunk). A wider tolerance would be ambiguous: a chunk one sample after the frontier may
//!   be drift, or the next chunk with a 1-sample chunk still in flight. What drift costs: a gap between chunks is zeros, and a sample whose
//!   position is already filled is dropped (first writer wins) and counted in
//!   [`SyncStats::overlap_audio_samples`]. Out-of-order chunks land where their pts says.
//!   Audio for a frame that was already emitted is dropped and counted
//!   ([`SyncStats::late_audio_samples`]).
//! * **Video snapping.** A video frame goes to the nearest grid slot,
//!   `round((pts − t0)·fps/1e9)`. A second frame for a slot is a duplicate (dropped,
//!   counted); a frame for an emitted slot is late (dropped, counted). Video is assumed to
//!   arrive in pts order (one appsink), so a frame for a later slot proves that earlier empty
//!   slots have no video: they are emitted with `has_video = false` (no frame is invented by
//!   repeating the previous one).
//! * **When a frame is emitted.** As soon as its audio is complete (every sample filled) and
//!   its video is decided — or, bounding live latency, once the stream's watermark (the
//!   latest running time seen: end of an audio chunk or a video pts) has passed the frame's
//!   end by `max_latency_ns`; the frame then goes out with zeros where audio is missing and
//!   is counted in [`SyncStats::forced_frames`]. Data that arrives no later than
//!   `max_latency_ns` behind the watermark is therefore never lost. The audio ring holds at
//!   most [`SyncConfig::ring_samples`]; a chunk that would overflow it forces the oldest
//!   frames out first, so memory stays bounded whatever the source does.
//! * **Non-live sources** ([`SyncConfig::non_live`]: files, URIs). Their running time is
//!   not wall time, and decoders and queues let one modality run seconds ahead of the
//!   other, so the latency bound is measured against the *slowest* expected modality: a
//!   frame is forced out only once every expected modality has passed its end by
//!   `max_latency_ns` (an expected modality that has delivered nothing never forces). Memory
//!   stays bounded by the (larger) audio ring, a cap on buffered video frames of the same
//!   duration, and a cap on data waiting for the grid's anchor: when a modality the config
//!   expects is absent from the input (a video-only file with `audio = true`), frames go out
//!   through these caps, with `has_audio`/`has_video` false for what is missing.
//! * **Discontinuity / EOS.** Everything buffered is emitted (partial last frame padded with
//!   zeros) and the segment ends; after a discontinuity the next data anchors a new grid.
//!   Time never runs backwards across segments: the flushed last frame ends on the old grid
//!   (possibly after the last data, its tail padded), and a new segment whose first data
//!   starts before that end is shifted later by the difference: every timestamp of the
//!   segment moves by the same amount (counted in [`SyncStats::segment_shift_ns`]), so
//!   nothing of it is lost and frames never overlap. A segment's grid never starts before
//!   the previous segment's last frame ended.
//! * **Jumps.** A timestamp more than [`SyncConfig::max_gap_ns`] ahead of the watermark or
//!   behind it (a camera's clock reset, a file whose timestamps jump backwards, a corrupt
//!   header) starts a new segment as a discontinuity would (counted in
//!   [`SyncStats::jumps`]): the stream keeps going, time stays monotonic, and no run of
//!   filler frames is made up for the gap. A timestamp past [`MAX_RUNNING_TIME`] (146 years)
//!   is not a time at all: the data is dropped and counted
//!   ([`SyncStats::invalid_timestamps`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use ringbuf::traits::{Consumer, Observer, Producer};
use ringbuf::HeapRb;

use crate::frame::{AudioChunk, SourceEvent, StreamId, SyncedFrame, VideoFrame, AUDIO_RATE};

const NS: f64 = 1e9;

/// Settings of one stream's synchroniser.
#[derive(Clone, Debug, PartialEq)]
pub struct SyncConfig {
    /// Frame rate of the output grid.
    pub fps: f64,
    /// Wait for video before emitting a frame (within the latency bound).
    pub expect_video: bool,
    /// Wait for audio before emitting a frame (within the latency bound).
    pub expect_audio: bool,
    /// How far (running time, ns) the watermark may run past a frame's end before the frame
    /// is emitted with whatever data it has. Must cover the source's audio chunk length plus
    /// its worst lateness for output to be exact.
    pub max_latency_ns: u64,
    /// Capacity of the audio ring, samples.
    pub ring_samples: usize,
    /// A live source (running time follows the wall clock): the latency bound is measured
    /// against the latest data of any modality. `false` ([`SyncConfig::non_live`]): against
    /// the slowest expected modality.
    pub live: bool,
    /// Largest jump of a timestamp away from the watermark (either way) that is still the
    /// same timeline; a larger one starts a new segment.
    pub max_gap_ns: u64,
}

/// Running times beyond this (2^62 ns, about 146 years) are treated as invalid.
pub const MAX_RUNNING_TIME: u64 = 1 << 62;

/// Default [`SyncConfig::max_gap_ns`]: 60 s, far beyond any skew between modalities that
/// decoders or the non-live ring allow.
pub const DEFAULT_MAX_GAP_NS: u64 = 60_000_000_000;

impl SyncConfig {
    /// A config whose ring holds the latency bound plus two frames plus one second.
    pub fn new(fps: f64, expect_video: bool, expect_audio: bool, max_latency_ns: u64) -> Self {
        let latency_samples = (max_latency_ns as f64 * AUDIO_RATE as f64 / NS).ceil() as usize;
        let frame_samples = (AUDIO_RATE as f64 / fps).ceil() as usize;
        Self {
            fps,
            expect_video,
            expect_audio,
            max_latency_ns,
            ring_samples: latency_samples + 2 * frame_samples + AUDIO_RATE as usize,
            live: true,
            max_gap_ns: DEFAULT_MAX_GAP_NS,
        }
    }

    /// The same for a non-live source (file, URI): waits for the slowest modality, with an
    /// audio ring [`NON_LIVE_EXTRA_RING_S`] seconds longer to absorb the skew between
    /// modalities that decoders and queues introduce.
    pub fn non_live(mut self) -> Self {
        self.live = false;
        self.ring_samples += NON_LIVE_EXTRA_RING_S * AUDIO_RATE as usize;
        self
    }
}

/// Extra seconds of audio ring for non-live sources (1.25 MB per stream at 16 kHz): how far
/// one modality may run ahead of the other before frames are forced out incomplete.
pub const NON_LIVE_EXTRA_RING_S: usize = 10;

/// What the synchroniser did with its input, for metrics and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Frames emitted.
    pub frames: u64,
    pub video_in: u64,
    pub audio_samples_in: u64,
    /// Samples that made it into an emitted frame.
    pub audio_samples_placed: u64,
    /// Samples that arrived after their frame was emitted (or before the segment start).
    pub late_audio_samples: u64,
    /// Samples whose position was already filled (overlapping chunks, drift).
    pub overlap_audio_samples: u64,
    pub late_video_frames: u64,
    pub duplicate_video_frames: u64,
    /// Frames emitted by the latency bound or ring overflow with some data still missing.
    pub forced_frames: u64,
    /// Frames forced out because a chunk would have overflowed the ring.
    pub overflow_frames: u64,
    pub discontinuities: u64,
    /// Total time (ns) by which segments were shifted later so as not to start before the
    /// end of the previous segment's last frame.
    pub segment_shift_ns: u64,
    /// Timestamps that jumped more than `max_gap_ns` (each started a new segment).
    pub jumps: u64,
    /// Events dropped for a timestamp past [`MAX_RUNNING_TIME`].
    pub invalid_timestamps: u64,
}

#[derive(Clone, Copy, Default)]
struct Slot {
    v: f32,
    filled: bool,
}

enum Pending {
    Video(VideoFrame),
    Audio(AudioChunk),
}

/// The synchroniser of one stream. Feed it events, collect frames from `out`.
pub struct Synchroniser {
    stream: StreamId,
    cfg: SyncConfig,
    period_ns: f64,
    samples_per_frame: f64,
    /// Global index of the next frame to emit.
    next_index: u64,
    /// Global index of the segment's frame 0.
    seg_base: u64,
    t0: Option<u64>,
    pending: Vec<Pending>,
    pending_min: Option<u64>,
    /// Samples from `sample_bound(next slot)` on; `filled` tells real audio from holes.
    ring: HeapRb<Slot>,
    /// Number of filled samples at the head of `ring`, without a hole.
    contig: usize,
    video: BTreeMap<u64, VideoFrame>,
    max_video_slot: Option<u64>,
    /// (start, end) sample positions of buffered chunks with their capture time.
    captures: Vec<(u64, u64, Instant)>,
    watermark: Option<u64>,
    /// Latest running time per modality (non-live streams decide on the slower one).
    video_mark: Option<u64>,
    audio_mark: Option<u64>,
    /// Audio samples waiting in `pending` for the anchor.
    pending_samples: usize,
    /// End (running time) of the latest frame emitted: no later segment starts before it.
    floor: u64,
    /// Added to every timestamp of the current segment; `None` until its first data.
    shift: Option<u64>,
    stats: SyncStats,
}

impl Synchroniser {
    pub fn new(stream: StreamId, mut cfg: SyncConfig) -> Self {
        // A stream that expects nothing would never decide a frame; wait for audio then.
        if !cfg.expect_audio && !cfg.expect_video {
            cfg.expect_audio = true;
        }
        let fps = if cfg.fps.is_finite() && cfg.fps > 0.0 {
            cfg.fps
        } else {
            1.0
        };
        Self {
            stream,
            period_ns: NS / fps,
            samples_per_frame: AUDIO_RATE as f64 / fps,
            ring: HeapRb::new(cfg.ring_samples.max(1)),
            cfg,
            next_index: 0,
            seg_base: 0,
            t0: None,
            pending: Vec::new(),
            pending_min: None,
            contig: 0,
            video: BTreeMap::new(),
            max_video_slot: None,
            captures: Vec::new(),
            watermark: None,
            video_mark: None,
            audio_mark: None,
            pending_samples: 0,
            floor: 0,
            shift: None,
            stats: SyncStats::default(),
        }
    }

    pub fn stats(&self) -> &SyncStats {
        &self.stats
    }

    pub fn config(&self) -> &SyncConfig {
        &self.cfg
    }

    /// Index of the next frame that will be emitted.
    pub fn next_index(&self) -> u64 {
        self.next_index
    }

    /// Feeds one source event. Returns `true` when the event ends the stream (EOS, error);
    /// the remaining frames have then been flushed into `out`.
    pub fn push_event(&mut self, event: SourceEvent, out: &mut Vec<SyncedFrame>) -> bool {
        match event {
            SourceEvent::Video(f) => self.push_video(f, out),
            SourceEvent::Audio(c) => self.push_audio(c, out),
            SourceEvent::Discontinuity { .. } => self.discontinuity(out),
            SourceEvent::Eos | SourceEvent::Error { .. } => {
                self.finish(out);
                return true;
            }
        }
        false
    }

    pub fn push_video(&mut self, mut frame: VideoFrame, out: &mut Vec<SyncedFrame>) {
        self.stats.video_in += 1;
        let Some(t) = self.timeline(frame.pts, out) else {
            return;
        };
        frame.pts = t;
        self.raise_watermark(frame.pts);
        self.video_mark = Some(self.video_mark.map_or(frame.pts, |m| m.max(frame.pts)));
        if self.t0.is_none() {
            if self.cfg.expect_video {
                let pts = frame.pts;
                self.anchor(pts, out);
            } else {
                self.pend(frame.pts, Pending::Video(frame), out);
                return;
            }
        }
        self.place_video(frame);
        self.drain(out, false);
        // Non-live memory bound: video buffered for frames whose audio never comes.
        while self.video.len() > self.video_cap() {
            self.force_one(out);
        }
    }

    /// Most video frames buffered: as many as the audio ring's duration covers.
    fn video_cap(&self) -> usize {
        ((self.ring.capacity().get() as f64 / self.samples_per_frame).ceil() as usize).max(2)
    }

    /// The running time that decides lateness: the latest data of any modality (live), or of
    /// the slowest expected modality (non-live; `None` until each has delivered something).
    fn decided_mark(&self) -> Option<u64> {
        if self.cfg.live {
            return self.watermark;
        }
        let v = self.cfg.expect_video.then_some(self.video_mark);
        let a = self.cfg.expect_audio.then_some(self.audio_mark);
        match (v, a) {
            (Some(v), Some(a)) => v.zip(a).map(|(v, a)| v.min(a)),
            (Some(v), None) => v,
            (None, Some(a)) => a,
            (None, None) => self.watermark,
        }
    }

    pub fn push_audio(&mut self, mut chunk: AudioChunk, out: &mut Vec<SyncedFrame>) {
        self.stats.audio_samples_in += chunk.samples.len() as u64;
        let Some(t) = self.timeline(chunk.pts, out) else {
            return;
        };
        chunk.pts = t;
        let end = chunk
            .pts
            .saturating_add((chunk.samples.len() as f64 * NS / AUDIO_RATE as f64) as u64);
        self.raise_watermark(end);
        self.audio_mark = Some(self.audio_mark.map_or(end, |m| m.max(end)));
        if self.t0.is_none() {
            self.pend(chunk.pts, Pending::Audio(chunk), out);
            return;
        }
        self.place_audio(&chunk, out);
        self.drain(out, false);
    }

    /// The segment time of a source timestamp, after starting a new segment if it jumped;
    /// `None` for a timestamp that is no time at all.
    fn timeline(&mut self, pts: u64, out: &mut Vec<SyncedFrame>) -> Option<u64> {
        if pts > MAX_RUNNING_TIME {
            self.stats.invalid_timestamps += 1;
            return None;
        }
        let t = self.segment_time(pts);
        let gap = self.cfg.max_gap_ns;
        let jumped = self
            .watermark
            .is_some_and(|w| t > w.saturating_add(gap) || t.saturating_add(gap) < w);
        if !jumped {
            return Some(t);
        }
        self.stats.jumps += 1;
        self.flush(out);
        Some(self.segment_time(pts))
    }

    /// Maps a source timestamp into the current segment: the segment's first data fixes the
    /// shift that keeps it from starting before the previous segment's last frame ended.
    fn segment_time(&mut self, pts: u64) -> u64 {
        let shift = *self.shift.get_or_insert_with(|| {
            let shift = self.floor.saturating_sub(pts);
            self.stats.segment_shift_ns = self.stats.segment_shift_ns.saturating_add(shift);
            shift
        });
        pts.saturating_add(shift)
    }

    /// The latest running time seen (end of an audio chunk, or a video pts), if any.
    pub fn watermark(&self) -> Option<u64> {
        self.watermark
    }

    /// Declares that the stream has reached running time `t` without data (a live source
    /// gone quiet): frames that are `max_latency_ns` behind `t` are emitted with what they
    /// have. The runtime calls this for realtime streams from wall time, so live latency
    /// stays bounded even when a source stops delivering altogether.
    pub fn advance_to(&mut self, t: u64, out: &mut Vec<SyncedFrame>) {
        if !self.cfg.live || self.watermark.is_none_or(|w| t <= w) {
            return;
        }
        self.raise_watermark(t);
        if self.t0.is_none() {
            if let Some(min) = self.pending_min {
                if t >= min.saturating_add(self.cfg.max_latency_ns) {
                    self.anchor(min, out);
                }
            }
        }
        self.drain(out, false);
    }

    /// Flushes the segment: every buffered frame goes out; the next data starts a new grid.
    pub fn discontinuity(&mut self, out: &mut Vec<SyncedFrame>) {
        self.stats.discontinuities += 1;
        self.flush(out);
    }

    /// End of stream: flushes everything buffered.
    pub fn finish(&mut self, out: &mut Vec<SyncedFrame>) {
        self.flush(out);
    }

    fn flush(&mut self, out: &mut Vec<SyncedFrame>) {
        if self.t0.is_none() {
            if let Some(min) = self.pending_min {
                self.anchor(min, out);
            }
        }
        if self.t0.is_some() {
            self.drain(out, true);
        }
        self.t0 = None;
        self.pending.clear();
        self.pending_min = None;
        self.pending_samples = 0;
        self.watermark = None;
        self.video_mark = None;
        self.audio_mark = None;
        self.shift = None;
        self.reset_buffers();
    }

    fn reset_buffers(&mut self) {
        let n = self.ring.occupied_len();
        self.ring.skip(n);
        self.contig = 0;
        self.video.clear();
        self.max_video_slot = None;
        self.captures.clear();
    }

    fn raise_watermark(&mut self, t: u64) {
        self.watermark = Some(self.watermark.map_or(t, |w| w.max(t)));
    }

    fn pend(&mut self, pts: u64, item: Pending, out: &mut Vec<SyncedFrame>) {
        if let Pending::Audio(c) = &item {
            self.pending_samples += c.samples.len();
        }
        self.pending.push(item);
        let min = self.pending_min.map_or(pts, |m| m.min(pts));
        self.pending_min = Some(min);
        // Anchor on the earliest data once nothing earlier can still come within the bound,
        // or (non-live, an expected modality absent) once the waiting data fills the ring.
        let pending_video = self
            .pending
            .iter()
            .filter(|p| matches!(p, Pending::Video(_)))
            .count();
        let full =
            self.pending_samples >= self.ring.capacity().get() || pending_video > self.video_cap();
        if full
            || self
                .decided_mark()
                .is_some_and(|w| w >= min.saturating_add(self.cfg.max_latency_ns))
        {
            self.anchor(min, out);
            self.drain(out, false);
        }
    }

    /// Starts a segment at `t0` and replays what was waiting for it.
    fn anchor(&mut self, t0: u64, out: &mut Vec<SyncedFrame>) {
        // Data of this segment that still lies before the floor (it arrived after the data
        // that fixed the shift, with an earlier timestamp) is trimmed as late.
        self.t0 = Some(t0.max(self.floor));
        self.seg_base = self.next_index;
        self.reset_buffers();
        self.pending_min = None;
        self.pending_samples = 0;
        for item in std::mem::take(&mut self.pending) {
            match item {
                Pending::Video(f) => self.place_video(f),
                Pending::Audio(c) => self.place_audio(&c, out),
            }
        }
    }

    /// Segment-relative slot of the next frame to emit.
    fn slot(&self) -> u64 {
        self.next_index - self.seg_base
    }

    fn frame_time(&self, slot: u64) -> u64 {
        self.t0.unwrap_or(0) + (slot as f64 * self.period_ns).round() as u64
    }

    fn sample_bound(&self, slot: u64) -> u64 {
        (slot as f64 * self.samples_per_frame).round() as u64
    }

    fn place_video(&mut self, frame: VideoFrame) {
        let t0 = self.t0.unwrap_or(0);
        let rel = (frame.pts as f64 - t0 as f64) / self.period_ns;
        let slot = rel.round();
        if slot < self.slot() as f64 {
            self.stats.late_video_frames += 1;
            return;
        }
        let slot = slot as u64;
        if self.video.contains_key(&slot) {
            self.stats.duplicate_video_frames += 1;
            return;
        }
        self.video.insert(slot, frame);
        self.max_video_slot = Some(self.max_video_slot.map_or(slot, |m| m.max(slot)));
    }

    fn place_audio(&mut self, chunk: &AudioChunk, out: &mut Vec<SyncedFrame>) {
        let t0 = self.t0.unwrap_or(0);
        let pos = ((chunk.pts as f64 - t0 as f64) * AUDIO_RATE as f64 / NS).round() as i64;
        let n = chunk.samples.len() as i64;
        let mut written = 0i64;
        loop {
            let base = self.sample_bound(self.slot()) as i64;
            let start = pos + written;
            if start < base {
                let late = (base - start).min(n - written);
                self.stats.late_audio_samples += late as u64;
                written += late;
            }
            if written >= n {
                break;
            }
            let start = (pos + written) as u64;
            let room_end = base as u64 + self.ring.capacity().get() as u64;
            if start >= room_end {
                self.force_one(out);
                continue;
            }
            let end = (pos + n).min(room_end as i64) as u64;
            let len = (end - start) as usize;
            let from = written as usize;
            self.write(
                base as u64,
                start,
                &chunk.samples[from..from + len],
                chunk.captured,
            );
            written += len as i64;
            if written < n {
                self.force_one(out);
            }
        }
    }

    /// Writes samples at absolute positions `start..` (all inside the ring's room).
    fn write(&mut self, base: u64, start: u64, samples: &[f32], captured: Instant) {
        let end = start + samples.len() as u64;
        let have = base + self.ring.occupied_len() as u64;
        if end > have {
            let grow = (end - have) as usize;
            self.ring
                .push_iter(std::iter::repeat_n(Slot::default(), grow));
        }
        let off = (start - base) as usize;
        let (a, b) = self.ring.as_mut_slices();
        for (j, &v) in samples.iter().enumerate() {
            let k = off + j;
            let slot = if k < a.len() {
                &mut a[k]
            } else {
                &mut b[k - a.len()]
            };
            if slot.filled {
                self.stats.overlap_audio_samples += 1;
            } else {
                *slot = Slot { v, filled: true };
            }
        }
        self.captures.push((start, end, captured));
        if off <= self.contig {
            self.extend_contig();
        }
    }

    fn extend_contig(&mut self) {
        let (a, b) = self.ring.as_slices();
        let total = a.len() + b.len();
        while self.contig < total {
            let k = self.contig;
            let s = if k < a.len() { a[k] } else { b[k - a.len()] };
            if !s.filled {
                break;
            }
            self.contig += 1;
        }
    }

    /// Emits every frame that is decided (or, with `all`, every frame that has any data).
    fn drain(&mut self, out: &mut Vec<SyncedFrame>, all: bool) {
        if self.t0.is_none() {
            return;
        }
        loop {
            let slot = self.slot();
            let len = (self.sample_bound(slot + 1) - self.sample_bound(slot)) as usize;
            let audio_ok = !self.cfg.expect_audio || self.contig >= len;
            let video_ok = !self.cfg.expect_video
                || self.video.contains_key(&slot)
                || self.max_video_slot.is_some_and(|m| m > slot);
            // Only a frame with some data may be decided at all (the grid has no end).
            let has_data =
                self.ring.occupied_len() > 0 || self.max_video_slot.is_some_and(|m| m >= slot);
            if !has_data {
                break;
            }
            let complete = audio_ok && video_ok;
            let late = self.decided_mark().is_some_and(|w| {
                w >= self
                    .frame_time(slot + 1)
                    .saturating_add(self.cfg.max_latency_ns)
            });
            if complete {
                self.emit(out);
            } else if late || all {
                self.stats.forced_frames += 1;
                self.emit(out);
            } else {
                break;
            }
        }
    }

    fn force_one(&mut self, out: &mut Vec<SyncedFrame>) {
        self.stats.overflow_frames += 1;
        self.stats.forced_frames += 1;
        self.emit(out);
    }

    fn emit(&mut self, out: &mut Vec<SyncedFrame>) {
        let slot = self.slot();
        let lo = self.sample_bound(slot);
        let hi = self.sample_bound(slot + 1);
        let len = (hi - lo) as usize;
        let mut slots = vec![Slot::default(); len];
        let got = self.ring.pop_slice(&mut slots);
        let _ = got; // the rest stays zero: audio not (yet) there
        let filled = slots.iter().filter(|s| s.filled).count();
        self.contig = self.contig.saturating_sub(len);
        if self.contig == 0 {
            self.extend_contig();
        }
        self.stats.audio_samples_placed += filled as u64;
        let audio: Arc<[f32]> = slots.iter().map(|s| s.v).collect();

        let video = self.video.remove(&slot);
        let mut captured = video.as_ref().map(|v| v.captured);
        for &(s, e, c) in &self.captures {
            if s < hi && e > lo {
                captured = Some(captured.map_or(c, |m: Instant| m.min(c)));
            }
        }
        self.captures.retain(|&(_, e, _)| e > hi);

        let t = self.frame_time(slot);
        self.floor = self.floor.max(self.frame_time(slot + 1));
        let frame = SyncedFrame {
            stream: self.stream.clone(),
            index: self.next_index,
            t,
            duration: self.frame_time(slot + 1) - t,
            has_video: video.is_some(),
            video,
            audio,
            has_audio: filled > 0,
            captured,
            features: None,
            timing: Default::default(),
        };
        self.next_index += 1;
        self.stats.frames += 1;
        out.push(frame);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(pts: u64, from: u32, n: u32) -> AudioChunk {
        AudioChunk {
            pts,
            samples: (from..from + n).map(|v| v as f32).collect(),
            captured: Instant::now(),
        }
    }

    fn video(pts: u64) -> VideoFrame {
        VideoFrame {
            pts,
            width: 2,
            height: 2,
            rgb: vec![0u8; 12].into(),
            captured: Instant::now(),
        }
    }

    fn sync(v: bool, a: bool) -> Synchroniser {
        Synchroniser::new("s".into(), SyncConfig::new(2.0, v, a, 500_000_000))
    }

    #[test]
    fn frame_is_emitted_as_soon_as_audio_and_video_are_there() {
        let mut s = sync(true, true);
        let mut out = Vec::new();
        s.push_video(video(0), &mut out);
        s.push_audio(chunk(0, 0, 7999), &mut out);
        assert!(out.is_empty(), "one sample still missing");
        s.push_audio(chunk(499_937_500, 7999, 1), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].audio.len(), 8000);
        assert_eq!(out[0].audio[7999], 7999.0);
        assert!(out[0].has_video && out[0].has_audio);
    }

    #[test]
    fn a_jump_in_time_starts_a_new_segment_instead_of_filling_the_gap() {
        const HOUR: u64 = 3_600_000_000_000;
        let mut s = sync(true, true);
        let mut out = Vec::new();
        s.push_video(video(0), &mut out);
        s.push_audio(chunk(0, 0, 8000), &mut out);
        assert_eq!(out.len(), 1);
        // An hour ahead (a camera's clock reset): one new segment, not 7,200 empty frames.
        s.push_video(video(HOUR), &mut out);
        s.push_audio(chunk(HOUR, 0, 8000), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!((out[1].index, out[1].t), (1, HOUR));
        assert!(out[1].has_video && out[1].has_audio);
        // Back to the start (a file whose timestamps jump backwards): a new segment again,
        // shifted past the last frame so time never runs backwards.
        s.push_video(video(0), &mut out);
        s.push_audio(chunk(0, 0, 8000), &mut out);
        assert_eq!(out.len(), 3);
        assert_eq!((out[2].index, out[2].t), (2, HOUR + 500_000_000));
        assert!(out[2].has_video && out[2].has_audio);
        assert_eq!(s.stats().jumps, 2);
        assert_eq!(s.stats().late_audio_samples, 0);
        // A timestamp that is no time at all is dropped and counted.
        s.push_audio(chunk(u64::MAX - 5, 0, 100), &mut out);
        assert_eq!((out.len(), s.stats().invalid_timestamps), (3, 1));
    }

    #[test]
    fn segment_after_a_discontinuity_never_starts_before_the_last_frame_ended() {
        let mut s = sync(true, true);
        let mut out = Vec::new();
        // Segment 1: frame 0 complete, frame 1 has only 0.1 s of audio when the source
        // reconnects; the flush pads frame 1 to its grid end, 1.0 s.
        s.push_video(video(0), &mut out);
        s.push_video(video(500_000_000), &mut out);
        s.push_audio(chunk(0, 0, 9600), &mut out);
        s.discontinuity(&mut out);
        assert_eq!(out.len(), 2);
        assert_eq!((out[1].t, out[1].duration), (500_000_000, 500_000_000));
        // Segment 2 is re-based by the source right after the last data, 0.6 s: it is
        // shifted to 1.0 s whole, nothing of it lost.
        s.push_video(video(600_000_000), &mut out);
        s.push_audio(chunk(600_000_000, 50_000, 8000), &mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(out[2].t, 1_000_000_000);
        assert!(out[2].has_video && out[2].has_audio);
        assert_eq!(out[2].audio[0], 50_000.0);
        assert_eq!(out[2].audio[7999], 57_999.0);
        assert_eq!(s.stats().segment_shift_ns, 400_000_000);
        assert_eq!(s.stats().late_audio_samples, 0);
        // Segment 3 starts after the floor: no shift.
        s.discontinuity(&mut out);
        s.push_video(video(2_000_000_000), &mut out);
        s.push_audio(chunk(2_000_000_000, 0, 8000), &mut out);
        assert_eq!(out.last().map(|f| f.t), Some(2_000_000_000));
        assert_eq!(s.stats().segment_shift_ns, 400_000_000);
    }

    #[test]
    fn late_audio_is_dropped_and_counted() {
        let mut s = sync(false, true);
        let mut out = Vec::new();
        s.push_audio(chunk(0, 0, 100), &mut out);
        // Watermark 1.5 s: frames 0 (hole at 100..8000) and 1 (no audio) are forced out,
        // frame 2 is complete.
        s.push_audio(chunk(1_000_000_000, 16000, 8000), &mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(s.stats().forced_frames, 2);
        assert_eq!(
            out.iter().map(|f| f.has_audio).collect::<Vec<_>>(),
            vec![true, false, true]
        );
        s.push_audio(chunk(6_250_000, 100, 50), &mut out);
        assert_eq!(s.stats().late_audio_samples, 50);
    }

    #[test]
    fn overlapping_sample_keeps_first_writer() {
        let mut s = sync(false, true);
        let mut out = Vec::new();
        s.push_audio(chunk(0, 0, 10), &mut out);
        s.push_audio(chunk(9 * 62_500, 100, 2), &mut out);
        s.finish(&mut out);
        assert_eq!(s.stats().overlap_audio_samples, 1);
        assert_eq!(out[0].audio[9], 9.0);
        assert_eq!(out[0].audio[10], 101.0);
    }

    #[test]
    fn video_only_stream_has_zero_audio() {
        let mut s = sync(true, false);
        let mut out = Vec::new();
        for i in 0..3 {
            s.push_video(video(i * 500_000_000), &mut out);
        }
        assert_eq!(out.len(), 3);
        assert!(out.iter().all(|f| !f.has_audio && f.audio.len() == 8000));
        assert!(out.iter().all(|f| f.audio.iter().all(|&x| x == 0.0)));
    }

    #[test]
    fn missing_video_frame_is_marked_not_repeated() {
        let mut s = sync(true, false);
        let mut out = Vec::new();
        s.push_video(video(0), &mut out);
        s.push_video(video(1_000_000_000), &mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(
            out.iter().map(|f| f.has_video).collect::<Vec<_>>(),
            vec![true, false, true]
        );
    }

    #[test]
    fn advancing_time_without_data_emits_stale_frames() {
        let mut s = sync(true, true);
        let mut out = Vec::new();
        s.push_video(video(0), &mut out);
        s.push_audio(chunk(0, 0, 4000), &mut out);
        assert!(out.is_empty());
        s.advance_to(900_000_000, &mut out);
        assert!(out.is_empty(), "frame 0 ends at 0.5 s: not yet 0.5 s late");
        s.advance_to(1_000_000_000, &mut out);
        assert_eq!(out.len(), 1);
        assert!(out[0].has_video && out[0].has_audio);
        assert_eq!(out[0].audio[3999], 3999.0);
        assert_eq!(out[0].audio[4000], 0.0);
        assert_eq!(s.stats().forced_frames, 1);
        // Nothing buffered any more: more time emits nothing.
        s.advance_to(5_000_000_000, &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn ring_overflow_forces_oldest_frames_out() {
        let cfg = SyncConfig {
            ring_samples: 10_000,
            ..SyncConfig::new(2.0, true, true, 500_000_000)
        };
        let mut s = Synchroniser::new("s".into(), cfg);
        let mut out = Vec::new();
        s.push_video(video(0), &mut out);
        // 30000 samples at once: frames 0..=2 must be pushed out to make room.
        s.push_audio(chunk(0, 0, 30_000), &mut out);
        assert!(s.stats().overflow_frames >= 2);
        s.finish(&mut out);
        let total: usize = out
            .iter()
            .map(|f| f.audio.iter().filter(|&&x| x != 0.0).count())
            .sum();
        assert_eq!(total, 29_999, "every sample but the 0.0 at index 0 kept");
        assert_eq!(s.stats().late_audio_samples, 0);
    }

    /// Non-live: audio 3 s ahead of video (decoder skew in a file) still gives every frame
    /// its picture; the same input to a live synchroniser forces frames out without it.
    #[test]
    fn non_live_waits_for_the_slower_modality() {
        let feed = |s: &mut Synchroniser| {
            let mut out = Vec::new();
            s.push_video(video(0), &mut out);
            // 4 s of audio in 20 ms chunks, then the rest of the video.
            for i in 0..200u32 {
                s.push_audio(chunk(i as u64 * 20_000_000, i * 320, 320), &mut out);
            }
            for i in 1..8u64 {
                s.push_video(video(i * 500_000_000), &mut out);
            }
            s.finish(&mut out);
            out
        };
        let cfg = SyncConfig::new(2.0, true, true, 500_000_000);
        let mut s = Synchroniser::new("s".into(), cfg.clone().non_live());
        let out = feed(&mut s);
        assert_eq!(out.len(), 8);
        assert!(out.iter().all(|f| f.has_video && f.has_audio));
        assert_eq!(s.stats().forced_frames, 0);
        assert_eq!(s.stats().audio_samples_placed, 64_000);

        let mut live = Synchroniser::new("s".into(), cfg);
        let out = feed(&mut live);
        assert_eq!(out.len(), 8);
        assert!(out.iter().filter(|f| !f.has_video).count() >= 5);
    }

    /// Non-live, audio expected but absent (a video-only file): frames still go out, with
    /// buffered video bounded by the ring's duration.
    #[test]
    fn non_live_absent_modality_stays_bounded() {
        let mut s = Synchroniser::new(
            "s".into(),
            SyncConfig::new(2.0, true, true, 500_000_000).non_live(),
        );
        let cap = s.video_cap();
        let mut out = Vec::new();
        for i in 0..100u64 {
            s.push_video(video(i * 500_000_000), &mut out);
            assert!(s.video.len() <= cap);
        }
        assert_eq!(out.len(), 100 - cap);
        s.finish(&mut out);
        assert_eq!(out.len(), 100);
        assert!(out.iter().all(|f| f.has_video && !f.has_audio));
        assert!(out.windows(2).all(|w| w[1].t > w[0].t));
    }
}
