//! Model bundles: a directory holding every part of a trained model (`audio/`, `vision/`,
//! `qformer/`, `llm/`) and `bundle.toml`, the engine settings it was trained with and the
//! `[models]` / `[llm]` sections that serve it (paths relative to the bundle). The default
//! model (`default-model/` in the repository) is one; `sensorium run` uses it when a run asks
//! questions without `[models]` / `[llm]`.

use std::path::{Path, PathBuf};

use sensorium_engine::Config;

/// What is wrong with a bundle, or with a config put together with one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// `bundle.toml` cannot be read, or a part's proof file is missing: the bundle is not
    /// there (a model error).
    #[error("model bundle {}: {message}", dir.display())]
    Missing { dir: PathBuf, message: String },
    /// `bundle.toml` does not parse, or lacks an engine setting.
    #[error("{}: {message}", path.display())]
    Malformed { path: PathBuf, message: String },
    /// The user's config contradicts the bundle, or a question is malformed (a usage error).
    #[error("{0}")]
    Conflict(String),
}

/// The directory of the default model: `$SENSORIUM_MODEL`, else the repository's
/// `default-model/` (where this build's source tree is).
pub fn default_dir() -> PathBuf {
    std::env::var_os("SENSORIUM_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            // The workspace root: this crate's parent directory.
            let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
            crate_dir
                .parent()
                .unwrap_or(crate_dir)
                .join("default-model")
        })
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
    pub fn load(dir: &Path) -> Result<Self, BundleError> {
        let path = dir.join("bundle.toml");
        let missing = |message: String| BundleError::Missing {
            dir: dir.to_owned(),
            message,
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| missing(format!("cannot read bundle.toml: {e}")))?;
        let malformed = |message: String| BundleError::Malformed {
            path: path.clone(),
            message,
        };
        let table: toml::Table = text.parse().map_err(|e| malformed(format!("{e}")))?;
        for (part, file) in PARTS {
            if !dir.join(part).join(file).is_file() {
                return Err(missing(format!("part {part}/ is missing {file}")));
            }
        }
        for k in ENGINE_KEYS {
            if table.get("engine").and_then(|e| e.get(k)).is_none() {
                return Err(malformed(format!("engine.{k} is missing")));
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
    ) -> Result<(), BundleError> {
        let engine = self.section("engine");
        let num = |k: &str| number(&engine, k);
        let dir = self.dir.display();
        if let Some((origin, user)) = explicit {
            if let Some(e) = user.get("engine").and_then(|v| v.as_table()) {
                for k in ENGINE_KEYS {
                    if let (Some(m), Some(b)) = (number(e, k), num(k)) {
                        if (m - b).abs() > 1e-9 {
                            return Err(BundleError::Conflict(format!(
                                "{origin}: engine.{k} = {m} conflicts with the model bundle \
                                 {dir} (trained with {k} = {b}); remove it, or give [models] \
                                 and [llm]"
                            )));
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
                        return Err(BundleError::Conflict(format!(
                            "stream '{}': {k} = {m} conflicts with the model bundle {dir} \
                             (trained with {k} = {b})",
                            s.name
                        )));
                    }
                }
            }
        }
        let get = |k: &str| {
            num(k).ok_or_else(|| BundleError::Malformed {
                path: self.dir.join("bundle.toml"),
                message: format!("engine.{k} must be a number"),
            })
        };
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
pub fn add_questions(config: &mut Config, questions: &[String]) -> Result<(), BundleError> {
    if questions.is_empty() {
        return Ok(());
    }
    let llm = config.llm.get_or_insert_with(toml::Table::new);
    let list = llm
        .entry("question")
        .or_insert_with(|| toml::Value::Array(Vec::new()));
    let toml::Value::Array(list) = list else {
        return Err(BundleError::Conflict(
            "field `llm.question`: must be an array of tables".into(),
        ));
    };
    for q in questions {
        if q.trim().is_empty() {
            return Err(BundleError::Conflict(
                "--question: the question is empty".into(),
            ));
        }
        let mut t = toml::Table::new();
        t.insert("text".into(), q.clone().into());
        t.insert("every_windows".into(), 1.into());
        list.push(toml::Value::Table(t));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        Config::from_toml_str(
            &format!("[[stream]]\nname = \"cam\"\nsource = {{ kind = \"synthetic\" }}\n{extra}"),
            "test",
        )
        .unwrap()
    }

    #[test]
    fn the_shipped_bundle_sets_the_engine_and_keeps_the_runs_questions() {
        let b = Bundle::load(&default_dir()).unwrap();
        let mut c = config("");
        add_questions(&mut c, &["What do you see?".into()]).unwrap();
        b.apply(&mut c, None).unwrap();
        let engine = b.section("engine");
        assert_eq!(Some(c.engine.fps), number(&engine, "fps"));
        assert_eq!(Some(c.engine.window as f64), number(&engine, "window"));
        let llm = c.llm.as_ref().unwrap();
        assert_eq!(
            llm["model"].as_str(),
            Some(b.dir.join("llm").display().to_string().as_str())
        );
        assert_eq!(
            llm["question"][0]["text"].as_str(),
            Some("What do you see?")
        );
        assert!(c.models.as_ref().unwrap().contains_key("qformer"));
    }

    #[test]
    fn a_bundle_without_its_parts_or_against_the_users_engine_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let e = Bundle::load(dir.path()).err().unwrap();
        assert!(matches!(e, BundleError::Missing { .. }), "{e}");
        assert!(e.to_string().contains("cannot read bundle.toml"), "{e}");

        let b = Bundle::load(&default_dir()).unwrap();
        let mut c = config("");
        let user: toml::Table = "[engine]\nfps = 123\n".parse().unwrap();
        let e = b.apply(&mut c, Some(("my.toml", &user))).err().unwrap();
        assert!(
            e.to_string()
                .starts_with("my.toml: engine.fps = 123 conflicts with the model bundle"),
            "{e}"
        );
        let e = add_questions(&mut c, &["  ".into()]).err().unwrap();
        assert_eq!(e.to_string(), "--question: the question is empty");
    }
}
