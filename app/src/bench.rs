//! `sensorium bench`: runs a config's streams for a while (live, or as fast as its sources
//! go) through exactly the path of `sensorium run`, then reports where the time went, per
//! stage, from the `timing` of every window record and the timings of every answer:
//!
//! | stage | from the records |
//! |---|---|
//! | capture -> synchronised frame | window `timing.capture_to_sync_ms` |
//! | frame -> encoded | `timing.sync_to_encoded_ms` |
//! | encoded -> Q-Former tokens | `timing.encoded_to_model_ms` (window assembly, queue, window model) |
//! | capture -> window record | `latency_ms` |
//! | tokens -> first answer token | answer `tokens_to_first_token_ms` |
//! | capture -> first answer token | answer `capture_to_first_token_ms` |
//! | decode | answer `decode_tokens_per_s` |
//!
//! with drops per stream, process CPU and peak RSS; as a table, JSON and a PNG (latency
//! histograms and the latency timeline). Latencies are measured on the newest valid frame
//! of each window, the reference of every latency the engine reports.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use plotters::prelude::*;
use sensorium_engine::status::quantile;
use sensorium_engine::{RunReport, StreamEnd};
use serde_json::{json, Value};

use crate::exit::{code, Failure, WithCode};
use crate::run::{run_streams_with, BenchHook, Input, RunArgs};

/// One measured quantity.
pub struct Stage {
    pub key: &'static str,
    pub label: &'static str,
    pub unit: &'static str,
    pub values: Vec<f64>,
}

impl Stage {
    fn summary(&self) -> Value {
        let mut v = self.values.clone();
        let q = |v: &mut Vec<f64>, p: f64| quantile(v, p).map(round3);
        json!({
            "stage": self.key,
            "label": self.label,
            "unit": self.unit,
            "n": self.values.len(),
            "p50": q(&mut v, 0.50),
            "p95": q(&mut v, 0.95),
            "p99": q(&mut v, 0.99),
            "max": q(&mut v, 1.0),
            "min": q(&mut v, 0.0),
        })
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// The stages, in path order, from the run's output lines.
pub fn stages(lines: &[Value]) -> Vec<Stage> {
    let (windows, answers): (Vec<&Value>, Vec<&Value>) =
        lines.iter().partition(|l| l.get("type").is_none());
    let col = |rows: &[&Value], path: &[&str]| -> Vec<f64> {
        rows.iter()
            .filter_map(|r| path.iter().try_fold(*r, |v, k| v.get(k)))
            .filter_map(Value::as_f64)
            .collect()
    };
    let stage = |key, label, unit, values| Stage {
        key,
        label,
        unit,
        values,
    };
    vec![
        stage(
            "capture_to_sync",
            "capture -> synchronised frame",
            "ms",
            col(&windows, &["timing", "capture_to_sync_ms"]),
        ),
        stage(
            "sync_to_encoded",
            "frame -> encoded",
            "ms",
            col(&windows, &["timing", "sync_to_encoded_ms"]),
        ),
        stage(
            "encoded_to_tokens",
            "encoded -> Q-Former tokens",
            "ms",
            col(&windows, &["timing", "encoded_to_model_ms"]),
        ),
        stage(
            "capture_to_record",
            "capture -> window record",
            "ms",
            col(&windows, &["latency_ms"]),
        ),
        stage(
            "tokens_to_first_token",
            "tokens -> first answer token",
            "ms",
            col(&answers, &["tokens_to_first_token_ms"]),
        ),
        stage(
            "capture_to_first_token",
            "capture -> first answer token",
            "ms",
            col(&answers, &["capture_to_first_token_ms"]),
        ),
        stage(
            "decode",
            "decode",
            "tok/s",
            col(&answers, &["decode_tokens_per_s"]),
        ),
    ]
}

/// What the process used: CPU seconds (user + system) and peak RSS, from /proc.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    pub cpu_s: f64,
    pub peak_rss_kib: u64,
}

pub fn usage() -> Usage {
    let cpu_s = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the parenthesised command name; utime and stime are 14 and 15.
            let rest = s.rsplit_once(')')?.1.split_whitespace().collect::<Vec<_>>();
            let ticks = rest.get(11)?.parse::<f64>().ok()? + rest.get(12)?.parse::<f64>().ok()?;
            Some(ticks / 100.0)
        })
        .unwrap_or(0.0);
    let peak_rss_kib = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0);
    Usage {
        cpu_s,
        peak_rss_kib,
    }
}

