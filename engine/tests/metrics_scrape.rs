//! The Prometheus recorder renders every engine metric after a short run (served over HTTP
//! by the server crate, tested there). Its own test binary: the recorder is process-wide.

mod common;

use std::sync::Arc;

use common::{config, Script, SynthFactory};
use sensorium_engine::model::StageError;
use sensorium_engine::{metrics, MemorySink, Runtime, Window, WindowModel};
use serde_json::{Map, Value};

struct Echo;
impl WindowModel for Echo {
    fn name(&self) -> &str {
        "echo"
    }
    fn process(&mut self, w: &[&Window]) -> Result<Vec<Map<String, Value>>, StageError> {
        Ok(w.iter().map(|_| Map::new()).collect())
    }
}

#[test]
fn scrape_returns_engine_metrics() {
    let handle = metrics::install_prometheus().unwrap();
    let again = metrics::install_prometheus().unwrap_err();
    assert!(
        again.to_string().starts_with("metrics recorder: "),
        "{again}"
    );

    let factory = SynthFactory::default()
        .with("cam", Script::frames(20))
        .with("mic", Script::frames(5));
    let sink = MemorySink::default();
    let report = Runtime::new(
        config(&[("cam", "lossless"), ("mic", "realtime")], ""),
        Arc::new(factory),
    )
    .with_model(Box::new(Echo))
    .with_sink(Box::new(sink.clone()))
    .run()
    .unwrap();
    assert_eq!(report.stream("cam").unwrap().windows_written, 2);

    let body = handle.render();
    for name in metrics::ALL {
        assert!(body.contains(name), "{name} missing from:\n{body}");
    }
    assert!(
        body.contains(r#"sensorium_items_out_total{stage="sink",stream="cam"} 2"#),
        "{body}"
    );
    assert!(
        body.contains(r#"sensorium_items_in_total{stage="model",stream="mic"} 1"#),
        "{body}"
    );
    assert!(body.contains("sensorium_active_streams 0"), "{body}");
    // Both streams ended: their state gauge says so, and only that.
    for stream in ["cam", "mic"] {
        for (state, v) in [("ended", 1), ("connected", 0), ("failed", 0)] {
            let line =
                format!(r#"sensorium_stream_state{{state="{state}",stream="{stream}"}} {v}"#);
            let alt = format!(r#"sensorium_stream_state{{stream="{stream}",state="{state}"}} {v}"#);
            assert!(
                body.contains(&line) || body.contains(&alt),
                "{line} in:\n{body}"
            );
        }
        let errors = format!(r#"sensorium_source_errors_total{{stream="{stream}"}} 0"#);
        assert!(body.contains(&errors), "{body}");
    }
    assert!(
        body.contains(
            r#"sensorium_stage_latency_seconds_bucket{stage="sync",stream="cam",le="0.0001"}"#
        ),
        "{body}"
    );
}
