//! Answer lines take the windows' way out: a question asked over `POST /ask` while the stream
//! runs is written to the run's output as a live answer line by the engine's sink stage, and
//! counted in the sink stage's metrics (`/metrics` scraped while the run goes on).

mod common;

use std::collections::HashMap;

use common::web::{http, wait_for_lines, Running};
use common::*;
use serde_json::{json, Value};

/// `name{labels} value` lines of a Prometheus page, by `name{labels}`.
fn samples(page: &str) -> HashMap<String, f64> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

#[test]
fn an_http_answer_is_written_and_counted_by_the_sink_stage() {
    let (_d, dir) = tmp();
    let out = dir.join("out.jsonl");
    let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("default-model");
    // The default model with no scheduled question: the only answer is the one asked here.
    let run = Running::start(&[
        "run",
        "--source",
        "scene:3",
        "--model",
        model.to_str().unwrap(),
        "--http",
        "127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
        "-o",
        out.to_str().unwrap(),
    ]);
    wait_for_lines(&out, 1);
    let (status, body) = http(
        &run.addr,
        "POST",
        "/ask",
        Some(&json!({"stream": "source", "question": "What do you see?"})),
    );
    assert_eq!(status, 200, "{body}");
    let sse: Value = body
        .split("\n\n")
        .find_map(|e| e.strip_prefix("event: answer\ndata: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .unwrap_or_else(|| panic!("no answer event in {body}"));

    // Scraped while the stream still runs, after the asker got its answer.
    let (status, page) = http(&run.addr, "GET", "/metrics", None);
    assert_eq!(status, 200);
    let m = samples(&page);
    let get = |k: &str| {
        m.get(k)
            .copied()
            .unwrap_or_else(|| panic!("no {k} in:\n{page}"))
    };
    assert_eq!(
        get(r#"sensorium_records_written_total{stream="source",type="answer"}"#),
        1.0
    );
    let windows = get(r#"sensorium_records_written_total{stream="source",type="window"}"#);
    assert!(windows >= 1.0);
    // The sink stage's own counters take answers in like windows (each record is counted
    // out before it is counted by type).
    let sink_out = get(r#"sensorium_items_out_total{stage="sink",stream="source"}"#);
    assert!(
        sink_out > windows,
        "{sink_out} items out, {windows} windows"
    );

    // Stopped by SIGTERM: exit 130, the lines written stay.
    let (code, err) = run.stop();
    assert_eq!(code, Some(130), "{err}");
    let lines = lines_in(&out);
    let answers: Vec<&Value> = lines.iter().filter(|v| v["type"] == "answer").collect();
    assert_eq!(answers.len(), 1, "{lines:?}");
    let a = answers[0];
    assert_eq!(
        (
            a["live"].as_bool(),
            a["stream"].as_str(),
            a["question"].as_str()
        ),
        (Some(true), Some("source"), Some("What do you see?"))
    );
    assert_eq!(a["answer"], sse["answer"]);
    assert_eq!(a["window"], sse["window"]);
}
