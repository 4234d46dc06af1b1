//! The scene world's frames and their per-frame vision labels as raw files, for
//! `tools/stage1_reference.py` (the encoders' pretraining stage reproduced in PyTorch, to
//! compare recipes quickly).
//!
//! `cargo run --release --example dump_scene_frames -- FIRST_SEED END_SEED SIZE OUT`
//! writes `OUT.rgb` (24 frames of each stream, 2 fps, SIZE x SIZE RGB24) and `OUT.lab`
//! (per frame, the `VISION_LABELS` targets then their mask, little-endian f32).

use std::io::{BufWriter, Write};

use anyhow::Context;
use sensorium_engine::scene::{self, SceneTimeline, WorldParams, VISION_LABELS};

/// Frames per stream and their spacing, s (the default model's 2 fps over 12 s streams).
const FRAMES: u64 = 24;
const STEP_S: f64 = 0.5;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [lo, hi, size, out] = args.as_slice() else {
        anyhow::bail!("usage: dump_scene_frames FIRST_SEED END_SEED SIZE OUT");
    };
    let (lo, hi): (u64, u64) = (lo.parse()?, hi.parse()?);
    let size: u32 = size.parse().context("SIZE: a whole number of pixels")?;
    let create = |ext: &str| -> anyhow::Result<BufWriter<std::fs::File>> {
        let path = format!("{out}.{ext}");
        Ok(BufWriter::new(
            std::fs::File::create(&path).with_context(|| format!("creating {path}"))?,
        ))
    };
    let (mut rgb, mut lab) = (create("rgb")?, create("lab")?);
    let params = WorldParams {
        window_s: 2.0,
        aspect: 1.0,
    };
    for seed in lo..hi {
        let mut tl = SceneTimeline::new(seed, params);
        for i in 0..FRAMES {
            let t = i as f64 * STEP_S;
            rgb.write_all(&scene::render::picture(&mut tl, t, i, size, size))?;
            let labels = scene::frame_labels(&mut tl, t, STEP_S).vision;
            for v in labels.target.iter().chain(&labels.mask) {
                lab.write_all(&v.to_le_bytes())?;
            }
        }
    }
    rgb.flush()?;
    lab.flush()?;
    eprintln!(
        "{} frames of {size}x{size}, {VISION_LABELS} labels each",
        hi.saturating_sub(lo) * FRAMES
    );
    Ok(())
}
