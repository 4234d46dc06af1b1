//! Throughput of the synchroniser + window assembler on synthetic input: 2 fps video with
//! audio in 20 ms chunks (a typical audio source), and 30 fps with 10 ms chunks. Reported
//! per synced frame (criterion "elements" = frames); windows are k = 10, s = 10.

use std::time::Instant;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use sensorium_engine::{
    AudioChunk, SourceEvent, SyncConfig, Synchroniser, VideoFrame, WindowAssembler,
};

fn events(fps: f64, frames: u64, chunk: usize) -> Vec<SourceEvent> {
    let period = 1e9 / fps;
    let rgb: std::sync::Arc<[u8]> = vec![0u8; 224 * 224 * 3].into();
    let total = (frames as f64 * 16_000.0 / fps).round() as usize;
    let mut out = Vec::new();
    let mut sample = 0usize;
    for i in 0..frames {
        out.push(SourceEvent::Video(VideoFrame {
            pts: (i as f64 * period).round() as u64,
            width: 224,
            height: 224,
            rgb: rgb.clone(),
            captured: Instant::now(),
        }));
        let end = (((i + 1) as f64) * 16_000.0 / fps).round() as usize;
        while sample < end.min(total) {
            let n = chunk.min(end - sample);
            out.push(SourceEvent::Audio(AudioChunk {
                pts: sample as u64 * 62_500,
                samples: vec![0.25f32; n].into(),
                captured: Instant::now(),
            }));
            sample += n;
        }
    }
    out.push(SourceEvent::Eos);
    out
}

fn run(fps: f64, events: Vec<SourceEvent>) -> usize {
    let mut sync = Synchroniser::new("b".into(), SyncConfig::new(fps, true, true, 500_000_000));
    let mut asm = WindowAssembler::new("b".into(), 10, 10);
    let mut frames = Vec::new();
    let mut windows = Vec::new();
    for e in events {
        sync.push_event(e, &mut frames);
        for f in frames.drain(..) {
            asm.push(f, &mut windows);
        }
    }
    asm.flush(&mut windows);
    windows.len()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("sync+window");
    for (fps, chunk) in [(2.0, 320usize), (30.0, 160)] {
        let frames = 600u64;
        let ev = events(fps, frames, chunk);
        g.throughput(Throughput::Elements(frames));
        g.bench_function(format!("{fps}fps_{chunk}chunk"), |b| {
            b.iter_batched(|| ev.clone(), |e| run(fps, e), BatchSize::SmallInput)
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