fn end_name(e: &StreamEnd) -> String {
    match e {
        StreamEnd::Running => "running".into(),
        StreamEnd::Eos => "eos".into(),
        StreamEnd::Stopped => "stopped".into(),
        StreamEnd::StartFailed(m) => format!("start failed: {m}"),
        StreamEnd::SourceFailed(m) => format!("failed: {m}"),
    }
}

/// The JSON report (fields documented in the README, "sensorium bench").
pub fn report(
    config: &Path,
    duration: Option<f64>,
    wall_s: f64,
    lines: &[Value],
    run: &RunReport,
    used: Usage,
) -> Value {
    let stages = stages(lines);
    let n = run.streams.len().max(1);
    let answers_of = |s: &str| {
        lines
            .iter()
            .filter(|l| l["type"] == "answer" && l["stream"] == s)
            .count()
    };
    let streams: Vec<Value> = run
        .streams
        .iter()
        .map(|s| {
            json!({
                "stream": s.name,
                "end": end_name(&s.end),
                "frames": s.frames,
                "windows": s.windows,
                "windows_written": s.windows_written,
                "answers": answers_of(&s.name),
                "dropped": s.dropped,
                "dropped_at": s.dropped_at,
            })
        })
        .collect();
    let cores = if wall_s > 0.0 {
        used.cpu_s / wall_s
    } else {
        0.0
    };
    json!({
        "config": config.display().to_string(),
        "duration_s": duration,
        "wall_s": round3(wall_s),
        "machine": machine(),
        "stages": stages.iter().map(Stage::summary).collect::<Vec<_>>(),
        "streams": streams,
        "cpu": {
            "process_s": round3(used.cpu_s),
            "cores_used": round3(cores),
            "per_stream_pct": round3(cores * 100.0 / n as f64),
        },
        "peak_rss_mib": round3(used.peak_rss_kib as f64 / 1024.0),
    })
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    json!({ "cpu": cpu, "threads": threads, "os": std::env::consts::OS })
}

/// The report as a table.
pub fn table(r: &Value) -> String {
    let mut out = String::new();
    let f = |v: &Value| v.as_f64().map_or("-".to_string(), |x| format!("{x:.2}"));
    out.push_str(&format!(
        "{:<36} {:>6} {:>10} {:>10} {:>10} {:>10}\n",
        "stage", "n", "p50", "p95", "p99", "max"
    ));
    for s in r["stages"].as_array().into_iter().flatten() {
        let label = format!(
            "{} ({})",
            s["label"].as_str().unwrap_or(""),
            s["unit"].as_str().unwrap_or("")
        );
        out.push_str(&format!(
            "{label:<36} {:>6} {:>10} {:>10} {:>10} {:>10}\n",
            s["n"].to_string(),
            f(&s["p50"]),
            f(&s["p95"]),
            f(&s["p99"]),
            f(&s["max"])
        ));
    }
    out.push('\n');
    out.push_str(&format!(
        "{:<20} {:>8} {:>8} {:>8} {:>8}  end\n",
        "stream", "frames", "windows", "answers", "dropped"
    ));
    for s in r["streams"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:<20} {:>8} {:>8} {:>8} {:>8}  {}\n",
            s["stream"].as_str().unwrap_or(""),
            s["frames"].to_string(),
            s["windows_written"].to_string(),
            s["answers"].to_string(),
            s["dropped"].to_string(),
            s["end"].as_str().unwrap_or("")
        ));
    }
    out.push_str(&format!(
        "\nCPU {} s over {} s wall ({} cores; {}% per stream), peak RSS {} MiB\n",
        f(&r["cpu"]["process_s"]),
        f(&r["wall_s"]),
        f(&r["cpu"]["cores_used"]),
        f(&r["cpu"]["per_stream_pct"]),
        f(&r["peak_rss_mib"])
    ));
    out
}

