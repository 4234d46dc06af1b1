//! Window assembler: groups a stream's synced frames into windows of `k` frames every `s`
//! frames (FAVOR: k = 10, s = k; streaming: s < k). Frames are shared between overlapping
//! windows by clone (video, audio and features are `Arc`s), never copied.
//!
//! Window `j` of a segment holds frames `[j·s, j·s + k)`. At EOS or a discontinuity
//! ([`WindowAssembler::flush`]) the first unfinished window is emitted padded when it holds
//! a frame that no emitted window covered yet; padding frames have no video, zero audio and
//! `valid == false`. After a flush the next frame starts a new window, so no window straddles
//! a discontinuity. Window indices stay contiguous per stream.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::frame::{StreamId, SyncedFrame, Window};

pub struct WindowAssembler {
    stream: StreamId,
    k: usize,
    s: usize,
    /// Frames of the current segment from `next_start` on.
    buf: VecDeque<SyncedFrame>,
    /// Frames of the segment seen so far.
    seen: usize,
    /// Segment frame number where the next window starts.
    next_start: usize,
    /// Segment frame number one past the last frame of the last emitted window.
    covered: usize,
    next_index: u64,
    /// Added to every window's `t_start`/`t_end` (ns): see [`WindowOrigin`].
    t_offset: u64,
}

/// Where a stream's window numbering and times start: a stream taken over by another process
/// (a cluster worker after fail-over) continues the previous owner's indices and stream times,
/// so consumers see one monotonic stream. The frames inside keep their source times.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WindowOrigin {
    /// The first window's index.
    pub index: u64,
    /// Added to every window's `t_start` and `t_end`, in nanoseconds.
    pub t_ns: u64,
}

impl WindowAssembler {
    /// `k` frames per window, a new window every `s` frames (both at least 1).
    pub fn new(stream: StreamId, k: usize, s: usize) -> Self {
        Self {
            stream,
            k: k.max(1),
            s: s.max(1),
            buf: VecDeque::new(),
            seen: 0,
            next_start: 0,
            covered: 0,
            next_index: 0,
            t_offset: 0,
        }
    }

    /// Numbers windows from `origin.index` and shifts their times by `origin.t_ns`.
    pub fn starting_at(mut self, origin: WindowOrigin) -> Self {
        self.next_index = origin.index;
        self.t_offset = origin.t_ns;
        self
    }

    pub fn push(&mut self, frame: SyncedFrame, out: &mut Vec<Window>) {
        let n = self.seen;
        self.seen += 1;
        // With s > k, frames between windows belong to none.
        if n >= self.next_start {
            self.buf.push_back(frame);
        }
        while self.seen >= self.next_start + self.k && self.buf.len() >= self.k {
            let frames: Vec<SyncedFrame> = self.buf.iter().take(self.k).cloned().collect();
            self.emit(frames, self.k, out);
            self.covered = self.next_start + self.k;
            self.advance();
        }
    }

    /// Emits the padded partial window if it holds uncovered frames; starts a new segment.
    pub fn flush(&mut self, out: &mut Vec<Window>) {
        if self.seen > self.next_start.max(self.covered) {
            let frames: Vec<SyncedFrame> = self.buf.iter().take(self.k).cloned().collect();
            let valid = frames.len();
            self.emit(frames, valid, out);
        }
        self.buf.clear();
        self.seen = 0;
        self.next_start = 0;
        self.covered = 0;
    }

    fn advance(&mut self) {
        self.next_start += self.s;
        let drop = self.s.min(self.buf.len());
        self.buf.drain(..drop);
    }

