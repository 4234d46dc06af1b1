//! Soak: `sensorium run` with the whole default model stack answering (scene source, frame
//! encoders, causal Q-Former, LLM answering three questions per window) for a while, with
//! its resident memory, open file descriptors and thread count sampled from /proc. After
//! warm-up, the RSS high-water mark may grow less than 5% (15% in the 2-minute version, whose
//! samples cannot resolve 5%) and fds and threads stay flat.
//!
//! `make test`: 2 minutes of wall time, the source as fast as it goes, sampled every 5 s.
//! `make soak`: `SENSORIUM_SOAK_S=1200` (20 minutes of wall time as fast as it goes: many
//! hours of stream time, printed) and a live-paced run of `SENSORIUM_SOAK_LIVE_S` (600 in
//! `make soak`); samples every 10 s. Each run writes its
//! samples as CSV and a PNG plot of RSS over time under `target/soak/`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

#[derive(Clone, Copy, Debug)]
struct Sample {
    t_s: f64,
    rss_kib: u64,
    fds: u64,
    threads: u64,
}

fn sample(pid: u32, t0: Instant) -> Option<Sample> {
    let pid_s = pid.to_string();
    let field = |name| proc_status(&pid_s, name);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some(Sample {
        t_s: t0.elapsed().as_secs_f64(),
        rss_kib: field("VmRSS:")?,
        fds,
        threads: field("Threads:")?,
    })
}

fn out_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/soak");
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn plot(samples: &[Sample], png: &Path, title: &str) {
    use plotters::prelude::*;
    if !sensorium_models::train::plot::font() {
        eprintln!(
            "no font for the plot (fonts-dejavu-core): {} not drawn",
            png.display()
        );
        return;
    }
    let root = BitMapBackend::new(png, (900, 420)).into_drawing_area();
    root.fill(&WHITE).unwrap();
    let t_max = samples.last().map_or(1.0, |s| s.t_s).max(1.0);
    let mb = |s: &Sample| s.rss_kib as f64 / 1024.0;
    let hi = samples.iter().map(mb).fold(0.0, f64::max) * 1.1 + 1.0;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..t_max, 0.0..hi)
        .unwrap();
    chart
        .configure_mesh()
        .x_desc("wall time, s")
        .y_desc("RSS, MiB")
        .draw()
        .unwrap();
    chart
        .draw_series(LineSeries::new(
            samples.iter().map(|s| (s.t_s, mb(s))),
            &BLUE,
        ))
        .unwrap();
    root.present().unwrap();
}

