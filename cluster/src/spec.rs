//! The desired state of one stream: the value of its key in the streams bucket.
//!
//! `cluster add` splits a config file into one spec per `[[stream]]`: each holds a whole
//! config (every section of the file: `[engine]`, `[models]`, `[llm]`...) with that one
//! stream, so a worker runs it exactly as `sensorium run --config` would run a file holding
//! only that stream.

use sensorium_engine::Config;
use serde::{Deserialize, Serialize};

use crate::names::check_name;
use crate::ClusterError;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StreamSpec {
    pub name: String,
    /// A config (TOML) with exactly this one `[[stream]]`.
    pub config: String,
    /// What running it costs a worker (see [`cost`]); balancing sums it.
    pub cost: u32,
    /// The file it was added from (for `cluster status`).
    pub origin: String,
}

impl StreamSpec {
    /// Parses a streams-bucket value; the error says what is wrong with it.
    pub fn from_bytes(key: &str, bytes: &[u8]) -> Result<Self, String> {
        let spec: StreamSpec = serde_json::from_slice(bytes)
            .map_err(|e| format!("the bucket entry of stream '{key}' is not a stream spec: {e}"))?;
        if spec.name != key {
            return Err(format!(
                "the bucket entry of stream '{key}' names stream '{}'",
                spec.name
            ));
        }
        Ok(spec)
    }

    /// The stream's source kind (for status), if its config says.
    pub fn source_kind(&self) -> Option<String> {
        let t: toml::Table = self.config.parse().ok()?;
        let s = t.get("stream")?.as_array()?.first()?.as_table()?;
        Some(s.get("source")?.get("kind")?.as_str()?.to_owned())
    }
}

/// The cost of a stream in balancing units: 1 for the engine alone, +2 with frame encoders
/// or a Q-Former (`[models]`), +3 with a language model (`[llm]`).
pub fn cost(table: &toml::Table) -> u32 {
    1 + if table.contains_key("models") { 2 } else { 0 }
        + if table.contains_key("llm") { 3 } else { 0 }
}

/// Splits a config file's text into one spec per stream, after validating it as a whole
/// (the same checks as `sensorium run --config`).
pub fn split_config(text: &str, origin: &str) -> Result<Vec<StreamSpec>, ClusterError> {
    Config::from_toml_str(text, origin).map_err(|e| ClusterError::Usage(e.to_string()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ClusterError::Usage(format!("{origin}: {e}")))?;
    let streams = table
        .get("stream")
        .and_then(|s| s.as_array())
        .cloned()
        .unwrap_or_default();
    if streams.is_empty() {
        return Err(ClusterError::Usage(format!(
            "{origin}: field `stream`: at least one [[stream]] is required"
        )));
    }
    let c = cost(&table);
    let mut out = Vec::with_capacity(streams.len());
    for s in streams {
        let name = s
            .get("name")
            .and_then(|n| n.as_str())
            .unwrap_or_default()
            .to_owned();
        check_name("stream", &name).map_err(|e| ClusterError::Usage(format!("{origin}: {e}")))?;
        let mut one = table.clone();
        one.insert("stream".into(), toml::Value::Array(vec![s]));
        let config = toml::to_string(&one)
            .map_err(|e| ClusterError::Usage(format!("{origin}: stream '{name}': {e}")))?;
        out.push(StreamSpec {
            name,
            config,
            cost: c,
            origin: origin.to_owned(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &str = r#"
[engine]
window = 4
stride = 4

[[stream]]
name = "a"
fps = 10
source = { kind = "synthetic" }

[[stream]]
name = "b"
fps = 5
source = { kind = "synthetic" }
"#;

    #[test]
    fn a_config_splits_into_one_runnable_config_per_stream() {
        let specs = split_config(TWO, "two.toml").unwrap();
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[1].name, "b");
        assert_eq!(specs[1].cost, 1);
        let c = Config::from_toml_str(&specs[1].config, "b").unwrap();
        assert_eq!(c.streams.len(), 1);
        assert_eq!(c.streams[0].name, "b");
        assert_eq!(
            c.engine.window, 4,
            "the shared sections travel with each stream"
        );
        assert_eq!(specs[0].source_kind().as_deref(), Some("synthetic"));
        let back = StreamSpec::from_bytes("b", &serde_json::to_vec(&specs[1]).unwrap()).unwrap();
        assert_eq!(back, specs[1]);
    }

    #[test]
    fn bad_configs_and_entries_say_what_is_wrong() {
        let e = split_config("[[stream]]\nname = \"a\"\n", "x.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.toml"), "{e}");
        let e = split_config(&TWO.replace("\"a\"", "\"a.b\""), "x.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("stream name 'a.b'"), "{e}");
        let e = StreamSpec::from_bytes("cam", b"{not json").unwrap_err();
        assert!(e.contains("stream 'cam' is not a stream spec"), "{e}");
        let spec = &split_config(TWO, "two.toml").unwrap()[0];
        let e = StreamSpec::from_bytes("zz", &serde_json::to_vec(spec).unwrap()).unwrap_err();
        assert!(e.contains("names stream 'a'"), "{e}");
    }

    #[test]
    fn models_and_a_language_model_cost_more() {
        let t: toml::Table = "[models]\nx = 1\n[llm]\ny = 2\n".parse().unwrap();
        assert_eq!(cost(&t), 6);
    }
}
