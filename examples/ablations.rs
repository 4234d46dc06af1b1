//! FAVOR's ablations on the scene world: the default model's recipe (`init_default`'s
//! `train.toml`) trained once per variant with the same steps, streams and seeds, each
//! evaluated on the same held-out questions (`sensorium eval --bench scenes`):
//!
//! - `full`: the model as shipped (frame-level sync, causal slot self-attention);
//! - `no_causal`: no slot self-attention (`[models] causal_slots = false`);
//! - `coarse_sync`: each window's audio pooled over the whole window (`audio_sync = "window"`);
//! - `audio_only` / `video_only`: one encoder only.
//!
//! Writes `benches/ablations.md` (table), `benches/ablations.json` and
//! `benches/ablations.png` (bars per task). `make bench-ablations` runs it (after
//! `init_default`); it takes one training run per variant.
//!
//! `cargo run --release --example ablations -- INIT_DIR STEPS PRETRAIN STREAMS QUESTIONS [VARIANT...]`

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use sensorium_engine::scene::TASKS;
use toml::{Table, Value};

struct Variant {
    name: &'static str,
    what: &'static str,
    /// Keys set in `[models]` (TOML values).
    models: &'static [(&'static str, &'static str)],
    audio: bool,
    vision: bool,
}

const VARIANTS: [Variant; 5] = [
    Variant {
        name: "full",
        what: "frame-level sync, causal slot attention",
        models: &[],
        audio: true,
        vision: true,
    },
    Variant {
        name: "no_causal",
        what: "(a) no causal slot self-attention",
        models: &[("causal_slots", "false")],
        audio: true,
        vision: true,
    },
    Variant {
        name: "coarse_sync",
        what: "(b) audio pooled over each window",
        models: &[("audio_sync", "\"window\"")],
        audio: true,
        vision: true,
    },
    Variant {
        name: "audio_only",
        what: "(c) audio only",
        models: &[],
        audio: true,
        vision: false,
    },
    Variant {
        name: "video_only",
        what: "(d) video only",
        models: &[],
        audio: false,
        vision: true,
    },
];

/// The table at `path` (e.g. `["train", "scenes"]`) of `t`, created when missing.
fn table<'a>(t: &'a mut Table, path: &[&str]) -> anyhow::Result<&'a mut Table> {
    let mut t = t;
    for k in path {
        t = t
            .entry(k.to_string())
            .or_insert_with(|| Value::Table(Table::new()))
            .as_table_mut()
            .with_context(|| format!("[{k}] is not a table"))?;
    }
    Ok(t)
}

fn path_value(p: &Path) -> Value {
    Value::String(p.display().to_string())
}