/// Histograms of the latency stages (ms) and the capture -> record latency over stream time.
pub fn plot(path: &Path, lines: &[Value]) -> anyhow::Result<()> {
    let err = |e: &dyn std::fmt::Display| anyhow!("plot {}: {e}", path.display());
    let text = sensorium_models::train::plot::font();
    let stages = stages(lines);
    let root = BitMapBackend::new(path, (1200, 800)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (top, bottom) = root.split_vertically(460);
    let panels = top.split_evenly((2, 3));
    let shown: Vec<&Stage> = stages.iter().filter(|s| s.unit == "ms").collect();
    for (area, s) in panels.iter().zip(&shown) {
        let max = s.values.iter().copied().fold(0f64, f64::max).max(1e-3);
        const BINS: usize = 30;
        let mut counts = [0u32; BINS];
        for v in &s.values {
            let b = ((v / max) * BINS as f64).floor() as usize;
            counts[b.min(BINS - 1)] += 1;
        }
        let top_count = counts.iter().copied().max().unwrap_or(1).max(1);
        let mut b = ChartBuilder::on(area);
        b.margin(8);
        if text {
            b.caption(
                format!("{} (ms), n={}", s.label, s.values.len()),
                ("sans-serif", 14),
            )
            .x_label_area_size(22)
            .y_label_area_size(36);
        }
        let mut chart = b
            .build_cartesian_2d(0f64..max, 0u32..top_count + 1)
            .map_err(|e| err(&e))?;
        if text {
            chart
                .configure_mesh()
                .disable_mesh()
                .x_labels(5)
                .y_labels(4)
                .draw()
                .map_err(|e| err(&e))?;
        }
        let w = max / BINS as f64;
        chart
            .draw_series(counts.iter().enumerate().map(|(i, c)| {
                Rectangle::new(
                    [(i as f64 * w, 0), ((i + 1) as f64 * w, *c)],
                    BLUE.mix(0.6).filled(),
                )
            }))
            .map_err(|e| err(&e))?;
    }
    // Timeline: each window's capture -> record latency at its end in stream time.
    let mut by_stream: std::collections::BTreeMap<String, Vec<(f64, f64)>> = Default::default();
    for l in lines.iter().filter(|l| l.get("type").is_none()) {
        if let (Some(s), Some(t), Some(lat)) = (
            l["stream"].as_str(),
            l["t_end"].as_f64(),
            l["latency_ms"].as_f64(),
        ) {
            by_stream
                .entry(s.to_owned())
                .or_default()
                .push((t / 1e9, lat));
        }
    }
    let t_max = by_stream
        .values()
        .flatten()
        .map(|p| p.0)
        .fold(0f64, f64::max)
        .max(1.0);
    let l_max = by_stream
        .values()
        .flatten()
        .map(|p| p.1)
        .fold(0f64, f64::max)
        .max(1.0);
    let mut b = ChartBuilder::on(&bottom);
    b.margin(12);
    if text {
        b.caption(
            "capture -> window record (ms) over stream time (s)",
            ("sans-serif", 16),
        )
        .x_label_area_size(28)
        .y_label_area_size(48);
    }
    let mut chart = b
        .build_cartesian_2d(0f64..t_max, 0f64..l_max * 1.1)
        .map_err(|e| err(&e))?;
    if text {
        chart.configure_mesh().draw().map_err(|e| err(&e))?;
    }
    for (i, (name, pts)) in by_stream.iter().enumerate() {
        let colour = Palette99::pick(i).to_rgba();
        let s = chart
            .draw_series(LineSeries::new(pts.iter().copied(), colour.stroke_width(2)))
            .map_err(|e| err(&e))?;
        if text && by_stream.len() <= 8 {
            s.label(name.clone()).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2))
            });
        }
    }
    if text && by_stream.len() <= 8 {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// A progress bar over the run's duration, showing the windows written so far (from the
/// health board); hidden when stderr is not a terminal.
pub struct Progress {
    stop: sensorium_engine::StopToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    pub fn start(duration: Option<Duration>) -> Progress {
        let stop = sensorium_engine::StopToken::new();
        let s2 = stop.clone();
        let thread = std::io::stderr().is_terminal().then(|| {
            std::thread::spawn(move || {
                let bar = match duration {
                    Some(d) => indicatif::ProgressBar::new(d.as_millis() as u64),
                    None => indicatif::ProgressBar::new_spinner(),
                };
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{spinner} bench [{bar:30}] {elapsed}/{duration} {msg}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                let t0 = Instant::now();
                while !s2.wait(Duration::from_millis(200)) {
                    // The health board counts the windows; no re-reading of the output.
                    let windows: u64 = sensorium_engine::status::snapshot()
                        .iter()
                        .map(|h| h.windows)
                        .sum();
                    bar.set_position(t0.elapsed().as_millis() as u64);
                    bar.set_message(format!("{windows} windows"));
                }
                bar.finish_and_clear();
            })
        });
        Progress { stop, thread }
    }

    pub fn finish(mut self) {
        self.stop.trigger();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads the run's output lines (JSON objects; anything else is skipped).
pub fn read_lines(path: &Path) -> anyhow::Result<Vec<Value>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("bench: cannot read the run's output {}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// `sensorium bench`: runs the config through `sensorium run`'s path, then prints the
/// report (and writes it as JSON and a PNG where asked).
pub fn command(
    config: PathBuf,
    duration: Option<f64>,
    json: Option<PathBuf>,
    plot: Option<PathBuf>,
    question: Vec<String>,
) -> Result<u8, Failure> {
    let limit = match duration {
        Some(d) if !(d.is_finite() && d > 0.0) => {
            return Err(anyhow!(
                "--duration: {d} is not a positive number of seconds"
            ))
            .code(code::USAGE)
        }
        d => d.map(std::time::Duration::from_secs_f64),
    };
    let output = std::env::temp_dir().join(format!("sensorium-bench-{}.jsonl", std::process::id()));
    let args = RunArgs {
        input: Input {
            config: Some(config.clone()),
            source: None,
        },
        output: Some(output.display().to_string()),
        format: Some(crate::output::Format::Json),
        quiet: true,
        question,
        ..RunArgs::default()
    };
    let mut hook = BenchHook {
        limit,
        ..BenchHook::default()
    };
    let progress = Progress::start(limit);
    let t0 = std::time::Instant::now();
    let result = run_streams_with(args, Some(&mut hook));
    let wall = t0.elapsed().as_secs_f64();
    progress.finish();
    let used = usage();
    let lines = read_lines(&output);
    let _ = std::fs::remove_file(&output);
    let code = result?;
    let lines = lines.code(code::OUTPUT)?;
    let Some(run) = hook.report else {
        return Err(anyhow!("bench: the run produced no report")).code(code::USAGE);
    };
    let report = report(&config, duration, wall, &lines, &run, used);
    print!("{}", table(&report));
    if let Some(path) = &json {
        let text = serde_json::to_string_pretty(&report).unwrap_or_default();
        std::fs::write(path, text + "\n")
            .with_context(|| format!("--json {}", path.display()))
            .code(code::OUTPUT)?;
    }
    if let Some(path) = &plot {
        self::plot(path, &lines).code(code::OUTPUT)?;
    }
    Ok(code)
}
