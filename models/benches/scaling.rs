//! How the per-window cost grows (CPU, candle, this machine's threads): the FAVOR-size causal
//! Q-Former (random weights: 2 layers, 768-d, 12 heads, 32 queries, 32 slots of 1536-d per
//! frame) over the window length k, the stride and the number of streams, and the LLM's
//! decode cost per token over its context (a Qwen2.5-0.5B-shaped decoder, random weights,
//! fewer layers; each window is 32 AV tokens).
//!
//! ```text
//! cargo bench -p sensorium-models --bench scaling -- [--json PATH] [--plot PATH] [--iters N] [--llm-layers N]
//! ```
//! (`make bench-scaling` writes benches/scaling.json and benches/scaling.png.) Each row is
//! the median of `--iters` timed repetitions after a warm-up. Besides the times, each
//! Q-Former row reports the frames the stream pushed through the slot layers per window: the
//! incremental path's cost per slide is O(new frames), whatever k.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{Device, Tensor};
use plotters::prelude::*;
use sensorium_models::llm::synth::Qwen2Spec;
use sensorium_models::llm::{load_model, ComputeDtype};
use sensorium_models::qformer::{
    FrameInput, QFormer, QFormerBackend, QFormerConfig, QFormerStream, SlotContext, StreamFrame,
};
use serde_json::{json, Value};

mod common;
use common::noise;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// FAVOR-size encoder outputs of frame `i` (25 Whisper frames of 1280, 32 CLIP slots of 768).
fn frame(i: usize, stream: usize) -> Res<FrameInput> {
    let dev = Device::Cpu;
    let seed = (stream * 10_000 + i) as u32;
    Ok(FrameInput {
        audio: Some(Tensor::from_vec(
            noise(25 * 1280, 2 * seed + 1),
            (25, 1280),
            &dev,
        )?),
        visual: Some(Tensor::from_vec(
            noise(32 * 768, 2 * seed + 2),
            (32, 768),
            &dev,
        )?),
    })
}

fn window(inputs: &[FrameInput], start: usize, k: usize) -> Vec<StreamFrame> {
    (start..start + k)
        .map(|i| StreamFrame {
            index: i as u64,
            valid: true,
            input: inputs[i].clone(),
        })
        .collect()
}

fn qformer(context: SlotContext, lookback: usize) -> Res<QFormer> {
    let cfg = QFormerConfig {
        context,
        lookback,
        llm_hidden_size: 896,
        ..QFormerConfig::default()
    };
    Ok(QFormer::random(cfg, 7, 0.02, &Device::Cpu)?)
}

