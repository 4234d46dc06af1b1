//! Model bundles: a directory holding every part of a trained model (`audio/`, `vision/`,
//! `qformer/`, `llm/`) and `bundle.toml`, the engine settings it was trained with and the
//! `[models]` / `[llm]` sections that serve it (paths relative to the bundle). The default
//! model (`default-model/` in the repository) is one; `sensorium run` uses it when a run asks
//! questions without `[models]` / `[llm]`.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use sensorium_engine::Config;

/// The directory of the default model: `$SENSORIUM_MODEL`, else the repository's
/// `default-model/`.
pub fn default_dir() -> PathBuf {
    std::env::var_os("SENSORIUM_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("default-model"))
}

/// The parts every bundle must hold, with the file that proves each one.
const PARTS: [(&str, &str); 5] = [
    ("audio", "model.safetensors"),
    ("vision", "model.safetensors"),
    ("qformer", "model.safetensors"),
    ("llm", "model.safetensors"),
    ("llm", "tokenizer.json"),
];

/// The engine keys a bundle fixes.
const ENGINE_KEYS: [&str; 5] = ["fps", "width", "height", "window", "stride"];

/// A loaded `bundle.toml`.
pub struct Bundle {
    pub dir: PathBuf,
    table: toml::Table,
}

impl Bundle {
    /// Reads `dir/bundle.toml` and checks that every part is there.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("bundle.toml");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("model bundle {}: cannot read bundle.toml", dir.display()))?;
        let table: toml::Table = text
            .parse()
            .map_err(|e| anyhow!("{}: {e}", path.display()))?;
        for (part, file) in PARTS {
            let f = dir.join(part).join(file);
            if !f.is_file() {
                bail!(
                    "model bundle {}: part {part}/ is missing {file}",
                    dir.display()
                );
            }
        }
        for k in ENGINE_KEYS {
            if table.get("engine").and_then(|e| e.get(k)).is_none() {
                bail!("{}: engine.{k} is missing", path.display());
            }
        }
        Ok(Self {
            dir: dir.to_owned(),
            table,
        })
    }

    fn section(&self, name: &str) -> toml::Table {
        self.table
            .get(name)
            .and_then(|v| v.as_table())
            .cloned()
            .unwrap_or_default()
    }

    /// Puts the bundle's engine settings, `[models]` and `[llm]` into `config`. `explicit`
    /// is the user's own config file as written: an engine setting it gives that differs
    /// from the bundle's (or a stream's own fps/size) is refused, naming both.
    pub fn apply(
        &self,
        config: &mut Config,
        explicit: Option<(&str, &toml::Table)>,
    ) -> anyhow::Result<()> {
        let engine = self.section("engine");
        let num = |k: &str| number(&engine, k);
        if let Some((origin, user)) = explicit {
            if let Some(e) = user.get("engine").and_then(|v| v.as_table()) {
                for k in ENGINE_KEYS {
                    if let (Some(m), Some(b)) = (number(e, k), num(k)) {
                        if (m - b).abs() > 1e-9 {
                            bail!(
                                "{origin}: engine.{k} = {m} conflicts with the model bundle {} (trained with {k} = {b}); remove it, or give [models] and [llm]",
                                self.dir.display()
                            );
                        }
                    }
                }
            }
        }
        for s in &config.streams {
            let own = [
                ("fps", s.fps),
                ("width", s.width.map(f64::from)),
                ("height", s.height.map(f64::from)),
            ];
            for (k, v) in own {
                if let (Some(m), Some(b)) = (v, num(k)) {
                    if (m - b).abs() > 1e-9 {
                        bail!(
                            "stream '{}': {k} = {m} conflicts with the model bundle {} (trained with {k} = {b})",
                            s.name,
                            self.dir.display()
                        );
                    }
                }
            }
        }
        let get = |k: &str| num(k).ok_or_else(|| anyhow!("bundle engine.{k} must be a number"));
        config.engine.fps = get("fps")?;
        config.engine.width = get("width")? as u32;
        config.engine.height = get("height")? as u32;
        config.engine.window = get("window")? as usize;
        config.engine.stride = get("stride")? as usize;
        let mut models = self.section("models");
        for k in ["audio", "vision", "qformer"] {
            models.insert(k.into(), self.path(k).into());
        }
        let mut llm = self.section("llm");
        llm.insert("model".into(), self.path("llm").into());
        if let Some(old) = config.llm.take() {
            // Questions (and answer settings) the run already has stay.
            for (k, v) in old {
                llm.insert(k, v);
            }
        }
        config.models = Some(models);
        config.llm = Some(llm);
        Ok(())
    }

    fn path(&self, part: &str) -> String {
        self.dir.join(part).display().to_string()
    }
}

/// A TOML number (integer or float) at `key` of `t`.
fn number(t: &toml::Table, key: &str) -> Option<f64> {
    t.get(key)
        .and_then(|v| v.as_float().or(v.as_integer().map(|i| i as f64)))
}

/// Adds `--question` texts to `[llm]` (asked on every window).
pub fn add_questions(config: &mut Config, questions: &[String]) -> anyhow::Result<()> {
    if questions.is_empty() {
        return Ok(());
    }
    let llm = config.llm.get_or_insert_with(toml::Table::new);
    let list = llm
        .entry("question")
        .or_insert_with(|| toml::Value::Array(Vec::new()));
    let toml::Value::Array(list) = list else {
        bail!("field `llm.question`: must be an array of tables");
    };
    for q in questions {
        if q.trim().is_empty() {
            bail!("--question: the question is empty");
        }
        let mut t = toml::Table::new();
        t.insert("text".into(), q.clone().into());
        t.insert("every_windows".into(), 1.into());
        list.push(toml::Value::Table(t));
    }
    Ok(())
}
