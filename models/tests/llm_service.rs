//! The answer service end to end on the tiny Qwen2 fixture: scheduled questions per window,
//! realtime cancellation of stale answers, live questions from lines of text (stdin) with
//! errors that give the reason. (`POST /ask` over HTTP: the server crate's tests.)

use std::path::Path;
use std::sync::{Arc, Mutex};

use candle_core::{Device, Tensor};
use sensorium_models::llm::{
    spawn_line_questions, AnswerService, Answerer, ComputeDtype, LiveEvent, LlmConfig,
    ScheduledQuestion, ServiceOutput, WindowMeta,
};

fn config() -> LlmConfig {
    let mut cfg =
        LlmConfig::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llm/qwen2"));
    cfg.max_tokens = 6;
    cfg.max_context_tokens = 160;
    cfg.context_windows = 2;
    cfg.dtype = ComputeDtype::F32;
    cfg
}

fn meta(stream: &str, index: u64) -> WindowMeta {
    WindowMeta {
        stream: stream.into(),
        index,
        t_start: index * 5_000_000_000,
        t_end: (index + 1) * 5_000_000_000,
        captured: Some(std::time::Instant::now()),
        queued: None,
    }
}

fn av(seed: u64) -> Tensor {
    Tensor::randn(0f32, 0.3, (4, 64), &Device::Cpu)
        .unwrap()
        .affine(1.0, seed as f64 * 0.01)
        .unwrap()
}

type Outputs = Arc<Mutex<Vec<ServiceOutput>>>;

fn spawn(cfg: &LlmConfig) -> (AnswerService, Outputs) {
    let a = Answerer::from_config(cfg, &Device::Cpu).unwrap();
    let outs: Outputs = Arc::default();
    let o = outs.clone();
    let svc = AnswerService::spawn(a, 8, Box::new(move |x| o.lock().unwrap().push(x)));
    (svc, outs)
}