/// Runs the default model stack on a scene for `wall_s`, sampling every `every_s`.
fn soak(name: &str, live: bool, wall_s: u64, every_s: u64, warmup_s: u64) -> Vec<Sample> {
    let (_d, dir) = tmp();
    let cfg = write(
        &dir,
        "soak.toml",
        &format!(
            "[output]\npath = \"{}\"\n[[stream]]\nname = \"scene\"\n\
             source = {{ kind = \"scene\", seed = 11, is_live = {live} }}\n",
            dir.join("out.jsonl").display()
        ),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_sensorium"))
        .args(["run", "--config", &cfg])
        .args(["--question", "What do you see?"])
        .args(["--question", "What do you hear?"])
        .args(["--question", "Describe what you see and hear."])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");
    let pid = child.id();
    let t0 = Instant::now();
    let mut samples = Vec::new();
    while t0.elapsed() < Duration::from_secs(wall_s) {
        std::thread::sleep(Duration::from_secs(every_s));
        match sample(pid, t0) {
            Some(s) => samples.push(s),
            None => panic!("{name}: sensorium exited early: {:?}", child.wait()),
        }
    }
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{name}: {err}");
    let written = std::fs::read_to_string(dir.join("out.jsonl")).unwrap();
    let answers = written
        .lines()
        .filter(|l| l.contains("\"type\":\"answer\""))
        .count();
    // Stream time covered: the last window's end (running time, ns).
    let stream_s = written
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|v| v["t_end"].as_u64())
        .unwrap_or(0) as f64
        / 1e9;
    assert!(answers >= 3, "{name}: only {answers} answers: {err}");

    let csv: String = std::iter::once("t_s,rss_kib,fds,threads\n".to_string())
        .chain(
            samples
                .iter()
                .map(|s| format!("{:.1},{},{},{}\n", s.t_s, s.rss_kib, s.fds, s.threads)),
        )
        .collect();
    let base = out_dir().join(name);
    std::fs::write(base.with_extension("csv"), csv).unwrap();
    plot(
        &samples,
        &base.with_extension("png"),
        &format!("sensorium RSS, {name} ({answers} answers, {stream_s:.0} s of stream)"),
    );

    let after: Vec<Sample> = samples
        .iter()
        .copied()
        .filter(|s| s.t_s >= warmup_s as f64)
        .collect();
    assert!(after.len() >= 3, "{name}: too few samples after warm-up");
    // mimalloc returns freed memory lazily, so RSS swings by 10-20% from sample to sample:
    // what must not grow is the high-water mark, the most RSS of the second half after
    // warm-up against the most of the first half. (The medians are printed too.)
    let half = (after.len() / 2).max(1);
    let peak = |xs: &[Sample]| xs.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    let median = |xs: &[Sample]| {
        let mut v: Vec<u64> = xs.iter().map(|s| s.rss_kib).collect();
        v.sort_unstable();
        v[v.len() / 2]
    };
    let (early, late) = (peak(&after[..half]), peak(&after[half..]));
    let (early_median, late_median) = (median(&after[..half]), median(&after[half..]));
    let growth = late as f64 / early as f64 - 1.0;
    let (first, last) = (after[0], *after.last().unwrap());
    eprintln!(
        "{name}: {} samples, RSS peak {:.1} -> {:.1} MiB ({:+.2}%), median {:.1} -> {:.1} MiB \
         (first -> second half after warm-up), fds {} -> {}, threads {} -> {}, {answers} \
         answers, {stream_s:.0} s of stream time",
        samples.len(),
        early as f64 / 1024.0,
        late as f64 / 1024.0,
        growth * 100.0,
        early_median as f64 / 1024.0,
        late_median as f64 / 1024.0,
        first.fds,
        last.fds,
        first.threads,
        last.threads
    );
    // The 5% target needs a long run: over 2 minutes the allocator's swings (10-20% between
    // samples) and the first minutes' warm-up are as large as any leak could be, so the
    // short version bounds the growth at 15% and asserts the counts (fds, threads) flat.
    let limit = if wall_s >= 600 { 0.05 } else { 0.15 };
    assert!(
        growth < limit,
        "{name}: RSS high-water mark grew {:.1}% (limit {:.0}%)",
        growth * 100.0,
        limit * 100.0
    );
    let fds: Vec<u64> = after.iter().map(|s| s.fds).collect();
    let threads: Vec<u64> = after.iter().map(|s| s.threads).collect();
    assert!(fds.iter().all(|&f| f == fds[0]), "{name}: fds {fds:?}");
    assert!(
        threads.iter().all(|&t| t == threads[0]),
        "{name}: threads {threads:?}"
    );
    samples
}

#[test]
fn the_whole_stack_holds_its_memory_fds_and_threads_flat() {
    // SENSORIUM_SOAK_S=0 runs only the live-paced soak.
    let wall = env_or("SENSORIUM_SOAK_S", 120);
    let every = if wall > 600 { 10 } else { 5 };
    if wall > 0 {
        soak("as-fast-as-it-goes", false, wall, every, (wall / 4).max(30));
    }
    let live = env_or("SENSORIUM_SOAK_LIVE_S", 0);
    if live > 0 {
        soak("live-paced", true, live, 10, 60);
    }
}
