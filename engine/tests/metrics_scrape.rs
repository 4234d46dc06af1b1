//! The Prometheus exporter serves every engine metric over HTTP after a short run. Its own
//! test binary, because the exporter installs a process-wide recorder.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
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

fn scrape(addr: std::net::SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).expect("exporter listens");
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

#[test]
fn scrape_returns_engine_metrics() {
    // Port 0: the OS picks a free port and the exporter reports the one it listens on.
    let addr = metrics::install_prometheus("127.0.0.1:0").unwrap();
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    assert_ne!(addr.port(), 0, "the bound port, not the requested one");

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

    let body = scrape(addr);
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
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
            let line = format!(r#"sensorium_stream_state{{state="{state}",stream="{stream}"}} {v}"#);
            let alt = format!(r#"sensorium_stream_state{{stream="{stream}",state="{state}"}} {v}"#);
            assert!(body.contains(&line) || body.contains(&alt), "{line} in:\n{body}");
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

#[test]
fn taken_port_is_reported() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let err = metrics::install_prometheus(&addr.to_string()).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("metrics exporter on {addr}: ")),
        "{err}"
    );
}