#[test]
fn scheduled_questions_answer_every_window_with_streamed_tokens() {
    let mut cfg = config();
    cfg.cancel_stale = false;
    cfg.questions = vec![
        ScheduledQuestion {
            text: "What is happening?".into(),
            every_windows: None,
            every_s: None,
            streams: vec![],
        },
        ScheduledQuestion {
            text: "Any sound?".into(),
            every_windows: Some(2),
            every_s: None,
            streams: vec![],
        },
    ];
    let (svc, outs) = spawn(&cfg);
    let h = svc.handle();
    for i in 0..4 {
        h.push_window(meta("cam", i), av(i)).unwrap();
    }
    drop(h);
    svc.join();
    let outs = outs.lock().unwrap();
    let records: Vec<_> = outs
        .iter()
        .filter_map(|o| match o {
            ServiceOutput::Answer(r) => Some(r.clone()),
            _ => None,
        })
        .collect();
    // 4 windows x "What is happening?" + windows 0 and 2 x "Any sound?"
    assert_eq!(records.len(), 6);
    assert!(records.iter().all(|r| !r.live));
    let windows: Vec<(u64, &str)> = records
        .iter()
        .map(|r| (r.window, r.question.as_str()))
        .collect();
    assert_eq!(
        windows,
        vec![
            (0, "What is happening?"),
            (0, "Any sound?"),
            (1, "What is happening?"),
            (2, "What is happening?"),
            (2, "Any sound?"),
            (3, "What is happening?")
        ]
    );
    for r in &records {
        let streamed: String = outs
            .iter()
            .filter_map(|o| match o {
                ServiceOutput::Token {
                    window,
                    question,
                    event,
                    ..
                } if *window == r.window && *question == r.question => Some(event.text.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(streamed.trim(), r.answer);
        assert!(r.capture_to_first_token_ms.is_some());
        assert!(r.first_token_unix_ms <= r.last_token_unix_ms);
        let line = serde_json::to_value(r).unwrap();
        for k in [
            "stream",
            "window",
            "question",
            "answer",
            "t_start_ns",
            "t_end_ns",
            "first_token_unix_ms",
            "last_token_unix_ms",
            "capture_to_first_token_ms",
        ] {
            assert!(line.get(k).is_some(), "{k} missing from {line}");
        }
    }
    assert_eq!(records[5].t_end_ns, 20_000_000_000);
    assert_eq!(records[5].t_start_ns, 10_000_000_000); // 2 context windows: 2 and 3
}

#[test]
fn newer_windows_cancel_or_skip_stale_scheduled_answers() {
    let mut cfg = config();
    cfg.max_tokens = 40;
    cfg.max_context_tokens = 200;
    cfg.questions = vec![ScheduledQuestion {
        text: "What is happening?".into(),
        every_windows: None,
        every_s: None,
        streams: vec![],
    }];
    let (svc, outs) = spawn(&cfg);
    let h = svc.handle();
    for i in 0..6 {
        h.push_window(meta("cam", i), av(i)).unwrap();
    }
    drop(h);
    let stale = svc.join();
    let outs = outs.lock().unwrap();
    let finished: Vec<_> = outs
        .iter()
        .filter_map(|o| match o {
            ServiceOutput::Answer(r) if r.finish != "cancelled" => Some(r.window),
            _ => None,
        })
        .collect();
    // Every due question is either answered in full or counted stale; the newest window's
    // answer is never stale.
    assert_eq!(finished.len() as u64 + stale, 6);
    eprintln!("stale answers: {stale} of 6");
    assert_eq!(finished.last(), Some(&5));
    for o in outs.iter() {
        if let ServiceOutput::Answer(r) = o {
            if r.finish == "cancelled" {
                assert!(r.window < 5);
            }
        }
    }
}

#[test]
fn line_questions_stream_answers() {
    let (svc, outs) = spawn(&config());
    let h = svc.handle();
    h.push_window(meta("cam", 0), av(0)).unwrap();
    h.push_window(meta("door", 0), av(1)).unwrap();
    let events: Arc<Mutex<Vec<(String, LiveEvent)>>> = Arc::default();
    let e = events.clone();
    let input =
        std::io::Cursor::new("@cam What is on screen?\nWhat now?\n@door\n@nowhere Hello?\n");
    let t = spawn_line_questions(input, h.clone(), move |line, ev| {
        e.lock().unwrap().push((line.to_owned(), ev.clone()))
    })
    .unwrap();
    t.join().unwrap();
    drop(h);
    svc.join();
    let events = events.lock().unwrap();
    let done: Vec<_> = events
        .iter()
        .filter_map(|(_, e)| match e {
            LiveEvent::Done(r) => Some((r.stream.clone(), r.question.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        done,
        vec![
            ("cam".to_owned(), "What is on screen?".to_owned()),
            // A bare line goes to the stream with the newest window.
            ("door".to_owned(), "What now?".to_owned()),
        ]
    );
    let errors: Vec<_> = events
        .iter()
        .filter_map(|(l, e)| match e {
            LiveEvent::Error { status, message } => Some((l.clone(), *status, message.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(errors.len(), 2);
    assert_eq!((errors[0].0.as_str(), errors[0].1), ("@door", 400));
    assert_eq!(errors[1].1, 404);
    assert!(errors[1].2.contains("`nowhere`"), "{}", errors[1].2);
    // The service's output got every finished live answer too (it writes the answer lines),
    // marked live, identical to what the asker got.
    let asked: Vec<_> = events
        .iter()
        .filter_map(|(_, e)| match e {
            LiveEvent::Done(r) => Some(r.clone()),
            _ => None,
        })
        .collect();
    let written: Vec<_> = outs
        .lock()
        .unwrap()
        .iter()
        .filter_map(|o| match o {
            ServiceOutput::Answer(r) => Some(r.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(written, asked);
    assert!(written.iter().all(|r| r.live));
    assert_eq!(written[0].line()["type"], "answer");
    assert_eq!(written[0].line()["live"], true);
}