/// ms per window of a stream sliding by `stride` over windows of `k` frames (after a first
/// window that fills the cache), and the frames computed per window.
fn incremental(k: usize, stride: usize, iters: usize, inputs: &[FrameInput]) -> Res<(f64, f64)> {
    let qf = qformer(SlotContext::Lookback, k)?;
    let mut st = QFormerStream::new();
    let w = st.window(&qf, &window(inputs, 0, k))?;
    qf.query_batch(&[&w])?;
    let mut start = 0;
    let mut times = Vec::new();
    let before = st.frames_computed;
    for _ in 0..iters + 1 {
        start += stride;
        let t = Instant::now();
        let w = st.window(&qf, &window(inputs, start, k))?;
        qf.query_batch(&[&w])?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let per = (st.frames_computed - before) as f64 / (iters + 1) as f64;
    times.remove(0);
    Ok((median(times), per))
}

fn full(k: usize, iters: usize, inputs: &[FrameInput]) -> Res<f64> {
    let qf = qformer(SlotContext::Window, k)?;
    let valid = vec![true; k];
    let mut times = Vec::new();
    for _ in 0..iters + 1 {
        let t = Instant::now();
        qf.forward_sequence(&inputs[..k], &valid, 0, k)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.remove(0);
    Ok(median(times))
}

/// `n` streams each sliding by one frame (k = 10), their queries in one batch: ms per round.
fn streams(n: usize, iters: usize) -> Res<f64> {
    let k = 10;
    let qf = qformer(SlotContext::Lookback, k)?;
    let inputs: Vec<Vec<FrameInput>> = (0..n)
        .map(|s| (0..k + iters + 1).map(|i| frame(i, s)).collect::<Res<_>>())
        .collect::<Res<_>>()?;
    let mut sts: Vec<QFormerStream<QFormer>> = (0..n).map(|_| QFormerStream::new()).collect();
    let mut times = Vec::new();
    for start in 0..iters + 1 {
        let t = Instant::now();
        let ws = sts
            .iter_mut()
            .zip(&inputs)
            .map(|(st, inp)| st.window(&qf, &window(inp, start, k)))
            .collect::<Result<Vec<_>, _>>()?;
        let refs: Vec<_> = ws.iter().collect();
        qf.query_batch(&refs)?;
        if start > 0 {
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok(median(times))
}

/// Decode ms per token after a context of `windows` x 32 AV tokens (+ a 32-token prompt).
fn decode_costs(layers: usize, contexts: &[usize], iters: usize) -> Res<Vec<(usize, f64)>> {
    let dir = tempfile::tempdir()?;
    let mut spec = Qwen2Spec::qwen2_5_0_5b();
    spec.num_hidden_layers = layers;
    let w = spec.weights()?;
    let tok = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llm/tokenizer.json");
    spec.write_hf_dir(&dir.path().join("hf"), &w, &tok, 0, 2)?;
    drop(w);
    let max_ctx = contexts.iter().max().copied().unwrap_or(1) * 32 + 32 + iters + 8;
    let m = load_model(
        &dir.path().join("hf"),
        None,
        ComputeDtype::F32,
        max_ctx,
        &Device::Cpu,
    )?;
    let mut dec = m.decoder;
    let mut out = Vec::new();
    for &c in contexts {
        dec.truncate_cache(0);
        let n = c * 32 + 32;
        let prompt: Vec<u32> = (0..n).map(|i| 100 + (7 * i as u32) % 400).collect();
        dec.forward_tokens(&prompt, 0, false)?;
        let mut times = Vec::new();
        let mut next = 101u32;
        for _ in 0..iters + 1 {
            let pos = dec.cache_len();
            let t = Instant::now();
            dec.forward_tokens(&[next], pos, false)?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
            next = 100 + (next + 13) % 400;
        }
        times.remove(0);
        out.push((c, median(times)));
    }
    Ok(out)
}

/// One panel of the plot: title, x axis, named series of (x, ms).
type Panel<'a> = (&'a str, &'a str, Vec<(String, Vec<(f64, f64)>)>);

fn plot(path: &PathBuf, panels: &[Panel<'_>]) -> Res<()> {
    let text = sensorium_models::train::plot::font();
    let root = BitMapBackend::new(path, (1200, 900)).into_drawing_area();
    root.fill(&WHITE)?;
    let areas = root.split_evenly((2, 2));
    let colours = [BLUE, RED, GREEN, MAGENTA];
    for (area, (title, xdesc, series)) in areas.iter().zip(panels) {
        let xmax = series
            .iter()
            .flat_map(|s| s.1.iter().map(|p| p.0))
            .fold(1f64, f64::max);
        let ymax = series
            .iter()
            .flat_map(|s| s.1.iter().map(|p| p.1))
            .fold(1e-3f64, f64::max)
            * 1.1;
        let mut b = ChartBuilder::on(area);
        b.margin(15);
        if text {
            b.caption(*title, ("sans-serif", 20))
                .x_label_area_size(35)
                .y_label_area_size(55);
        }
        let mut chart = b.build_cartesian_2d(0f64..xmax * 1.05, 0f64..ymax)?;
        if text {
            chart.configure_mesh().x_desc(*xdesc).y_desc("ms").draw()?;
        }
        for (i, (name, pts)) in series.iter().enumerate() {
            let c = colours[i % colours.len()];
            let s = chart.draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))?;
            if text {
                s.label(name.as_str()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
            }
            chart.draw_series(pts.iter().map(|p| Circle::new(*p, 3, c.filled())))?;
        }
        if text {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()?;
        }
    }
    root.present()?;
    Ok(())
}

fn main() -> Res<()> {
    sensorium_models::pin_thread_count();
    let args: Vec<String> = std::env::args().collect();
    let opt = |k: &str| {
        args.iter()
            .position(|a| a == k)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let iters: usize = opt("--iters").map_or(Ok(5), |s| s.parse())?;
    let llm_layers: usize = opt("--llm-layers").map_or(Ok(6), |s| s.parse())?;
    let threads = candle_core::utils::get_num_threads();
    println!("threads: {threads}; median of {iters} after a warm-up");
    let inputs: Vec<FrameInput> = (0..40 + 10 * (iters + 2))
        .map(|i| frame(i, 0))
        .collect::<Res<_>>()?;

    println!("\nQ-Former, window length k (stride 1):");
    println!(
        "{:>4} {:>14} {:>20} {:>22}",
        "k", "full ms", "incremental ms", "frames computed/slide"
    );
    let mut by_k = Vec::new();
    for k in [5usize, 10, 20, 40] {
        let f = full(k, iters.min(3), &inputs)?;
        let (inc, per) = incremental(k, 1, iters, &inputs)?;
        println!("{k:>4} {f:>14.2} {inc:>20.2} {per:>22.1}");
        by_k.push(json!({ "k": k, "full_ms": f, "incremental_ms": inc, "frames_per_slide": per }));
    }

    println!("\nQ-Former, stride (k = 10, incremental):");
    println!(
        "{:>6} {:>16} {:>22}",
        "stride", "ms per window", "frames computed/window"
    );
    let mut by_stride = Vec::new();
    for s in [1usize, 2, 5, 10] {
        let (ms, per) = incremental(10, s, iters, &inputs)?;
        println!("{s:>6} {ms:>16.2} {per:>22.1}");
        by_stride.push(json!({ "stride": s, "ms": ms, "frames_per_window": per }));
    }

    println!("\nQ-Former, streams sliding together (k = 10, stride 1, queries batched):");
    println!(
        "{:>7} {:>12} {:>16}",
        "streams", "ms/round", "ms per window"
    );
    let mut by_streams = Vec::new();
    for n in [1usize, 2, 4, 8, 16, 32] {
        let ms = streams(n, iters.min(3))?;
        println!("{n:>7} {ms:>12.2} {:>16.2}", ms / n as f64);
        by_streams
            .push(json!({ "streams": n, "ms_per_round": ms, "ms_per_window": ms / n as f64 }));
    }

    println!(
        "\nLLM decode per token over its context (Qwen2.5-0.5B shape, {llm_layers} layers, f32):"
    );
    println!("{:>8} {:>14} {:>12}", "windows", "context tok", "ms/token");
    let contexts = [1usize, 2, 4, 8, 16];
    let dec = decode_costs(llm_layers, &contexts, iters * 2)?;
    let mut by_ctx = Vec::new();
    for (c, ms) in &dec {
        println!("{c:>8} {:>14} {ms:>12.2}", c * 32 + 32);
        by_ctx.push(json!({ "windows": c, "context_tokens": c * 32 + 32, "ms_per_token": ms }));
    }

    let report = json!({
        "threads": threads,
        "iters": iters,
        "qformer": "FAVOR size, random weights, candle CPU",
        "llm": format!("Qwen2.5-0.5B shape, {llm_layers} layers, random weights, f32"),
        "window_length": by_k,
        "stride": by_stride,
        "streams": by_streams,
        "llm_context": by_ctx,
    });
    if let Some(p) = opt("--json") {
        std::fs::write(&p, serde_json::to_string_pretty(&report)?)?;
        println!("\nwrote {p}");
    }
    if let Some(p) = opt("--plot") {
        let pts = |rows: &[Value], x: &str, y: &str| -> Vec<(f64, f64)> {
            rows.iter()
                .map(|r| (r[x].as_f64().unwrap_or(0.0), r[y].as_f64().unwrap_or(0.0)))
                .collect()
        };
        plot(
            &PathBuf::from(&p),
            &[
                (
                    "Q-Former per window vs k",
                    "frames per window (k)",
                    vec![
                        ("full recompute".into(), pts(&by_k, "k", "full_ms")),
                        (
                            "incremental, stride 1".into(),
                            pts(&by_k, "k", "incremental_ms"),
                        ),
                    ],
                ),
                (
                    "Q-Former per window vs stride (k = 10)",
                    "stride (new frames per window)",
                    vec![("incremental".into(), pts(&by_stride, "stride", "ms"))],
                ),
                (
                    "Q-Former vs streams (k = 10, stride 1)",
                    "streams",
                    vec![
                        (
                            "per round".into(),
                            pts(&by_streams, "streams", "ms_per_round"),
                        ),
                        (
                            "per window".into(),
                            pts(&by_streams, "streams", "ms_per_window"),
                        ),
                    ],
                ),
                (
                    "LLM decode per token vs context",
                    "context (windows of 32 AV tokens)",
                    vec![("ms/token".into(), pts(&by_ctx, "windows", "ms_per_token"))],
                ),
            ],
        )?;
        println!("wrote {p}");
    }
    Ok(())
}