fn sensorium() -> PathBuf {
    PathBuf::from("target/release/sensorium")
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 5 {
        bail!("usage: ablations INIT_DIR STEPS PRETRAIN STREAMS QUESTIONS [VARIANT...]");
    }
    let init = PathBuf::from(&args[0]);
    let (steps, pretrain, streams, questions) = (&args[1], &args[2], &args[3], &args[4]);
    let streams: u64 = streams.parse().context("STREAMS")?;
    let only: Vec<&str> = args[5..].iter().map(String::as_str).collect();
    let base_path = init.join("train.toml");
    let base: Table = std::fs::read_to_string(&base_path)
        .with_context(|| format!("{}: run init_default first", base_path.display()))?
        .parse()
        .with_context(|| format!("{}", base_path.display()))?;
    let num = |v: &str, what: &str| -> anyhow::Result<Value> {
        Ok(Value::Integer(v.parse().with_context(|| what.to_owned())?))
    };
    let first = base
        .get("train")
        .and_then(|t| {
            t.get("scenes")?
                .get("train_seeds")?
                .as_array()?
                .first()?
                .as_integer()
        })
        .unwrap_or(1000);
    let mut results: Vec<(String, String, serde_json::Value)> = Vec::new();
    for v in VARIANTS
        .iter()
        .filter(|v| only.is_empty() || only.contains(&v.name))
    {
        let out = format!("ablation-{}", v.name);
        let dir = init.canonicalize()?.join(&out);
        let mut t = base.clone();
        let train = table(&mut t, &["train"])?;
        train.insert("output".into(), Value::String(out.clone()));
        train.insert("steps".into(), num(steps, "STEPS")?);
        let sc = table(&mut t, &["train", "scenes"])?;
        sc.insert("pretrain_steps".into(), num(pretrain, "PRETRAIN")?);
        sc.insert(
            "train_seeds".into(),
            Value::Array(vec![
                Value::Integer(first),
                Value::Integer(first + streams as i64),
            ]),
        );
        let models = table(&mut t, &["models"])?;
        if !v.audio {
            models.remove("audio");
        }
        if !v.vision {
            models.remove("vision");
        }
        for (k, val) in v.models {
            let val: Table = format!("v = {val}").parse()?;
            models.insert((*k).into(), val["v"].clone());
        }
        let cfg = toml::to_string(&t)?;
        let train_toml = init.join(format!("{out}.toml"));
        std::fs::write(&train_toml, &cfg)?;
        // A variant trained before with the same config is reused (an interrupted
        // benchmark resumes where it stopped).
        let done = dir.join("ablation.toml");
        let train_s = match std::fs::read_to_string(&done) {
            Ok(prev) if prev == cfg && dir.join("qformer/model.safetensors").is_file() => {
                eprintln!("ablations: {} already trained, evaluating", v.name);
                std::fs::read_to_string(dir.join("seconds.txt"))
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or(0.0)
            }
            _ => {
                let _ = std::fs::remove_dir_all(&dir);
                eprintln!("ablations: training {} ({})", v.name, v.what);
                let t0 = std::time::Instant::now();
                let st = Command::new(sensorium())
                    .args(["train", "--config"])
                    .arg(&train_toml)
                    .status()?;
                if !st.success() {
                    bail!("training {} failed ({st})", v.name);
                }
                let s = t0.elapsed().as_secs_f64();
                std::fs::write(&done, &cfg)?;
                std::fs::write(dir.join("seconds.txt"), format!("{s}\n"))?;
                s
            }
        };

        // The trained parts, evaluated like the shipped model: the same engine and `[llm]`
        // settings, the variant's parts.
        let mut e = Table::new();
        for k in ["engine", "llm"] {
            if let Some(x) = t.get(k) {
                e.insert(k.into(), x.clone());
            }
        }
        table(&mut e, &["llm"])?.insert("model".into(), path_value(&dir.join("llm")));
        let models = table(&mut e, &["models"])?;
        for (part, on) in [("audio", v.audio), ("vision", v.vision), ("qformer", true)] {
            if on {
                models.insert(part.into(), path_value(&dir.join(part)));
            }
        }
        if let Some(s) = t["models"].get("slots") {
            models.insert("slots".into(), s.clone());
        }
        let eval_toml = init.join(format!("{out}-eval.toml"));
        std::fs::write(&eval_toml, toml::to_string(&e)?)?;
        let o = Command::new(sensorium())
            .args([
                "eval",
                "--bench",
                "scenes",
                "--json",
                "--questions",
                questions,
                "--config",
            ])
            .arg(&eval_toml)
            .output()?;
        if !o.status.success() {
            bail!(
                "evaluating {} failed: {}",
                v.name,
                String::from_utf8_lossy(&o.stderr)
            );
        }
        let mut r: serde_json::Value = serde_json::from_slice(&o.stdout)?;
        r["train_seconds"] = train_s.into();
        if let Some(m) = r.as_object_mut() {
            m.remove("misses");
        }
        eprintln!(
            "ablations: {} overall {:.1}%",
            v.name,
            100.0 * r["accuracy"].as_f64().unwrap_or(0.0)
        );
        results.push((v.name.to_owned(), v.what.to_owned(), r));
        write(&results, steps, pretrain, streams, questions)?;
    }
    Ok(())
}

fn write(
    results: &[(String, String, serde_json::Value)],
    steps: &str,
    pretrain: &str,
    streams: u64,
    questions: &str,
) -> anyhow::Result<()> {
    let dir = Path::new("benches");
    std::fs::create_dir_all(dir)?;
    let acc = |r: &serde_json::Value, t: &str| r["tasks"][t]["accuracy"].as_f64();
    let mut md = format!(
        "# FAVOR's ablations on the scene world\n\n`cargo run --release --example ablations -- target/default-init {steps} {pretrain} {streams} {questions}`: \
         each variant trained with the default model's recipe ({pretrain} pretraining steps, {steps} answer steps, {streams} training streams), \
         then `sensorium eval --bench scenes --questions {questions}` on the same held-out seeds.\n\n| variant | "
    );
    md.push_str(&TASKS.join(" | "));
    md.push_str(" | overall | train s |\n|---|");
    md.push_str(&"---|".repeat(TASKS.len() + 2));
    md.push('\n');
    for (name, what, r) in results {
        md.push_str(&format!("| {name}: {what} |"));
        for t in TASKS {
            md.push_str(&match acc(r, t) {
                Some(a) => format!(" {:.1}% |", 100.0 * a),
                None => " – |".into(),
            });
        }
        md.push_str(&format!(
            " {:.1}% | {:.0} |\n",
            100.0 * r["accuracy"].as_f64().unwrap_or(0.0),
            r["train_seconds"].as_f64().unwrap_or(0.0)
        ));
    }
    std::fs::write(dir.join("ablations.md"), &md)?;
    let json: Vec<serde_json::Value> = results
        .iter()
        .map(|(n, w, r)| serde_json::json!({"variant": n, "what": w, "result": r}))
        .collect();
    std::fs::write(
        dir.join("ablations.json"),
        serde_json::to_string_pretty(&json)? + "\n",
    )?;
    let series: Vec<(String, Vec<f64>)> = results
        .iter()
        .map(|(n, _, r)| {
            (
                n.clone(),
                TASKS.iter().map(|t| acc(r, t).unwrap_or(0.0)).collect(),
            )
        })
        .collect();
    sensorium_models::train::plot::write_bars(
        &dir.join("ablations.png"),
        "held-out accuracy per task and variant",
        &TASKS,
        &series,
    )?;
    print!("{md}");
    Ok(())
}