    fn emit(&mut self, mut frames: Vec<SyncedFrame>, valid: usize, out: &mut Vec<Window>) {
        let Some(last) = frames.last().cloned() else {
            return;
        };
        let t_start = frames[0].t + self.t_offset;
        let t_end = last.t + last.duration + self.t_offset;
        let zeros: Arc<[f32]> = vec![0.0; last.audio.len()].into();
        for p in 1..=(self.k - frames.len()) as u64 {
            frames.push(SyncedFrame {
                stream: self.stream.clone(),
                index: last.index + p,
                t: last.t + p * last.duration,
                duration: last.duration,
                video: None,
                audio: zeros.clone(),
                has_video: false,
                has_audio: false,
                captured: None,
                features: None,
                timing: Default::default(),
            });
        }
        let mut flags = vec![true; valid];
        flags.resize(self.k, false);
        out.push(Window {
            stream: self.stream.clone(),
            index: self.next_index,
            t_start,
            t_end,
            frames,
            valid: flags,
        });
        self.next_index += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(i: u64) -> SyncedFrame {
        SyncedFrame {
            stream: "s".into(),
            index: i,
            t: i * 500,
            duration: 500,
            video: None,
            audio: vec![i as f32; 4].into(),
            has_video: false,
            has_audio: true,
            captured: None,
            features: None,
            timing: Default::default(),
        }
    }

    fn run(k: usize, s: usize, n: u64) -> Vec<Window> {
        let mut a = WindowAssembler::new("s".into(), k, s);
        let mut out = Vec::new();
        for i in 0..n {
            a.push(frame(i), &mut out);
        }
        a.flush(&mut out);
        out
    }

    fn starts(w: &[Window]) -> Vec<(u64, usize)> {
        w.iter()
            .map(|w| (w.frames[0].index, w.valid_frames()))
            .collect()
    }

    #[test]
    fn favor_windows_pad_the_last() {
        let w = run(10, 10, 23);
        assert_eq!(starts(&w), vec![(0, 10), (10, 10), (20, 3)]);
        let last = &w[2];
        assert_eq!(last.frames.len(), 10);
        assert_eq!(last.t_end, 23 * 500);
        assert_eq!(last.frames[3].index, 23);
        assert!(!last.frames[3].has_audio && last.frames[3].audio.iter().all(|&x| x == 0.0));
        assert_eq!(last.valid[2..4], [true, false]);
    }

    #[test]
    fn exact_multiple_has_no_padded_window() {
        assert_eq!(starts(&run(10, 10, 20)), vec![(0, 10), (10, 10)]);
    }

    #[test]
    fn sliding_windows_share_frames() {
        let w = run(4, 2, 9);
        assert_eq!(starts(&w), vec![(0, 4), (2, 4), (4, 4), (6, 3)]);
        // Frame 2 in windows 0 and 1 is the same allocation.
        assert!(Arc::ptr_eq(&w[0].frames[2].audio, &w[1].frames[0].audio));
    }

    #[test]
    fn stride_larger_than_window_skips_frames() {
        assert_eq!(starts(&run(2, 3, 8)), vec![(0, 2), (3, 2), (6, 2)]);
        assert_eq!(starts(&run(2, 3, 7)), vec![(0, 2), (3, 2), (6, 1)]);
        assert_eq!(starts(&run(2, 3, 6)), vec![(0, 2), (3, 2)]);
    }

    #[test]
    fn an_origin_shifts_indices_and_times_but_not_the_frames() {
        let origin = WindowOrigin {
            index: 41,
            t_ns: 1_000_000,
        };
        let mut a = WindowAssembler::new("s".into(), 2, 2).starting_at(origin);
        let mut out = Vec::new();
        for i in 0..5 {
            a.push(frame(i), &mut out);
        }
        a.flush(&mut out);
        let got: Vec<_> = out.iter().map(|w| (w.index, w.t_start, w.t_end)).collect();
        assert_eq!(
            got,
            vec![
                (41, 1_000_000, 1_001_000),
                (42, 1_001_000, 1_002_000),
                (43, 1_002_000, 1_002_500)
            ]
        );
        assert_eq!(out[2].frames[0].t, 2_000, "frames keep their source times");
    }

    #[test]
    fn flush_restarts_windows() {
        let mut a = WindowAssembler::new("s".into(), 3, 3);
        let mut out = Vec::new();
        for i in 0..4 {
            a.push(frame(i), &mut out);
        }
        a.flush(&mut out);
        for i in 4..7 {
            a.push(frame(i), &mut out);
        }
        assert_eq!(starts(&out), vec![(0, 3), (3, 1), (4, 3)]);
        assert_eq!(
            out.iter().map(|w| w.index).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
    }
}
